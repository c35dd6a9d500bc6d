#!/usr/bin/env python3
"""The GPU peer of `depthprune bench-generate --device cuda`: HF
transformers' own generate() (LlamaForCausalLM, bf16, KV cache, greedy,
min_new_tokens = max_new_tokens: forced length) on the same model
directories and prompts (splitmix64 ids, seed 1, as depthprune's bench),
warm-up then timed runs, median latency. One JSON object per point.
usage: torch_generate_gpu.py DIR BATCHES PROMPT_LEN GEN_LENS WARMUP RUNS"""
import json
import os
import statistics
import sys
import time

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gen_prompts import prompt_ids  # noqa: E402


def prompts(B, P, V):
    return torch.tensor(prompt_ids(B, P, V), dtype=torch.int64).view(B, P)


def main():
    d = sys.argv[1]
    batches = [int(x) for x in sys.argv[2].split(",")]
    P = int(sys.argv[3])
    gens = [int(x) for x in sys.argv[4].split(",")]
    warm, runs = int(sys.argv[5]), int(sys.argv[6])
    model = LlamaForCausalLM.from_pretrained(d, torch_dtype=torch.bfloat16).cuda().eval()
    V = model.config.vocab_size
    for G in gens:
        for B in batches:
            ids = prompts(B, P, V).cuda()
            att = torch.ones_like(ids)
            lat = []
            for r in range(warm + runs):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(ids, attention_mask=att, max_new_tokens=G, min_new_tokens=G, do_sample=False,
                                   pad_token_id=0)
                torch.cuda.synchronize()
                if r >= warm:
                    lat.append(time.perf_counter() - t0)
            l50 = statistics.median(lat)
            print(json.dumps({"model": os.path.basename(d.rstrip("/")), "batch": B, "gen_len": G, "latency_s": l50,
                              "tokens_per_s": B * G / l50, "impl": "transformers generate bf16 on " +
                              torch.cuda.get_device_name(0)}), flush=True)


if __name__ == "__main__":
    main()
