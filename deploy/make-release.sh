#!/usr/bin/env bash
# Builds a self-contained release for gateways (docs/deploy.md), packed as
# OUT_DIR/switchyard-<version>.tar.gz (OUT_DIR defaults to .switchyard/release):
#   switchyard-<version>/
#     dist/                 the compiled CLI (node dist/cli/main.js <command>)
#     node_modules/         production dependencies only, so a gateway needs nothing from npm
#     package.json package-lock.json .switchyard-release (version and commit)
#     deploy/systemd/       units, templates and install.sh
#     docs/deploy.md
# Unpack it on the gateway and run switchyard-<version>/deploy/systemd/install.sh. The dependencies
# are plain JavaScript (tsx's esbuild binary is never used by dist/), so one release serves any CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-.switchyard/release}
version=$(node -p 'require("./package.json").version')
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
name=switchyard-$version
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/$name
mkdir -p "$root/deploy" "$root/docs"
[[ -x node_modules/.bin/tsc ]] || npm ci --no-audit --no-fund
# Built straight into the release, so a stale file in the checkout's dist/ cannot ship.
bash deploy/build.sh "$root/dist"
cp package.json package-lock.json "$root/"
cp -R deploy/systemd "$root/deploy/"
cp docs/deploy.md "$root/docs/"
(cd "$root" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
printf 'switchyard %s %s\n' "$version" "$rev" >"$root/.switchyard-release"
mkdir -p "$out"
tar -C "$stage" -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
