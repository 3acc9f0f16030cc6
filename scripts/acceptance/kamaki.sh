#!/usr/bin/env bash
# Acceptance test: kamaki 0.16 (Synnefo's own CLI, Python 2.7) against
# `synnefo up` (SQLite, in-process bus, simulated Ganeti) on loopback.
#
# Finds a Python 2.7 (KAMAKI_PYTHON, python2.7 on PATH, or pyenv's
# versions), installs kamaki 0.16 and its dependencies at pinned versions
# from PyPI into a throwaway directory, starts `synnefo up` on a free
# loopback port with a fresh data dir, configures kamaki in an isolated
# HOME, and runs an unmodified session: login, flavor and image listing,
# server create --wait, list, info, info --diagnostics (the build messages,
# newest first), shutdown, modify --flavor-id (resize), start, reboot SOFT
# and HARD,
# console, quota, resource and project listing, delete; key pairs
# (generate, upload, list, info, server create --key-name, delete);
# networks through the Cyclades network API (network create, list, info,
# modify, connect, disconnect, delete; subnet create, list, info, modify;
# server create --network NET and NET,FLOATING_IP; port create, list,
# info, wait, delete; ip create, list, info, attach, detach, delete; the refusals of another
# project's floating IP, an unreserved address and an unknown network); and
# the negatives (unknown server id, bad token). Every step checks kamaki's output, not just its exit status. Prints "N passed, M failed" and exits
# non-zero on any failure.
#
# Without a Python 2.7 the run is SKIPPED (exit 0), except under CI=true,
# where it fails.
#
# Environment:
#   SYNNEFO_TEST_BIN   a built `synnefo` binary (default: cargo build, debug)
#   KAMAKI_PYTHON      the Python 2.7 interpreter to use
#   KAMAKI_DIR         reuse this install dir (pip --target) instead of a throwaway one
#   PORT               API port (default: a free one)
#   KEEP=1             keep the work dir (logs, data, kamaki home) for inspection
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synnefo-kamaki.XXXXXX")
UP_PID=""
STARTED=$(date +%s)

# shellcheck source=scripts/acceptance/lib.sh
source "$(dirname "$0")/lib.sh"

