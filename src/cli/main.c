/* The depthprune command: global options, subcommand dispatch and help.
 * Runs as an MPI singleton without mpirun and as N ranks under mpirun/srun;
 * errors in input are printed once (rank 0) and give a non-zero exit. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "depthprune/backend.h"
#include "depthprune/store.h"

static const dp_cmd *const k_cmds[] = {
    &dp_cmd_run,           &dp_cmd_info,        &dp_cmd_tokenize, &dp_cmd_ppl,
    &dp_cmd_logits,        &dp_cmd_eval,        &dp_cmd_score,    &dp_cmd_agreement,
    &dp_cmd_prune,         &dp_cmd_width_prune, &dp_cmd_sweep,    &dp_cmd_retrain,
    &dp_cmd_teacher_cache, &dp_cmd_export,      &dp_cmd_generate, &dp_cmd_bench_generate,
    &dp_cmd_synth,         &dp_cmd_config,      &dp_cmd_plan};
static const int k_n_cmds = (int)(sizeof k_cmds / sizeof k_cmds[0]);

static const dp_cli_opt k_common_opts[] = {
    {"--config", "FILE", "YAML run config (configs/*.yaml)", NULL},
    {"--set", "KEY=VALUE", "override one config key (repeatable), e.g. --set eval.seq_len=256", NULL},
    {"--device", "cpu|cuda", "compute backend (same as --set device=...)", NULL},
    {"--quiet", NULL, "no progress logging", NULL},
    {"--help", NULL, "this help", NULL},
    {NULL, NULL, NULL, NULL},
};

static void print_main_help(FILE *out) {
    fprintf(out,
            "depthprune %s: depth pruning of LLaMA-family models on a cluster\n\n"
            "usage: depthprune COMMAND [options]       (or: mpirun -np N depthprune ...)\n"
            "       depthprune --version | --help\n\ncommands:\n",
            DP_VERSION_STRING);
    for (int i = 0; i < k_n_cmds; i++) fprintf(out, "  %-10s %s\n", k_cmds[i]->name, k_cmds[i]->summary);
    fprintf(out, "\n'depthprune COMMAND --help' describes each command's options.\n");
}

static int opt_width(const dp_cli_opt *o) {
    return (int)(strlen(o->name) + (o->arg ? 1 + strlen(o->arg) : 0));
}

static void print_opt(const dp_cli_opt *o, int w, FILE *out) {
    char left[128];
    snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    const char *d = strstr(o->help, "(default "), *e = d ? strchr(d, ')') : NULL;
    int k = -1; /* "(default KEY)": an unbound flag whose default is a config key's */
    for (int i = 0; e && i < dp_config_schema_len; i++)
        if (strlen(dp_config_schema[i].key) == (size_t)(e - d - 9) &&
            !strncmp(dp_config_schema[i].key, d + 9, e - d - 9))
            k = i;
    if (k >= 0 && dp_config_schema[k].default_value)
        fprintf(out, "  %-*s  %.*s = %s%s", w, left, (int)(e - o->help), o->help, dp_config_schema[k].default_value, e);
    else
        fprintf(out, "  %-*s  %s", w, left, o->help);
    for (int i = 0; o->key && !strstr(o->help, "default") && i < dp_config_schema_len; i++)
        if (!strcmp(dp_config_schema[i].key, o->key) && dp_config_schema[i].default_value)
            fprintf(out, " (default %s)", dp_config_schema[i].default_value); /* the schema's: the one source */
    if (o->key) fprintf(out, " [%s]", o->key);
    fputc('\n', out);
}

static void print_cmd_help(const dp_cmd *c, FILE *out) {
    fprintf(out, "usage: depthprune %s %s\n\n%s\n\noptions (a [key] option sets that config key):\n", c->name, c->usage,
            c->summary);
    int w = 0;
    for (const dp_cli_opt *o = c->opts; o && o->name; o++) w = opt_width(o) > w ? opt_width(o) : w;
    for (const dp_cli_opt *o = k_common_opts; o->name; o++) w = opt_width(o) > w ? opt_width(o) : w;
    for (const dp_cli_opt *o = c->opts; o && o->name; o++) print_opt(o, w, out);
    for (const dp_cli_opt *o = k_common_opts; o->name; o++) {
        if (!c->uses_config && (!strcmp(o->name, "--config") || !strcmp(o->name, "--set"))) continue;
        print_opt(o, w, out);
    }
}

const char *dp_cli_get(const dp_app *app, const dp_cmd *cmd, const char *name) {
    int i = 0;
    for (const dp_cli_opt *o = cmd->opts; o && o->name; o++, i++)
        if (strcmp(o->name, name) == 0) return app->opt_values[i];
    dp_fatal("option %s is not declared by command %s", name, cmd->name);
}

