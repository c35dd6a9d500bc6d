/* Parallel HDF5 helpers: collective row-partitioned reads and writes.
 * Transfers are always collective, which parallel HDF5 requires for
 * filtered (checksummed) datasets and which keeps every rank in step. */
#include "depthprune/store.h"

#include <errno.h>
#include <string.h>

static hid_t h5_type(dp_dtype t) {
    switch (t) {
    case DP_DTYPE_F32: return H5T_NATIVE_FLOAT;
    case DP_DTYPE_F64: return H5T_NATIVE_DOUBLE;
    case DP_DTYPE_I32: return H5T_NATIVE_INT32;
    case DP_DTYPE_I64: return H5T_NATIVE_INT64;
    default: return -1;
    }
}

static hid_t h5_file_type(dp_dtype t) {
    switch (t) {
    case DP_DTYPE_F32: return H5T_IEEE_F32LE;
    case DP_DTYPE_F64: return H5T_IEEE_F64LE;
    case DP_DTYPE_I32: return H5T_STD_I32LE;
    case DP_DTYPE_I64: return H5T_STD_I64LE;
    default: return -1;
    }
}

static int g_abandoned;
int dp_h5_abandoned(void) {
    return g_abandoned;
}

static int shared(const dp_h5 *h) {
    int n = 1;
    MPI_Comm_size(h->comm, &n);
    return n > 1;
}

/* Collective over a shared file: turns one rank's failure into the same
 * failure everywhere (message of the lowest failing rank, naming it), so
 * every rank takes the same path afterwards. */
static int agree_io(dp_h5 *h, int rc, dp_err *err) {
    if (!shared(h)) {
        if (rc) { /* HDF5 cannot close a file after a failed write either (it crashes at exit): leave it */
            h->failed = 1;
            g_abandoned = 1;
        }
        return rc;
    }
    int size, rank, key, first;
    MPI_Comm_size(h->comm, &size);
    MPI_Comm_rank(h->comm, &rank);
    key = rc ? rank : size;
    MPI_Allreduce(&key, &first, 1, MPI_INT, MPI_MIN, h->comm);
    if (first == size) return DP_OK;
    char msg[sizeof err->msg];
    memset(msg, 0, sizeof msg);
    if (rank == first && err) memcpy(msg, err->msg, sizeof msg);
    MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, h->comm);
    if (err) {
        err->code = DP_E_IO;
        if (strncmp(msg, "rank ", 5))
            snprintf(err->msg, sizeof err->msg, "rank %d: %.1000s", first, msg);
        else
            snprintf(err->msg, sizeof err->msg, "%s", msg);
    }
    h->failed = 1;
    g_abandoned = 1;
    return DP_E_IO;
}

static hid_t fapl_for(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    int n = 1;
    MPI_Comm_size(comm, &n);
    if (n > 1)
        H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    else
        H5Pset_fapl_sec2(fapl); /* one process: plain POSIX I/O */
    H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST);
    return fapl;
}

int dp_h5_create(dp_h5 *h, const char *path, MPI_Comm comm, dp_err *err) {
    errno = 0;
    h->comm = comm;
    h->failed = 0;
    snprintf(h->path, sizeof h->path, "%s", path);
    hid_t fapl = fapl_for(comm);
    H5E_BEGIN_TRY {
        h->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    }
    H5E_END_TRY;
    H5Pclose(fapl);
    if (h->file < 0) {
        g_abandoned = 1; /* HDF5 keeps a half-created file that it cannot close at exit */
        return dp_err_set(err, DP_E_IO, "%s: cannot create HDF5 file (%s)", path,
                          errno ? strerror(errno) : "HDF5 error");
    }
    return DP_OK;
}

