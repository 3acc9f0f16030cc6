#!/usr/bin/env bash
# Acceptance test: OpenStack tempest's compute API tests, unmodified,
# against `synnefo up` (SQLite, in-process bus, simulated Ganeti).
#
# Installs tempest (pinned) from PyPI into a throwaway venv, starts
# `synnefo up` on a free loopback port with a fresh data dir, adds four
# pre-provisioned non-admin accounts (tempest's accounts.yaml; no admin,
# so no dynamic credentials), writes tempest.conf (no SSH validation, no
# volumes, no networking service) and runs the modules listed in
# TEMPEST_INCLUDE minus scripts/acceptance/tempest-exclude.txt (every
# exclusion there carries its reason). Prints tempest's summary and exits
# non-zero on any failure.
#
# Environment:
#   SYNNEFO_TEST_BIN   a built `synnefo` binary (default: cargo build, debug)
#   TEMPEST_VENV       reuse this venv instead of a throwaway one
#   TEMPEST_VERSION    tempest release from PyPI (default 47.0.0)
#   TEMPEST_REGEX      run only tests matching this (e.g. one module)
#   TEMPEST_RESCUE     [compute-feature-enabled] rescue (default false: tempest
#                      rescues ACTIVE servers, Synnefo's rescue wants them stopped)
#   PORT               API port (default: a free one)
#   KEEP=1             keep the work dir (logs, tempest.conf) for inspection
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/scripts/acceptance"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synnefo-tempest.XXXXXX")
TEMPEST_VERSION=${TEMPEST_VERSION:-47.0.0}
UP_PID=""

# shellcheck source=scripts/acceptance/lib.sh
source "$(dirname "$0")/lib.sh"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=${PORT:-$(free_port)}
API="http://127.0.0.1:${PORT}"

# --- tempest -----------------------------------------------------------------
VENV=${TEMPEST_VENV:-$WORK/venv}
if [[ ! -x "$VENV/bin/tempest" ]]; then
    log "installing tempest==$TEMPEST_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "tempest==$TEMPEST_VERSION"
fi
"$VENV/bin/pip" show tempest 2>/dev/null | grep -E '^Version' || true

