/* The score stage: draws the calibration set (rank 0, broadcast), runs or
 * reuses the dense calibration forward (RUNDIR/calib.h5), then scores every
 * block by the requested criteria (RUNDIR/scores.h5, scores.json, one plot
 * per criterion). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* RUNDIR/scores_CRIT.png: each criterion's score per block (gnuplot), with
 * the bootstrap's 95% interval as error bars when one was computed; the
 * plotted numbers stay beside it in scores_CRIT.dat. */
static void plot_scores(const char *run, const char *json_path) {
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(json_path, &text, &n, &e)) return;
    cJSON *root = cJSON_ParseWithLength(text, n);
    dp_free(text);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(root, "criteria")) {
        char name[96], script[2048];
        snprintf(name, sizeof name, "scores_%s.dat", c->string);
        char *dat = dp_path_join(run, name);
        snprintf(name, sizeof name, "scores_%s.png", c->string);
        char *png = dp_path_join(run, name);
        const cJSON *boot = cJSON_GetObjectItemCaseSensitive(c, "bootstrap");
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(boot, "lo95");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(boot, "hi95");
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(c, "scores");
        int bars = cJSON_IsArray(lo) && cJSON_IsArray(hi) && cJSON_GetArraySize(lo) == cJSON_GetArraySize(sc) &&
                   cJSON_GetArraySize(hi) == cJSON_GetArraySize(sc);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(boot, "replicates");
        int reps = cJSON_IsNumber(r) ? r->valueint : 0;
        /* PPL without a block spans decades (the first block is often 10-100x) */
        const char *logy = strncmp(c->string, "ppl", 3) == 0 ? "set logscale y\n" : "";
        FILE *f = fopen(dat, "w");
        for (int i = 0; f && i < cJSON_GetArraySize(sc); i++) {
            fprintf(f, "%d %.9g", i, cJSON_GetArrayItem(sc, i)->valuedouble);
            if (bars)
                fprintf(f, " %.9g %.9g", cJSON_GetArrayItem(lo, i)->valuedouble,
                        cJSON_GetArrayItem(hi, i)->valuedouble);
            fputc('\n', f);
        }
        if (f) {
            fclose(f);
            if (bars)
                snprintf(script, sizeof script,
                         "set terminal pngcairo size 800,450\nset output '%s'\nset xlabel 'block'\n"
                         "set ylabel '%s score'\nset style fill solid 0.6\nset boxwidth 0.8\nset grid y\n"
                         "set key top right\n%splot '%s' using 1:2 with boxes title 'score', '' using 1:2:3:4 "
                         "with yerrorbars pt 0 lc rgb 'black' title 'bootstrap 95%% interval (%d replicates)'\n",
                         png, c->string, logy, dat, reps);
            else
                snprintf(script, sizeof script,
                         "set terminal pngcairo size 800,450\nset output '%s'\nset xlabel 'block'\n"
                         "set ylabel '%s score'\nset style fill solid 0.6\nset boxwidth 0.8\nset grid y\n"
                         "%splot '%s' using 1:2 with boxes notitle\n",
                         png, c->string, logy, dat);
            dp_gnuplot(script, png);
        }
        dp_free(dat);
        dp_free(png);
    }
    cJSON_Delete(root);
}

