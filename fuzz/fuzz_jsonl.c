/* libFuzzer target: the JSON/JSONL readers of user data: zero-shot task
 * rows for every converter (dp_mc_parse) and, when DP_FUZZ_TOKENIZER names
 * a tokenizer directory, Alpaca records and JSONL text (dp_data_load). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "depthprune/mc.h"
#include "depthprune/tokenizer.h"
#include "depthprune/train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static dp_tokenizer *g_tok;
static int g_init;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dp_err err;
    if (!g_init) {
        g_init = 1;
        const char *dir = getenv("DP_FUZZ_TOKENIZER");
        if (dir && dp_tokenizer_load(dir, &g_tok, &err) != DP_OK) g_tok = NULL;
    }
    static const char *tasks[] = {"boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "openbookqa", "generic"};
    const char *js = (const char *)data;
    for (size_t k = 0; k < sizeof tasks / sizeof tasks[0]; k++) {
        dp_mc_doc doc;
        memset(&doc, 0, sizeof doc);
        if (dp_mc_parse(tasks[k], js, size, &doc, &err) == DP_OK) dp_mc_doc_free(&doc);
    }
    if (g_tok) {
        static const char *fmts[] = {"alpaca", "text"};
        for (int k = 0; k < 2; k++) {
            dp_data_opts o;
            memset(&o, 0, sizeof o);
            o.cutoff = 64;
            o.add_eos = 1;
            o.add_bos = -1;
            dp_train_data d;
            memset(&d, 0, sizeof d);
            if (dp_data_load(g_tok, fmts[k], js, size, &o, &d, &err) == DP_OK) dp_data_free(&d);
        }
    }
    return 0;
}
