"""The peer of `depthprune bench-generate`: transformers' generate() (greedy, its KV cache,
eager attention, fp32, CPU) for the same model, the same prompts (splitmix64 ids, seed 1) and
the same protocol (forced length: min_new_tokens = max_new_tokens, no EOS stop; warm-up,
then timed runs, median latency).
usage: python torch_generate.py DIR BATCHES PROMPT_LEN GEN_LENS WARMUP RUNS THREADS  (lists comma-separated)
prints one JSON object per point."""
import json
import os
import sys
import time

import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_prompts import prompt_ids  # noqa: E402


def main():
    d, batches, P, glens, warm, runs, threads = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    V = model.config.vocab_size
    for G in map(int, glens.split(",")):
        for B in map(int, batches.split(",")):
            tok = torch.tensor(prompt_ids(B, int(P), V), dtype=torch.int64).view(B, int(P))
            lat = []
            for r in range(int(warm) + int(runs)):
                t0 = time.perf_counter()
                with torch.no_grad():
                    model.generate(tok, attention_mask=torch.ones_like(tok), do_sample=False, max_new_tokens=G,
                                   min_new_tokens=G, eos_token_id=None, pad_token_id=0)
                t = time.perf_counter() - t0
                if r >= int(warm):
                    lat.append(t)
            lat.sort()
            print(json.dumps({"model": d, "batch": B, "gen_len": G, "latency_s": lat[len(lat) // 2],
                              "latency_min_s": lat[0], "latency_max_s": lat[-1],
                              "tokens_per_s": B * G / lat[len(lat) // 2],
                              "kernels": "torch BLAS %s, CPU capability %s" % ("MKL" if torch.backends.mkl.is_available() else "other", torch.backends.cpu.get_cpu_capability()),
                      "impl": "transformers %s generate(), torch %s" % (transformers.__version__, torch.__version__)}),
                  flush=True)


if __name__ == "__main__":
    main()
