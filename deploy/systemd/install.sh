#!/usr/bin/env bash
# Installs or upgrades the Switchyard site bridge on a gateway (docs/deploy.md):
#   - system users switchyard (the bridge) and switchyard-nats (the site's nats-server);
#   - /opt/switchyard: the release (dist/, package.json, node_modules/), owned by root;
#   - /etc/switchyard: edge.env and nats-site.conf, written only when absent (yours after that);
#   - the site's NATS trust bundle, as `switchyard site add --operator-dir` writes it (sites/<site>/):
#     the operator's and the gateway account's JWTs (nats-trust.conf), the leaf's credentials and
#     client certificate and the hub's CA (/etc/switchyard/nats, readable by switchyard-nats), the
#     bridge's NATS credentials and message-id key (/etc/switchyard/credentials, root only, for
#     the edge unit's LoadCredential=);
#   - a check that the bridge's stream budgets fit the site server's max_file_store and the disk;
#   - the site's mosquitto: /etc/mosquitto/conf.d/switchyard.conf (written only when absent), the
#     password file and ACL in /etc/mosquitto/switchyard, the bridge's MQTT user switchyard-bridge
#     with its password in /etc/switchyard/credentials/mqtt-password (root only, for the edge
#     unit's LoadCredential=), and /usr/local/sbin/switchyard-device to manage the devices' users;
#   - switchyard-edge.service and switchyard-nats.service: installed, enabled, started.
# Idempotent: run it again with the same release and it changes nothing and restarts nothing; with
# a new release it swaps /opt/switchyard and restarts the bridge (SIGTERM: it settles what it holds).
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

usage() {
  cat <<'EOF'
usage: install.sh [options]
  --release DIR       release to install (default: the tree this script is in); it must hold
                      dist/cli/main.js and package.json, and node_modules/ if made by make-release.sh
  --site ID           the site id: SWITCHYARD_SITE of a new edge.env, domain of a new nats-site.conf
  --hub-leaf-url URL  the hub's leaf-node URL for a new nats-site.conf (tls://host:7422)
  --site-bundle DIR   the site's directory as `switchyard site add --operator-dir OP` writes it
                      (OP/sites/<site>/, copied to the gateway): leaf.creds, bridge.creds,
                      msg-id.key, local.jwt. Its seeds (*.nk) are not needed and not installed.
  --operator-jwt FILE the operator's JWT (default: operator.jwt in the bundle, or OP/operator.jwt)
  --system-jwt FILE   the system account's JWT (default: SYS.jwt in the bundle, or OP/SYS.jwt)
  --hub-ca FILE       the CA that signed the hub's leaf-port certificate (the leaf verifies the hub)
  --leaf-cert FILE    the site's client certificate for the leaf link (the hub verifies the site)
  --leaf-key FILE     its private key
  --insecure          allow a plain-text leaf (nats-leaf://) and no bundle: anonymous clients, no
                      message-id key; for a test bench only, and printed as such on every run
  --max-file-store N  JetStream disk limit of a new nats-site.conf, bytes (default 10737418240)
  --force             install even if the bridge's stream budgets do not fit max_file_store or the
                      disk's free space
  --no-nats           leave out switchyard-nats.service (the site's nats-server is managed elsewhere)
  --mqtt-cert FILE    TLS certificate of the broker for devices that are not on the gateway: a new
                      switchyard.conf then listens with TLS on 8883 and in plain text on 127.0.0.1
                      only (without it: plain text on 1883, every address)
  --mqtt-key FILE     the certificate's private key (with --mqtt-cert)
  --mqtt-ca FILE      the CA that signed it, installed beside it for the devices to be given
  --no-mqtt           leave the site's mosquitto alone (the broker and its users are managed elsewhere)
  --no-start          install and enable, but start or restart nothing
  --prefix DIR        install into DIR as a root file system (an image, a test): users and units
                      are set up there, nothing is started
  --dry-run           print what would be done and change nothing
  -h, --help          this text
Exit codes: 0 done, 1 failed, 2 bad usage.
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RELEASE="$(cd "$HERE/../.." && pwd)"
SITE=""
HUB_LEAF_URL=""
BUNDLE=""
OPERATOR_JWT=""
SYSTEM_JWT=""
HUB_CA=""
LEAF_CERT=""
LEAF_KEY=""
INSECURE=0
FORCE=0
MAX_FILE_STORE=10737418240
WITH_NATS=1
WITH_MQTT=1
MQTT_CERT=""
MQTT_KEY=""
MQTT_CA=""
START=1
PREFIX=""
DRY_RUN=0

die() { echo "install.sh: $2" >&2; exit "$1"; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die 2 "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --release) need_value "$@"; RELEASE=$2; shift 2 ;;
    --site) need_value "$@"; SITE=$2; shift 2 ;;
    --hub-leaf-url) need_value "$@"; HUB_LEAF_URL=$2; shift 2 ;;
    --site-bundle) need_value "$@"; BUNDLE=$2; shift 2 ;;
    --operator-jwt) need_value "$@"; OPERATOR_JWT=$2; shift 2 ;;
    --system-jwt) need_value "$@"; SYSTEM_JWT=$2; shift 2 ;;
    --hub-ca) need_value "$@"; HUB_CA=$2; shift 2 ;;
    --leaf-cert) need_value "$@"; LEAF_CERT=$2; shift 2 ;;
    --leaf-key) need_value "$@"; LEAF_KEY=$2; shift 2 ;;
    --insecure) INSECURE=1; shift ;;
    --force) FORCE=1; shift ;;
    --max-file-store) need_value "$@"; MAX_FILE_STORE=$2; shift 2 ;;
    --no-nats) WITH_NATS=0; shift ;;
    --mqtt-cert) need_value "$@"; MQTT_CERT=$2; shift 2 ;;
    --mqtt-key) need_value "$@"; MQTT_KEY=$2; shift 2 ;;
    --mqtt-ca) need_value "$@"; MQTT_CA=$2; shift 2 ;;
    --no-mqtt) WITH_MQTT=0; shift ;;
    --no-start) START=0; shift ;;
    --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die 2 "unknown argument '$1' (see --help)" ;;
  esac
