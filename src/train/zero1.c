/* ZeRO-1 data parallelism: each rank owns a contiguous shard of the
 * trainable vector and its AdamW moments; gradients are reduced to the
 * owner, the owner updates, then broadcasts its shard. */
#include "depthprune/ops.h"
#include "internal.h"

void dp_shard_range(int64_t n, int rank, int size, int64_t *s0, int64_t *s1) {
    *s0 = n * rank / size;
    *s1 = n * (rank + 1) / size;
}

/* op(x + c, cnt, owner) over every owner's shard of x in MPI-sized chunks, owners in rank order */
static void owner_chunks(const dp_mpi *mpi, float *x, int64_t n, void (*op)(const dp_mpi *, float *, int, int)) {
    if (mpi->size == 1) return;
    for (int r = 0; r < mpi->size; r++) {
        int64_t s0, s1;
        dp_shard_range(n, r, mpi->size, &s0, &s1);
        for (int64_t c = s0; c < s1; c += MPI_CHUNK) op(mpi, x + c, (int)(s1 - c < MPI_CHUNK ? s1 - c : MPI_CHUNK), r);
    }
}

static void reduce_op(const dp_mpi *mpi, float *x, int cnt, int owner) {
    if (mpi->rank == owner)
        DP_CHECK_MPI(MPI_Reduce(MPI_IN_PLACE, x, cnt, MPI_FLOAT, MPI_SUM, owner, mpi->comm));
    else
        DP_CHECK_MPI(MPI_Reduce(x, NULL, cnt, MPI_FLOAT, MPI_SUM, owner, mpi->comm));
}

static void bcast_op(const dp_mpi *mpi, float *x, int cnt, int owner) {
    DP_CHECK_MPI(MPI_Bcast(x, cnt, MPI_FLOAT, owner, mpi->comm));
}

void dp_reduce_to_owners(const dp_mpi *mpi, float *g, int64_t n) {
    owner_chunks(mpi, g, n, reduce_op);
}

void dp_bcast_from_owners(const dp_mpi *mpi, float *p, int64_t n) {
    owner_chunks(mpi, p, n, bcast_op);
}

void dp_shard_update(const dp_ckpt_vec *c, const float *g, const dp_llama *m, const dp_train_opts *o, double lr,
                     int64_t step) {
    if (o->method == DP_TRAIN_LORA) {
        dp_adamw_update(c->p + c->s0, g + c->s0, c->m, c->v, c->s1 - c->s0, lr, o->beta1, o->beta2, o->eps,
                        o->weight_decay, step);
        return;
    }
    for (int i = 0; i < m->n_params; i++) {
        const dp_llama_param *pp = &m->params[i];
        int64_t a = pp->offset > c->s0 ? pp->offset : c->s0;
        int64_t b = pp->offset + pp->n_elems < c->s1 ? pp->offset + pp->n_elems : c->s1;
        if (a >= b) continue;
        dp_adamw_update(c->p + a, g + a, c->m + (a - c->s0), c->v + (a - c->s0), b - a, lr, o->beta1, o->beta2, o->eps,
                        pp->cols == 0 ? 0.0 : o->weight_decay, step);
    }
}
