#!/usr/bin/env bash
# Acceptance test: the stock python-openstackclient against `synnefo up`
# (SQLite, in-process bus, simulated Ganeti) on loopback.
#
# Installs python-openstackclient from PyPI into a throwaway venv, starts
# `synnefo up` on a free loopback port with a fresh data dir, and runs,
# unmodified: flavor list, image list, keypair create/list/show (generated
# and imported), server create --key-name --wait, server list, server show,
# server lock (stop refused) / unlock, server stop, server start, server
# reboot, server event list/show; resize (two operator flavors with
# m1.tiny's disk, `synnefo admin flavors add` on the same database): server
# stop, server resize --flavor --wait (VERIFY_RESIZE, the new flavor),
# server resize confirm (SHUTOFF, the new flavor), a second server resize
# --wait, server resize revert (SHUTOFF, the flavor before), server event
# list (the resize actions), server start, a resize of the running server
# and its confirmation (ACTIVE, the new flavor); server rescue
# --image (refused: one rescue image), server rescue (RESCUE, vm_state
# rescued), server unrescue (SHUTOFF), server event list (the rescue
# actions); server start; console url show, server delete --wait,
# keypair delete; then networks (Neutron at /network): network create,
# subnet create, network list, subnet show, port create/list/delete,
# server create on that network and on `synnefo up`'s public one (an
# address on each), port list --server, floating ip create (public), server
# add floating ip, server show (fixed and floating), server remove floating
# ip, floating ip delete, server delete (ports released, the address back in
# the pool), an operator's external network (`synnefo admin users add
# --admin` on the same database), subnet delete, network delete; server
# create --user-data (the server's progress rising while it builds, the
# cloud_userdata OS parameter in Ganeti's create job, an operator's server
# show at 2.3 with OS-EXT-SRV-ATTR:user_data). Each output is checked. Prints "N passed, M failed" and exits non-zero on any failure.
#
# Environment:
#   SYNNEFO_TEST_BIN   a built `synnefo` binary (default: cargo build, debug)
#   OSC_VENV      reuse this venv instead of a throwaway one
#   PORT          API port (default 18774)
#   KEEP=1        keep the work dir (logs, data) for inspection
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/synnefo-osc.XXXXXX")
PORT=${PORT:-18774}
API="http://127.0.0.1:${PORT}"
PASSWORD="acceptance-$(date +%s)"
UP_PID=""

# shellcheck source=scripts/acceptance/lib.sh
source "$(dirname "$0")/lib.sh"

# --- client ----------------------------------------------------------------
VENV=${OSC_VENV:-$WORK/venv}
if [[ ! -x "$VENV/bin/openstack" ]]; then
    log "installing python-openstackclient into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check python-openstackclient
fi
"$VENV/bin/openstack" --version

# --- server ----------------------------------------------------------------
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
log "starting synnefo up on $API"
# Build messages slow enough for a client to see a server's progress rise.
SYNNEFO_CONFIG=/dev/null "$BIN" up --data-dir "$WORK/data" --listen "127.0.0.1:${PORT}" \
    --clusters 1 --demo-password "$PASSWORD" \
    --build-progress-steps 20 --build-progress-interval-ms 600 >"$WORK/up.log" 2>&1 &
UP_PID=$!
for i in $(seq 1 120); do
    if curl -fsS "$API/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$UP_PID" 2>/dev/null; then
        echo "synnefo up exited early:"; cat "$WORK/up.log"; exit 1
    fi
    sleep 0.5
    if [[ $i == 120 ]]; then echo "synnefo up did not become healthy"; cat "$WORK/up.log"; exit 1; fi
done

export OS_CLIENT_CONFIG_FILE="$WORK/data/clouds.yaml"
export OS_CLOUD=synnefo-local
unset OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_PROJECT_NAME OS_TOKEN 2>/dev/null || true
osc() { timeout 120 "$VENV/bin/openstack" "$@"; }