void dp_pipe_report_agreement(const char *run, const char *json_path) {
    cJSON *root = dp_pipe_read_json(json_path);
    const cJSON *crit = cJSON_GetObjectItemCaseSensitive(root, "criteria"), *c;
    const cJSON *tau = cJSON_GetObjectItemCaseSensitive(root, "kendall_tau"),
                *ov = cJSON_GetObjectItemCaseSensitive(root, "top_k_overlap"),
                *k = cJSON_GetObjectItemCaseSensitive(root, "top_k");
    int n = cJSON_GetArraySize(crit);
    if (n < 2 || (!tau && !ov)) {
        cJSON_Delete(root);
        return;
    }
    const char *names[16];
    int i = 0;
    cJSON_ArrayForEach(c, crit) if (i < 16) names[i++] = c->string;
    n = i;
    dp_buf md = {0}, dat = {0};
    char t[512];
    for (int table = 0; table < 2; table++) {
        const cJSON *src = table ? ov : tau;
        if (!src) continue;
        if (table)
            snprintf(t, sizeof t, "\nOverlap of the %d blocks each criterion removes first (fraction):\n\n| |",
                     cJSON_IsNumber(k) ? k->valueint : 0);
        else
            snprintf(t, sizeof t, "Kendall's tau-b between the criteria's block scores (1: the same ranking):\n\n| |");
        dp_buf_puts(&md, t);
        for (int a = 0; a < n; a++) snprintf(t, sizeof t, " %s |", names[a]), dp_buf_puts(&md, t);
        dp_buf_puts(&md, "\n|---|");
        for (int a = 0; a < n; a++) dp_buf_puts(&md, "---|");
        dp_buf_puts(&md, "\n");
        for (int a = 0; a < n; a++) {
            snprintf(t, sizeof t, "| %s |", names[a]);
            dp_buf_puts(&md, t);
            for (int b = 0; b < n; b++) {
                char key[160];
                snprintf(key, sizeof key, "%s/%s", names[a < b ? a : b], names[a < b ? b : a]);
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(src, key);
                if (a == b)
                    snprintf(t, sizeof t, " 1 |");
                else if (cJSON_IsNumber(v))
                    snprintf(t, sizeof t, " %.2f |", v->valuedouble);
                else
                    snprintf(t, sizeof t, " %s |", table ? "" : "(same scores)");
                dp_buf_puts(&md, t);
                if (!table) {
                    snprintf(t, sizeof t, "%d %d %.6f\n", a, b,
                             a == b              ? 1.0
                             : cJSON_IsNumber(v) ? v->valuedouble
                                                 : 1.0);
                    dp_buf_puts(&dat, t);
                }
            }
            dp_buf_puts(&md, "\n");
            if (!table) dp_buf_puts(&dat, "\n");
        }
    }
    char *mp = dp_path_join(run, "agreement.md"), *dp = dp_path_join(run, "agreement.dat"),
         *png = dp_path_join(run, "agreement.png");
    dp_err e;
    if (!dp_write_file_atomic(mp, md.p, md.n, &e)) {
        fputs(md.p, stdout);
        printf("agreement: %s\n", mp);
    }
    if (dat.p && !dp_write_file_atomic(dp, dat.p, dat.n, &e)) {
        dp_buf sc = {0};
        snprintf(t, sizeof t,
                 "set terminal pngcairo size 700,600\nset output '%s'\nset title \"Kendall's tau between criteria\"\n"
                 "set cbrange [-1:1]\nset palette defined (-1 'blue', 0 'white', 1 'red')\nset xrange [-0.5:%d.5]\n"
                 "set yrange [%d.5:-0.5]\nset xtics (",
                 png, n - 1, n - 1);
        dp_buf_puts(&sc, t);
        for (int a = 0; a < n; a++) snprintf(t, sizeof t, "%s'%s' %d", a ? ", " : "", names[a], a), dp_buf_puts(&sc, t);
        dp_buf_puts(&sc, ")\nset ytics (");
        for (int a = 0; a < n; a++) snprintf(t, sizeof t, "%s'%s' %d", a ? ", " : "", names[a], a), dp_buf_puts(&sc, t);
        snprintf(
            t, sizeof t,
            ")\nplot '%s' using 1:2:3 with image notitle, '' using 1:2:(sprintf('%%.2f', $3)) with labels notitle\n",
            dp);
        dp_buf_puts(&sc, t);
        dp_gnuplot(sc.p, png);
        dp_free(sc.p);
    }
    dp_free(mp);
    dp_free(dp);
    dp_free(png);
    dp_free(md.p);
    dp_free(dat.p);
    cJSON_Delete(root);
}

void dp_score_job_init(const dp_config *c, dp_score_job *j) {
    *j = (dp_score_job){.model = dp_config_str(c, "model.path"),
                        .calib = dp_config_str(c, "calib.path"),
                        .field = dp_config_str(c, "calib.field"),
                        .run = dp_config_str(c, "run.dir"),
                        .criteria = dp_config_str(c, "score.criteria"),
                        .samples = dp_config_int(c, "calib.samples"),
                        .seq_len = dp_config_int(c, "calib.seq_len"),
                        .batch = dp_config_int(c, "score.batch"),
                        .bootstrap = dp_config_int(c, "score.bootstrap"),
                        .seed = (uint64_t)dp_config_int(c, "run.seed"),
                        .protect_first = (int)dp_config_int(c, "score.protect_first"),
                        .protect_last = (int)dp_config_int(c, "score.protect_last"),
                        .ratio = dp_config_float(c, "score.ratio"),
                        .units = !strcmp(dp_config_str(c, "score.units"), "sublayer")};
}