int dp_h5_open(dp_h5 *h, const char *path, MPI_Comm comm, int writable, dp_err *err) {
    h->comm = comm;
    h->failed = 0;
    snprintf(h->path, sizeof h->path, "%s", path);
    hid_t fapl = fapl_for(comm);
    H5E_BEGIN_TRY {
        h->file = H5Fopen(path, writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl);
    }
    H5E_END_TRY;
    H5Pclose(fapl);
    if (h->file < 0) return dp_err_set(err, DP_E_IO, "%s: cannot open HDF5 file", path);
    return DP_OK;
}

void dp_h5_close(dp_h5 *h) {
    if (h->file >= 0 && !h->failed) {
        H5E_BEGIN_TRY {
            H5Fclose(h->file);
        }
        H5E_END_TRY;
    }
    h->file = -1;
}

int dp_h5_finish(dp_h5 *h, dp_err *err) {
    if (h->file < 0) return DP_OK;
    if (h->failed) return DP_E_IO; /* abandoned: the error was reported by the failed call */
    herr_t rc;
    errno = 0;
    /* flush first and agree on it: a full disk shows here, and the close
     * that follows then has nothing left to write */
    H5E_BEGIN_TRY {
        rc = H5Fflush(h->file, H5F_SCOPE_GLOBAL);
    }
    H5E_END_TRY;
    int e = errno;
    int frc =
        rc < 0 ? dp_err_set(err, DP_E_IO, "%s: flushing the file failed (%s)", h->path, e ? strerror(e) : "HDF5 error")
               : DP_OK;
    if (agree_io(h, frc, err)) return DP_E_IO;
    if (frc) { /* one process: HDF5 cannot close a file whose flush failed either; leave it */
        h->failed = 1;
        g_abandoned = 1;
        return frc;
    }
    errno = 0;
    H5E_BEGIN_TRY {
        rc = H5Fclose(h->file);
    }
    H5E_END_TRY;
    h->file = -1;
    if (rc < 0) {
        g_abandoned = 1;
        return dp_err_set(err, DP_E_IO, "%s: closing the file failed (%s)", h->path,
                          errno ? strerror(errno) : "flush error");
    }
    return DP_OK;
}

/* Selects rows [row0, row0+n_rows) in a dataspace of rank ndim. */
static void select_rows(hid_t space, int ndim, const hsize_t *dims, int64_t row0, int64_t n_rows) {
    if (n_rows == 0) {
        H5Sselect_none(space);
        return;
    }
    hsize_t start[DP_MAX_DIMS] = {0}, count[DP_MAX_DIMS];
    for (int i = 0; i < ndim; i++) count[i] = dims[i];
    start[0] = (hsize_t)row0;
    count[0] = (hsize_t)n_rows;
    H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, count, NULL);
}

