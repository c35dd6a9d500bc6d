#!/usr/bin/python3
"""The PyTorch peer of bench/bench_engine.c: the same model (an HF directory's
safetensors, read here without the safetensors package), the same batch and
loss, forward tokens/s (no_grad) and forward+backward tokens/s (all
parameters require grad), best of R after one warm-up. The model is the
LlamaForCausalLM transcription of tests/fixtures/gen_llama_fixtures.py
(transformers is not packaged in Debian). usage: torch_engine.py DIR B T R THREADS"""
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
from gen_llama_fixtures import forward_torch  # noqa: E402


def load(d):
    P = {}
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    for f in files:
        raw = open(os.path.join(d, f), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        base = 8 + n
        for name, e in hdr.items():
            if name == "__metadata__":
                continue
            a, b = e["data_offsets"]
            buf = raw[base + a:base + b]
            if e["dtype"] == "BF16":
                x = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif e["dtype"] == "F32":
                x = np.frombuffer(buf, dtype=np.float32)
            else:
                x = np.frombuffer(buf, dtype=np.float16).astype(np.float32)
            P[name] = torch.from_numpy(x.copy()).reshape(e["shape"])
    return P


def load_model(d):
    """(shape dict for forward_torch, parameters) of an HF model directory."""
    cfg = json.load(open(os.path.join(d, "config.json")))
    v = dict(vocab=cfg["vocab_size"], hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"],
             heads=cfg["num_attention_heads"], kv_heads=cfg["num_key_value_heads"], theta=cfg["rope_theta"],
             rope=cfg.get("rope_scaling"), tie=cfg.get("tie_word_embeddings", False), eps=cfg["rms_norm_eps"])
    return v, load(d)


def main():
    d, B, T, R, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    v, P = load_model(d)
    st, ids = 42, []  # the same LCG tokens as bench_engine.c
    for _ in range(B * T):
        st = (st * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append((st >> 33) % v["vocab"])
    tok = torch.tensor(ids).reshape(B, T)
    tgt = torch.full((B, T), -1, dtype=torch.int64)
    tgt[:, :-1] = tok[:, 1:]
    best_f = best_fb = 1e30
    for r in range(R + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            loss = F.cross_entropy(forward_torch(v, P, tok).reshape(B * T, -1), tgt.reshape(-1), ignore_index=-1)
        t1 = time.perf_counter()
        for p in P.values():
            p.requires_grad_(True)
            p.grad = None
        lo = F.cross_entropy(forward_torch(v, P, tok).reshape(B * T, -1), tgt.reshape(-1), ignore_index=-1)
        lo.backward()
        t2 = time.perf_counter()
        for p in P.values():
            p.requires_grad_(False)
        if r > 0:
            best_f, best_fb = min(best_f, t1 - t0), min(best_fb, t2 - t1)
    print(json.dumps({"impl": "pytorch " + torch.__version__, "fwd_tok_s": round(B * T / best_f, 1),
                      "fwdbwd_tok_s": round(B * T / best_fb, 1), "loss": round(loss.item(), 6)}))


if __name__ == "__main__":
    main()
