#!/usr/bin/python3
"""The PyTorch peer of bench/bench_train.c: the same model and tokens, one
optimizer step per batch of B x T tokens: forward (LlamaForCausalLM's math,
tests/fixtures/gen_llama_fixtures.py), cross-entropy, backward, global-norm
clipping at 1.0, torch.optim.AdamW (lr 1e-4, its default implementation).
lora: rank 8, alpha 16 on all seven linears, base frozen; full: every
parameter trained. Tokens/s over steps 2..S (step 1 is warm-up).
usage: torch_train.py DIR lora|full B T S THREADS"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_engine import load_model  # noqa: E402
import gen_llama_fixtures as fx  # noqa: E402  (on sys.path via torch_engine)


def main():
    d, method, B, T, S, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    v, P = load_model(d)
    fx.LORA_RANK, fx.LORA_ALPHA = 8, 16.0
    lora = None
    if method == "lora":
        lora = {}
        for name, w in P.items():
            if name.endswith("proj.weight"):
                a = torch.empty(8, w.shape[1]).uniform_(-w.shape[1] ** -0.5, w.shape[1] ** -0.5).requires_grad_(True)
                b = torch.zeros(w.shape[0], 8, requires_grad=True)
                lora[name] = (a, b)
        params = [t for ab in lora.values() for t in ab]
    else:
        params = list(P.values())
        for p in params:
            p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    st, ids = 42, []
    for _ in range(B * T * S):
        st = (st * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append((st >> 33) % v["vocab"])
    tok = torch.tensor(ids).reshape(S, B, T)
    t1 = None
    for s in range(S):
        x = tok[s]
        tgt = torch.full((B, T), -1, dtype=torch.int64)
        tgt[:, :-1] = x[:, 1:]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(fx.forward_torch(v, P, x, lora=lora).reshape(B * T, -1), tgt.reshape(-1), ignore_index=-1)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if s == 0:
            t1 = time.perf_counter()
    el = time.perf_counter() - t1
    print(json.dumps({"impl": "pytorch " + torch.__version__, "method": method, "tok_s": round(B * T * (S - 1) / el, 1),
                      "last_loss": round(loss.item(), 6)}))


if __name__ == "__main__":
    main()