# Runs an openstack command, checks its output against an extended regex.
expect() {
    local name=$1 pattern=$2; shift 2
    local out rc=0
    out=$(osc "$@" 2>&1) || rc=$?
    if [[ $rc -ne 0 ]]; then
        fail "$name" "exit status $rc from: openstack $*; output: $out"
        return 1
    fi
    if grep -Eq -- "$pattern" <<<"$out"; then
        pass "$name"
    else
        fail "$name" "output does not match /$pattern/: $out"
        return 1
    fi
}

# Polls `server show` until the status is $2 (30 s).
wait_status() {
    local server=$1 want=$2 got=""
    for _ in $(seq 1 60); do
        got=$(osc server show "$server" -f value -c status 2>/dev/null || true)
        [[ "$got" == "$want" ]] && return 0
        sleep 0.5
    done
    echo "status of $server is $got, not $want" >&2
    return 1
}

# --- the session ------------------------------------------------------------
expect "flavor list" '^m1\.tiny$' flavor list -f value -c Name || true
expect "image list" '^debian$' image list -f value -c Name || true
expect "keypair create (generated)" 'BEGIN OPENSSH PRIVATE KEY' keypair create accept-gen || true
ssh-keygen -q -t ed25519 -N '' -C accept@example -f "$WORK/id_accept" 2>/dev/null ||
    python3 -c 'print("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti accept@example")' >"$WORK/id_accept.pub"
