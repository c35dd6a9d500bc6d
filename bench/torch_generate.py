#!/usr/bin/python3
"""The PyTorch peer of `depthprune bench-generate`: greedy generation with a
KV cache the way HF transformers' generate runs it on CPU (a cache that
grows by torch.cat each step, eager attention, fp32), for the same model,
the same prompts (splitmix64 ids, seed 1) and the same protocol (forced
length, warm-up then timed runs, median latency). The model is the
LlamaForCausalLM transcription of tests/fixtures/gen_llama_fixtures.py
(transformers is not packaged in Debian).
usage: torch_generate.py DIR BATCHES PROMPT_LEN GEN_LENS WARMUP RUNS THREADS  (lists comma-separated)
prints one JSON object per point."""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_engine import load_model  # noqa: E402
import gen_llama_fixtures as fx  # noqa: E402  (on sys.path via torch_engine)
from gen_prompts import prompt_ids  # noqa: E402


def prompts(B, P, V):
    return torch.tensor(prompt_ids(B, P, V), dtype=torch.int64).view(B, P)


@torch.no_grad()
def generate(v, Pm, tokens, G):
    B, T0 = tokens.shape
    C, NH, NKV = v["hidden"], v["heads"], v["kv_heads"]
    HD = C // NH
    rep = NH // NKV
    inv = fx.inv_freq(v)
    head = Pm["model.embed_tokens.weight"] if v["tie"] else Pm["lm_head.weight"]
    cache = [[None, None] for _ in range(v["layers"])]

    def rms(x, w):
        var = x.pow(2).mean(-1, keepdim=True)
        return w * (x * torch.rsqrt(var + v["eps"]))

    def step(tok, pos0):
        Bt, T = tok.shape
        pos = torch.arange(pos0, pos0 + T).float()
        freqs = pos[:, None] * inv[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = Pm["model.embed_tokens.weight"][tok]
        for l in range(v["layers"]):
            p = "model.layers.%d." % l
            h = rms(x, Pm[p + "input_layernorm.weight"])
            q = (h @ Pm[p + "self_attn.q_proj.weight"].t()).view(Bt, T, NH, HD).transpose(1, 2)
            k = (h @ Pm[p + "self_attn.k_proj.weight"].t()).view(Bt, T, NKV, HD).transpose(1, 2)
            vv = (h @ Pm[p + "self_attn.v_proj.weight"].t()).view(Bt, T, NKV, HD).transpose(1, 2)
            q = q * cos + fx.rotate_half(q) * sin
            k = k * cos + fx.rotate_half(k) * sin
            if cache[l][0] is not None:  # HF DynamicCache: concatenate along the sequence
                k = torch.cat((cache[l][0], k), dim=2)
                vv = torch.cat((cache[l][1], vv), dim=2)
            cache[l] = [k, vv]
            S = k.shape[2]
            kr = k[:, :, None].expand(Bt, NKV, rep, S, HD).reshape(Bt, NH, S, HD)
            vr = vv[:, :, None].expand(Bt, NKV, rep, S, HD).reshape(Bt, NH, S, HD)
            att = (q @ kr.transpose(2, 3)) * HD ** -0.5
            if T > 1:
                att = att + torch.full((T, S), torch.finfo(torch.float32).min).triu(S - T + 1)
            att = F.softmax(att, dim=-1, dtype=torch.float32)
            o = (att @ vr).transpose(1, 2).reshape(Bt, T, C)
            x = x + o @ Pm[p + "self_attn.o_proj.weight"].t()
            h = rms(x, Pm[p + "post_attention_layernorm.weight"])
            g = F.silu(h @ Pm[p + "mlp.gate_proj.weight"].t()) * (h @ Pm[p + "mlp.up_proj.weight"].t())
            x = x + g @ Pm[p + "mlp.down_proj.weight"].t()
        x = rms(x[:, -1], Pm["model.norm.weight"])
        return x @ head.t()

    out = []
    logits = step(tokens, 0)
    for s in range(G):
        nxt = logits.argmax(-1)
        out.append(nxt)
        if s + 1 < G:
            logits = step(nxt[:, None], T0 + s)
    return torch.stack(out, 1)


def main():
    d, batches, P, glens, warm, runs, threads = sys.argv[1:8]
    torch.set_num_threads(int(threads))
    v, Pm = load_model(d)
    for G in map(int, glens.split(",")):
        for B in map(int, batches.split(",")):
            tok = prompts(B, int(P), v["vocab"])
            lat = []
            for r in range(int(warm) + int(runs)):
                t0 = time.perf_counter()
                generate(v, Pm, tok, G)
                t = time.perf_counter() - t0
                if r >= int(warm):
                    lat.append(t)
            lat.sort()
            print(json.dumps({"model": d, "batch": B, "gen_len": G, "latency_s": lat[len(lat) // 2],
                              "latency_min_s": lat[0], "latency_max_s": lat[-1],
                              "tokens_per_s": B * G / lat[len(lat) // 2]}), flush=True)


if __name__ == "__main__":
    main()