# --- Python 2.7 ---------------------------------------------------------------
is_py27() { [[ -n "$1" && -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; }
find_py27() {
    local c
    for c in "${KAMAKI_PYTHON:-}" "$(command -v python2.7 2>/dev/null || true)"; do
        if is_py27 "$c"; then echo "$c"; return 0; fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root=$(pyenv root 2>/dev/null || true)
        for c in "$root"/versions/2.7*/bin/python2.7; do
            if is_py27 "$c"; then echo "$c"; return 0; fi
        done
    fi
    return 1
}
if ! PY=$(find_py27); then
    if [[ "${CI:-}" == true ]]; then
        echo "FAIL: no Python 2.7 found (kamaki 0.16 needs it): set KAMAKI_PYTHON or install it under pyenv"
        exit 1
    fi
    echo "SKIPPED: kamaki acceptance: no Python 2.7 found (set KAMAKI_PYTHON); CI=true makes this a failure"
    exit 0
fi
log "Python 2.7: $PY"

# --- kamaki -------------------------------------------------------------------
KDIR=${KAMAKI_DIR:-$WORK/kamaki}
if [[ ! -f "$KDIR/bin/kamaki" ]]; then
    log "installing kamaki 0.16 into $KDIR"
    # Pinned: kamaki 0.16 with the astakosclient and libraries it was released against.
    "$PY" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --no-compile --target "$KDIR" \
        kamaki==0.16 astakosclient==0.19 objpool==0.4 progress==1.6 \
        python-dateutil==2.8.2 six==1.16.0
fi
# kamaki alone gets the isolated HOME (its ~/.kamakirc); cargo and rustup
# below keep the caller's, where the toolchain is configured.
KHOME="$WORK/home"
mkdir -p "$KHOME"
kamaki() { HOME="$KHOME" PYTHONPATH="$KDIR" timeout 120 "$PY" "$KDIR/bin/kamaki" "$@"; }
kamaki --version

# --- server -------------------------------------------------------------------
BIN=${SYNNEFO_TEST_BIN:-}
if [[ -z "$BIN" ]]; then
    log "building synnefo"
    # Ask cargo where it put the binary: CI points CARGO_TARGET_DIR at a cache outside the clone.
    BIN=$(cd "$ROOT" && cargo build --locked --quiet -p synnefo-cli --bin synnefo --message-format=json |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "synnefo":
        print(m["executable"])')
    if [[ -z "$BIN" || ! -x "$BIN" ]]; then echo "could not locate the synnefo binary after cargo build"; exit 1; fi
fi
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
API="http://127.0.0.1:${PORT}"
PASSWORD="kamaki-$(date +%s)"
log "starting synnefo up on $API"
SYNNEFO_CONFIG=/dev/null "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:${PORT}" \
    --clusters 1 --demo-password "$PASSWORD" >"$WORK/up.log" 2>&1 &
UP_PID=$!
for i in $(seq 1 120); do
    if curl -fsS "$API/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "synnefo up exited early:"; cat "$WORK/up.log"; exit 1
    fi
    sleep 0.5
    if [[ $i == 120 ]]; then echo "synnefo up did not become healthy"; cat "$WORK/up.log"; exit 1; fi
done

# A token for the demo user, the way Astakos hands them out (passwordCredentials).
TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
    -d "{\"auth\":{\"passwordCredentials\":{\"username\":\"demo\",\"password\":\"$PASSWORD\"}}}" \
    "$API/identity/v2.0/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"]["token"]["id"])')
kamaki config set cloud.default.url "$API/identity/v2.0" >/dev/null
kamaki config set cloud.default.token "$TOKEN" >/dev/null

# Runs a kamaki command: its standard output in $OUT, both outputs in
# $ALL, its status in $RC. Returns 0.
run() {
    RC=0
    OUT=$(kamaki "$@" 2>"$WORK/stderr") || RC=$?
    ALL="$OUT"$'\n'"$(cat "$WORK/stderr")"
}

# Runs a kamaki command that must succeed and print something matching $2
# (extended regex).
expect() {
    local name=$1 pattern=$2; shift 2
    run "$@"
    if [[ $RC -ne 0 ]]; then
        fail "$name" "exit status $RC from: kamaki $*; output: $ALL"
        return 1
    fi
    if grep -Eq -- "$pattern" <<<"$ALL"; then
        pass "$name"
    else
        fail "$name" "output does not match /$pattern/: $ALL"
        return 1
    fi
}

# Runs a kamaki command that must fail (non-zero status, no traceback) and
# print something matching $2.
expect_refusal() {
    local name=$1 pattern=$2; shift 2
    run "$@"
    if [[ $RC -eq 0 ]]; then
        fail "$name" "kamaki $* succeeded: $ALL"
    elif grep -q 'Traceback' <<<"$ALL"; then
        fail "$name" "kamaki crashed: $ALL"
    elif grep -Eq -- "$pattern" <<<"$ALL"; then
        pass "$name"
    else
        fail "$name" "output does not match /$pattern/: $ALL"
    fi
}

# Reads one field of kamaki's JSON output ($OUT) with a Python expression
# over `d` (the parsed document).
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print($1)" <<<"$OUT"; }

# Polls `server info` until the status is $2 (60 s).
wait_status() {
    local server=$1 want=$2 got=""
    for _ in $(seq 1 120); do
        run server info "$server" --output-format json
        got=$(field 'd["status"]' 2>/dev/null || true)
        [[ "$got" == "$want" ]] && return 0
        sleep 0.5
    done
    echo "status of server $server is $got, not $want" >&2
    return 1
}

# --- the session --------------------------------------------------------------
expect "login (user authenticate)" '"name": "demo"' user authenticate --output-format json || true
USER_ID=$(field 'd["access"]["user"]["id"]' 2>/dev/null || true)
PROJECT_ID=$(field 'd["access"]["token"]["tenant"]["id"]' 2>/dev/null || true)
expect "user info" "$USER_ID" user info || true

expect "flavor list" '[0-9]+ m1\.tiny' flavor list || true
run flavor list --output-format json
FLAVOR=$(field '[f["id"] for f in d if f["name"] == "m1.tiny"][0]' 2>/dev/null || true)
expect "flavor info" '^name: *m1\.tiny' flavor info "$FLAVOR" || true
expect "imagecompute list" ' debian$' imagecompute list || true
run imagecompute list --output-format json
IMAGE=$(field '[i["id"] for i in d if i["name"] == "debian"][0]' 2>/dev/null || true)
expect "imagecompute list --details" '"os": "debian"' imagecompute list --details --output-format json || true

SERVER=""
if expect "server create --wait" '^Server [0-9]+ status: ACTIVE' server create --name kamaki-vm \
    --flavor-id "$FLAVOR" --image-id "$IMAGE" --wait; then
    SERVER=$(sed -nE 's/^id: *([0-9]+)$/\1/p' <<<"$OUT" | head -n 1)
fi
if [[ -z "$SERVER" ]]; then
    fail "server id" "no id in the create output"
    SERVER=0
fi
expect "server list" "^$SERVER kamaki-vm$" server list || true
expect "server info" '^status: *ACTIVE' server info "$SERVER" || true
run server info "$SERVER" --output-format json
if [[ $(field 'd["user_id"] + " " + str(d["flavor"]["id"]) + " " + d["image"]["id"]' 2>/dev/null) == "$USER_ID $FLAVOR $IMAGE" ]]; then
    pass "server info (owner, flavor, image)"
else
    fail "server info (owner, flavor, image)" "$OUT"
fi
# snf-image's build messages (simulated by synnefo up) as Synnefo lists
# them: newest first, the helper's tasks among them.
expect "server info --diagnostics" '"source": "image-helper-task-start"' server info "$SERVER" --diagnostics --output-format json || true
if [[ $(field 'd[0]["message"] + " " + d[0]["level"]' 2>/dev/null) == "Image customization finished successfully. DEBUG" ]]; then
    pass "server info --diagnostics (newest first)"
else
    fail "server info --diagnostics (newest first)" "$OUT"
fi

if expect "server shutdown --wait" '^Server [0-9]+ status: STOPPED' server shutdown "$SERVER" --wait &&
    wait_status "$SERVER" STOPPED; then pass "server is STOPPED"; else fail "server is STOPPED" "$ALL"; fi
expect "quota list (stopped: cpu released)" '' quota list --output-format json || true
if [[ $(field 'd["'"$PROJECT_ID"'"]["cyclades.cpu"]["usage"], d["'"$PROJECT_ID"'"]["cyclades.total_cpu"]["usage"]' 2>/dev/null) == "0 1" ]]; then
    pass "quota usage while stopped"
else
    fail "quota usage while stopped" "$OUT"
fi
# Synnefo's resize, kamaki's `server modify --flavor-id`: a stopped
# server, another flavor of the same disk (`synnefo up`'s m2.tiny), no
# confirmation step; kamaki prints nothing on success.
run flavor list --output-format json
FLAVOR2=$(field '[f["id"] for f in d if f["name"] == "m2.tiny"][0]' 2>/dev/null || true)
if expect "server modify --flavor-id (resize)" '' server modify "$SERVER" --flavor-id "$FLAVOR2" &&
    wait_status "$SERVER" STOPPED && [[ $(field 'd["flavor"]["id"]' 2>/dev/null) == "$FLAVOR2" ]]; then
    pass "server info (STOPPED, the new flavor)"
else
    fail "server info (STOPPED, the new flavor)" "$ALL"
fi
expect_refusal "server modify --flavor-id (same flavor)" 'already' server modify "$SERVER" --flavor-id "$FLAVOR2"
if expect "server start --wait" '^Server [0-9]+ status: ACTIVE' server start "$SERVER" --wait &&
    wait_status "$SERVER" ACTIVE; then pass "server is ACTIVE again"; else fail "server is ACTIVE again" "$ALL"; fi
if expect "server reboot (SOFT)" '' server reboot "$SERVER" --wait && wait_status "$SERVER" ACTIVE; then
    pass "server ACTIVE after SOFT reboot"
else
    fail "server ACTIVE after SOFT reboot" "$OUT"
fi
if expect "server reboot --type HARD" '' server reboot "$SERVER" --type HARD --wait && wait_status "$SERVER" ACTIVE; then
    pass "server ACTIVE after HARD reboot"
else
    fail "server ACTIVE after HARD reboot" "$OUT"
fi
expect "server console" '^password: *[^ ]+' server console "$SERVER" || true
if grep -Eq '^type: *vnc' <<<"$ALL" && grep -Eq '^port: *[0-9]+' <<<"$ALL" && grep -Eq '^host: *[^ ]+' <<<"$ALL"; then
    pass "server console (type, host, port)"
else
    fail "server console (type, host, port)" "$OUT"
fi

expect "quota list" "^$PROJECT_ID:" quota list || true
if grep -Eq '^ *cyclades\.vm:' <<<"$ALL" && grep -Eq '^ *cyclades\.ram:' <<<"$ALL"; then
    pass "quota list (resources)"
else
    fail "quota list (resources)" "$OUT"
fi
run quota list --output-format json
if [[ $(field 'd["'"$PROJECT_ID"'"]["cyclades.vm"]["usage"], d["'"$PROJECT_ID"'"]["cyclades.vm"]["limit"], d["'"$PROJECT_ID"'"]["cyclades.ram"]["usage"]' 2>/dev/null) == "1 50 1073741824" ]]; then
    pass "quota usage and limit (1 of 50 servers, 1 GiB: resized to m2.tiny)"
else
    fail "quota usage and limit (1 of 50 servers, 1 GiB: resized to m2.tiny)" "$OUT"
fi
expect "quota list --resource" 'cyclades\.vm' quota list --resource cyclades.vm || true
expect "resource list" '^cyclades\.total_cpu:' resource list || true
expect "project list" "^$PROJECT_ID demo" project list || true
expect "project info" '^name: *demo$' project info "$PROJECT_ID" || true

if expect "server delete" '' server delete "$SERVER"; then
    run server list --output-format json
    if [[ $RC -eq 0 && $(field 'len(d)' 2>/dev/null) == 0 ]]; then
        pass "server gone after delete"
    else
        fail "server gone after delete" "$OUT"
    fi
fi
run quota list --output-format json
if [[ $(field 'd["'"$PROJECT_ID"'"]["cyclades.vm"]["usage"]' 2>/dev/null) == 0 ]]; then
    pass "quota released after delete"
else
    fail "quota released after delete" "$OUT"
fi

# --- key pairs (Cyclades os-keypairs) -------------------------------------------
KEY="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti kamaki@example"
expect "keypair generate" 'BEGIN OPENSSH PRIVATE KEY' keypair generate --key-name kamaki-gen || true
expect "keypair upload" '^fingerprint: *ae:6f:ba:1b:70:2c:ae:c7:5c:ab:6e:4d:5e:d4:c7:23$' \
    keypair upload --public-key "$KEY" --key-name kamaki-key || true
expect "keypair list" '^kamaki-key$' keypair list || true
expect "keypair info" '^public_key: *ssh-ed25519 ' keypair info kamaki-key || true
if expect "server create --key-name" '^key_name: *kamaki-key$' server create --name kamaki-keyed \
    --flavor-id "$FLAVOR" --image-id "$IMAGE" --key-name kamaki-key; then
    KEYED=$(sed -nE 's/^id: *([0-9]+)$/\1/p' <<<"$OUT" | head -n 1)
    [[ -n "$KEYED" ]] && run server delete "$KEYED"
fi
expect_refusal "server create --key-name (unknown key)" 'Invalid key_name' server create --name kamaki-nokey \
    --flavor-id "$FLAVOR" --image-id "$IMAGE" --key-name no-such-key
if expect "keypair delete" '' keypair delete kamaki-key && run keypair list && ! grep -q 'kamaki-key' <<<"$ALL"; then
    pass "keypair gone after delete"
else
    fail "keypair gone after delete" "$ALL"
fi

# --- networks (the Cyclades network API at the catalog's cyclades_network) ---
# A second project, holding a floating IP of `synnefo up`'s public network:
# made directly in the database `synnefo up` uses, its token from Astakos.
OTHER_FIP=""
if SYNNEFO_CONFIG=/dev/null SYNNEFO_DATABASE__URL="sqlite://$WORK/data/synnefo.db?mode=rwc" \
    "$BIN" admin users add kamaki-other --project others --password-stdin <<<"$PASSWORD" >"$WORK/admin.log" 2>&1; then
    OTHER_TOKEN=$(curl -fsS -H 'Content-Type: application/json' \
        -d "{\"auth\":{\"passwordCredentials\":{\"username\":\"kamaki-other\",\"password\":\"$PASSWORD\"}}}" \
        "$API/identity/v2.0/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access"]["token"]["id"])') || true
    OTHER_FIP=$(curl -fsS -H "X-Auth-Token: ${OTHER_TOKEN:-x}" -H 'Content-Type: application/json' \
        -d '{"floatingip": {}}' "$API/network/v2.0/floatingips" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["floatingip"]["floating_ip_address"])') || true
