/* The training log: one JSON line per step (and per validation) in
 * RUNDIR/train_log.jsonl, truncated to the resumed iteration, and its plot. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void dp_trainlog_truncate(const char *run, int64_t it) {
    char *p = dp_path_join(run, "train_log.jsonl");
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    if (dp_read_file(p, &text, &n, &e) == DP_OK) {
        dp_buf out = {0};
        size_t pos = 0;
        while (pos < n) {
            char *nl = memchr(text + pos, '\n', n - pos);
            size_t len = nl ? (size_t)(nl - (text + pos)) + 1 : n - pos;
            long long step = -1;
            if (nl && sscanf(text + pos, "{\"step\":%lld", &step) == 1 && step <= it) dp_buf_put(&out, text + pos, len);
            pos += len;
        }
        dp_write_file_atomic(p, out.p ? out.p : "", out.n, &e);
        dp_free(out.p);
    }
    dp_free(text);
    dp_free(p);
}

void dp_trainlog_line(const char *run, const char *line) {
    char *p = dp_path_join(run, "train_log.jsonl");
    FILE *f = fopen(p, "a");
    if (f) {
        fputs(line, f);
        fclose(f);
    }
    dp_free(p);
}

/* loss.png from the log (gnuplot, when installed). */
void dp_trainlog_plot(const char *run) {
    char *logp = dp_path_join(run, "train_log.jsonl"), *dat = dp_path_join(run, "loss.dat"),
         *vdat = dp_path_join(run, "val_loss.dat"), *png = dp_path_join(run, "loss.png");
    char *text = NULL;
    size_t n = 0;
    dp_err e;
    FILE *f = fopen(dat, "w"), *fv = fopen(vdat, "w");
    int n_val = 0;
    if (f && fv && dp_read_file(logp, &text, &n, &e) == DP_OK) {
        for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
            long long s;
            double x;
            if (sscanf(line, "{\"step\":%lld,\"val_loss\":%lf", &s, &x) == 2)
                fprintf(fv, "%lld %.9g\n", s, x), n_val++;
            else if (sscanf(line, "{\"step\":%lld,\"epoch\":%*f,\"loss\":%lf", &s, &x) == 2)
                fprintf(f, "%lld %.9g\n", s, x);
        }
    }
    if (f) fclose(f);
    if (fv) fclose(fv);
    dp_free(text);
    char script[8192];
    snprintf(script, sizeof script,
             "set terminal pngcairo size 900,540\nset output '%s'\nset xlabel 'step'\nset ylabel 'loss'\n"
             "set grid\nplot '%s' using 1:2 with lines title 'train loss'%s%s%s\n",
             png, dat, n_val ? ", '" : "", n_val ? vdat : "",
             n_val ? "' using 1:2 with linespoints title 'validation loss'" : "");
    dp_gnuplot(script, png);
    dp_free(logp);
    dp_free(dat);
    dp_free(vdat);
    dp_free(png);
}