# Nova's fingerprint: MD5 of the base64-decoded key blob, colon-separated
FP=$(python3 -c 'import base64,hashlib,sys
h = hashlib.md5(base64.b64decode(open(sys.argv[1]).read().split()[1])).hexdigest()
print(":".join(h[i:i + 2] for i in range(0, 32, 2)))' "$WORK/id_accept.pub")
expect "keypair create --public-key" "^$FP\$" keypair create --public-key "$WORK/id_accept.pub" -f value -c fingerprint accept-key || true
expect "keypair list" '^accept-key$' keypair list -f value -c Name || true
expect "keypair show" "^$FP\$" keypair show accept-key -f value -c fingerprint || true
expect "keypair show --public-key" ' accept@example$' keypair show --public-key accept-key || true
expect "server create --key-name --wait" '"key_name": "accept-key"' server create --flavor m1.tiny --image debian --key-name accept-key --wait -f json accept-vm || true
expect "server list" '^accept-vm ACTIVE$' server list -f value -c Name -c Status || true
expect "server show" '^ACTIVE$' server show accept-vm -f value -c status || true
expect "server show (key_name)" '^accept-key$' server show accept-vm -f value -c key_name || true
if osc server lock accept-vm; then
    out=$(osc server stop accept-vm 2>&1) && rc=0 || rc=$?
    if [[ $rc -ne 0 ]] && grep -q "is locked" <<<"$out"; then pass "server lock (stop refused)"; else fail "server lock (stop refused)" "stop of a locked server: rc $rc, $out"; fi
else
    fail "server lock (stop refused)" "lock failed"
fi
if osc server unlock accept-vm; then pass "server unlock"; else fail "server unlock" "unlock failed"; fi

if osc server stop accept-vm && wait_status accept-vm SHUTOFF; then pass "server stop"; else fail "server stop" "no SHUTOFF"; fi
if osc server start accept-vm && wait_status accept-vm ACTIVE; then pass "server start"; else fail "server start" "no ACTIVE"; fi
if osc server reboot --wait accept-vm && wait_status accept-vm ACTIVE; then pass "server reboot"; else fail "server reboot" "no ACTIVE after reboot"; fi

# The server's request history (os-instance-actions), newest first.
events=$(osc server event list accept-vm -f value -c Action 2>&1 | tr '\n' ' ')
if [[ "$events" == "reboot start stop unlock lock create " ]]; then pass "server event list"; else fail "server event list" "got: $events"; fi
create_req=$(osc server event list accept-vm -f value -c "Request ID" 2>/dev/null | tail -n 1)
expect "server event show" '^create$' server event show accept-vm "$create_req" -f value -c action || true

# Resize: Synnefo's rule (a stopped server, another flavor with the same
# disk) with Nova's confirmation step. Two flavors of m1.tiny's disk, made
# by an operator directly in the database `synnefo up` uses.
operator_cli() { SYNNEFO_CONFIG=/dev/null SYNNEFO_DATABASE__URL="sqlite://$WORK/data/synnefo.db?mode=rwc" "$BIN" "$@"; }
if operator_cli admin flavors add accept.r2 --vcpus 2 --ram 1024 --disk 1 --disk-template diskless >"$WORK/flavors.log" 2>&1 &&
    operator_cli admin flavors add accept.r3 --vcpus 2 --ram 2048 --disk 1 --disk-template diskless >>"$WORK/flavors.log" 2>&1; then
    pass "admin flavors add (same disk as m1.tiny)"
else
    fail "admin flavors add (same disk as m1.tiny)" "$(cat "$WORK/flavors.log")"
fi
# The server's flavor name: the embedded flavor's (microversion 2.47 and
# later, which the client negotiates), else "name (id)".
flavor_of() {
    osc server show "$1" -f json -c flavor 2>/dev/null | python3 -c 'import json,sys
f = json.load(sys.stdin)["flavor"]
print(f.get("original_name") or f.get("name") if isinstance(f, dict) else str(f).split()[0])' 2>&1
}
if osc server stop accept-vm && wait_status accept-vm SHUTOFF; then pass "server stop (to resize it)"; else fail "server stop (to resize it)" "no SHUTOFF"; fi
expect "server resize --flavor --wait" 'Complete$' server resize --flavor accept.r2 --wait accept-vm || true
expect "server show (VERIFY_RESIZE)" '^VERIFY_RESIZE$' server show accept-vm -f value -c status || true
got=$(flavor_of accept-vm)
if [[ "$got" == "accept.r2" ]]; then pass "server show (the new flavor)"; else fail "server show (the new flavor)" "got: $got"; fi
if osc server resize confirm accept-vm && wait_status accept-vm SHUTOFF && [[ "$(flavor_of accept-vm)" == "accept.r2" ]]; then
    pass "server resize confirm (SHUTOFF, the new flavor)"
else
    fail "server resize confirm (SHUTOFF, the new flavor)" "status $(osc server show accept-vm -f value -c status 2>&1), flavor $(flavor_of accept-vm)"
fi
expect "server resize --flavor --wait (again)" 'Complete$' server resize --flavor accept.r3 --wait accept-vm || true
got=$(flavor_of accept-vm)
if [[ "$got" == "accept.r3" ]]; then pass "server show (the second flavor)"; else fail "server show (the second flavor)" "got: $got"; fi
if osc server resize revert accept-vm && wait_status accept-vm SHUTOFF && [[ "$(flavor_of accept-vm)" == "accept.r2" ]]; then
    pass "server resize revert (SHUTOFF, the flavor before)"
else
    fail "server resize revert (SHUTOFF, the flavor before)" "status $(osc server show accept-vm -f value -c status 2>&1), flavor $(flavor_of accept-vm)"
fi
events=$(osc server event list accept-vm -f value -c Action 2>&1 | sed -n 1,5p | tr '\n' ' ')
if [[ "$events" == "revertResize resize confirmResize resize stop " ]]; then pass "server event list (resize actions)"; else fail "server event list (resize actions)" "got: $events"; fi
# rescue (Synnefo's rule: a stopped server; it boots the cloud's rescue
# image, so --image is refused with a clear 400)
out=$(osc server rescue --image debian accept-vm 2>&1) && rc=0 || rc=$?
if [[ $rc -ne 0 ]] && grep -q "boots its own rescue image" <<<"$out"; then pass "server rescue --image (refused, 400)"; else fail "server rescue --image (refused, 400)" "rc $rc: $out"; fi
if osc server rescue accept-vm && wait_status accept-vm RESCUE; then pass "server rescue (RESCUE)"; else fail "server rescue (RESCUE)" "no RESCUE"; fi
expect "server show (vm_state rescued)" '^rescued$' server show accept-vm -f value -c OS-EXT-STS:vm_state || true
if osc server unrescue accept-vm && wait_status accept-vm SHUTOFF; then pass "server unrescue (SHUTOFF)"; else fail "server unrescue (SHUTOFF)" "no SHUTOFF"; fi
events=$(osc server event list accept-vm -f value -c Action 2>&1 | sed -n 1,2p | tr '\n' ' ')
if [[ "$events" == "unrescue rescue " ]]; then pass "server event list (rescue actions)"; else fail "server event list (rescue actions)" "got: $events"; fi
if osc server start accept-vm && wait_status accept-vm ACTIVE; then pass "server start (resized)"; else fail "server start (resized)" "no ACTIVE"; fi
# Nova resizes a running server too: the set-params job and a hard
# reboot, VERIFY_RESIZE with the server running, confirm leaves it ACTIVE.
expect "server resize --flavor --wait (running)" 'Complete$' server resize --flavor accept.r3 --wait accept-vm || true
if osc server resize confirm accept-vm && wait_status accept-vm ACTIVE && [[ "$(flavor_of accept-vm)" == "accept.r3" ]]; then
    pass "server resize confirm (running: ACTIVE, the new flavor)"
else
    fail "server resize confirm (running: ACTIVE, the new flavor)" "status $(osc server show accept-vm -f value -c status 2>&1), flavor $(flavor_of accept-vm)"
fi

expect "console url show" '^(http|vnc)://[^ ]+:[0-9]+' console url show accept-vm -f value -c url || true

if osc server delete --wait accept-vm; then
    left=$(osc server list -f value -c Name)
    if [[ -z "$left" ]]; then pass "server delete --wait"; else fail "server delete --wait" "still listed: $left"; fi
else
    fail "server delete --wait" "command failed"
fi
if osc keypair delete accept-key accept-gen && [[ -z "$(osc keypair list -f value -c Name)" ]]; then
    pass "keypair delete"
else
    fail "keypair delete" "key pairs left: $(osc keypair list -f value -c Name 2>&1)"
fi

# --- networks ----------------------------------------------------------------
# An operator (for the external network floating IPs come from), made
# directly in the database `synnefo up` uses.
ADMIN_USER=netadmin
if SYNNEFO_CONFIG=/dev/null SYNNEFO_DATABASE__URL="sqlite://$WORK/data/synnefo.db?mode=rwc" \
    "$BIN" admin users add "$ADMIN_USER" --admin --project operators --password-stdin <<<"$PASSWORD" >"$WORK/admin.log" 2>&1; then
    pass "admin users add --admin"
else
    fail "admin users add --admin" "$(cat "$WORK/admin.log")"
fi
osc_admin() { osc --os-username "$ADMIN_USER" --os-password "$PASSWORD" --os-project-name operators "$@"; }
expect_admin() {
    local name=$1 pattern=$2; shift 2
    local out rc=0
    out=$(osc_admin "$@" 2>&1) || rc=$?
    if [[ $rc -eq 0 ]] && grep -Eq -- "$pattern" <<<"$out"; then pass "$name"; else fail "$name" "rc $rc: $out"; fi
}
expect_admin "network create --external (operator)" '^True$' network create --external accept-public -f value -c router:external || true
expect_admin "subnet create (external)" '^203\.0\.113\.0/24$' subnet create --network accept-public --subnet-range 203.0.113.0/24 accept-public-v4 -f value -c cidr || true

expect "network create" '^accept-net$' network create accept-net -f value -c name || true
expect "subnet create --subnet-range" '^10\.99\.0\.0/24$' subnet create --network accept-net --subnet-range 10.99.0.0/24 accept-sub -f value -c cidr || true
SUBNET_ID=$(osc subnet show accept-sub -f value -c id 2>/dev/null || true)
# (-f value prints list and dict columns as Python literals)
expect "network list (with its subnet)" "^accept-net \\['${SUBNET_ID:-no-subnet-id}'\\]\$" network list -f value -c Name -c Subnets || true
expect "subnet show (allocation pools)" "^\\[\\{'end': '10\\.99\\.0\\.254', 'start': '10\\.99\\.0\\.2'\\}\\]\$" subnet show accept-sub -f value -c allocation_pools || true
expect "port create --network" "'ip_address': '10\\.99\\.0\\.[0-9]+', 'subnet_id': '${SUBNET_ID:-x}'" port create --network accept-net accept-port -f value -c fixed_ips || true
expect "port list" "^accept-port \\[\\{'ip_address': '10\\.99\\.0\\.[0-9]+'" port list -f value -c Name -c "Fixed IP Addresses" || true
if osc port delete accept-port && [[ -z "$(osc port list -f value -c ID)" ]]; then pass "port delete"; else fail "port delete" "ports left: $(osc port list -f value 2>&1)"; fi
# A server on the private network and on `synnefo up`'s public one.
expect "network list (public)" '^public$' network list -f value -c Name --external || true
# (--wait prints the client's "\rProgress: N" before the answer)
expect "server create --network x2 --wait" '(^|[0-9])ACTIVE$' server create --flavor m1.tiny --image debian \
    --network accept-net --network public --wait accept-net-vm -f value -c status || true
ADDRS=$(osc server show accept-net-vm -f json -c addresses 2>&1) || true
PRIV_IP=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addresses"]["accept-net"][0])' "$ADDRS" 2>/dev/null || true)
PUB_IP=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["addresses"]["public"][0])' "$ADDRS" 2>/dev/null || true)
if [[ "$PRIV_IP" =~ ^10\.99\.0\.[0-9]+$ && "$PUB_IP" =~ ^10\.0\.[0-9]+\.[0-9]+$ ]]; then
    pass "server show (an address on each network)"