int dp_pipe_score(const dp_pipe *p, const dp_score_job *j, dp_err *err) {
    const dp_mpi *mpi = p->mpi;
    int rc = DP_OK;
    if (!j->model)
        rc = dp_err_set(err, DP_E_USAGE, "--model DIR is required");
    else if (!j->calib)
        rc = dp_err_set(err, DP_E_USAGE, "--calib FILE is required");
    else if (j->samples < 1 || j->seq_len < 2 || j->batch < 1 || j->bootstrap < 0 || j->samples > 1000000 ||
             j->seq_len > 1000000)
        rc = dp_err_set(err, DP_E_USAGE, "--samples >= 1, --seq-len >= 2, --batch >= 1 and --bootstrap >= 0");
    /* the criteria list */
    char *crit_buf = dp_strdup(j->criteria ? j->criteria : "", "score");
    const char *crit[16];
    int n_crit = 0;
    for (char *save = NULL, *tok = strtok_r(crit_buf, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save)) {
        if (n_crit == 16)
            rc = dp_err_set(err, DP_E_USAGE, "at most 16 criteria");
        else
            crit[n_crit++] = tok;
    }
    if (!rc && n_crit == 0) rc = dp_err_set(err, DP_E_USAGE, "--criterion is empty");
    if (rc) {
        dp_free(crit_buf);
        return rc;
    }
    dp_stop_install_signals();
    if (mpi->rank == 0) rc = dp_mkdir_p(j->run, err);
    rc = dp_mpi_agree(mpi, rc, err);
    dp_llama m;
    memset(&m, 0, sizeof m);
    if (!rc) rc = dp_mpi_agree(mpi, dp_pipe_load_frozen(p, j->model, &m, err), err);
    if (!rc && j->seq_len > m.cfg.max_position_embeddings)
        rc = dp_err_set(err, DP_E_RANGE, "--seq-len %lld exceeds max_position_embeddings %lld", (long long)j->seq_len,
                        (long long)m.cfg.max_position_embeddings);
    uint64_t mhash = rc ? 0 : dp_llama_hash(&m);
    if (!rc)
        rc = dp_pipe_calibrate(p, j->model, &m, mhash, j->calib, j->field, j->samples, j->seq_len, j->seed, j->batch,
                               j->run, err);
    dp_score_opts so = {.run_dir = j->run,
                        .model_hash = mhash,
                        .batch = j->batch,
                        .protect_first = j->protect_first,
                        .protect_last = j->protect_last,
                        .bootstrap = j->bootstrap,
                        .ratio = j->ratio,
                        .progress = !dp_config_bool(p->cfg, "run.quiet"),
                        .fault_kill_after_round = j->fault_kill_after_round,
                        .stop_on_signal = 1,
                        .device = p->device,
                        .stream_weights = dp_pipe_stream_weights(p),
                        .units = j->units};
    if (!rc) rc = dp_score(mpi, &m, crit, n_crit, &so, err);
    if (rc == DP_E_STOPPED && mpi->rank == 0)
        printf("score: stopped by a signal; finished candidates are kept in %s/scores.progress.h5, run the same "
               "command to continue\n",
               j->run);
    if (!rc && mpi->rank == 0) {
        char *jp = dp_path_join(j->run, "scores.json");
        printf("scores: %s\n", jp);
        plot_scores(j->run, jp);
        dp_pipe_report_agreement(j->run, jp);
        dp_free(jp);
    }
    dp_free(crit_buf);
    dp_llama_free(&m);
    return rc;
}

/* ---- agreement between rankings of several score runs ---- */

typedef struct {
    char label[200];
    double *score;
    int *order, n_order;
} ranking;

