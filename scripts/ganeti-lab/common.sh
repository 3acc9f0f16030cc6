# shellcheck shell=bash
# Shared settings and helpers of scripts/ganeti-lab/{up,down,env,record-fixtures}.
# Sourced, never run. Every setting can be overridden from the environment.

LAB_DIR=${LAB_DIR:-/tmp/snf-ganeti-lab}          # all lab state lives here (host path)
LAB_NETNS=${LAB_NETNS:-snflab}                   # the lab's network namespace
LAB_RAPI_PORT=${LAB_RAPI_PORT:-15080}            # host 127.0.0.1:PORT -> lab 127.0.0.1:5080
LAB_AMQP_PORT=${LAB_AMQP_PORT:-5672}             # lab 127.0.0.1:PORT -> host $LAB_HOST_AMQP
LAB_HOST_AMQP=${LAB_HOST_AMQP:-127.0.0.1:5672}   # the host's RabbitMQ
LAB_RAPI_USER=${LAB_RAPI_USER:-synnefo}
LAB_RAPI_PASSWORD=${LAB_RAPI_PASSWORD:-synnefo}
# RAPI certificate: "ganeti" = the self-signed one gnt-cluster init makes (X.509 v1, CN
# ganeti.example.com, no SAN: verify by pinning); "ca" = a lab CA and a v3 server certificate
# for 127.0.0.1/localhost/node1.lab.test/cluster1.lab.test, put in place before init.
LAB_RAPI_CERT_MODE_GIVEN=${LAB_RAPI_CERT_MODE:+1}
LAB_RAPI_CERT_MODE=${LAB_RAPI_CERT_MODE:-ganeti}

# Fixed names inside the lab (they exist only inside $LAB_NETNS / the lab's UTS namespace).
LAB_NODE=node1.lab.test       # 192.0.2.10 on veth g0, inside the netns only
LAB_CLUSTER=cluster1.lab.test # 192.0.2.100, the cluster (master) IP, added by Ganeti on g0
LAB_MARKER=.snf-ganeti-lab    # a file in $LAB_DIR that says "this directory is ours to delete"

lab_log() { printf '[ganeti-lab] %s\n' "$*" >&2; }
lab_die() { lab_log "ERROR: $*"; exit 1; }

lab_require_root() {
  [ "$(id -u)" = 0 ] || lab_die "run as root (network and mount namespaces need it)"
}

# Refuse LAB_DIR values that would be dangerous to create, bind-mount or delete.
lab_check_dir() {
  case "$LAB_DIR" in
    /*) ;;
    *) lab_die "LAB_DIR must be an absolute path (got '$LAB_DIR')" ;;
  esac
  case "${LAB_DIR%/}" in
    ""|/|/tmp|/var|/var/tmp|/root|/home|/work|/usr|/etc|/srv|/run|/run/*|/etc/*|/usr/*|/var/lib/ganeti*|/srv/*|/proc*|/sys*|/dev*)
      lab_die "refusing LAB_DIR='$LAB_DIR'" ;;
  esac
}

# Alive = exists and is not a zombie (lab daemons are re-parented to PID 1, which may reap late).
lab_pid_alive() {
  [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null || return 1
  [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

lab_read_pid() { [ -f "$1" ] && tr -dc 0-9 < "$1" || true; }

lab_netns_exists() { [ -e "/run/netns/$LAB_NETNS" ] || ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$LAB_NETNS"; }

# The holder keeps the lab's mount + UTS namespaces alive; it must be alive and in our netns.
lab_holder_ok() {
  local pid
  pid=$(lab_read_pid "$LAB_DIR/holder.pid")
  lab_pid_alive "$pid" || return 1
  lab_netns_exists || return 1
  [ "$(stat -L -c %i "/proc/$pid/ns/net" 2>/dev/null)" = "$(stat -L -c %i "/run/netns/$LAB_NETNS" 2>/dev/null)" ]
}

lab_rapi_ok_inside() {
  "$LAB_DIR/ns" curl -skf --max-time 5 -u "$LAB_RAPI_USER:$LAB_RAPI_PASSWORD" \
    https://127.0.0.1:5080/2/info >/dev/null 2>&1
}

# The TLS server name that verifies against the RAPI certificate: its CN for Ganeti's own
# certificate (SAN-less, so name checks fall back to the CN, which rustls never does), the
# address 127.0.0.1 (an IP SAN) for the lab CA's.
lab_rapi_tls_name() {
  if [ "$(cat "$LAB_DIR/cert-mode" 2>/dev/null)" = ca ]; then echo 127.0.0.1; return; fi
  openssl x509 -in "$LAB_DIR/rapi-cert.pem" -noout -subject -nameopt multiline 2>/dev/null |
    awk -F' = ' '/commonName/ {print $2; exit}'
}

# Print the environment for programs and tests on the host (sh syntax, `eval`-able).
lab_print_env() {
  local name
  name=$(lab_rapi_tls_name)
  cat <<EOF
export LAB_DIR='$LAB_DIR'
export LAB_NETNS='$LAB_NETNS'
export LAB_NS='$LAB_DIR/ns'
export LAB_NODE='$LAB_NODE'
export LAB_CLUSTER='$LAB_CLUSTER'
export LAB_RAPI_PORT='$LAB_RAPI_PORT'
export LAB_AMQP_PORT='$LAB_AMQP_PORT'
export LAB_HOST_AMQP='$LAB_HOST_AMQP'
export SYNNEFO_TEST_RAPI_URL='https://127.0.0.1:$LAB_RAPI_PORT'
export SYNNEFO_TEST_RAPI_USER='$LAB_RAPI_USER'
export SYNNEFO_TEST_RAPI_PASSWORD='$LAB_RAPI_PASSWORD'
export SYNNEFO_TEST_RAPI_CERT='$LAB_DIR/rapi-cert.pem'
export SYNNEFO_TEST_RAPI_CERT_MODE='$(cat "$LAB_DIR/cert-mode" 2>/dev/null || echo ganeti)'
EOF
  if [ "$(cat "$LAB_DIR/cert-mode" 2>/dev/null)" = ca ]; then
    echo "export SYNNEFO_TEST_RAPI_CA='$LAB_DIR/rapi-ca.pem'"
  else
    echo "unset SYNNEFO_TEST_RAPI_CA"
  fi
  cat <<EOF
export SYNNEFO_TEST_RAPI_TLS_NAME='$name'
export SYNNEFO_TEST_RAPI_NODE='$LAB_NODE'
export SYNNEFO_TEST_GANETI_QUEUE_DIR='$LAB_DIR/varlib/queue'
export SYNNEFO_TEST_GANETI_HOOKS_DIR='$LAB_DIR/etc/hooks'
export SYNNEFO_TEST_GANETI_DATA_DIR='$LAB_DIR/varlib'
export SYNNEFO_TEST_LAB_AMQP_URL='amqp://guest:guest@127.0.0.1:$LAB_AMQP_PORT/%2f'
EOF
}