# --- server ------------------------------------------------------------------
BIN=${SYNNEFO_TEST_BIN:-}
if [[ -z "$BIN" ]]; then
    log "building synnefo"
    BIN=$(cd "$ROOT" && cargo build --locked --quiet -p synnefo-cli --bin synnefo --message-format=json |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "synnefo":
        print(m["executable"])')
    if [[ -z "$BIN" || ! -x "$BIN" ]]; then echo "could not locate the synnefo binary after cargo build"; exit 1; fi
fi
PASSWORD="tempest-$(date +%s)-$RANDOM"
log "starting synnefo up on $API"
# Low job latency: tempest waits for every server to go ACTIVE or away.
# Every test class logs in with a password from 127.0.0.1, well over the
# per-address login bound (60 a minute) once the run is fast: lift it here.
SYNNEFO_CONFIG=/dev/null SYNNEFO_LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS=0 "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:${PORT}" \
    --clusters 2 --job-latency-ms 20 --demo-password "$PASSWORD" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for i in $(seq 1 120); do
    if curl -fsS "$API/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "synnefo up exited early:"; cat "$WORK/up.log"; exit 1
    fi
    sleep 0.5
    if [[ $i == 120 ]]; then echo "synnefo up did not become healthy"; cat "$WORK/up.log"; exit 1; fi
done

# Pre-provisioned accounts (tempest's accounts.yaml). Compute tests take a
# `member` and a `reader` of one project, some an "alt" account of another:
# three alt-only accounts come first in the file (tempest hands out the
# first free account for alt), then four projects with a member and a
# reader each; two workers hold at most six at once.
admin() { SYNNEFO_CONFIG=/dev/null SYNNEFO_DATABASE__URL="sqlite://$WORK/data/synnefo.db" "$BIN" admin "$@"; }
account() { # user project role
    admin users add "$1" --password "$PASSWORD" --project "$2" >/dev/null
    printf -- "- username: '%s'\n  project_name: '%s'\n  password: '%s'\n  user_domain_name: 'Default'\n  project_domain_name: 'Default'\n" \
        "$1" "$2" "$PASSWORD" >>"$WORK/accounts.yaml"
    if [[ -n "$3" ]]; then printf "  roles: ['%s']\n" "$3" >>"$WORK/accounts.yaml"; fi
}
: >"$WORK/accounts.yaml"
for n in 1 2 3; do account "tempest-alt$n" "tempest-alt$n" ""; done
for n in 1 2 3 4; do
    account "tempest$n" "tempest$n" member
    account "tempest$n-reader" "tempest$n" reader
done
for p in tempest1 tempest2 tempest3 tempest4 tempest-alt1 tempest-alt2 tempest-alt3; do
    admin quotas set "$p" --servers 20 --vcpus 40 --ram 40960 >/dev/null
done

# --- tempest.conf --------------------------------------------------------------
FLAVOR_REF=$(curl -fsS "$API/identity/v3/auth/tokens" -H 'Content-Type: application/json' -D "$WORK/h" -o /dev/null \
    -d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"tempest1\",\"domain\":{\"name\":\"Default\"},\"password\":\"$PASSWORD\"}}},\"scope\":{\"project\":{\"name\":\"tempest1\",\"domain\":{\"name\":\"Default\"}}}}}" &&
    TOKEN=$(awk 'tolower($1)=="x-subject-token:" {print $2}' "$WORK/h" | tr -d '\r') &&
    curl -fsS "$API/compute/v2.1/flavors/detail" -H "X-Auth-Token: $TOKEN" |
    python3 -c 'import json,sys
fl = sorted(json.load(sys.stdin)["flavors"], key=lambda f: (f["ram"], f["id"]))
print(fl[0]["id"], fl[1]["id"])')
read -r FLAVOR FLAVOR_ALT <<<"$FLAVOR_REF"
IMAGE=0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0002      # cirros (seeded by synnefo up)
IMAGE_ALT=0e5a2c6e-8c1b-4b7e-9f3e-6f1d2a0d0001  # debian

"$VENV/bin/tempest" init --workspace-path "$WORK/workspace.yaml" "$WORK/tempest" >/dev/null
cat >"$WORK/tempest/etc/tempest.conf" <<CONF
[DEFAULT]
log_file = $WORK/tempest/tempest.log

[oslo_concurrency]
lock_path = $WORK/tempest/locks

[auth]
use_dynamic_credentials = false
test_accounts_file = $WORK/accounts.yaml
default_credentials_domain_name = Default
create_isolated_networks = false

[identity]
uri_v3 = $API/identity/v3
auth_version = v3
region = RegionOne

[identity-feature-enabled]
api_v2 = false
api_v3 = true

[compute]
image_ref = $IMAGE
image_ref_alt = $IMAGE_ALT
flavor_ref = $FLAVOR
flavor_ref_alt = $FLAVOR_ALT
build_timeout = 60
build_interval = 1
region = RegionOne
min_microversion = 2.1
max_microversion = 2.79

[compute-feature-enabled]
disk_config = false
change_password = false
console_output = false
resize = true
pause = false
shelve = false
suspend = false
cold_migration = false
live_migration = false
metadata_service = false
vnc_console = true
spice_console = false
serial_console = false
rescue = ${TEMPEST_RESCUE:-false}
enable_instance_password = true
interface_attach = false
snapshot = false
personality = false
config_drive = false
attach_encrypted_volume = false
swap_volume = false
volume_multiattach = false

[image]
region = RegionOne

[image-feature-enabled]
api_v1 = false
api_v2 = true

[network]
public_network_id =
floating_network_name =
shared_physical_network = false

[network-feature-enabled]
floating_ips = false
port_security = false
ipv6 = false

[validation]
run_validation = false
connect_method = fixed

[service_available]
nova = true
glance = true
neutron = true
cinder = false
swift = false
horizon = false
CONF

# --- run ---------------------------------------------------------------------
INCLUDE=${TEMPEST_REGEX:-'^tempest\.api\.compute\.(test_versions|flavors|limits|keypairs|servers\.(test_create_server|test_list_server_filters|test_list_servers_negative|test_servers_negative|test_server_actions|test_delete_server|test_server_addresses|test_server_metadata|test_server_password|test_instance_actions(_negative)?|test_novnc))\b'}
EXCLUDE="$WORK/exclude.txt"
# the list file takes one regex a line; drop the comments
sed -e 's/[[:space:]]*#.*$//' -e '/^[[:space:]]*$/d' "$HERE/tempest-exclude.txt" >"$EXCLUDE"
log "running tempest ($(wc -l <"$EXCLUDE") exclusions)"
cd "$WORK/tempest"
rc=0
timeout 1200 "$VENV/bin/tempest" run --concurrency 2 --regex "$INCLUDE" --exclude-list "$EXCLUDE" >"$WORK/tempest/run.log" 2>&1 || rc=$?
grep -E '^\{[0-9]+\} .* \.\.\. (FAILED|ok|SKIPPED)' "$WORK/tempest/run.log" | grep -v ' ok$' || true
sed -n '/^======/,$p' "$WORK/tempest/run.log" | tail -n 40
if [[ $rc -ne 0 ]]; then
    echo "--- tempest failures (details) ---"
    grep -E -A40 '^(FAIL|ERROR):|Traceback' "$WORK/tempest/run.log" | head -n 400 || true
    echo "--- synnefo up log (tail) ---"
    tail -n 50 "$WORK/up.log"
    exit 1
fi
