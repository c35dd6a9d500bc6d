#!/usr/bin/env python3
"""The GPU peer of `depthprune retrain --device cuda` (LoRA + KD): HF
transformers + PEFT doing the same step on the same GPU: student
LlamaForCausalLM (bf16) with LoRA r=8, alpha 16, dropout 0.05 on q,k,v,o,
gate,up,down; the dense teacher's forward in the step (no grad); loss =
(1 - a) CE + a T^2 KL(teacher || student) over the full vocabulary (what a
user writes by hand); AdamW on the adapters; micro-batch B x T random ids.
Prints tokens/s over steps 3..S (the first two warm up).
usage: torch_train_gpu.py STUDENT_DIR TEACHER_DIR B T STEPS"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaForCausalLM


def main():
    sd, td, B, T, S = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    student = LlamaForCausalLM.from_pretrained(sd, torch_dtype=torch.bfloat16).cuda()
    teacher = LlamaForCausalLM.from_pretrained(td, torch_dtype=torch.bfloat16).cuda().eval()
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    student = get_peft_model(student, cfg)
    student.train()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)
    V = student.config.vocab_size
    g = torch.Generator(device="cuda").manual_seed(0)
    alpha, temp = 0.5, 2.0
    times = []
    for step in range(S):
        ids = torch.randint(0, V, (B, T), device="cuda", generator=g)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            tl = teacher(ids, use_cache=False).logits.float()
        sl = student(ids, use_cache=False).logits.float()
        ce = F.cross_entropy(sl[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        kl = F.kl_div(F.log_softmax(sl[:, :-1] / temp, -1), F.log_softmax(tl[:, :-1] / temp, -1), log_target=True,
                      reduction="batchmean") * temp * temp / (T - 1) * 1.0
        loss = (1 - alpha) * ce + alpha * kl
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in student.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    meas = times[2:] if len(times) > 2 else times
    tok_s = B * T * len(meas) / sum(meas)
    print(json.dumps({"impl": "transformers+peft bf16 on " + torch.cuda.get_device_name(0), "B": B, "T": T,
                      "steps": S, "tok_s": round(tok_s, 1), "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2)}))


if __name__ == "__main__":
    main()