fi
[[ -n "$OTHER_FIP" ]] || echo "note: no floating IP of another project ($(cat "$WORK/admin.log"))"

run network list --output-format json
PUBLIC_NET=$(field '[n["id"] for n in d if n["name"] == "public"][0]' 2>/dev/null || true)
expect "network list (public)" "^$PUBLIC_NET public \\( public \\)\$" network list || true
NET=""
if expect "network create" '"type": "MAC_FILTERED"' network create --name kamaki-net --output-format json; then
    NET=$(field 'd["id"]')
fi
NET=${NET:-none}
expect "network list (private)" "^$NET kamaki-net \\( private \\)\$" network list || true
expect "network info" '^status: *ACTIVE$' network info "$NET" || true
expect "network modify --name" '^name: *kamaki-private$' network modify "$NET" --name kamaki-private || true
SUBNET=""
if expect "subnet create" '"cidr": "10\.77\.0\.0/24"' subnet create --network-id "$NET" --cidr 10.77.0.0/24 \
    --name kamaki-sub --output-format json; then
    SUBNET=$(field 'd["id"]')
fi
SUBNET=${SUBNET:-none}
expect "subnet list" "^$SUBNET kamaki-sub \\( of network $NET \\)\$" subnet list || true
run subnet info "$SUBNET" --output-format json
if [[ $RC -eq 0 && $(field 'd["subnet"]["gateway_ip"], d["subnet"]["allocation_pools"][0]["start"]' 2>/dev/null) == "10.77.0.1 10.77.0.2" ]]; then
    pass "subnet info (gateway, pool)"
