/* What the pipeline's stage files share and nothing else needs. */
#ifndef DEPTHPRUNE_PIPELINE_INTERNAL_H
#define DEPTHPRUNE_PIPELINE_INTERNAL_H

#include "depthprune/pipeline.h"
#include "depthprune/safetensors.h"

/* alpaca for .json/.jsonl, else text */
const char *dp_pipe_data_format(const char *data_path);
/* Collective: rank 0 tokenizes, every rank receives the examples. */
int dp_pipe_load_data(const dp_pipe *p, const char *tok_dir, const char *path, const char *format,
                      const dp_data_opts *dopt, dp_train_data *d, dp_err *err);
/* Tokenization of training examples (train.cutoff, train.*, tokenizer.add_bos). */
int dp_pipe_data_opts(const dp_pipe *p, dp_data_opts *o, dp_err *err);
/* Training options from the config (train.*, lora.*, run.seed); the
 * teacher (online or cache) sets KD's default weight; no_kd forces 0. */
int dp_pipe_train_opts(const dp_pipe *p, const char *teacher_dir, const char *cache, int no_kd, dp_train_opts *o,
                       int64_t *val_size, dp_err *err);
/* One "NAME=FILE" item into fresh strings. */
int dp_pipe_split_item(const char *item, char **name, char **path, dp_err *err);
/* a file's content hash (0 if unreadable) */
uint64_t dp_pipe_file_hash(const char *dir, const char *name);
/* JSON file -> object (NULL if unreadable or not JSON) */
struct cJSON *dp_pipe_read_json(const char *path);
/* Collective: any rank asked to stop (a signal)? */
int dp_pipe_stop_requested(const dp_mpi *mpi);

/* RUNDIR/agreement.md (+ agreement.png, a heat map of Kendall's tau) when two or more
 * criteria were scored in json_path: how much the rankings agree (Kendall's tau-b, top-k
 * overlap), printed too. Rank 0. */
void dp_pipe_report_agreement(const char *run, const char *json_path);
/* Sub-layer units to remove in the order of sub-layer scores: K of them, or (K <= 0) as many
 * as remove the parameters of round(ratio L) blocks (the nearest count). removed[*n_removed]:
 * the units; skip (L): each block's removed sub-layers. */
int dp_pipe_pick_units(const dp_llama *m, const int *order, int n_order, int64_t K, double ratio, int *removed,
                       int *n_removed, unsigned char *skip, dp_err *err);
/* "unit", "removed_units" (["attn.3", ...] in removal order), "skip_attn" and "skip_mlp" (the
 * blocks that stay, original indices) into a prune.json / result.json object. */
void dp_pipe_units_json(struct cJSON *o, const int *units, int n_units, const unsigned char *skip, int L);
/* The dtype a model directory stores its weights in (export "auto"). */
int dp_pipe_stored_dtype(const char *dir);
/* The model's f32 weights as export entries (free the array, not the data). */
dp_st_entry *dp_pipe_model_entries(const dp_llama *m);

#endif
