#!/usr/bin/env bash
# Quantization quality table on the CPU: for the embedded default model, prepare the base at
# full precision and in each 4-bit form, fine-tune every one with the same short run (same
# data, seed, LoRA init, schedule), and report weight reconstruction error (relative RMS,
# overall and per Linear kind; per layer in OUT/per-layer.md), the eval perplexity before
# and after the run, and the memory of the quantized Linears.
#
#   STEPS=40 scripts/quality.sh            # writes OUT/quality.md (default /tmp/ortq-quality)
#
# Knobs: ORTQ (binary, default bin/ortq, built if missing), DATA (default the demo's Brown
# "learned" text), STEPS (40), OUT, CONFIGS (space-separated names of the table below).
set -euo pipefail
cd "$(dirname "$0")/.."
ORTQ=${ORTQ:-bin/ortq}
DATA=${DATA:-.cache/demo/brown-learned.txt}
STEPS=${STEPS:-40}
OUT=${OUT:-/tmp/ortq-quality}
[ -x "$ORTQ" ] || go build -o "$ORTQ" ./cmd/ortq
[ -f "$DATA" ] || { echo "quality.sh: $DATA missing (make demo-data)" >&2; exit 1; }

# name|prepare flags
declare -A FLAGS=(
	[full]="--bits 16"
	[int4-sym-b32]="--block-size 32"
	[int4-sym-b64]="--block-size 64"
	[int4-asym-b64]="--block-size 64 --asymmetric"
	[nf4-b64]="--quant nf4 --block-size 64"
	[nf4-dq-b64]="--quant nf4 --double-quant --block-size 64"
	[fp4-b64]="--quant fp4 --block-size 64"
)
CONFIGS=${CONFIGS:-"full int4-sym-b32 int4-sym-b64 int4-asym-b64 nf4-b64 nf4-dq-b64 fp4-b64"}
TRAIN=(--data "$DATA" --tokenizer default --device cpu --max-steps "$STEPS" --max-seq-len 128
	--micro-batch 4 --lr 2e-3 --seed 7 --max-eval-batches 16 --quiet --force)

mkdir -p "$OUT"
for c in $CONFIGS; do
	# shellcheck disable=SC2086 # FLAGS are word lists
	"$ORTQ" prepare --model default --out "$OUT/$c/art" --force --quiet ${FLAGS[$c]} >/dev/null
	"$ORTQ" train --artifacts "$OUT/$c/art" --out "$OUT/$c/run" "${TRAIN[@]}" >"$OUT/$c/train.log" 2>&1 || { cat "$OUT/$c/train.log" >&2; exit 1; }
done

# bytes of one quantized Linear [N, K] as the artifacts store it (float32 scales/absmax: the
# default model is float32; an fp16 model stores int4 scales in 2 bytes).
JQ_BYTES='
def blocks($k; $bs): (($k + $bs - 1) / $bs | floor);
def lbytes($t; $bs; $asym; $dq):
  .shape as [$n, $k]
  | if $t == "int4" then $n*$k/2 + 4*$n*blocks($k; $bs) + (if $asym then $n*(((blocks($k; $bs)) + 1)/2|floor) else 0 end)
    elif $dq then ($n*$k/$bs) as $nb | (($nb + 255)/256|floor) as $nb2 | $n*$k/2 + 256*$nb2 + 4*$nb2 + 4
    else $n*$k/2 + 4*$n*$k/$bs end;
'
{
	echo "| base | quant bytes (bits/param) | rel RMS overall | q | k | v | o | gate | up | down | eval ppl before → after $STEPS steps |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
	for c in $CONFIGS; do
		m="$OUT/$c/art/manifest.json" r="$OUT/$c/run/report.json"
		jq -r --arg c "$c" --slurpfile r "$r" "$JQ_BYTES"'
		  (.quant_type // "") as $t | (.quant_block_size // 0) as $bs | (.options.asymmetric // false) as $asym
		  | (.quant_double_quant // false) as $dq | (.quantization // []) as $q
		  | ($q | map(.shape[0]*.shape[1]) | add // 0) as $params
		  | (if $t == "" then ($q | length) else 0 end) as $_
		  | (if $t == "" then "—" else
		       ($q | map(lbytes($t; $bs; $asym; $dq)) | add) as $b
		       | "\($b) (\($b*8/$params*1000|round/1000))" end) as $mem
		  | def rel($rows): ($rows | map(.rms_error*.rms_error*.shape[0]*.shape[1]) | add) as $se
		      | ($rows | map(if .rel_rms_error > 0 then (.rms_error/.rel_rms_error) as $s | $s*$s*.shape[0]*.shape[1] else 0 end) | add) as $sw
		      | if $sw > 0 then ($se/$sw|sqrt*10000|round/10000|tostring) else "0" end;
		  def kind($k): rel([$q[] | select(.module | endswith($k))]);
		  "| \($c) | \($mem) | \(if $t == "" then "0" else rel($q) end) | \(kind("q_proj")) | \(kind("k_proj")) | \(kind("v_proj")) | \(kind("o_proj")) | \(kind("gate_proj")) | \(kind("up_proj")) | \(kind("down_proj")) | \($r[0].baseline_eval.perplexity*100|round/100) → \($r[0].final_eval.perplexity*100|round/100) |"
		' "$m"
	done
} >"$OUT/quality.md"
{
	echo "| module | $(echo "$CONFIGS" | sed 's/ / | /g') |"
	echo "|---$(for _ in $CONFIGS; do printf '|---:'; done)|"
	mods=$(jq -r '.quantization[].module' "$OUT/int4-sym-b64/art/manifest.json" 2>/dev/null || true)
	for mod in $mods; do
		row="| $mod"
		for c in $CONFIGS; do
			row="$row | $(jq -r --arg m "$mod" '[.quantization // [] | .[] | select(.module == $m) | .rel_rms_error*10000|round/10000] | first // "0"' "$OUT/$c/art/manifest.json")"
		done
		echo "$row |"
	done
} >"$OUT/per-layer.md"
cat "$OUT/quality.md"
