#!/usr/bin/env bash
# Run every fuzz target of ortq for a bounded time each (default 60s; FUZZTIME=10m for a
# longer hunt, or FUZZTIME=5000x for a fixed number of executions). Independent of make.
# New crashers land in <pkg>/testdata/fuzz/<Target>/ — commit them with the fix so that
# plain `go test` (which always runs the committed seeds) keeps checking them.
#
#   scripts/fuzz.sh                 # all targets, 60s each
#   FUZZTIME=5m scripts/fuzz.sh ortgraph:FuzzLoad
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-60s}
GO=${GO:-go}
targets=(
  ortgraph:FuzzLoad
  ortgraph:FuzzTensorBytes
  tokenize:FuzzLoad
  hfimport:FuzzParseHeader
  internal/safetensors:FuzzParseSafetensors
  data:FuzzParseDocuments
  cmd/ortq:FuzzOptionValues
  cmd/ortq:FuzzConfigFile
  export:FuzzReadAdapterFile
  export:FuzzGenAIConfig
  manifest:FuzzAdapter
)
if [ $# -gt 0 ]; then targets=("$@"); fi
status=0
for t in "${targets[@]}"; do
  pkg=${t%%:*} name=${t##*:}
  echo "== ./$pkg $name ($FUZZTIME)"
  # -run '^$' skips the package's ordinary tests; the target's seed corpus runs first.
  corpus="$pkg/testdata/fuzz/$name"
  before=$( (ls "$corpus" 2>/dev/null || true) | wc -l)
  log=$(mktemp)
  rc=0
  $GO test "./$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel "${FUZZ_PARALLEL:-$(nproc)}" > "$log" 2>&1 || rc=$?
  cat "$log"
  if [ "$rc" -ne 0 ]; then
    after=$( (ls "$corpus" 2>/dev/null || true) | wc -l)
    if [ "$after" -eq "$before" ] && grep -q 'context deadline exceeded' "$log"; then
      # Go's fuzzer can report its own -fuzztime deadline as a failure when a worker is
      # slow to stop (no input is saved); that is not a finding.
      echo "-- $pkg $name: the fuzzer stopped at its deadline without a failing input (not a finding)"
    else
      echo "!! $pkg $name failed (failing input saved under $corpus/)" >&2
      status=1
    fi
  fi
  rm -f "$log"
done
exit $status
