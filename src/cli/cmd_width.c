/* `depthprune width-prune`: the width-pruning baseline (pipeline/width.c)
 * from flags. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "depthprune/export.h"
#include "depthprune/prune.h"
#include "depthprune/tokenizer.h"
#include "depthprune/width.h"

static const dp_cli_opt k_width_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--calib", "FILE", "calibration text or JSONL (LLM-Pruner: BookCorpus); not needed for l1, l2, random", NULL},
    {"--calib-field", "NAME", "JSONL field holding the text (default text)", "calib.field"},
    {"--samples", "N", "calibration samples", "calib.samples"},
    {"--seq-len", "T", "tokens per sample (default 64)", "calib.seq_len"},
    {"--seed", "S", "sampling seed (default run.seed)", "run.seed"},
    {"--criterion", "C", "param_first (default), param_second, param_mix, l1, l2, random", NULL},
    {"--ratio", "X", "fraction of kv groups and MLP channels removed from each pruned block", NULL},
    {"--match-params", "N", "instead of --ratio: the ratio whose parameter count is closest to N", NULL},
    {"--match-model", "DIR", "instead of --ratio: match the parameter count of this (e.g. depth-pruned) model", NULL},
    {"--protect-first", "F", "first blocks left whole (default width.protect_first; LLM-Pruner: 4 on LLaMA-7B)", NULL},
    {"--protect-last", "B", "last blocks left whole (default width.protect_last)", NULL},
    {"--out", "DIR", "output model directory (must not exist)", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_width(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_width_prune;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_width_job j;
    dp_width_job_init(p.cfg, &j); /* --samples, --seq-len and --seed are in the config */
    j.calib = dp_cli_get(app, cmd, "--calib");
    j.out = dp_cli_get(app, cmd, "--out");
    j.match_model = dp_cli_get(app, cmd, "--match-model");
    dp_cli_flag_str(app, cmd, "--criterion", &j.criterion);
    int rc = dp_cli_flag_int(app, cmd, "--protect-first", &j.protect_first, &err);
    if (!rc) rc = dp_cli_flag_int(app, cmd, "--protect-last", &j.protect_last, &err);
    if (!rc) rc = dp_cli_flag_i64(app, cmd, "--match-params", &j.match_params, &err);
    if (!rc) rc = dp_cli_flag_f64(app, cmd, "--ratio", &j.ratio, &err);
    int given = (dp_cli_get(app, cmd, "--ratio") != NULL) + (j.match_params > 0) + (j.match_model != NULL);
    if (!rc && given != 1)
        rc = dp_err_set(&err, DP_E_USAGE, "give exactly one of --ratio, --match-params, --match-model");
    if (!rc) rc = dp_pipe_width_prune(&p, &j, &err);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_width_prune = {
    "width-prune",
    "the width-pruning baseline (LLM-Pruner): remove attention head groups and MLP channels by importance",
    "--model DIR --calib FILE [--criterion param_first] --ratio X | --match-model DIR --out DIR",
    k_width_opts,
    1,
    run_width,
    0,
    0};