else
    fail "server show (an address on each network)" "got: $ADDRS"
fi
SERVER_ID=$(osc server show accept-net-vm -f value -c id 2>/dev/null || true)
statuses=$(osc port list --server accept-net-vm -f value -c Status 2>&1 | sort | uniq -c | tr -s ' ')
if [[ "$statuses" == " 2 ACTIVE" ]]; then pass "port list --server (2 ports, ACTIVE)"; else fail "port list --server (2 ports, ACTIVE)" "got: $statuses"; fi

# A floating IP from the public network, on the server's private port.
FIP=$(osc floating ip create public -f value -c floating_ip_address 2>&1) || true
if [[ "$FIP" =~ ^10\.0\.[0-9]+\.[0-9]+$ && "$FIP" != "$PUB_IP" ]]; then pass "floating ip create"; else fail "floating ip create" "got: $FIP"; fi
expect "floating ip list (unassociated)" "^${FIP//./\\.} None$" floating ip list -f value -c "Floating IP Address" -c Port || true
if osc server add floating ip accept-net-vm "$FIP"; then pass "server add floating ip"; else fail "server add floating ip" "command failed"; fi
expect "server show (fixed and floating)" "'accept-net': \\['${PRIV_IP//./\\.}', '${FIP//./\\.}'\\]" server show accept-net-vm -f value -c addresses || true
expect "floating ip show (fixed address)" "^${PRIV_IP//./\\.}$" floating ip show "$FIP" -f value -c fixed_ip_address || true
if osc server remove floating ip accept-net-vm "$FIP"; then pass "server remove floating ip"; else fail "server remove floating ip" "command failed"; fi
expect "server show (floating gone)" "^\\{'accept-net': \\['${PRIV_IP//./\\.}'\\], 'public': \\['${PUB_IP//./\\.}'\\]\\}$" server show accept-net-vm -f value -c addresses || true
if osc floating ip delete "$FIP" && [[ -z "$(osc floating ip list -f value -c ID)" ]]; then pass "floating ip delete"; else fail "floating ip delete" "left: $(osc floating ip list -f value 2>&1)"; fi

