"""The peer of bench/bench_engine.c: transformers' LlamaForCausalLM (fp32, eager attention,
CPU) on the same model directory, the same batch and loss: forward tokens/s (no_grad) and
forward+backward tokens/s (all parameters require grad), best of R after one warm-up.
usage: python torch_engine.py DIR B T R THREADS   (the oracle venv)"""
import json
import sys
import time

import torch
import torch.nn.functional as F
import transformers


def main():
    d, B, T, R, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    V = model.config.vocab_size
    st, ids = 42, []  # the same LCG tokens as bench_engine.c
    for _ in range(B * T):
        st = (st * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append((st >> 33) % V)
    tok = torch.tensor(ids).reshape(B, T)
    tgt = torch.full((B, T), -1, dtype=torch.int64)
    tgt[:, :-1] = tok[:, 1:]

    def loss_of():
        return F.cross_entropy(model(tok, use_cache=False).logits.reshape(B * T, -1), tgt.reshape(-1), ignore_index=-1)

    best_f = best_fb = 1e30
    for r in range(R + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            loss = loss_of()
        t1 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss_of().backward()
        t2 = time.perf_counter()
        if r > 0:
            best_f, best_fb = min(best_f, t1 - t0), min(best_fb, t2 - t1)
    print(json.dumps({"kernels": "torch BLAS %s, CPU capability %s" % ("MKL" if torch.backends.mkl.is_available() else "other", torch.backends.cpu.get_cpu_capability()),
                      "impl": "transformers %s, torch %s" % (transformers.__version__, torch.__version__),
                      "fwd_tok_s": round(B * T / best_f, 1), "fwdbwd_tok_s": round(B * T / best_fb, 1),
                      "loss": round(loss.item(), 6)}))


if __name__ == "__main__":
    main()