int dp_h5_write_rows(dp_h5 *h, const char *name, dp_dtype dtype, int ndim, const int64_t *gshape, int64_t chunk_rows,
                     int64_t row0, int64_t n_rows, const void *data, dp_err *err) {
    if (h5_type(dtype) < 0) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: dtype not storable", name);
    if (ndim < 1 || ndim > DP_MAX_DIMS) return dp_err_set(err, DP_E_RANGE, "%s: bad rank", name);
    if (row0 < 0 || n_rows < 0 || row0 + n_rows > gshape[0])
        return dp_err_set(err, DP_E_RANGE, "%s: rows [%lld,%lld) outside [0,%lld)", name, (long long)row0,
                          (long long)(row0 + n_rows), (long long)gshape[0]);
    hsize_t dims[DP_MAX_DIMS];
    for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)gshape[i];
    hid_t fspace = H5Screate_simple(ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (chunk_rows > 0 && gshape[0] > 0) {
        hsize_t chunk[DP_MAX_DIMS];
        for (int i = 0; i < ndim; i++) chunk[i] = dims[i] ? dims[i] : 1;
        chunk[0] = (hsize_t)(chunk_rows < gshape[0] ? chunk_rows : gshape[0]);
        H5Pset_chunk(dcpl, ndim, chunk);
        H5Pset_fletcher32(dcpl);
    }
    hid_t dset;
    H5E_BEGIN_TRY {
        dset = H5Dcreate2(h->file, name, h5_file_type(dtype), fspace, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    }
    H5E_END_TRY;
    H5Pclose(dcpl);
    int crc = dset < 0 ? dp_err_set(err, DP_E_IO, "%s: cannot create dataset %s", h->path, name) : DP_OK;
    if (agree_io(h, crc, err)) {
        H5Sclose(fspace);
        return DP_E_IO;
    }
    select_rows(fspace, ndim, dims, row0, n_rows);
    hsize_t mdims[DP_MAX_DIMS];
    for (int i = 0; i < ndim; i++) mdims[i] = dims[i];
    mdims[0] = (hsize_t)(n_rows > 0 ? n_rows : 1);
    hid_t mspace = H5Screate_simple(ndim, mdims, NULL);
    if (n_rows == 0) H5Sselect_none(mspace);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (shared(h)) H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    dp_heartbeat();
    dp_fault_point("h5_write");
    herr_t rc;
    errno = 0;
    H5E_BEGIN_TRY {
        rc = H5Dwrite(dset, h5_type(dtype), mspace, fspace, dxpl, data);
    }
    H5E_END_TRY;
    int e = errno;
    H5Pclose(dxpl);
    H5Sclose(mspace);
    H5Sclose(fspace);
    dp_heartbeat();
    int wrc = rc < 0 ? dp_err_set(err, DP_E_IO, "%s: writing dataset %s failed (%s)", h->path, name,
                                  e ? strerror(e) : "HDF5 error")
                     : DP_OK;
    if (agree_io(h, wrc, err)) return DP_E_IO; /* the dataset is left open with the abandoned file */
    if (wrc) {
        h->failed = 1;
        g_abandoned = 1;
        return wrc;
    }
    errno = 0;
    H5E_BEGIN_TRY {
        rc = H5Dclose(dset);
    }
    H5E_END_TRY;
    if (rc < 0)
        return agree_io(h,
                        dp_err_set(err, DP_E_IO, "%s: closing dataset %s failed (%s)", h->path, name,
                                   errno ? strerror(errno) : "HDF5 error"),
                        err);
    return agree_io(h, DP_OK, err);
}

int dp_h5_shape(dp_h5 *h, const char *name, int *ndim, int64_t *gshape, dp_err *err) {
    hid_t dset;
    H5E_BEGIN_TRY {
        dset = H5Dopen2(h->file, name, H5P_DEFAULT);
    }
    H5E_END_TRY;
    if (dset < 0) return dp_err_set(err, DP_E_FORMAT, "dataset %s missing", name);
    hid_t space = H5Dget_space(dset);
    hsize_t dims[DP_MAX_DIMS];
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 0 || nd > DP_MAX_DIMS) {
        H5Sclose(space);
        H5Dclose(dset);
        return dp_err_set(err, DP_E_FORMAT, "dataset %s: unsupported rank", name);
    }
    H5Sget_simple_extent_dims(space, dims, NULL);
    *ndim = nd;
    for (int i = 0; i < nd; i++) gshape[i] = (int64_t)dims[i];
    H5Sclose(space);
    H5Dclose(dset);
    return DP_OK;
}

