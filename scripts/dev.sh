#!/usr/bin/env bash
# `npm run dev`: installs what is missing (Debian servers, npm dependencies), then runs
# `switchyard dev` with any arguments given (`npm run dev -- --sites 3`). A fresh clone has no
# node_modules, and the launcher needs tsx from it: install before starting.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-servers.sh
[[ -d node_modules/.bin ]] || npm ci --no-audit --no-fund
exec node bin/switchyard.mjs dev "$@"