else
    fail "subnet info (gateway, pool)" "$ALL"
fi
expect "subnet modify --name" '^name: *kamaki-subnet$' subnet modify "$SUBNET" --name kamaki-subnet || true

# A server on the private network only (kamaki's --network).
NETVM=""
if expect "server create --network" '^Server [0-9]+ status: ACTIVE' server create --name kamaki-netvm \
    --flavor-id "$FLAVOR" --image-id "$IMAGE" --network "$NET" --wait; then
    NETVM=$(sed -nE 's/^id: *([0-9]+)$/\1/p' <<<"$OUT" | head -n 1)
fi
NETVM=${NETVM:-0}
# The server's NICs as `server info` shows them, one "network_id ipv4 type" a line.
nics() {
    run server info "$NETVM" --output-format json
    field '"\n".join("%s %s %s" % (p["network_id"], p.get("ipv4"), p.get("OS-EXT-IPS:type")) for p in d.get("ports", d.get("attachments", [])))' 2>/dev/null || true
}
PRIV_IP=$(nics | sed -nE "s/^$NET (10\\.77\\.0\\.[0-9]+) fixed\$/\\1/p")
if [[ -n "$PRIV_IP" && $(nics | wc -l) == 1 ]]; then pass "server info (an address on the private network)"; else fail "server info (an address on the private network)" "$(nics)"; fi
expect_refusal "network delete (in use)" '(409|in use|[Ii]n[Uu]se)' network delete "$NET"

