/* Parallel HDF5 smoke test: every rank collectively writes a disjoint slab
 * of one dataset (plain and chunked+checksummed), a rank with no rows still
 * joins, and every rank reads the whole dataset back. The file is left at
 * argv[1] for h5dump to read (a separate ctest step). */
#include "../test.h"
#include "depthprune/dist.h"
#include "depthprune/store.h"

int main(int argc, char **argv) {
    dp_mpi ctx;
    dp_mpi_init(&argc, &argv, &ctx);
    const char *path = argc > 1 ? argv[1] : "test_h5_parallel.h5";
    const int64_t rows_per_rank = 5, cols = 3;
    /* the last rank owns no rows when there are 3 or more ranks */
    int writers = ctx.size >= 3 ? ctx.size - 1 : ctx.size;
    int64_t gshape[2] = {rows_per_rank * writers, cols};
    int64_t my_rows = ctx.rank < writers ? rows_per_rank : 0;
    int64_t row0 = ctx.rank < writers ? ctx.rank * rows_per_rank : 0;
    float *mine = dp_malloc(sizeof(float) * (size_t)(rows_per_rank * cols), "test");
    for (int64_t r = 0; r < my_rows; r++)
        for (int64_t c = 0; c < cols; c++) mine[r * cols + c] = (float)(1000 * (row0 + r) + c);

    dp_h5 h;
    dp_err err;
    dp_err_clear(&err);
    int rc = dp_h5_create(&h, path, ctx.comm, &err);
    CHECK_MSG(rc == DP_OK, "%s", err.msg);
    rc = dp_h5_write_rows(&h, "slabs", DP_DTYPE_F32, 2, gshape, 0, row0, my_rows, mine, &err);
    CHECK_MSG(rc == DP_OK, "%s", err.msg);
    rc = dp_h5_write_rows(&h, "slabs_checked", DP_DTYPE_F32, 2, gshape, 2, row0, my_rows, mine, &err);
    CHECK_MSG(rc == DP_OK, "%s", err.msg);
    CHECK(dp_h5_set_attr(&h, "producer", "depthprune test", &err) == DP_OK);
    dp_h5_close(&h);

    CHECK(dp_h5_open(&h, path, ctx.comm, 0, &err) == DP_OK);
    int ndim = 0;
    int64_t shape[DP_MAX_DIMS];
    CHECK(dp_h5_shape(&h, "slabs", &ndim, shape, &err) == DP_OK);
    CHECK_EQ_INT(ndim, 2);
    CHECK_EQ_INT(shape[0], gshape[0]);
    float *all = dp_malloc(sizeof(float) * (size_t)(gshape[0] * cols), "test");
    const char *names[2] = {"slabs", "slabs_checked"};
    for (int d = 0; d < 2; d++) {
        memset(all, 0, sizeof(float) * (size_t)(gshape[0] * cols));
        CHECK(dp_h5_read_rows(&h, names[d], DP_DTYPE_F32, 0, gshape[0], all, &err) == DP_OK);
        for (int64_t r = 0; r < gshape[0]; r++)
            for (int64_t c = 0; c < cols; c++) CHECK(all[r * cols + c] == (float)(1000 * r + c));
    }
    char *attr = NULL;
    CHECK(dp_h5_get_attr(&h, "producer", &attr, &err) == DP_OK);
    CHECK(attr && strcmp(attr, "depthprune test") == 0);
    dp_free(attr);
    CHECK(dp_h5_read_rows(&h, "missing", DP_DTYPE_F32, 0, 1, all, &err) == DP_E_FORMAT);
    CHECK(dp_h5_read_rows(&h, "slabs", DP_DTYPE_F32, 0, gshape[0] + 1, all, &err) == DP_E_RANGE);
    dp_h5_close(&h);
    dp_free(all);
    dp_free(mine);

    int failures = dp_test_failures, total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    dp_mpi_finalize(&ctx);
    return total ? 1 : 0;
}
