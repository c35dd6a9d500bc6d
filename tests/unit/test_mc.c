/* Zero-shot task converters against the lm-evaluation-harness prompts
 * (golden strings on handcrafted rows; the HellaSwag row's expectations come
 * from the harness's preprocess() run in Python), bad rows, and acc /
 * acc_norm / stderr computed by hand. */
#include <math.h>
#include <string.h>

#include "../test.h"
#include "depthprune/mc.h"

static dp_mc_doc parse_ok(const char *task, const char *row) {
    dp_mc_doc d;
    dp_err err;
    int rc = dp_mc_parse(task, row, strlen(row), &d, &err);
    CHECK_MSG(rc == DP_OK, "%s: %s", task, err.msg);
    if (rc) memset(&d, 0, sizeof d);
    return d;
}

static void expect(const dp_mc_doc *d, int i, const char *ctx, const char *cont) {
    CHECK_MSG(i < d->n && !strcmp(d->context[i], ctx), "context %d: got '%s', want '%s'", i,
              i < d->n ? d->context[i] : "", ctx);
    CHECK_MSG(i < d->n && !strcmp(d->cont[i], cont), "continuation %d: got '%s', want '%s'", i,
              i < d->n ? d->cont[i] : "", cont);
}

static void bad(const char *task, const char *row, int code, const char *needle) {
    dp_mc_doc d;
    dp_err err;
    dp_err_clear(&err);
    int rc = dp_mc_parse(task, row, strlen(row), &d, &err);
    CHECK_MSG(rc == code && strstr(err.msg, needle), "%s row %s: rc %d '%s'", task, row, rc, err.msg);
}