int dp_cli_opt_int(const dp_app *app, const dp_cmd *cmd, const char *name, long long fallback, long long *out,
                   dp_err *err) {
    const char *v = dp_cli_get(app, cmd, name);
    *out = fallback;
    if (!v) return DP_OK;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end) return dp_err_set(err, DP_E_USAGE, "%s expects an integer, got '%s'", name, v);
    *out = x;
    return DP_OK;
}

int dp_cli_opt_double(const dp_app *app, const dp_cmd *cmd, const char *name, double fallback, double *out,
                      dp_err *err) {
    const char *v = dp_cli_get(app, cmd, name);
    *out = fallback;
    if (!v) return DP_OK;
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x)) return dp_err_set(err, DP_E_USAGE, "%s expects a number, got '%s'", name, v);
    *out = x;
    return DP_OK;
}

int dp_cli_flag_i64(const dp_app *app, const dp_cmd *cmd, const char *name, int64_t *v, dp_err *err) {
    long long x = 0;
    int rc = dp_cli_opt_int(app, cmd, name, *v, &x, err);
    if (!rc) *v = x;
    return rc;
}

int dp_cli_flag_int(const dp_app *app, const dp_cmd *cmd, const char *name, int *v, dp_err *err) {
    long long x = 0;
    int rc = dp_cli_opt_int(app, cmd, name, *v, &x, err);
    if (!rc && (x < INT_MIN || x > INT_MAX)) rc = dp_err_set(err, DP_E_USAGE, "%s is out of range", name);
    if (!rc) *v = (int)x;
    return rc;
}

int dp_cli_flag_f64(const dp_app *app, const dp_cmd *cmd, const char *name, double *v, dp_err *err) {
    return dp_cli_opt_double(app, cmd, name, *v, v, err);
}

void dp_cli_flag_str(const dp_app *app, const dp_cmd *cmd, const char *name, const char **v) {
    const char *s = dp_cli_get(app, cmd, name);
    if (s) *v = s;
}

dp_pipe dp_cli_pipe(const dp_app *app) {
    return (dp_pipe){.mpi = &app->mpi, .cfg = &app->cfg, .device = app->device};
}

const char *dp_cli_model_path(const dp_app *app, const dp_cmd *cmd) {
    const char *dir = dp_cli_get(app, cmd, "--model");
    return dir ? dir : dp_config_str(&app->cfg, "model.path");
}

int dp_cli_fail(const dp_app *app, const dp_err *err) {
    if (app->mpi.rank == 0) fprintf(stderr, "depthprune %s: error: %s\n", app->cmd, err->msg);
    return err->code == DP_E_USAGE ? 2 : err->code == DP_E_NONFINITE ? 3 : 1;
}

/* Parses argv[first..] into app->opt_values and the config. */
static int parse_args(dp_app *app, const dp_cmd *cmd, int argc, char **argv, int *want_help, dp_err *err) {
    const char *config_file = NULL;
    int n_sets = 0;
    const char **sets = dp_calloc((size_t)argc + 1, sizeof(char *), "cli");
    int rc = DP_OK;
    for (int i = 0; i < argc && rc == DP_OK; i++) {
        const char *a = argv[i];
        const char *inline_val = NULL;
        char name[64];
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = '\0';
            inline_val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        int found = 0, k = 0;
        for (const dp_cli_opt *o = cmd->opts; o && o->name; o++, k++) {
            if (strcmp(o->name, name) != 0) continue;
            found = 1;
            if (!o->arg) {
                if (inline_val) rc = dp_err_set(err, DP_E_USAGE, "%s takes no value", name);
                app->opt_values[k] = "1";
            } else if (inline_val) {
                app->opt_values[k] = inline_val;
            } else if (i + 1 < argc) {
                app->opt_values[k] = argv[++i];
            } else {
                rc = dp_err_set(err, DP_E_USAGE, "%s needs a value (%s)", name, o->arg);
            }
        }
        if (found) continue;
        const char *val = inline_val;
        int takes_arg = !strcmp(name, "--config") || !strcmp(name, "--set") || !strcmp(name, "--device");
        if (takes_arg && !val) {
            if (i + 1 >= argc) {
                rc = dp_err_set(err, DP_E_USAGE, "%s needs a value", name);
                break;
            }
            val = argv[++i];
        }
        if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
            *want_help = 1;
        } else if (!strcmp(name, "--quiet")) {
            dp_log_set_quiet(1);
        } else if (cmd->uses_config && !strcmp(name, "--config")) {
            config_file = val;
        } else if (cmd->uses_config && !strcmp(name, "--set")) {
            sets[n_sets++] = val;
        } else if (!strcmp(name, "--device")) {
            static char buf[64];
            snprintf(buf, sizeof buf, "device=%s", val);
            sets[n_sets++] = buf;
        } else {
            rc = dp_err_set(err, DP_E_USAGE, "unknown option '%s' (see depthprune %s --help)", a, cmd->name);
        }
    }
    if (rc == DP_OK && !*want_help) {
        if (config_file) rc = dp_config_load_yaml(&app->cfg, config_file, err);
        for (int i = 0; i < n_sets && rc == DP_OK; i++) rc = dp_config_set(&app->cfg, sets[i], "--set", err);
        /* options bound to config keys override the file and --set */
        int k = 0;
        for (const dp_cli_opt *o = cmd->opts; o && o->name && rc == DP_OK; o++, k++) {
            if (!o->key || !app->opt_values[k]) continue;
            size_t n = strlen(o->key) + strlen(app->opt_values[k]) + 8;
            char *kv = dp_malloc(n, "cli");
            snprintf(kv, n, "%s=%s", o->key, o->arg ? app->opt_values[k] : "true");
            rc = dp_config_set(&app->cfg, kv, o->name, err);
            if (rc) err->code = DP_E_USAGE; /* a bad option value is a usage error (exit 2) */
            dp_free(kv);
        }
        if (rc == DP_OK && dp_config_bool(&app->cfg, "run.quiet")) dp_log_set_quiet(1);
    }
    dp_free(sets);
    return rc;
}

