#!/usr/bin/env bash
# Compiles the CLI into OUT_DIR (default dist/) with tsconfig.build.json, then copies beside the
# JavaScript every other file of the compiled folders (Redis scripts, for one): modules read them
# at run time relative to themselves, and tsc emits only what it compiles. The image (Dockerfile)
# and gateway releases (make-release.sh) are built by this script, so both ship the same tree.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-dist}
node_modules/.bin/tsc -p tsconfig.build.json --outDir "$out"
# The folders come from tsconfig.build.json, so a folder added to the build cannot miss its files.
read -r -a folders <<<"$(node -p 'require("./tsconfig.build.json").include.join(" ")')"
find "${folders[@]}" -type f ! -name '*.ts' -print0 |
  while IFS= read -r -d '' file; do
    mkdir -p "$out/$(dirname "$file")"
    cp "$file" "$out/$file"
  done