int dp_h5_read_rows(dp_h5 *h, const char *name, dp_dtype dtype, int64_t row0, int64_t n_rows, void *data, dp_err *err) {
    if (h5_type(dtype) < 0) return dp_err_set(err, DP_E_UNSUPPORTED, "%s: dtype not readable", name);
    hid_t dset;
    H5E_BEGIN_TRY {
        dset = H5Dopen2(h->file, name, H5P_DEFAULT);
    }
    H5E_END_TRY;
    if (dset < 0) return dp_err_set(err, DP_E_FORMAT, "dataset %s missing", name);
    hid_t fspace = H5Dget_space(dset);
    int nd = H5Sget_simple_extent_ndims(fspace);
    hsize_t dims[DP_MAX_DIMS];
    if (nd < 1 || nd > DP_MAX_DIMS) {
        H5Sclose(fspace);
        H5Dclose(dset);
        return dp_err_set(err, DP_E_FORMAT, "dataset %s: unsupported rank", name);
    }
    H5Sget_simple_extent_dims(fspace, dims, NULL);
    if (row0 < 0 || n_rows < 0 || (hsize_t)(row0 + n_rows) > dims[0]) {
        H5Sclose(fspace);
        H5Dclose(dset);
        return dp_err_set(err, DP_E_RANGE, "dataset %s: rows [%lld,%lld) outside [0,%llu)", name, (long long)row0,
                          (long long)(row0 + n_rows), (unsigned long long)dims[0]);
    }
    select_rows(fspace, nd, dims, row0, n_rows);
    hsize_t mdims[DP_MAX_DIMS];
    for (int i = 0; i < nd; i++) mdims[i] = dims[i];
    mdims[0] = (hsize_t)(n_rows > 0 ? n_rows : 1);
    hid_t mspace = H5Screate_simple(nd, mdims, NULL);
    if (n_rows == 0) H5Sselect_none(mspace);
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (shared(h)) H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    herr_t rc;
    H5E_BEGIN_TRY {
        rc = H5Dread(dset, h5_type(dtype), mspace, fspace, dxpl, data);
    }
    H5E_END_TRY;
    H5Pclose(dxpl);
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Dclose(dset);
    if (rc < 0) return dp_err_set(err, DP_E_IO, "dataset %s: read failed (corrupt chunk?)", name);
    return DP_OK;
}

int dp_h5_set_attr(dp_h5 *h, const char *name, const char *value, dp_err *err) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, strlen(value) + 1);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr;
    H5E_BEGIN_TRY {
        if (H5Aexists(h->file, name) > 0) H5Adelete(h->file, name);
        attr = H5Acreate2(h->file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    }
    H5E_END_TRY;
    herr_t rc = -1;
    H5E_BEGIN_TRY {
        rc = attr >= 0 ? H5Awrite(attr, type, value) : -1;
        if (attr >= 0 && H5Aclose(attr) < 0) rc = -1;
    }
    H5E_END_TRY;
    H5Sclose(space);
    H5Tclose(type);
    return agree_io(h, rc < 0 ? dp_err_set(err, DP_E_IO, "%s: attribute %s: write failed", h->path, name) : DP_OK, err);
}

int dp_h5_get_attr(dp_h5 *h, const char *name, char **value, dp_err *err) {
    *value = NULL;
    hid_t attr;
    H5E_BEGIN_TRY {
        attr = H5Aopen(h->file, name, H5P_DEFAULT);
    }
    H5E_END_TRY;
    if (attr < 0) return dp_err_set(err, DP_E_FORMAT, "attribute %s missing", name);
    hid_t ftype = H5Aget_type(attr);
    if (H5Tget_class(ftype) != H5T_STRING || H5Tis_variable_str(ftype) > 0) {
        H5Tclose(ftype);
        H5Aclose(attr);
        return dp_err_set(err, DP_E_FORMAT, "attribute %s: not a fixed-length string", name);
    }
    size_t n = H5Tget_size(ftype);
    hid_t mtype = H5Tcopy(H5T_C_S1);
    H5Tset_size(mtype, n + 1);
    H5Tset_cset(mtype, H5Tget_cset(ftype));
    char *buf = dp_calloc(n + 1, 1, "h5.attr");
    herr_t rc = H5Aread(attr, mtype, buf);
    H5Tclose(mtype);
    H5Tclose(ftype);
    H5Aclose(attr);
    if (rc < 0) {
        dp_free(buf);
        return dp_err_set(err, DP_E_IO, "attribute %s: read failed", name);
    }
    *value = buf;
    return DP_OK;
}