int main(int argc, char **argv) {
    if (argc >= 2 && (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version"))) {
        printf("depthprune %s (CUDA backend: %s)\n", DP_VERSION_STRING, dp_cuda_built() ? "built" : "not built");
        return 0;
    }
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_main_help(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const dp_cmd *cmd = NULL;
    for (int i = 0; i < k_n_cmds; i++)
        if (!strcmp(argv[1], k_cmds[i]->name)) cmd = k_cmds[i];
    if (!cmd) {
        fprintf(stderr, "depthprune: unknown command '%s'\n\n", argv[1]);
        print_main_help(stderr);
        return 2;
    }

    dp_app app;
    memset(&app, 0, sizeof app);
    app.cmd = cmd->name;
    dp_mpi_init(&argc, &argv, &app.mpi);
    dp_config_init(&app.cfg, dp_config_schema, dp_config_schema_len);

    dp_err err;
    dp_err_clear(&err);
    int want_help = 0, code = 0;
    /* every rank parses the same arguments, so every rank reaches the same verdict */
    int rc = parse_args(&app, cmd, argc - 2, argv + 2, &want_help, &err);
    if (rc == DP_OK && want_help) {
        if (app.mpi.rank == 0) print_cmd_help(cmd, stdout);
    } else if (rc != DP_OK) {
        code = dp_cli_fail(&app, &err);
    } else if ((rc = dp_device_parse(dp_config_str(&app.cfg, "device"), &app.device, &err)) != DP_OK) {
        code = dp_cli_fail(&app, &err);
    } else if (app.device == DP_DEVICE_CUDA && cmd->cpu_only) {
        dp_err_set(&err, DP_E_USAGE,
                   "'depthprune %s' computes on the CPU reference engine (it is what other devices "
                   "are checked against); drop --device cuda",
                   cmd->name);
        code = dp_cli_fail(&app, &err);
    } else if (!cmd->plans_only && (rc = dp_backend_check(dp_device_name(app.device), &err)) != DP_OK) {
        code = dp_cli_fail(&app, &err); /* after the config was checked, before any work */
    } else {
        /* the watchdog: a rank stuck waiting on a stopped or lost peer leaves by itself */
        long long wd = dp_config_int(&app.cfg, "run.watchdog");
        const char *wenv = getenv("DP_WATCHDOG");
        if (wenv && *wenv) wd = atoll(wenv);
        if (app.mpi.size > 1 && wd > 0 && (rc = dp_watchdog_start((double)wd, &err)) != DP_OK)
            code = dp_cli_fail(&app, &err);
        else
            code = cmd->run(&app);
        if (code == 0 && app.mpi.rank == 0) dp_stop_mark();
    }
    dp_config_free(&app.cfg);
    if (dp_h5_abandoned()) {
        /* a shared HDF5 file failed mid-write: closing it (also inside
         * MPI_Finalize) would hang, so leave now; the error is printed */
        fflush(stdout);
        fflush(stderr);
        _exit(code ? code : 1);
    }
    dp_mpi_finalize(&app.mpi);
    return code;
}