done

# The values go into config files through sed: only characters that need no escaping pass.
[[ -z $SITE || $SITE =~ ^[A-Za-z0-9_-]{1,128}$ ]] || die 2 "invalid site id '$SITE': use letters, digits, - and _"
[[ -z $HUB_LEAF_URL || $HUB_LEAF_URL =~ ^(nats-leaf|tls|ws|wss)://[A-Za-z0-9._~%:@/-]+$ ]] ||
  die 2 "invalid hub leaf URL '$HUB_LEAF_URL': expected tls://host:port or nats-leaf://host:port"
[[ $MAX_FILE_STORE =~ ^[1-9][0-9]*$ ]] || die 2 "--max-file-store takes a number of bytes, not '$MAX_FILE_STORE'"
if [[ -n $BUNDLE ]]; then
  [[ -d $BUNDLE ]] || die 2 "--site-bundle: no directory $BUNDLE"
  for f in leaf.creds bridge.creds msg-id.key local.jwt; do
    [[ -f $BUNDLE/$f ]] || die 2 "--site-bundle: no $f in $BUNDLE (write it with switchyard site add --operator-dir)"
  done
  [[ ! -e $BUNDLE/REVOKED ]] || die 2 "--site-bundle: $BUNDLE was revoked (switchyard site remove)"
  # Beside the site's files, or two levels up in the operator's directory itself.
  for name in OPERATOR_JWT:operator.jwt SYSTEM_JWT:SYS.jwt; do
    var=${name%%:*} file=${name#*:}
    [[ -n ${!var} ]] && continue
    if [[ -f $BUNDLE/$file ]]; then printf -v "$var" %s "$BUNDLE/$file"
    elif [[ -f $BUNDLE/../../$file ]]; then printf -v "$var" %s "$BUNDLE/../../$file"
    else die 2 "--site-bundle: no $file in $BUNDLE or $BUNDLE/../..: copy the operator's $file beside the site's files"
    fi
  done
elif [[ -n $OPERATOR_JWT || -n $SYSTEM_JWT ]]; then
  die 2 "--operator-jwt and --system-jwt come with --site-bundle"
fi
for f in ${OPERATOR_JWT:+"$OPERATOR_JWT"} ${SYSTEM_JWT:+"$SYSTEM_JWT"} ${HUB_CA:+"$HUB_CA"} \
  ${LEAF_CERT:+"$LEAF_CERT"} ${LEAF_KEY:+"$LEAF_KEY"}; do
  [[ -f $f ]] || die 2 "no file at $f"
done
[[ -z $LEAF_CERT && -z $LEAF_KEY || -n $LEAF_CERT && -n $LEAF_KEY ]] || die 2 "--leaf-cert and --leaf-key come together"
if [[ -n $MQTT_CERT || -n $MQTT_KEY || -n $MQTT_CA ]]; then
  ((WITH_MQTT)) || die 2 "--mqtt-cert, --mqtt-key and --mqtt-ca configure the broker: not with --no-mqtt"
  [[ -n $MQTT_CERT && -n $MQTT_KEY ]] || die 2 "TLS for the broker needs both --mqtt-cert and --mqtt-key"
  for f in "$MQTT_CERT" "$MQTT_KEY" ${MQTT_CA:+"$MQTT_CA"}; do
    [[ -f $f ]] || die 2 "no file at $f"
  done
fi
[[ -z $PREFIX ]] || PREFIX="$(cd "$PREFIX" 2>/dev/null && pwd)" || die 2 "--prefix: no directory $PREFIX"
[[ -f $RELEASE/dist/cli/main.js && -f $RELEASE/package.json ]] ||
  die 2 "no build in $RELEASE (dist/cli/main.js): run 'npm run build', or use a release made by deploy/make-release.sh"
RELEASE="$(cd "$RELEASE" && pwd)"
((DRY_RUN)) || [[ $(id -u) -eq 0 ]] || die 2 "run as root (or with --dry-run)"

# Live paths (what the units name) and where they are written (under --prefix, if any).
APP=/opt/switchyard
ETC=/etc/switchyard
UNIT_DIR=/etc/systemd/system
SYSUSERS=/etc/sysusers.d/switchyard.conf
NODE=/usr/bin/node
NATS_SERVER=/usr/sbin/nats-server
MQTT_ETC=/etc/mosquitto/switchyard
MQTT_CONF=/etc/mosquitto/conf.d/switchyard.conf
CREDENTIALS=$ETC/credentials
DEVICE_TOOL=/usr/local/sbin/switchyard-device
NATS_ETC=$ETC/nats
NATS_TRUST=$ETC/nats-trust.conf
NATS_STORE=/var/lib/switchyard/nats
EDGE_DROPIN=$UNIT_DIR/switchyard-edge.service.d/insecure.conf
BRIDGE_MQTT_USER=switchyard-bridge
UNITS=(switchyard-edge.service)
((WITH_NATS)) && UNITS+=(switchyard-nats.service)

CHANGES=0
say() { echo "install.sh: $*"; }

# Secure unless told otherwise: the bridge needs its NATS credentials and message-id key, a new
# nats-site.conf the bundle, the hub's CA and the leaf's certificate.
if ((INSECURE)); then
  say "WARNING: --insecure: plain text and anonymous NATS are allowed; never use this in production"
else
  if [[ -z $BUNDLE && ! -f $PREFIX$CREDENTIALS/bridge.creds ]]; then
    ((WITH_NATS)) || say "warning: no $CREDENTIALS/bridge.creds yet: switchyard-edge will not start until --site-bundle installs it"
    ((!WITH_NATS)) || die 2 "the bridge has no NATS credentials: give --site-bundle (see --help), or --insecure for a test bench"
  fi
  if ((WITH_NATS)) && [[ ! -f $PREFIX$ETC/nats-site.conf ]]; then
    [[ -n $BUNDLE && -n $HUB_CA && -n $LEAF_CERT ]] ||
      die 2 "a new nats-site.conf needs --site-bundle, --hub-ca, --leaf-cert and --leaf-key (or --insecure)"
  fi
fi
# A change: done (and counted), or only printed in a dry run.
change() {
  CHANGES=$((CHANGES + 1))
  if ((DRY_RUN)); then say "would $1"; else say "$1"; fi
}
# Runs a command, or prints it in a dry run.
run() {
  if ((DRY_RUN)); then say "would run: $*"; else "$@"; fi
}

# --- checks of the live system ---------------------------------------------------------------
if [[ -z $PREFIX ]]; then
  if [[ ! -x $NODE ]]; then
    ((DRY_RUN)) || die 1 "no $NODE: install Node.js 20 or later"
    say "warning: no $NODE (Node.js 20 or later is needed)"
  elif ! "$NODE" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    die 1 "$NODE is Node.js $("$NODE" --version); Switchyard needs 20 or later"
  fi
  if ((WITH_NATS)) && [[ ! -x $NATS_SERVER ]]; then
    ((DRY_RUN)) || die 1 "no $NATS_SERVER: apt-get install nats-server (or use --no-nats)"
    say "warning: no $NATS_SERVER (apt-get install nats-server)"
  fi
fi
if ((WITH_MQTT)) && ! command -v mosquitto_passwd >/dev/null; then
  ((DRY_RUN)) || die 1 "no mosquitto_passwd: apt-get install mosquitto (or use --no-mqtt)"
  say "warning: no mosquitto_passwd (apt-get install mosquitto)"
fi

# Numeric id of a group in the target's /etc/group (the prefix's own, not the host's).
gid_of() { [[ ! -f $PREFIX/etc/group ]] || awk -F: -v g="$1" '$1 == g { print $3 }' "$PREFIX/etc/group"; }

# Installs SRC as DEST (a live path) with MODE and GROUP, if it is missing or differs.
install_file() {
  local src=$1 dest=$2 mode=$3 group=${4:-root} what=${5:-$2}
  if [[ -f $PREFIX$dest ]] && cmp -s "$src" "$PREFIX$dest"; then
    say "unchanged $what"
    return 1
  fi
  if [[ -f $PREFIX$dest ]]; then change "update $what"; else change "install $what"; fi
  ((DRY_RUN)) && return 0
  local gid
  gid=$(gid_of "$group")
  install -D -m "$mode" -o 0 -g "${gid:-0}" "$src" "$PREFIX$dest"
}

# --- users -----------------------------------------------------------------------------------
# The Switchyard users the target's /etc/passwd has, e.g. "switchyard switchyard-nats ".
our_users() {
  [[ -f $PREFIX/etc/passwd ]] || return 0
  awk -F: '$1 ~ /^switchyard(-nats)?$/ { print $1 }' "$PREFIX/etc/passwd" | sort | tr '\n' ' '
}
users_before=$(our_users)
install_file "$HERE/switchyard.sysusers" "$SYSUSERS" 0644 root || true
if ((!DRY_RUN)); then
  if command -v systemd-sysusers >/dev/null; then
    root_arg=()
    [[ -z $PREFIX ]] || root_arg=(--root="$PREFIX")
    mkdir -p "$PREFIX/etc"
    systemd-sysusers "${root_arg[@]}" "$PREFIX$SYSUSERS" >/dev/null 2>&1 ||
      die 1 "systemd-sysusers failed on $SYSUSERS"
  elif [[ -z $PREFIX ]]; then
    for u in switchyard switchyard-nats; do
      id -u "$u" >/dev/null 2>&1 || useradd --system --user-group --no-create-home --home-dir / \
        --shell /usr/sbin/nologin "$u"
    done
  else
    die 1 "systemd-sysusers is needed to create users under --prefix"
  fi
fi
users_after=$(our_users)
if ((DRY_RUN)); then
  [[ $users_before == "switchyard switchyard-nats " ]] || change "create users switchyard, switchyard-nats"
elif [[ $users_before != "$users_after" ]]; then
  change "created users: ${users_after% }"
else
  say "unchanged users switchyard, switchyard-nats"
fi

# --- the release -----------------------------------------------------------------------------
# Identifies a release by its content: the build and the dependency lock.
release_id() {
  local paths=(dist package.json)
  [[ -f $1/package-lock.json ]] && paths+=(package-lock.json)
  (cd "$1" && find "${paths[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
NEW_ID=$(release_id "$RELEASE")
OLD_ID=$(cat "$PREFIX$APP/.release-id" 2>/dev/null || true)
VERSION=$(grep -o '"version": *"[^"]*"' "$RELEASE/package.json" | head -n1 | cut -d'"' -f4 || true)
RELEASE_CHANGED=0
if [[ $NEW_ID == "$OLD_ID" ]]; then
  say "unchanged $APP (release $VERSION, $NEW_ID)"
else
  RELEASE_CHANGED=1
  change "install $APP from $RELEASE (release $VERSION, $NEW_ID${OLD_ID:+, replacing $OLD_ID})"
  if ((!DRY_RUN)); then
    stage="$PREFIX$APP.new"
    rm -rf "$stage"
    mkdir -p "$stage"
    cp -R "$RELEASE/dist" "$RELEASE/package.json" "$stage/"
    [[ -f $RELEASE/package-lock.json ]] && cp "$RELEASE/package-lock.json" "$stage/"
    if [[ -f $RELEASE/.switchyard-release && -d $RELEASE/node_modules ]]; then
      # A release from make-release.sh carries its production dependencies: no registry needed.
      cp -R "$RELEASE/node_modules" "$RELEASE/.switchyard-release" "$stage/"
    else
      # A checkout's node_modules holds development tools too: install the production ones only.
      [[ -f $stage/package-lock.json ]] || die 1 "$RELEASE has no package-lock.json to install dependencies from"
      say "running npm ci --omit=dev in $stage"
      (cd "$stage" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) ||
        die 1 "npm ci failed in $stage"
    fi
    echo "$NEW_ID" >"$stage/.release-id"
    # Root owns the code; the services only read it.
    chown -R 0:0 "$stage"
    chmod -R u=rwX,go=rX "$stage"
    [[ -e $PREFIX$APP ]] && mv "$PREFIX$APP" "$PREFIX$APP.old"
    mv "$stage" "$PREFIX$APP"
    rm -rf "$PREFIX$APP.old"
  fi
fi

# --- configuration ---------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ((!DRY_RUN)); then
  install -d -m 0755 -o 0 -g 0 "$PREFIX$ETC"
fi

if [[ -f $PREFIX$ETC/edge.env ]]; then
  say "kept $ETC/edge.env (exists: edit it, then systemctl restart switchyard-edge)"
  if [[ -n $SITE ]] && ! grep -qx "SWITCHYARD_SITE=$SITE" "$PREFIX$ETC/edge.env"; then
    say "warning: $ETC/edge.env does not set SWITCHYARD_SITE=$SITE"
  fi
else
  user_line="s|^#SWITCHYARD_MQTT_USERNAME=.*|SWITCHYARD_MQTT_USERNAME=$BRIDGE_MQTT_USER|"
  ((WITH_MQTT)) || user_line=""
  sed -e "s|^SWITCHYARD_SITE=.*|SWITCHYARD_SITE=$SITE|" -e "$user_line" "$HERE/edge.env" >"$tmp/edge.env"
  install_file "$tmp/edge.env" "$ETC/edge.env" 0640 switchyard || true
  [[ -n $SITE ]] || say "warning: set SWITCHYARD_SITE in $ETC/edge.env: the bridge refuses to start without it"
fi

# --- the site's NATS trust bundle --------------------------------------------------------------
# The `sub` claim of a JWT file: the public key of the account (or operator) it describes.
jwt_subject() {
  local payload
  payload=$(head -n1 "$1" | cut -d. -f2 | tr '_-' '/+')
  while ((${#payload} % 4)); do payload+='='; done
  base64 -d <<<"$payload" 2>/dev/null | grep -o '"sub":"[A-Z0-9]*"' | cut -d'"' -f4
}
# Public key of the gateway's own account: the one the bridge's user and the leaf bind to.
LOCAL_ACCOUNT=""
NATS_CHANGED=0
EDGE_SECRETS_CHANGED=0
if [[ -n $BUNDLE ]]; then
  LOCAL_ACCOUNT=$(jwt_subject "$BUNDLE/local.jwt")
  system_account=$(jwt_subject "$SYSTEM_JWT")
  [[ $LOCAL_ACCOUNT =~ ^A[A-Z0-9]{55}$ && $system_account =~ ^A[A-Z0-9]{55}$ ]] ||
    die 2 "--site-bundle: local.jwt or SYS.jwt is not an account JWT"
  ((DRY_RUN)) || install -d -m 0700 -o 0 -g 0 "$PREFIX$CREDENTIALS"
  install_file "$BUNDLE/bridge.creds" "$CREDENTIALS/bridge.creds" 0600 root && EDGE_SECRETS_CHANGED=1
  install_file "$BUNDLE/msg-id.key" "$CREDENTIALS/msg-id.key" 0600 root && EDGE_SECRETS_CHANGED=1
  if ((WITH_NATS)); then
    if ((!DRY_RUN)); then
      gid=$(gid_of switchyard-nats)
      install -d -m 0750 -o 0 -g "${gid:-0}" "$PREFIX$NATS_ETC"
    fi
    install_file "$OPERATOR_JWT" "$NATS_ETC/operator.jwt" 0640 switchyard-nats && NATS_CHANGED=1
    install_file "$BUNDLE/leaf.creds" "$NATS_ETC/leaf.creds" 0640 switchyard-nats && NATS_CHANGED=1
    # Operator mode: the system account and the gateway's own, from memory. No client gets in
    # without a user JWT of an account the operator signed.
    {
      echo "# Written by install.sh from the site's bundle: replaced on every run that is given one."
      echo "operator: \"$NATS_ETC/operator.jwt\""
      echo "system_account: \"$system_account\""
      echo "resolver: MEMORY"
      echo "resolver_preload {"
      echo "  $system_account: \"$(head -n1 "$SYSTEM_JWT")\""
      echo "  $LOCAL_ACCOUNT: \"$(head -n1 "$BUNDLE/local.jwt")\""
      echo "}"
    } >"$tmp/nats-trust.conf"
    install_file "$tmp/nats-trust.conf" "$NATS_TRUST" 0640 switchyard-nats && NATS_CHANGED=1
  fi
fi
if ((WITH_NATS)); then
  if [[ -n $HUB_CA ]]; then install_file "$HUB_CA" "$NATS_ETC/hub-ca.crt" 0644 root && NATS_CHANGED=1; fi
  if [[ -n $LEAF_CERT ]]; then
    install_file "$LEAF_CERT" "$NATS_ETC/leaf.crt" 0644 root && NATS_CHANGED=1
    install_file "$LEAF_KEY" "$NATS_ETC/leaf.key" 0640 switchyard-nats && NATS_CHANGED=1
  fi
fi

NATS_CONF=""
if ((WITH_NATS)); then
  if [[ -f $PREFIX$ETC/nats-site.conf ]]; then
    say "kept $ETC/nats-site.conf (exists: edit it, then systemctl restart switchyard-nats)"
    NATS_CONF=$PREFIX$ETC/nats-site.conf
    if [[ -n $BUNDLE ]] && ! grep -q '^[[:space:]]*include "nats-trust.conf"' "$NATS_CONF"; then
      say "warning: $ETC/nats-site.conf does not include nats-trust.conf, so the bundle is not used: move it away and run again to render it"
    fi
  else
    [[ -n $SITE && -n $HUB_LEAF_URL ]] ||
      die 2 "$ETC/nats-site.conf does not exist yet: give --site and --hub-leaf-url (or --no-nats)"
    if [[ -n $BUNDLE ]]; then
      trust="include \"nats-trust.conf\""
      leaf_auth=$(printf '%s\n' "credentials: \"$NATS_ETC/leaf.creds\"" "account: \"$LOCAL_ACCOUNT\"")
    else
      trust="# INSECURE (install.sh --insecure): no operator, every client is anonymous"
      leaf_auth="# INSECURE (install.sh --insecure): no credentials"
    fi
    if [[ -n $HUB_CA ]]; then
      leaf_tls=$(printf '%s\n' "tls {" "  ca_file: \"$NATS_ETC/hub-ca.crt\"" \
        ${LEAF_CERT:+"  cert_file: \"$NATS_ETC/leaf.crt\"" "  key_file: \"$NATS_ETC/leaf.key\""} "  timeout: 5" "}")
    elif [[ $HUB_LEAF_URL == tls://* || $HUB_LEAF_URL == wss://* ]]; then
      leaf_tls="# TLS with the system's CAs, no client certificate (install.sh --insecure)"
    else
      leaf_tls="# INSECURE (install.sh --insecure): plain text"
    fi
    # Placeholders are replaced outside comments only: the header keeps documenting them. Each one
    # stands alone on its line and may become several lines, indented as it was.
    awk -v site="$SITE" -v url="$HUB_LEAF_URL" -v store="$MAX_FILE_STORE" -v trust="$trust" \
      -v leaf_auth="$leaf_auth" -v leaf_tls="$leaf_tls" '
      function block(text, indent,   n, i, lines) {
        n = split(text, lines, "\n")
        for (i = 1; i <= n; i++) print indent lines[i]
      }
      /^[[:space:]]*#/ { print; next }
      {
        indent = $0; sub(/[^[:space:]].*$/, "", indent)
        word = $0; gsub(/^[[:space:]]+|[[:space:]]+$/, "", word)
        if (word == "@TRUST@") { block(trust, indent); next }
        if (word == "@LEAF_AUTH@") { block(leaf_auth, indent); next }
        if (word == "@LEAF_TLS@") { block(leaf_tls, indent); next }
        gsub(/@SITE@/, site); gsub(/@HUB_LEAF_URL@/, url); gsub(/@MAX_FILE_STORE@/, store)
        print
      }' "$HERE/nats-site.conf" >"$tmp/nats-site.conf"
    if grep -n '@[A-Z_]*@' "$tmp/nats-site.conf" | grep -v '^[0-9]*:[[:space:]]*#' >&2; then
      die 1 "placeholders left in the rendered nats-site.conf"
    fi
    install_file "$tmp/nats-site.conf" "$ETC/nats-site.conf" 0640 switchyard-nats && NATS_CHANGED=1
    NATS_CONF=$tmp/nats-site.conf
  fi
fi

# --- the bridge's stream budgets against the site server's store -----------------------------
# A setting of edge.env: its uncommented value, else the default the shipped edge.env shows (it is
# generated from the bridge's config schema, so it shows every default).
edge_setting() {
  local line
  line=$(grep -E "^$1=" "$PREFIX$ETC/edge.env" 2>/dev/null | tail -n1 || true)
  [[ -n $line ]] || line=$(grep -E "^#$1=" "$HERE/edge.env" | tail -n1 || true)
  line=${line#*=}
  echo "${line//\'/}"
}
# A nats-server size (10737418240, 10G, 512MB): bytes, or nothing if it cannot be read.
to_bytes() {
  local n unit
  [[ $1 =~ ^([0-9]+)([KkMmGgTt]?)[Bb]?$ ]] || return 0
  n=${BASH_REMATCH[1]} unit=${BASH_REMATCH[2],,}
  case $unit in k) n=$((n << 10)) ;; m) n=$((n << 20)) ;; g) n=$((n << 30)) ;; t) n=$((n << 40)) ;; esac
  echo "$n"
}
refuse_budget() {
  if ((FORCE)); then
    say "WARNING: --force: $1"
  else
    die 1 "$1 (--force to install anyway)"
  fi
}
if [[ -n $NATS_CONF ]]; then
  # SWITCHYARD_<STREAM>_MAX_BYTES of each site stream.
  budget=0
  parts=()
  for name in TELEMETRY EVENTS INVALID; do
    value=$(edge_setting "SWITCHYARD_${name}_MAX_BYTES")
    [[ $value =~ ^[0-9]+$ ]] || die 1 "edge.env: SWITCHYARD_${name}_MAX_BYTES must be a number of bytes, not '$value'"
    budget=$((budget + value))
    parts+=("${name,,} $value")
  done
  what="stream budgets (${parts[0]} + ${parts[1]} + ${parts[2]} = $budget bytes)"
  store_value=$(sed -n 's/^[[:space:]]*max_file_store:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}.*/\1/p' "$NATS_CONF" | tail -n1)
  store=$(to_bytes "$store_value")
  if [[ -z $store ]]; then
    say "warning: cannot read max_file_store in $ETC/nats-site.conf: stream budgets not checked"
  elif ((budget > store)); then
    refuse_budget "$what exceed max_file_store $store of $ETC/nats-site.conf: lower them in edge.env or raise max_file_store"
  elif [[ -n $PREFIX ]]; then
    say "$what fit max_file_store $store (the disk of an image under --prefix is not checked)"
  else
    # What the store holds already counts towards its budgets.
    probe=$NATS_STORE
    while [[ ! -d $probe ]]; do probe=$(dirname "$probe"); done
    free=$(df -B1 --output=avail "$probe" | tail -n1 | tr -d ' ')
    used=$(du -sb "$NATS_STORE" 2>/dev/null | cut -f1 || true)
    if ((free + ${used:-0} < budget)); then
      refuse_budget "$what exceed the $((free + ${used:-0})) bytes free for $NATS_STORE"
    else
      say "$what fit max_file_store $store and the disk ($free bytes free)"
    fi
  fi
else
  say "stream budgets not checked: no site nats-server here (--no-nats)"
fi

# An insecure bench has no bundle: the edge unit loads no NATS secret and says it runs insecure.
if ((INSECURE)) && [[ -z $BUNDLE && ! -f $PREFIX$CREDENTIALS/bridge.creds ]]; then
  {
    echo "# Written by install.sh --insecure: the bridge connects to NATS anonymously. Remove this file"
    echo "# once /etc/switchyard/credentials holds bridge.creds and msg-id.key (install.sh --site-bundle)."
    echo "[Service]"
    echo "LoadCredential="
    if ((WITH_MQTT)); then echo "LoadCredential=mqtt-password:$CREDENTIALS/mqtt-password"; fi
    echo "Environment=SWITCHYARD_NATS_CREDS= SWITCHYARD_MSG_ID_KEY_FILE= SWITCHYARD_INSECURE=true"
  } >"$tmp/insecure.conf"
  install_file "$tmp/insecure.conf" "$EDGE_DROPIN" 0644 root && EDGE_SECRETS_CHANGED=1
elif [[ -f $PREFIX$EDGE_DROPIN ]]; then
  change "remove $EDGE_DROPIN (the bridge has its credentials now)"
  ((DRY_RUN)) || rm -f "$PREFIX$EDGE_DROPIN"
  EDGE_SECRETS_CHANGED=1
fi

# --- the site's MQTT broker ------------------------------------------------------------------
# Changes that mosquitto takes on a reload (users, ACL) and those it needs a restart for (listeners).
MQTT_RELOAD=0
MQTT_RESTART=0
if ((WITH_MQTT)); then
  ((DRY_RUN)) || install -d -m 0755 -o 0 -g 0 "$PREFIX$MQTT_ETC"
  install_file "$HERE/mosquitto-switchyard.acl" "$MQTT_ETC/acl" 0640 mosquitto && MQTT_RELOAD=1
  if [[ -n $MQTT_CERT ]]; then
    install_file "$MQTT_CERT" "$MQTT_ETC/server.crt" 0644 root && MQTT_RESTART=1
    install_file "$MQTT_KEY" "$MQTT_ETC/server.key" 0640 mosquitto && MQTT_RESTART=1
    if [[ -n $MQTT_CA ]]; then install_file "$MQTT_CA" "$MQTT_ETC/ca.crt" 0644 root || true; fi
  fi

  if [[ -f $PREFIX$MQTT_CONF ]]; then
    say "kept $MQTT_CONF (exists: edit it, then systemctl restart mosquitto)"
  else
    if [[ -n $MQTT_CERT ]]; then
      listeners=$(printf '%s\n' \
        "# Devices: TLS only." "listener 8883" "certfile $MQTT_ETC/server.crt" "keyfile $MQTT_ETC/server.key" \
        "# The bridge, on this machine." "listener 1883 127.0.0.1")
    else
      listeners="listener 1883"
    fi
    awk -v block="$listeners" '/^[[:space:]]*#/ { print; next } $0 == "@LISTENERS@" { print block; next } { print }' \
      "$HERE/mosquitto-switchyard.conf" >"$tmp/mosquitto.conf"
    if grep -n '@[A-Z_]*@' "$tmp/mosquitto.conf" | grep -v '^[0-9]*:[[:space:]]*#' >&2; then
      die 1 "placeholders left in the rendered switchyard.conf"
    fi
    install_file "$tmp/mosquitto.conf" "$MQTT_CONF" 0644 root && MQTT_RESTART=1
  fi

  # The bridge's user: a password made once, kept root-only for the edge unit's LoadCredential=,
  # and its hash in the broker's password file. Neither is touched again while both hold it.
  if [[ -f $PREFIX$CREDENTIALS/mqtt-password && -f $PREFIX$MQTT_ETC/passwd ]] &&
    grep -q "^$BRIDGE_MQTT_USER:" "$PREFIX$MQTT_ETC/passwd"; then
    say "unchanged MQTT user $BRIDGE_MQTT_USER"
  else
    change "create the bridge's MQTT user $BRIDGE_MQTT_USER ($MQTT_ETC/passwd, $CREDENTIALS/mqtt-password)"
    MQTT_RELOAD=1
    if ((!DRY_RUN)); then
      install -d -m 0700 -o 0 -g 0 "$PREFIX$CREDENTIALS"
      if [[ ! -f $PREFIX$CREDENTIALS/mqtt-password ]]; then
        (umask 077 && head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$PREFIX$CREDENTIALS/mqtt-password")
      fi
      chown 0:0 "$PREFIX$CREDENTIALS/mqtt-password"
      chmod 0600 "$PREFIX$CREDENTIALS/mqtt-password"
      # mosquitto_passwd -U hashes a file in place: the password never appears on a command line.
      (umask 077 && printf '%s:%s\n' "$BRIDGE_MQTT_USER" "$(cat "$PREFIX$CREDENTIALS/mqtt-password")" >"$tmp/bridge")
      mosquitto_passwd -U "$tmp/bridge"
      { grep -v "^$BRIDGE_MQTT_USER:" "$PREFIX$MQTT_ETC/passwd" 2>/dev/null || true; cat "$tmp/bridge"; } >"$tmp/passwd"
      gid=$(gid_of mosquitto)
      install -m 0640 -o 0 -g "${gid:-0}" "$tmp/passwd" "$PREFIX$MQTT_ETC/passwd"
    fi
  fi
  install_file "$HERE/switchyard-device" "$DEVICE_TOOL" 0755 root || true
elif ((!INSECURE)) && [[ ! -f $PREFIX$CREDENTIALS/mqtt-password ]]; then
  say "warning: no $CREDENTIALS/mqtt-password: switchyard-edge loads it (LoadCredential=) and will not start without it"
fi

# --- units -----------------------------------------------------------------------------------
declare -A UNIT_CHANGED=()
for unit in "${UNITS[@]}"; do
  if install_file "$HERE/$unit" "$UNIT_DIR/$unit" 0644 root; then UNIT_CHANGED[$unit]=1; fi
done

if [[ -n $PREFIX ]]; then
  # An offline root: enable (the [Install] symlinks); whoever boots it starts the units.
  for unit in "${UNITS[@]}"; do
    if [[ -L $PREFIX/etc/systemd/system/multi-user.target.wants/$unit ]]; then
      say "unchanged: $unit enabled"
    else
      change "enable $unit under $PREFIX"
      ((DRY_RUN)) || systemctl --root="$PREFIX" --quiet enable "$unit"
    fi
  done
else
  ((${#UNIT_CHANGED[@]} == 0 && !EDGE_SECRETS_CHANGED)) || run systemctl daemon-reload
  # Debian's nats-server package starts its own server on the same port at boot.
  if ((WITH_NATS)) && [[ $(systemctl is-enabled nats-server.service 2>/dev/null || true) == enabled ]]; then
    change "disable Debian's nats-server.service (switchyard-nats.service replaces it)"
    run systemctl --quiet disable --now nats-server.service
  fi
  declare -A WAS_ACTIVE=()
  for unit in "${UNITS[@]}"; do
    if ((DRY_RUN)); then
      if ((START)); then say "would run: systemctl enable --now $unit"; else say "would run: systemctl enable $unit"; fi
      WAS_ACTIVE[$unit]=1
      continue
    fi
    enabled=$(systemctl is-enabled "$unit" 2>/dev/null || true)
    active=$(systemctl is-active "$unit" 2>/dev/null || true)
    [[ $active == active ]] && WAS_ACTIVE[$unit]=1
    if ((START)); then
      [[ $enabled == enabled && $active == active ]] || change "enable and start $unit"
      systemctl --quiet enable --now "$unit"
    else
      [[ $enabled == enabled ]] || change "enable $unit"
      systemctl --quiet enable "$unit"
    fi
  done
  if ((START)); then
    # A service that was already running picks up a new release, unit or config only when
    # restarted (one started just now has them). The bridge settles the messages in hand on
    # SIGTERM; nats-server flushes its store.
    if ((WITH_NATS && ${WAS_ACTIVE[switchyard-nats.service]:-0})) &&
      ((NATS_CHANGED || ${UNIT_CHANGED[switchyard-nats.service]:-0})); then
      run systemctl restart switchyard-nats.service
    fi
    if ((WITH_MQTT)); then
      if [[ $(systemctl is-active mosquitto.service 2>/dev/null || true) != active ]]; then
        change "start mosquitto.service"
        run systemctl --quiet enable --now mosquitto.service
      elif ((MQTT_RESTART)); then
        # New listeners need a restart; users and the ACL only a reload (no client is dropped).
        run systemctl restart mosquitto.service
      elif ((MQTT_RELOAD)); then
        run systemctl reload mosquitto.service
      fi
    fi
    if ((${WAS_ACTIVE[switchyard-edge.service]:-0})) &&
      ((RELEASE_CHANGED || EDGE_SECRETS_CHANGED || ${UNIT_CHANGED[switchyard-edge.service]:-0})); then
      run systemctl restart switchyard-edge.service
    fi
  fi
fi

noun=changes
((CHANGES == 1)) && noun=change
if ((DRY_RUN)); then
  say "dry run: $CHANGES $noun would be made"
else
  say "done: $CHANGES $noun"
fi