# Deleting the server gives its addresses back: the next port on the
# network gets the server's address again (the lowest free one).
if osc server delete --wait accept-net-vm && [[ -z "$(osc port list --network accept-net -f value -c ID)" ]]; then
    pass "server delete --wait (ports released)"
else
    fail "server delete --wait (ports released)" "ports left: $(osc port list -f value 2>&1)"
fi
expect "address back in the pool" "'ip_address': '${PRIV_IP//./\\.}'" port create --network accept-net accept-port2 -f value -c fixed_ips || true
osc port delete accept-port2 >/dev/null 2>&1 || true

# An operator's external network (floating IPs from a pool of its own).
FIP2=$(osc floating ip create accept-public -f value -c floating_ip_address 2>&1) || true
if [[ "$FIP2" =~ ^203\.0\.113\.[0-9]+$ ]]; then pass "floating ip create (operator's external network)"; else fail "floating ip create (operator's external network)" "got: $FIP2"; fi
osc floating ip delete "$FIP2" >/dev/null 2>&1 || true
if osc subnet delete accept-sub && ! osc subnet show accept-sub >/dev/null 2>&1; then pass "subnet delete"; else fail "subnet delete" "still there"; fi
if osc network delete accept-net && ! osc network list -f value -c Name | grep -qx accept-net; then pass "network delete"; else fail "network delete" "left: $(osc network list -f value 2>&1)"; fi
if osc_admin network delete accept-public; then pass "network delete (operator)"; else fail "network delete (operator)" "command failed"; fi

