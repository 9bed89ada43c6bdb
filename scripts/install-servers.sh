#!/usr/bin/env bash
# Installs the Debian packages of the servers Switchyard's stack, tests and benchmarks run, where
# missing. Idempotent: does nothing (and needs no network) when everything is there. Runs
# unattended (no stdin, no prompts) as root or through sudo; prints one line when it installs.
# s3rver is not here: it is an npm dev dependency (npm ci).
set -euo pipefail
want=(nats-server:nats-server mosquitto:mosquitto mosquitto_pub:mosquitto-clients redis-server:redis-server
  victoria-metrics:victoria-metrics influxd:influxdb chromium:chromium)
missing=()
for pair in "${want[@]}"; do
  bin=${pair%%:*} pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
echo "installing: ${missing[*]}" >&2

if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo -n)
else
  echo "install-servers: not root and no sudo: install as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi

# Switchyard starts its own servers on free ports; the packages must not start theirs. Where no
# init system runs (containers, CI) Debian's maintainer scripts would otherwise start the daemons
# through /etc/init.d; policy-rc.d answering 101 forbids that for the length of the install.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  "${sudo[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

# `env` carries the variables through sudo, which resets the environment.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o Dpkg::Use-Pty=0
  -o DPkg::Lock::Timeout=300)
"${apt[@]}" update </dev/null
"${apt[@]}" install -y --no-install-recommends "${missing[@]}" </dev/null >/dev/null

# Where systemd does run, the packages enabled and started their services anyway: stop them.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  for svc in mosquitto redis-server influxdb; do
    "${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi
