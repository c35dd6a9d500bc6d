/* `depthprune eval`: the eval stage (pipeline/eval.c) from flags. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "depthprune/eval.h"
#include "depthprune/export.h"
#include "depthprune/mc.h"
#include "depthprune/prune.h"

static const dp_cli_opt k_eval_opts[] = {
    {"--model", "DIR", "HF model directory", "model.path"},
    {"--ppl", "NAME=FILE,..", "perplexity sets, e.g. wikitext2=wiki.test.txt,ptb=ptb.test.txt", NULL},
    {"--task", "NAME=FILE,..",
     "tasks: boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, openbookqa; any other NAME is a generic task",
     NULL},
    {"--limit", "N", "first N documents of each task (default all)", "eval.limit"},
    {"--skip-bad", NULL, "skip malformed task lines (reported) instead of refusing the run", NULL},
    {"--drop", "LIST", "blocks to remove through the layer map", NULL},
    {"--drop-attn", "LIST", "blocks whose attention sub-layer is skipped through the layer map", NULL},
    {"--drop-mlp", "LIST", "blocks whose MLP sub-layer is skipped through the layer map", NULL},
    {"--batch", "N", "requests / windows per forward (default eval.batch)", "eval.batch"},
    {"--out", "FILE", "RESULTS.json (default RUNDIR/results.json)", NULL},
    {"--dump-requests", "FILE",
     "also write every request (task, doc, choice, input ids, continuation ids, loglik) as JSONL", NULL},
    {NULL, NULL, NULL, NULL},
};

static int run_eval(dp_app *app) {
    const dp_cmd *cmd = &dp_cmd_eval;
    dp_err err;
    dp_err_clear(&err);
    dp_pipe p = dp_cli_pipe(app);
    dp_eval_job j;
    dp_eval_job_init(p.cfg, &j);                /* the bound flags are in the config */
    dp_cli_flag_str(app, cmd, "--ppl", &j.ppl); /* over eval.ppl and eval.tasks */
    dp_cli_flag_str(app, cmd, "--task", &j.tasks);
    j.drop = dp_cli_get(app, cmd, "--drop");
    j.drop_attn = dp_cli_get(app, cmd, "--drop-attn");
    j.drop_mlp = dp_cli_get(app, cmd, "--drop-mlp");
    j.dump_requests = dp_cli_get(app, cmd, "--dump-requests");
    j.skip_bad = dp_cli_get(app, cmd, "--skip-bad") != NULL;
    const char *out = dp_cli_get(app, cmd, "--out");
    char *outp = out ? dp_strdup(out, "path") : dp_path_join(dp_config_str(p.cfg, "run.dir"), "results.json");
    j.out = outp;
    int rc = dp_pipe_eval(&p, &j, &err);
    dp_free(outp);
    return rc ? dp_cli_fail(app, &err) : 0;
}

const dp_cmd dp_cmd_eval = {
    "eval",
    "perplexity sets and zero-shot multiple-choice tasks (lm-evaluation-harness semantics) -> RESULTS.json",
    "--model DIR [--ppl wikitext2=FILE,...] [--task boolq=FILE,...] [--limit N] [--out RESULTS.json]",
    k_eval_opts,
    1,
    run_eval,
    0,
    0};