# --- user data and build progress ---------------------------------------------
# user_data from a file (the client base64-encodes it), the server's
# progress while it builds (snf-image's copy percentage, from the
# simulator's build messages), and the OS parameter Ganeti got.
printf '#cloud-config\nruncmd:\n  - touch /tmp/accept\n' >"$WORK/user-data"
UD_B64=$(base64 -w0 "$WORK/user-data")
if osc server create --flavor m1.tiny --image debian --user-data "$WORK/user-data" accept-ud-vm >/dev/null 2>&1; then
    pass "server create --user-data"
else
    fail "server create --user-data" "command failed"
fi
UD_ID=$(osc server show accept-ud-vm -f value -c id 2>/dev/null || true)
seen=""
for _ in $(seq 1 60); do
    line=$(osc server show accept-ud-vm -f value -c status -c progress 2>/dev/null | tr '\n' ' ' || true)
    seen="$seen|$line"
    [[ "$line" == *ACTIVE* ]] && break
    sleep 0.2
done
# (the client prints the columns as it orders them: progress, status)
if [[ "$seen" =~ \|([1-9]|[1-9][0-9])\ BUILD\  && "$line" == "100 ACTIVE " ]]; then
    pass "server show (progress between 0 and 100 while BUILD, then 100)"
else
    fail "server show (progress between 0 and 100 while BUILD, then 100)" "seen: $seen"
fi
# Ganeti got it as snf-image's cloud_userdata: the create job's input in
# the simulated cluster's job queue.
if python3 - "$WORK/data/ganeti/cluster1/queue" "snf-$UD_ID" "$UD_B64" <<'PY'
import json, pathlib, sys
root, name, want = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for f in root.rglob("job-*"):
    try:
        job = json.loads(f.read_text())
    except Exception:
        continue
    for op in job.get("ops", []):
        i = op.get("input", {})
        if i.get("OP_ID") == "OP_INSTANCE_CREATE" and i.get("instance_name") == name:
            sys.exit(0 if i.get("osparams", {}).get("cloud_userdata") == want else 2)
sys.exit(1)
PY
then
    pass "user data reached Ganeti (osparams cloud_userdata)"
else
    fail "user data reached Ganeti (osparams cloud_userdata)" "no create job of snf-$UD_ID with it"
fi
# Operators see it from microversion 2.3 (OS-EXT-SRV-ATTR:user_data).
expect_admin "server show (operator, OS-EXT-SRV-ATTR:user_data)" "^${UD_B64}\$" \
    --os-compute-api-version 2.3 server show "${UD_ID:-none}" -f value -c OS-EXT-SRV-ATTR:user_data || true
osc server delete --wait accept-ud-vm >/dev/null 2>&1 || true

echo "$PASSED passed, $FAILED failed"
if [[ $FAILED -ne 0 ]]; then
    echo "--- synnefo up log (tail) ---"
    tail -n 50 "$WORK/up.log"
    exit 1
fi
