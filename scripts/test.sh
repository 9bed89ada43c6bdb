#!/usr/bin/env bash
# `npm test`: installs what is missing (Debian servers, npm dependencies), then runs every test file
# against real servers that each file starts for itself.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-servers.sh
[[ -d node_modules/.bin ]] || npm ci --no-audit --no-fund
files=$(find test -name '*.test.ts' | sort)
exec node --import tsx --test --test-concurrency=2 --test-timeout=300000 ${files}
