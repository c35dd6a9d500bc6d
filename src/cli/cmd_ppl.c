/* `depthprune ppl`: perplexity of a model (optionally with blocks dropped
 * through the layer map) on a text file, with the papers' protocol (see
 * eval.h). Rank 0 reads and tokenizes the text and broadcasts the ids;
 * every rank loads the model; windows are split across ranks. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/eval.h"
#include "depthprune/export.h"
#include "depthprune/llama.h"
#include "depthprune/safetensors.h"
#include "depthprune/tokenizer.h"

static const dp_cli_opt k_ppl_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--text", "FILE", "UTF-8 text file (e.g. WikiText2 test split joined by blank lines)", "eval.text"},
    {"--seq-len", "N", "tokens per window (default eval.seq_len)", NULL},
    {"--batch", "N", "windows per forward (default eval.batch = 4)", "eval.batch"},
    {"--drop", "LIST", "blocks to remove through the layer map, e.g. 3,7", NULL},
    {"--drop-attn", "LIST", "blocks whose attention sub-layer is skipped through the layer map", NULL},
    {"--drop-mlp", "LIST", "blocks whose MLP sub-layer is skipped through the layer map", NULL},
    {"--bos-per-window", NULL, "prepend BOS to every window instead of once to the text", NULL},
    {"--allow-long-seq", NULL, "allow --seq-len above max_position_embeddings", NULL},
    {"--json", NULL, "print one JSON object", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_ppl(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_ppl;
    const dp_mpi *mpi = &app->mpi;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd);
    const char *text = dp_cli_get(app, cmd, "--text");
    if (!text) text = dp_config_str(&app->cfg, "eval.text");
    long long seq_len, batch;
    int rc = DP_OK;
    if (!dir)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR is required");
    else if (!text)
        rc = dp_err_set(&err, DP_E_USAGE, "--text FILE is required");
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--seq-len", dp_config_int(&app->cfg, "eval.seq_len"), &seq_len, &err);
    if (!rc) rc = dp_cli_opt_int(app, cmd, "--batch", dp_config_int(&app->cfg, "eval.batch"), &batch, &err);
    if (rc) return dp_cli_fail(app, &err);
    dp_ppl_opts o = {.seq_len = seq_len,
                     .batch = batch,
                     .bos_per_window = dp_cli_get(app, cmd, "--bos-per-window") != NULL ||
                                       dp_config_bool(&app->cfg, "eval.bos_per_window"),
                     .allow_long = dp_cli_get(app, cmd, "--allow-long-seq") != NULL,
                     .progress = !dp_cli_get(app, cmd, "--json"),
                     .device = app->device};

    dp_llama m;
    memset(&m, 0, sizeof m);
    dp_pipe pp = dp_cli_pipe(app);
    rc = dp_mpi_agree(mpi, dp_pipe_load_frozen(&pp, dir, &m, &err), &err);
    if (rc) return dp_cli_fail(app, &err);
    dp_layer_map map;
    rc = dp_pipe_layer_map(&m.cfg, dp_cli_get(app, cmd, "--drop"), dp_cli_get(app, cmd, "--drop-attn"),
                           dp_cli_get(app, cmd, "--drop-mlp"), &map, &err);

    int32_t *win = NULL;
    int64_t n_win = 0;
    dp_pipe p = dp_cli_pipe(app);
    if (rc == DP_OK) rc = dp_pipe_ppl_windows(&p, dir, text, &o, &win, &n_win, &err);
    dp_ppl_result r;
    if (rc == DP_OK) {
        dp_log0("ppl: %lld windows of %lld tokens, batch %lld, %d blocks of %lld, %d rank(s)", (long long)n_win,
                (long long)o.seq_len, (long long)o.batch, map.n, (long long)m.cfg.n_layers, mpi->size);
        rc = dp_ppl_run(mpi, &m, &map, win, n_win, &o, &r, NULL, &err);
    }
    if (rc == DP_OK && mpi->rank == 0) {
        if (dp_cli_get(app, cmd, "--json")) {
            printf("{\"ppl\": %.17g, \"nll\": %.17g, \"tokens\": %lld, \"windows\": %lld, \"seq_len\": %lld, "
                   "\"bos_per_window\": %s, \"dropped\": [",
                   r.ppl, r.nll, (long long)r.tokens, (long long)r.windows, (long long)o.seq_len,
                   o.bos_per_window ? "true" : "false");
            int first = 1;
            for (int l = 0; l < m.cfg.n_layers; l++) { /* the blocks not in the map */
                int in = 0;
                for (int i = 0; i < map.n; i++) in |= map.layer[i] == l;
                if (!in) printf("%s%d", first ? "" : ", ", l), first = 0;
            }
            const char *keys[2] = {"skipped_attn", "skipped_mlp"};
            for (int k = 0; k < 2; k++) {
                printf("], \"%s\": [", keys[k]);
                first = 1;
                for (int l = 0; l < m.cfg.n_layers; l++)
                    if (map.skip[l] & (k ? DP_SKIP_MLP : DP_SKIP_ATTN)) printf("%s%d", first ? "" : ", ", l), first = 0;
            }
            printf("]}\n");
        } else {
            const char *drop_s = dp_cli_get(app, cmd, "--drop");
            printf("ppl %.4f (mean nll %.6f over %lld tokens in %lld windows of %lld%s%s%s)\n", r.ppl, r.nll,
                   (long long)r.tokens, (long long)r.windows, (long long)o.seq_len,
                   o.bos_per_window ? ", BOS per window" : "", drop_s ? ", dropped blocks " : "", drop_s ? drop_s : "");
        }
        fflush(stdout);
    }
    dp_free(win);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_ppl = {
    "ppl",
    "perplexity on a text file (non-overlapping windows; Shortened LLaMA / LLM-Pruner protocol)",
    "--model DIR --text FILE [--seq-len 128] [--batch 4] [--drop 3,7] [--bos-per-window] [--json]",
    k_ppl_opts,
    1,
    run_ppl,
    0,
    0};