PORT=""
if expect "port create --device-id" '"ip_address": "10\.77\.0\.[0-9]+"' port create --network-id "$NET" \
    --device-id "$NETVM" --name kamaki-port --output-format json; then
    PORT=$(field 'd[0]["id"]')
fi
PORT=${PORT:-none}
expect "port list" "^$PORT kamaki-port\$" port list || true
run port info "$PORT" --output-format json
if [[ $RC -eq 0 && $(field 'd["device_id"], d["network_id"], d["status"]' 2>/dev/null) == "$NETVM $NET ACTIVE" ]]; then
    pass "port info (server, network, ACTIVE)"
else
    fail "port info (server, network, ACTIVE)" "$ALL"
fi
expect "port wait --until ACTIVE" "Port $PORT: already in ACTIVE" port wait "$PORT" --until ACTIVE || true
if [[ $(nics | grep -c "^$NET ") == 2 ]]; then pass "server info (two NICs on the network)"; else fail "server info (two NICs on the network)" "$(nics)"; fi
expect "port delete --wait" "Port $PORT is deleted" port delete "$PORT" --wait || true
expect_refusal "port info (deleted)" "No port with id $PORT found" port info "$PORT"
expect "network disconnect" "Deleting port" network disconnect "$NET" --device-id "$NETVM" || true
if [[ -z $(nics | grep "^$NET ") ]]; then pass "server off the network"; else fail "server off the network" "$(nics)"; fi
expect "network connect" '"ip_address": "10\.77\.0\.[0-9]+"' network connect "$NET" --device-id "$NETVM" --output-format json || true
if [[ $(nics | grep -c "^$NET ") == 1 ]]; then pass "server on the network again"; else fail "server on the network again" "$(nics)"; fi

