#!/usr/bin/env python3
"""The GPU peer of `depthprune score --device cuda --criterion ppl`: what the
reference code (shortened-llm src/anal_block_sensitivity_ppl.py) does on one
GPU: for every block j, the HF model (transformers LlamaForCausalLM, bf16)
without block j runs every calibration sample one at a time (batch 1);
PPL_j = exp(mean NLL over the predicted tokens). Same model directory and,
when h5py is importable, the same calibration ids (depthprune's calib.h5);
otherwise random ids of the same shape (timing only, no agreement check).
usage: torch_score_gpu.py MODEL_DIR RUN_DIR"""
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM


def main():
    d, run = sys.argv[1], sys.argv[2]
    ours = json.load(open(os.path.join(run, "scores.json")))
    try:
        import h5py
        ids = torch.from_numpy(h5py.File(os.path.join(run, "calib.h5"), "r")["ids"][()]).long()
        same_ids = True
    except ImportError:
        c = ours["calib"]
        g = torch.Generator().manual_seed(0)
        cfg = json.load(open(os.path.join(d, "config.json")))
        ids = torch.randint(0, cfg["vocab_size"], (c["samples"], c["seq_len"]), generator=g)
        same_ids = False
    model = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16).cuda().eval()
    layers = model.model.layers
    L = len(layers)
    N, T = ids.shape
    ids = ids.cuda()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    scores = []
    with torch.no_grad():
        for j in range(L):
            model.model.layers = torch.nn.ModuleList([layers[i] for i in range(L) if i != j])
            tot = 0.0
            for s in range(N):
                lg = model(ids[s:s + 1], use_cache=False).logits[0].float()
                tot += F.cross_entropy(lg[:-1], ids[s, 1:], reduction="sum").double().item()
            scores.append(math.exp(tot / (N * (T - 1))))
    torch.cuda.synchronize()
    el = time.perf_counter() - t0
    model.model.layers = layers
    mine = ours["criteria"]["ppl"]["scores"]
    diff = max(abs(a - b) / b for a, b in zip(mine, scores)) if same_ids else None
    print(json.dumps({"impl": "transformers bf16 on " + torch.cuda.get_device_name(0), "seconds": round(el, 3),
                      "block_passes": L * (L - 1), "same_ids": same_ids, "max_rel_diff_vs_depthprune": diff}))


if __name__ == "__main__":
    main()
