#!/usr/bin/env bash
# Builds the CLI into OUT_DIR (default dist/), for the image and for releases alike: tsc emits only
# JavaScript, so the other files of the compiled folders (Redis scripts) are copied beside it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-dist}
node_modules/.bin/tsc -p tsconfig.build.json --outDir "$out"
# The folders tsconfig.build.json compiles: a folder added there brings its files along.
read -r -a folders <<<"$(node -p 'require("./tsconfig.build.json").include.join(" ")')"
find "${folders[@]}" -type f ! -name '*.ts' -print0 |
  while IFS= read -r -d '' file; do
    mkdir -p "$out/$(dirname "$file")"
    cp "$file" "$out/$file"
  done