# Floating IPs from the public network, attached as a NIC of their own.
FIP="" FIP_ID=""
if expect "ip create" '"floating_ip_address": "10\.0\.[0-9]+\.[0-9]+"' ip create --output-format json; then
    FIP=$(field 'd["floating_ip_address"]') FIP_ID=$(field 'd["id"]')
fi
FIP=${FIP:-none} FIP_ID=${FIP_ID:-none}
run ip list --output-format json
if [[ $RC -eq 0 && $(field '[(f["id"], f["port_id"]) for f in d if f["floating_ip_address"] == "'"$FIP"'"]' 2>/dev/null) == "[('$FIP_ID', None)]" ]]; then
    pass "ip list (reserved, unattached)"
else
    fail "ip list (reserved, unattached)" "$ALL"
fi
expect "ip info" "^floating_network_id: *$PUBLIC_NET\$" ip info "$FIP_ID" || true
if expect "ip attach" "\"ip_address\": \"${FIP//./\\.}\"|\"network_id\": \"$PUBLIC_NET\"" ip attach "$FIP" --server-id "$NETVM" \
    --output-format json && nics | grep -qx "$PUBLIC_NET $FIP floating"; then
    pass "server info (the floating IP on the public network)"
else
    fail "server info (the floating IP on the public network)" "$(nics)"
fi
run ip info "$FIP_ID" --output-format json
FIP_PORT=$(field 'd["port_id"] or ""' 2>/dev/null || true)
run port info "${FIP_PORT:-none}" --output-format json
if [[ -n "$FIP_PORT" && $(field 'd["device_id"], d["network_id"]' 2>/dev/null) == "$NETVM $PUBLIC_NET" ]]; then
    pass "ip info (attached through a port on the public network)"
else
    fail "ip info (attached through a port on the public network)" "port ${FIP_PORT:-none}: $ALL"
fi
expect_refusal "ip attach (attached already)" '(409|already associated)' ip attach "$FIP" --server-id "$NETVM"
expect "ip detach" "Deleting port $FIP_PORT" ip detach "$FIP" || true
if ! nics | grep -q " $FIP " && run ip info "$FIP_ID" && grep -Eq '^port_id: *None$' <<<"$ALL"; then
    pass "ip detached (reserved still, off the server)"
else
    fail "ip detached (reserved still, off the server)" "$ALL / $(nics)"
fi
expect "ip attach (again)" '' ip attach "$FIP" --server-id "$NETVM" || true
if expect "ip delete (attached)" '' ip delete "$FIP_ID" && ! nics | grep -q " $FIP " &&
    run ip list --output-format json && [[ $(field 'len(d)' 2>/dev/null) == 0 ]]; then
    pass "ip gone with its port"
