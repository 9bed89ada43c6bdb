#!/usr/bin/env bash
# Installs the Debian packages of the servers Switchyard's stack, tests and benchmarks run, where
# missing. Idempotent: does nothing (and needs no network) when everything is there.
set -euo pipefail
want=(nats-server:nats-server mosquitto:mosquitto mosquitto_pub:mosquitto-clients redis-server:redis-server
  victoria-metrics:victoria-metrics influxd:influxdb)
missing=()
for pair in "${want[@]}"; do
  bin=${pair%%:*} pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("$pkg")
done
((${#missing[@]} == 0)) && exit 0
echo "installing: ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then sudo=sudo; else sudo=; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian's packages start their services where an init system runs; Switchyard starts its own.
for svc in mosquitto redis-server influxdb; do $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true; done
