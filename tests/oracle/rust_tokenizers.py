"""The second tokenizer oracle: HF's Rust `tokenizers` (pinned in tests/requirements.txt).

Reads the inputs gen_expected.mjs wrote (OUT/{lines,docs,hard}.jsonl, invalid_utf8.bin) and
writes, for each tokenizer, OUT/<tk>.<set>.rs.ids (ids with the post-processor's special
tokens, one line per input), OUT/<tk>.invalid_utf8.rs.ids and OUT/<tk>.hard.decoded.rs.jsonl
(ids without special tokens decoded back by transformers' tokenizer, special tokens kept:
the text a transformers user sees, including its rule for clean_up_tokenization_spaces),
the files run_oracle.sh compares depthprune's output with.
usage: python rust_tokenizers.py NODE_MODULES OUT
"""
import json
import os
import sys

import tokenizers
import transformers

nm, out = sys.argv[1:3]
sets = {}
for name in ("lines", "docs", "hard"):
    with open(os.path.join(out, name + ".jsonl"), encoding="utf-8") as f:
        sets[name] = [json.loads(line) for line in f if line.strip()]
with open(os.path.join(out, "invalid_utf8.bin"), "rb") as f:
    raw = f.read().decode("utf-8", errors="replace")
for tk in ("llama2", "llama3"):
    d = os.path.join(nm, "@lenml", "tokenizer-" + tk, "models")
    tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    hf = transformers.AutoTokenizer.from_pretrained(d)
    for name, inputs in sets.items():
        with open(os.path.join(out, "%s.%s.rs.ids" % (tk, name)), "w") as f:
            for s in inputs:
                f.write(" ".join(map(str, tok.encode(s).ids)) + "\n")
    with open(os.path.join(out, tk + ".invalid_utf8.rs.ids"), "w") as f:
        f.write(" ".join(map(str, tok.encode(raw).ids)) + "\n")
    with open(os.path.join(out, tk + ".hard.decoded.rs.jsonl"), "w", encoding="utf-8") as f:
        for s in sets["hard"]:
            ids = tok.encode(s, add_special_tokens=False).ids
            f.write(json.dumps(hf.decode(ids, skip_special_tokens=False) if ids else "", ensure_ascii=False) + "\n")
print("tokenizers %s, transformers %s: %s" % (tokenizers.__version__, transformers.__version__, ", ".join("%d %s" % (len(v), k) for k, v in sets.items())))