/* ---- logits: the fp32 logits of one token sequence (for oracle checks) ---- */
static const dp_cli_opt k_logits_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--ids", "I,J,..", "token ids of one sequence (no BOS is added)", NULL},
    {"--drop", "LIST", "blocks to remove through the layer map, e.g. 3,7", NULL},
    {"--drop-attn", "LIST", "blocks whose attention sub-layer is skipped", NULL},
    {"--drop-mlp", "LIST", "blocks whose MLP sub-layer is skipped", NULL},
    {"--out", "FILE", "output safetensors: \"logits\" F32 (T, V) and \"ids\" I32 (T)", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_logits(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_logits;
    dp_err err;
    dp_err_clear(&err);
    const char *dir = dp_cli_model_path(app, cmd), *ids_s = dp_cli_get(app, cmd, "--ids");
    const char *out = dp_cli_get(app, cmd, "--out"), *drop_s = dp_cli_get(app, cmd, "--drop");
    int rc = DP_OK;
    if (!dir || !ids_s || !out)
        rc = dp_err_set(&err, DP_E_USAGE, "--model DIR, --ids LIST and --out FILE are required");
    dp_llama m;
    memset(&m, 0, sizeof m);
    int64_t *ids64 = NULL, n_ids = 0;
    int32_t *ids = NULL;
    dp_llama_state s;
    memset(&s, 0, sizeof s);
    if (rc == DP_OK && app->mpi.rank == 0) {
        dp_pipe pp = dp_cli_pipe(app);
        rc = dp_pipe_load_frozen(&pp, dir, &m, &err);
        /* ids are any non-negative integers: the block-list parser with an
         * upper bound of the vocabulary (and no duplicate check) is not
         * what we want, so parse here */
        if (rc == DP_OK) {
            const char *p = ids_s;
            ids64 = dp_malloc((strlen(ids_s) / 2 + 2) * sizeof *ids64, "logits ids");
            while (rc == DP_OK && *p) {
                char *end;
                long long v = strtoll(p, &end, 10);
                if (end == p || v < 0 || v >= m.cfg.vocab_size || (*end && *end != ','))
                    rc = dp_err_set(&err, DP_E_USAGE, "--ids: not a list of token ids below %lld: %s",
                                    (long long)m.cfg.vocab_size, ids_s);
                else
                    ids64[n_ids++] = v;
                p = *end ? end + 1 : end;
            }
            if (rc == DP_OK && n_ids == 0) rc = dp_err_set(&err, DP_E_USAGE, "--ids is empty");
        }
        dp_layer_map map;
        if (rc == DP_OK)
            rc = dp_pipe_layer_map(&m.cfg, drop_s, dp_cli_get(app, cmd, "--drop-attn"),
                                   dp_cli_get(app, cmd, "--drop-mlp"), &map, &err);
        if (rc == DP_OK) rc = dp_llama_state_init(&s, &m, NULL, 1, n_ids, map.n, 0, 0, &err);
        if (rc == DP_OK) {
            ids = dp_malloc((size_t)n_ids * sizeof *ids, "logits ids");
            for (int64_t i = 0; i < n_ids; i++) ids[i] = (int32_t)ids64[i];
            rc = dp_llama_forward(&m, NULL, &map, &s, ids, &err);
        }
        if (rc == DP_OK) {
            dp_st_entry e[2] = {{.name = "logits",
                                 .dtype = DP_DTYPE_F32,
                                 .ndim = 2,
                                 .shape = {n_ids, m.cfg.vocab_size},
                                 .data = s.logits},
                                {.name = "ids", .dtype = DP_DTYPE_I32, .ndim = 1, .shape = {n_ids}, .data = ids}};
            rc = dp_st_write(out, e, 2, &err);
        }
    }
    rc = dp_mpi_agree(&app->mpi, rc, &err);
    dp_llama_state_free(&s);
    dp_free(ids);
    dp_free(ids64);
    dp_llama_free(&m);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_logits = {
    "logits",
    "fp32 logits of one token sequence, written as safetensors (for checks against other engines)",
    "--model DIR --ids 1,450,7483 --out FILE.safetensors [--drop 3,7]",
    k_logits_opts,
    0,
    run_logits,
    1,
    0};
