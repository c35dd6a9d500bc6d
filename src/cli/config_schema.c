/* The keys a depthprune run config may hold, with the papers' defaults
 * (Shortened LLaMA / LLM-Pruner: 10 x 128 calibration samples, seed 1234,
 * PPL eval at sequence length 128 with batch 4). A key is added here when
 * the stage that reads it lands, so that every accepted key does something. */
#include "depthprune/config.h"

const dp_cfg_spec dp_config_schema[] = {
    {"run.dir", DP_CFG_STRING, "runs/default", NULL, "run directory for every output"},
    {"run.seed", DP_CFG_INT, "1234", NULL, "seed for every random choice"},
    {"run.quiet", DP_CFG_BOOL, "false", NULL, "silence progress logging"},
    {"device", DP_CFG_STRING, "cpu", "cpu,cuda", "compute backend"},
    {"model.path", DP_CFG_STRING, NULL, NULL, "HF model directory"},
    {"tokenizer.add_bos", DP_CFG_STRING, "auto", "auto,true,false",
     "BOS policy: auto follows tokenizer_config.json / the post-processor"},
    {"eval.text", DP_CFG_STRING, NULL, NULL, "text file for perplexity"},
    {"eval.seq_len", DP_CFG_INT, "128", NULL, "perplexity window length"},
    {"eval.batch", DP_CFG_INT, "4", NULL, "windows per forward batch"},
    {"eval.bos_per_window", DP_CFG_BOOL, "false", NULL, "prepend BOS to every window"},
    {"calib.path", DP_CFG_STRING, NULL, NULL, "calibration text or JSONL (e.g. BookCorpus rows)"},
    {"calib.field", DP_CFG_STRING, NULL, NULL, "JSONL field with the text (default text)"},
    {"calib.samples", DP_CFG_INT, "10", NULL, "calibration samples"},
    {"calib.seq_len", DP_CFG_INT, "128", NULL, "tokens per calibration sample"},
    {"score.criteria", DP_CFG_STRING, "ppl", NULL, "comma-separated criteria: ppl, taylor, magnitude, magnitude-l2, bi (+ for protection)"},
    {"score.batch", DP_CFG_INT, "10", NULL, "calibration samples per forward"},
    {"score.protect_first", DP_CFG_INT, "0", NULL, "first blocks kept out of the removal order"},
    {"score.protect_last", DP_CFG_INT, "0", NULL, "last blocks kept out of the removal order"},
    {"score.bootstrap", DP_CFG_INT, "0", NULL, "bootstrap replicates over calibration samples"},
    {"score.ratio", DP_CFG_FLOAT, "0.2", NULL, "fraction of blocks removed (bootstrap p_removed)"},
    {"export.max_shard_bytes", DP_CFG_INT, "5000000000", NULL, "safetensors shard size limit"},
    {"export.dtype", DP_CFG_STRING, "auto", "auto,F32,F16,BF16", "dtype of exported weights"},
};
const int dp_config_schema_len = (int)(sizeof dp_config_schema / sizeof dp_config_schema[0]);