int main(void) {
    dp_mc_doc d;
    d = parse_ok("boolq", "{\"passage\": \"Cats purr.\", \"question\": \"do cats purr\", \"answer\": true}");
    expect(&d, 0, "Cats purr.\nQuestion: do cats purr?\nAnswer:", " no");
    expect(&d, 1, "Cats purr.\nQuestion: do cats purr?\nAnswer:", " yes");
    CHECK_EQ_INT(d.label, 1);
    dp_mc_doc_free(&d);
    d = parse_ok("piqa",
                 "{\"goal\": \"Open a jar\", \"sol1\": \"Twist the lid.\", \"sol2\": \"Eat the lid.\", \"label\": 0}");
    expect(&d, 1, "Question: Open a jar\nAnswer:", " Eat the lid.");
    CHECK_EQ_INT(d.label, 0);
    dp_mc_doc_free(&d);
    d = parse_ok(
        "hellaswag",
        "{\"activity_label\": \"Home and Garden\", \"ctx_a\": \"[header] How to grow tomatoes [title] Pick a "
        "sunny spot.\", \"ctx_b\": \"you SHOULD water [step] daily\", \"endings\": [\" Water them [substeps] at "
        "night.  \", \"Use a [title] shovel.\"], \"label\": \"1\"}");
    expect(&d, 0, "Home and Garden: How to grow tomatoes. Pick a sunny spot. You should water daily",
           " Water them at night.");
    expect(&d, 1, "Home and Garden: How to grow tomatoes. Pick a sunny spot. You should water daily",
           " Use a. shovel.");
    CHECK_EQ_INT(d.label, 1);
    CHECK(d.norm_len[0] == (double)strlen("Water them at night."));
    dp_mc_doc_free(&d);
    d = parse_ok("winogrande", "{\"sentence\": \"The trophy did not fit in the suitcase because the _ was too big. \", "
                               "\"option1\": \"trophy\", \"option2\": \"suitcase\", \"answer\": \"1\"}");
    expect(&d, 0, "The trophy did not fit in the suitcase because the trophy", " was too big.");
    expect(&d, 1, "The trophy did not fit in the suitcase because the suitcase", " was too big.");
    CHECK_EQ_INT(d.label, 0);
    dp_mc_doc_free(&d);
    d = parse_ok("arc_easy",
                 "{\"question\": \"Which is a gas?\", \"choices\": {\"text\": [\"ice\", \"steam\"], \"label\": "
                 "[\"A\", \"B\"]}, \"answerKey\": \"B\"}");
    expect(&d, 0, "Question: Which is a gas?\nAnswer:", " ice");
    CHECK_EQ_INT(d.label, 1);
    dp_mc_doc_free(&d);
    d = parse_ok("arc_challenge", "{\"question\": \"Pick 3\", \"choices\": {\"text\": [\"one\", \"two\", \"three\"], "
                                  "\"label\": [\"1\", \"2\", \"3\"]}, \"answerKey\": \"3\"}");
    CHECK_EQ_INT(d.label, 2);
    dp_mc_doc_free(&d);
    d = parse_ok("openbookqa", "{\"question_stem\": \"The sun is a\", \"choices\": {\"text\": [\"star\", \"moon\"], "
                               "\"label\": [\"A\", \"B\"]}, \"answerKey\": \" A\"}");
    expect(&d, 0, "The sun is a", " star");
    CHECK_EQ_INT(d.label, 0);
    dp_mc_doc_free(&d);
    d = parse_ok("generic", "{\"context\": \"2 + 2 =\", \"choices\": [\"4\", \"five\"], \"label\": 0}");
    expect(&d, 1, "2 + 2 =", " five");
    CHECK(d.norm_len[1] == 4.0);
    dp_mc_doc_free(&d);
    d = parse_ok("generic", "{\"contexts\": [\"A cat\", \"A stone\"], \"continuation\": \"meows.\", \"label\": 0}");
    expect(&d, 1, "A stone", " meows.");
    dp_mc_doc_free(&d);
    /* Unicode characters, not bytes, for acc_norm */
    d = parse_ok("generic", "{\"context\": \"x\", \"choices\": [\"\\u00e9t\\u00e9\", \"ab\"], \"label\": 1}");
    CHECK(d.norm_len[0] == 3.0);
    dp_mc_doc_free(&d);

    bad("generic", "{\"context\": \"c\", \"choices\": [\"a\"], \"label\": 1}", DP_E_RANGE, "label 1 outside");
    bad("generic", "{\"context\": \"c\", \"choices\": [], \"label\": 0}", DP_E_FORMAT, "empty choices");
    bad("generic", "{\"context\": \"c\", \"label\": 0}", DP_E_FORMAT, "expected context");
    bad("piqa", "{\"goal\": \"g\"}", DP_E_FORMAT, "piqa: expected");
    bad("winogrande", "{\"sentence\": \"no blank\", \"option1\": \"a\", \"option2\": \"b\", \"answer\": \"1\"}",
        DP_E_FORMAT, "no '_'");
    bad("arc_easy", "{\"question\": \"q\", \"choices\": {\"text\": [\"a\"], \"label\": [\"A\"]}, \"answerKey\": \"E\"}",
        DP_E_RANGE, "answerKey 'E'");
    bad("boolq", "[1, 2]", DP_E_FORMAT, "not a JSON object");

    /* metrics by hand: 4 docs of 2 choices; lengths 1 and 4 characters */
    dp_mc_doc docs[4];
    dp_mc_req req[8];
    int64_t first[4];
    double ll[8] = {-1.0, -2.0,  /* acc 0, norm: -1/1 vs -2/4 -> 1 */
                    -3.0, -1.0,  /* acc 1, norm: -3 vs -0.25 -> 1 */
                    -2.0, -2.0,  /* tie: acc 0 (first maximum), norm 1 */
                    -1.0, -8.0}; /* acc 0, norm: -1 vs -2 -> 0 */
    int labels[4] = {0, 1, 1, 1};
    for (int i = 0; i < 4; i++) {
        d = parse_ok("generic", "{\"context\": \"c\", \"choices\": [\"a\", \"bbbb\"], \"label\": 0}");
        d.label = labels[i];
        docs[i] = d;
        first[i] = 2 * i;
        for (int c = 0; c < 2; c++) req[2 * i + c] = (dp_mc_req){.loglik = ll[2 * i + c]};
    }
    dp_mc_metrics mt;
    dp_mc_score(docs, 4, req, first, &mt);
    /* acc: 1,1,0,0 -> 0.5; acc_norm: 0,1,1,0 -> 0.5; stderr sqrt(1/3)/2 */
    CHECK(fabs(mt.acc - 0.5) < 1e-15 && fabs(mt.acc_norm - 0.5) < 1e-15);
    CHECK_MSG(fabs(mt.acc_stderr - sqrt(1.0 / 3.0) / 2.0) < 1e-15, "acc stderr %.17g", mt.acc_stderr);
    for (int i = 0; i < 4; i++) dp_mc_doc_free(&docs[i]);
    CHECK(!strcmp(dp_mc_task_metric("hellaswag"), "acc_norm") && !strcmp(dp_mc_task_metric("piqa"), "acc"));
    return dp_test_failures ? 1 : 0;
}
