"""The peer of bench/bench_train.c: transformers' LlamaForCausalLM (+ PEFT for LoRA) on the
same model and tokens, one optimizer step per batch of B x T tokens: forward, the model's
cross-entropy, backward, global-norm clipping at 1.0, torch.optim.AdamW (lr 1e-4). lora:
PEFT LoraConfig(r=8, lora_alpha=16, dropout 0) on all seven linears, base frozen; full:
every parameter trained. Tokens/s over steps 2..S (step 1 is warm-up).
usage: python torch_train.py DIR lora|full B T S THREADS   (the oracle venv)"""
import json
import sys
import time

import peft
import torch
import transformers


def main():
    d, method, B, T, S, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    if method == "lora":
        cfg = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                              target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = peft.get_peft_model(model, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    V = model.config.vocab_size
    st, ids = 42, []  # the same LCG token stream as bench_train.c
    for _ in range(B * T * S):
        st = (st * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        ids.append((st >> 33) % V)
    tok = torch.tensor(ids).reshape(S, B, T)
    t1 = None
    for s in range(S):
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=tok[s], labels=tok[s], use_cache=False).loss  # shifts labels inside
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if s == 0:
            t1 = time.perf_counter()
    el = time.perf_counter() - t1
    impl = "transformers %s%s, torch %s" % (transformers.__version__, " + peft %s" % peft.__version__ if method == "lora" else "",
                                            torch.__version__)
    kernels = "torch BLAS %s, CPU capability %s" % ("MKL" if torch.backends.mkl.is_available() else "other",
                                                    torch.backends.cpu.get_cpu_capability())
    print(json.dumps({"impl": impl, "kernels": kernels, "method": method, "tok_s": round(B * T * (S - 1) / el, 1), "last_loss": round(loss.item(), 6)}))


if __name__ == "__main__":
    main()
