/* ZeRO-1 data parallelism: each rank owns a contiguous shard of the
 * trainable vector and its AdamW moments; gradients are reduced to the
 * owner, the owner updates, then broadcasts its shard. */
#include "depthprune/ops.h"
#include "internal.h"

void dp_shard_range(int64_t n, int rank, int size, int64_t *s0, int64_t *s1) {
    *s0 = n * rank / size;
    *s1 = n * (rank + 1) / size;
}

void dp_reduce_to_owners(const dp_mpi *mpi, float *g, int64_t n) {
    if (mpi->size == 1) return;
    for (int r = 0; r < mpi->size; r++) {
        int64_t s0, s1;
        dp_shard_range(n, r, mpi->size, &s0, &s1);
        for (int64_t c = s0; c < s1; c += MPI_CHUNK) {
            int cnt = (int)(s1 - c < MPI_CHUNK ? s1 - c : MPI_CHUNK);
            if (mpi->rank == r)
                DP_CHECK_MPI(MPI_Reduce(MPI_IN_PLACE, g + c, cnt, MPI_FLOAT, MPI_SUM, r, mpi->comm));
            else
                DP_CHECK_MPI(MPI_Reduce(g + c, NULL, cnt, MPI_FLOAT, MPI_SUM, r, mpi->comm));
        }
    }
}

void dp_bcast_from_owners(const dp_mpi *mpi, float *p, int64_t n) {
    if (mpi->size == 1) return;
    for (int r = 0; r < mpi->size; r++) {
        int64_t s0, s1;
        dp_shard_range(n, r, mpi->size, &s0, &s1);
        for (int64_t c = s0; c < s1; c += MPI_CHUNK) {
            int cnt = (int)(s1 - c < MPI_CHUNK ? s1 - c : MPI_CHUNK);
            DP_CHECK_MPI(MPI_Bcast(p + c, cnt, MPI_FLOAT, r, mpi->comm));
        }
    }
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