else
    fail "ip gone with its port" "$ALL / $(nics)"
fi
# A server created with a floating IP (kamaki's --network NET,IP): its NIC
# on the public network carries it; deleting the server frees the IP.
FIP2=""
if expect "ip create (for a new server)" '"floating_ip_address"' ip create --output-format json; then
    FIP2=$(field 'd["floating_ip_address"]') FIP2_ID=$(field 'd["id"]')
fi
FIPVM=""
if expect "server create --network NET,IP" '^Server [0-9]+ status: ACTIVE' server create --name kamaki-fipvm \
    --flavor-id "$FLAVOR" --image-id "$IMAGE" --network "$PUBLIC_NET,${FIP2:-none}" --wait; then
    FIPVM=$(sed -nE 's/^id: *([0-9]+)$/\1/p' <<<"$OUT" | head -n 1)
fi
run ip info "${FIP2_ID:-none}" --output-format json
if [[ -n "$FIPVM" && $(field 'd["instance_id"]' 2>/dev/null) == "$FIPVM" ]] &&
    run server info "$FIPVM" --output-format json &&
    [[ $(field '[(p["network_id"], p.get("ipv4"), p.get("OS-EXT-IPS:type")) for p in d.get("ports", d.get("attachments", []))]' 2>/dev/null) == "[('$PUBLIC_NET', '$FIP2', 'floating')]" ]]; then
    pass "server info (created with the floating IP)"
else
    fail "server info (created with the floating IP)" "$ALL"
fi
if [[ -n "$FIPVM" ]] && run server delete "$FIPVM" && [[ $RC -eq 0 ]]; then
    for _ in $(seq 1 60); do
        run ip info "${FIP2_ID:-none}" --output-format json
        [[ $(field 'd["port_id"]' 2>/dev/null) == None ]] && break
        sleep 0.5
    done
    if [[ $(field 'd["port_id"], d["instance_id"]' 2>/dev/null) == "None None" ]] && expect "ip delete" '' ip delete "${FIP2_ID:-none}"; then
        pass "ip free again after its server's delete"
    else
        fail "ip free again after its server's delete" "$ALL"
    fi
else
    fail "ip free again after its server's delete" "no server to delete: $ALL"
fi

# Refusals: another project's floating IP, an address nobody reserved, an
# unknown network.
expect_refusal "port with another project's floating IP" "(403|[Ff]orbidden).*not one of your project's" \
    port create --network-id "$PUBLIC_NET" --device-id "$NETVM" --ip-address "${OTHER_FIP:-10.0.255.254}"
expect_refusal "ip attach (not reserved)" 'does not match any reserved IPs' ip attach 192.0.2.99 --server-id "$NETVM"
expect_refusal "port create (unknown network)" 'No network with id no-such-net found' \
    port create --network-id no-such-net --device-id "$NETVM"

# The server's ports go with it (once its deletion is written), then the
# network can go.
if expect "server delete (networked)" '' server delete "$NETVM"; then
    for _ in $(seq 1 60); do
        run network delete "$NET"
        [[ $RC -eq 0 ]] && break
        sleep 0.5
    done
    if [[ $RC -eq 0 ]] && run network list && ! grep -q 'kamaki-private' <<<"$ALL"; then
        pass "network delete (after its server)"
    else
        fail "network delete (after its server)" "$ALL"
    fi
fi

# --- negatives ----------------------------------------------------------------
expect_refusal "unknown server id" '(not found|404)' server info 999999
expect_refusal "unknown project id" '(not found|404)' project info 0123456789abcdef0123456789abcdef
kamaki config set cloud.default.token "0000000000000000000000000000000000000000000000000000000000000000" >/dev/null
expect_refusal "bad token" '(401|[Uu]nauthori[sz]ed|[Aa]uthenticat)' server list

ELAPSED=$(($(date +%s) - STARTED))
echo "$PASSED passed, $FAILED failed (${ELAPSED}s)"
if [[ $FAILED -ne 0 ]]; then
    echo "--- synnefo up log (tail) ---"
    tail -n 50 "$WORK/up.log"
    exit 1
fi