int dp_pipe_agreement(const char *files, const char *criteria, int top_k, const char *out_md, dp_err *err) {
    char *fbuf = dp_strdup(files, "agreement"), *cbuf = criteria ? dp_strdup(criteria, "agreement") : NULL;
    ranking r[64];
    int n = 0, U = -1, rc = DP_OK, file_k = 0;
    char unit[16] = "", mh[32] = "";
    for (char *sv = NULL, *f = strtok_r(fbuf, ",", &sv); f && !rc; f = strtok_r(NULL, ",", &sv)) {
        cJSON *root = dp_pipe_read_json(f);
        const cJSON *crit = cJSON_GetObjectItemCaseSensitive(root, "criteria"),
                    *h = cJSON_GetObjectItemCaseSensitive(root, "model_hash"),
                    *un = cJSON_GetObjectItemCaseSensitive(root, "unit"),
                    *k = cJSON_GetObjectItemCaseSensitive(root, "top_k");
        if (!cJSON_IsObject(crit) || !cJSON_IsString(h)) {
            rc = dp_err_set(err, DP_E_FORMAT, "%s: not a scores.json (no criteria / model_hash)", f);
            cJSON_Delete(root);
            break;
        }
        const char *u = cJSON_IsString(un) ? un->valuestring : "block";
        if (!*mh) {
            snprintf(mh, sizeof mh, "%s", h->valuestring);
            snprintf(unit, sizeof unit, "%s", u);
        } else if (strcmp(mh, h->valuestring)) {
            rc = dp_err_set(err, DP_E_MISMATCH, "%s scores a different model (model hash %s, the first file's %s)", f,
                            h->valuestring, mh);
        } else if (strcmp(unit, u)) {
            rc = dp_err_set(err, DP_E_MISMATCH, "%s scores %s units, the first file %s units", f, u, unit);
        }
        if (!file_k && cJSON_IsNumber(k)) file_k = k->valueint;
        char *dir = dp_path_dirname(f);
        const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
        const cJSON *c;
        cJSON_ArrayForEach(c, crit) {
            if (rc) break;
            if (cbuf) { /* only the asked criteria */
                char pat[96], list[1024];
                snprintf(pat, sizeof pat, ",%s,", c->string);
                snprintf(list, sizeof list, ",%s,", criteria);
                if (!strstr(list, pat)) continue;
            }
            const cJSON *sc = cJSON_GetObjectItemCaseSensitive(c, "scores"),
                        *od = cJSON_GetObjectItemCaseSensitive(c, "order");
            int ns = cJSON_GetArraySize(sc);
            if (U < 0) U = ns;
            if (!cJSON_IsArray(sc) || !cJSON_IsArray(od) || ns != U) {
                rc = dp_err_set(err, DP_E_FORMAT, "%s: criterion %s has %d scores, expected %d", f, c->string, ns, U);
                break;
            }
            if (n == 64) {
                rc = dp_err_set(err, DP_E_USAGE, "at most 64 rankings");
                break;
            }
            ranking *x = &r[n++];
            snprintf(x->label, sizeof x->label, "%s:%s", base, c->string);
            x->score = dp_malloc((size_t)U * sizeof(double), "agreement");
            x->n_order = cJSON_GetArraySize(od);
            x->order = dp_malloc((size_t)(x->n_order + 1) * sizeof(int), "agreement");
            for (int i = 0; i < U; i++) x->score[i] = cJSON_GetArrayItem(sc, i)->valuedouble;
            for (int i = 0; i < x->n_order; i++) x->order[i] = cJSON_GetArrayItem(od, i)->valueint;
        }
        dp_free(dir);
        cJSON_Delete(root);
    }
    if (!rc && n < 2)
        rc = dp_err_set(err, DP_E_USAGE, "%d ranking(s) found: give two or more scores.json files or criteria", n);
    int k = top_k > 0 ? top_k : file_k > 0 ? file_k : (int)lround(0.2 * U);
    if (!rc && (k < 1 || k > U)) rc = dp_err_set(err, DP_E_USAGE, "--top-k %d is outside 1..%d", k, U);
    if (!rc) {
        dp_buf md = {0};
        char t[512];
        for (int table = 0; table < 2; table++) {
            if (table)
                snprintf(t, sizeof t, "\nOverlap of the %d %s each ranking removes first (fraction):\n\n| |", k,
                         strcmp(unit, "sublayer") ? "blocks" : "sub-layers");
            else
                snprintf(t, sizeof t, "Kendall's tau-b between the rankings' scores (%d %s units):\n\n| |", U, unit);
            dp_buf_puts(&md, t);
            for (int a = 0; a < n; a++) dp_buf_puts(&md, " "), dp_buf_puts(&md, r[a].label), dp_buf_puts(&md, " |");
            dp_buf_puts(&md, "\n|---|");
            for (int a = 0; a < n; a++) dp_buf_puts(&md, "---|");
            dp_buf_puts(&md, "\n");
            for (int a = 0; a < n; a++) {
                dp_buf_puts(&md, "| ");
                dp_buf_puts(&md, r[a].label);
                dp_buf_puts(&md, " |");
                for (int b = 0; b < n; b++) {
                    double v;
                    if (table) {
                        int same = 0;
                        for (int i = 0; i < k && i < r[a].n_order; i++)
                            for (int j = 0; j < k && j < r[b].n_order; j++) same += r[a].order[i] == r[b].order[j];
                        v = (double)same / k;
                    } else {
                        v = dp_kendall_tau_b(r[a].score, r[b].score, U);
                    }
                    snprintf(t, sizeof t, " %.3f |", v);
                    dp_buf_puts(&md, t);
                }
                dp_buf_puts(&md, "\n");
            }
        }
        fputs(md.p, stdout);
        if (out_md) {
            rc = dp_write_file_atomic(out_md, md.p, md.n, err);
            if (!rc) printf("agreement: %s\n", out_md);
        }
        dp_free(md.p);
    }
    for (int a = 0; a < n; a++) dp_free(r[a].score), dp_free(r[a].order);
    dp_free(fbuf);
    dp_free(cbuf);
    return rc;
}
