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
  train:FuzzParseSafetensors
  data:FuzzParseDocuments
)
if [ $# -gt 0 ]; then targets=("$@"); fi
status=0
for t in "${targets[@]}"; do
  pkg=${t%%:*} name=${t##*:}
  echo "== ./$pkg $name ($FUZZTIME)"
  # -run '^$' skips the package's ordinary tests; the target's seed corpus runs first.
  if ! $GO test "./$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -parallel "${FUZZ_PARALLEL:-$(nproc)}"; then
    echo "!! $pkg $name failed (crasher saved under $pkg/testdata/fuzz/$name/)" >&2
    status=1
  fi
done
exit $status
