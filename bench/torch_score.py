"""The peer of `depthprune score --criterion ppl`: shortened-llm's block-sensitivity
procedure (src/anal_block_sensitivity_ppl.py) on transformers' LlamaForCausalLM, CPU fp32:
for every block j, the model rebuilt without block j (its layer list without that module)
runs every calibration sample one at a time (batch 1); PPL_j = exp(mean NLL over the
predicted tokens). Same model directory, same calibration ids (read from depthprune's
calib.h5). Prints the time (loading excluded) and the largest relative difference from
depthprune's scores.
usage: python torch_score.py MODEL_DIR RUN_DIR THREADS   (the oracle venv: tests/oracle/venv_run.sh)"""
import json
import math
import os
import sys
import time

import h5py
import torch
import torch.nn.functional as F
import transformers


def main():
    d, run, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    ids = torch.from_numpy(h5py.File(os.path.join(run, "calib.h5"), "r")["ids"][()]).long()
    ours = json.load(open(os.path.join(run, "scores.json")))["criteria"]["ppl"]["scores"]
    N, T = ids.shape
    layers = model.model.layers
    L = len(layers)
    t0 = time.perf_counter()
    scores = []
    with torch.no_grad():
        for j in range(L):
            model.model.layers = torch.nn.ModuleList([b for i, b in enumerate(layers) if i != j])
            model.config.num_hidden_layers = L - 1
            tot = 0.0
            for s in range(N):
                lg = model(ids[s:s + 1], use_cache=False).logits[0]
                tot += F.cross_entropy(lg[:-1], ids[s, 1:], reduction="sum").double().item()
            scores.append(math.exp(tot / (N * (T - 1))))
    el = time.perf_counter() - t0
    diff = max(abs(a - b) / b for a, b in zip(ours, scores))
    print(json.dumps({"kernels": "torch BLAS %s, CPU capability %s" % ("MKL" if torch.backends.mkl.is_available() else "other", torch.backends.cpu.get_cpu_capability()),
                      "impl": "transformers %s LlamaForCausalLM, torch %s" % (transformers.__version__, torch.__version__),
                      "seconds": round(el, 3), "block_passes": L * (L - 1), "max_rel_diff_vs_depthprune": diff}))


if __name__ == "__main__":
    main()
