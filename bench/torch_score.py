#!/usr/bin/python3
"""The PyTorch peer of `depthprune score --criterion ppl`: what the reference
code (shortened-llm src/anal_block_sensitivity_ppl.py) does, on CPU: for
every block j, the model without block j runs every calibration sample one
at a time; PPL_j = exp(mean NLL over the predicted tokens). Same model, same
calibration ids (read from depthprune's calib.h5). Prints the time and the
largest relative difference from depthprune's scores.
usage: torch_score.py MODEL_DIR RUN_DIR THREADS"""
import json
import math
import os
import sys
import time

import h5py
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_engine import load_model  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from gen_llama_fixtures import forward_torch  # noqa: E402


def main():
    d, run, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    v, P = load_model(d)
    ids = torch.from_numpy(h5py.File(os.path.join(run, "calib.h5"), "r")["ids"][()]).long()
    ours = json.load(open(os.path.join(run, "scores.json")))["criteria"]["ppl"]["scores"]
    N, T = ids.shape
    L = v["layers"]
    t0 = time.perf_counter()
    scores = []
    with torch.no_grad():
        for j in range(L):
            keep = [l for l in range(L) if l != j]
            tot = 0.0
            for s in range(N):
                lg = forward_torch(v, P, ids[s:s + 1], layers=keep)[0]
                tot += F.cross_entropy(lg[:-1], ids[s, 1:], reduction="sum").double().item()
            scores.append(math.exp(tot / (N * (T - 1))))
    el = time.perf_counter() - t0
    diff = max(abs(a - b) / b for a, b in zip(ours, scores))
    print(json.dumps({"impl": "pytorch " + torch.__version__, "seconds": round(el, 3), "block_passes": L * (L - 1),
                      "max_rel_diff_vs_depthprune": diff}))


if __name__ == "__main__":
    main()
