#!/usr/bin/env bash
# The local control plane: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok (fake
# nodes, so rendered workloads become Running), all on free loopback ports, no containers.
#
#   hack/cluster.sh up      build what is missing, start everything, wait for /readyz; prints `export KUBECONFIG=…`
#   hack/cluster.sh down    stop every process this cluster started and delete its state
#   hack/cluster.sh status  is it up?
#   hack/cluster.sh logs    tail of every component log
#
# Fault injection on one component (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
# of a cluster that is up; each is started again exactly as `up` started it (flags, ports, data):
#   hack/cluster.sh kill <component>      SIGKILL, as a crash: no cleanup
#   hack/cluster.sh stop <component>      SIGTERM, SIGKILL after 10 s
#   hack/cluster.sh start <component>     start it again and wait until it serves (etcd /health, kube-apiserver /readyz)
#   hack/cluster.sh restart <component>   stop, then start
#   hack/cluster.sh pause <component>     SIGSTOP: the process stays, its sockets accept, nothing answers
#   hack/cluster.sh resume <component>    SIGCONT
#
# State lives in $OAM_TRUST_CLUSTER_DIR (default: .cluster/ in the checkout, git-ignored):
#   kubeconfig (admin, system:masters), pki/, logs/<component>.log, pids/<component>.pid, env (sourceable),
#   ports (what `start <component>` needs).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
D="${OAM_TRUST_CLUSTER_DIR:-$ROOT/.cluster}"
log() { echo "[cluster] $*" >&2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pki() {
  local p="$D/pki"; mkdir -p "$p"; cd "$p"
  local sub=(-days 30 -sha256)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "${sub[@]}" -subj /CN=oam-trust-local-ca \
    -keyout ca.key -out ca.crt 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=kube-apiserver -keyout apiserver.key -out apiserver.csr 2>/dev/null
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial "${sub[@]}" -extfile server.ext -out apiserver.crt 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > client.ext
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=admin/O=system:masters" -keyout admin.key -out admin.csr 2>/dev/null
  openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial "${sub[@]}" -extfile client.ext -out admin.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  rm -f ./*.csr
  cd - >/dev/null
}

start() { # name, then the command; detached into its own session, pid recorded; a restart appends to its log
  local name="$1"; shift
  setsid "$@" >>"$D/logs/$name.log" 2>&1 < /dev/null 9>&- &
  echo $! > "$D/pids/$name.pid"
}

alive() { [[ -f "$D/pids/$1.pid" ]] && kill -0 "$(cat "$D/pids/$1.pid")" 2>/dev/null; }

wait_for() { # description, seconds, command...
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS > deadline )); then log "timed out after ${secs}s waiting for $what"; logs_tail; return 1; fi
    sleep 0.5
  done
}

logs_tail() {
  for f in "$D"/logs/*.log; do [[ -f "$f" ]] && { echo "===== tail of $f" >&2; tail -n 40 "$f" >&2; }; done
}

kubeconfig() { # file user-cert user-key
  local b64='base64 -w0'
  cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: oam-trust-local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $($b64 < "$D/pki/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $($b64 < "$2")
    client-key-data: $($b64 < "$3")
contexts:
- name: oam-trust-local
  context: {cluster: oam-trust-local, user: admin}
current-context: oam-trust-local
KC
  chmod 600 "$1"
}

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# One function per component, so `start <component>` runs exactly what `up` ran. They read $BIN, $D and
# the ports from $D/ports.
start_etcd() {
  start etcd "$BIN/etcd" --name local --data-dir "$D/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER" --unsafe-no-fsync=true --log-level=warn \
    --quota-backend-bytes=4294967296
  wait_for "etcd /health" 60 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_kube_apiserver() {
  local p="$D/pki" extra=()
  # Structured authentication (API-server-native GitLab OIDC): the operator's controller keeps this
  # file current (--authn-config-out); the API server reloads it when it changes. Empty to begin with.
  if [[ ! -s "$D/authn-config.yaml" ]]; then
    printf 'apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt: []\n' >"$D/authn-config.yaml"
  fi
  # Extra kube-apiserver flags, split on whitespace (no globbing).
  read -r -a extra <<<"${OAM_TRUST_APISERVER_EXTRA_FLAGS:-}"
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" \
    --client-ca-file="$p/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-account-issuer="https://127.0.0.1:$API_PORT" \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --api-audiences="https://127.0.0.1:$API_PORT" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --authentication-config="$D/authn-config.yaml" \
    "${extra[@]}"
  wait_for "kube-apiserver /readyz" 120 curl -fsS --cacert "$p/ca.crt" --cert "$p/admin.crt" --key "$p/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz"
}

start_kube_controller_manager() {
  local p="$D/pki"
  # kwok nodes are fake: node-lifecycle would mark every pod NotReady (for good) whenever a loaded CI
  # machine delays a kwok heartbeat, so it and taint eviction are off.
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$D/kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 \
    --root-ca-file="$p/ca.crt" --service-account-private-key-file="$p/sa.key" \
    --use-service-account-credentials=false \
    --controllers='*,-node-lifecycle-controller,-taint-eviction-controller' \
    --kube-api-qps=200 --kube-api-burst=400 --concurrent-deployment-syncs=10 --concurrent-replicaset-syncs=10 \
    --concurrent-gc-syncs=40
}

start_kube_scheduler() {
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$D/kubeconfig" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=0 --kube-api-qps=200 --kube-api-burst=400
}

start_kwok() {
  start kwok "$BIN/kwok" --kubeconfig="$D/kubeconfig" --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake --config="$BIN/kwok-stages.yaml" \
    --cidr=10.244.0.0/16 --node-ip=10.0.0.1 --server-address=127.0.0.1:0
}

up() {
  if [[ -f "$D/env" ]] && alive kube-apiserver; then
    log "already up"; cat "$D/env"; return
  fi
  down quiet
  BIN="$("$HERE/build-binaries.sh" all | tail -n1)"
  mkdir -p "$D/logs" "$D/pids" "$D/etcd"
  pki
  ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port)
  printf 'BIN=%q\nETCD_PORT=%s\nETCD_PEER=%s\nAPI_PORT=%s\n' "$BIN" "$ETCD_PORT" "$ETCD_PEER" "$API_PORT" >"$D/ports"
  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  start_etcd

  log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
  start_kube_apiserver
  local p="$D/pki"
  kubeconfig "$D/kubeconfig" "$p/admin.crt" "$p/admin.key"
  export KUBECONFIG="$D/kubeconfig"

  log "starting kube-controller-manager, kube-scheduler, kwok"
  start_kube_controller_manager
  start_kube_scheduler
  start_kwok
  # Fake nodes: roomy enough for the 5,000-Application bench (one pod each); pods need no toleration.
  for n in 0 1; do
    "$BIN/kubectl" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$n
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {kubernetes.io/hostname: kwok-node-$n, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  allocatable: {cpu: "64", memory: 256Gi, pods: "3000"}
  capacity: {cpu: "64", memory: 256Gi, pods: "3000"}
NODE
  done
  sleep 1
  for c in "${COMPONENTS[@]}"; do
    alive "$c" || { log "$c exited right after start"; logs_tail; down quiet; return 1; }
  done
  wait_for "the default ServiceAccount (kube-controller-manager)" 60 "$BIN/kubectl" get serviceaccount default -n default
  for n in 0 1; do
    wait_for "kwok-node-$n Ready" 60 bash -c "'$BIN/kubectl' get node kwok-node-$n -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"
    # Admission taints a new node not-ready; with node-lifecycle off we lift it once kwok says Ready.
    "$BIN/kubectl" taint node "kwok-node-$n" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  done
  cat > "$D/env" <<ENV
export KUBECONFIG=$D/kubeconfig
export OAM_TRUST_BIN=$BIN
export PATH=$BIN:\$PATH
ENV
  log "up: API server https://127.0.0.1:$API_PORT"
  cat "$D/env"
}

down() {
  [[ -d "$D/pids" ]] || { [[ "${1:-}" == quiet ]] || log "not running"; rm -rf "$D"; return 0; }
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    local f="$D/pids/$name.pid"; [[ -f "$f" ]] || continue
    local pid; pid="$(cat "$f")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    kill -CONT -- "-$pid" 2>/dev/null || true  # a paused component stops only once continued
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  rm -rf "$D"
  [[ "${1:-}" == quiet ]] || log "down"
}

# Sets C to the component named by $1, checked, and reads the ports; the cluster must be up.
component() {
  C="${1:-}"
  [[ " ${COMPONENTS[*]} " == *" $C "* ]] || { echo "unknown component '$C' (one of: ${COMPONENTS[*]})" >&2; exit 2; }
  [[ -f "$D/ports" ]] || { log "not up: no $D/ports"; exit 1; }
  # shellcheck source=/dev/null  # written by `up`
  source "$D/ports"
}

signal() { # component signal: to its whole process group (each runs in its own session)
  local f="$D/pids/$1.pid"
  [[ -f "$f" ]] || { log "$1 has no pid file"; return 1; }
  local pid; pid="$(cat "$f")"
  kill "-$2" -- "-$pid" 2>/dev/null || kill "-$2" "$pid"
}

stop_component() { # component signal
  local f="$D/pids/$1.pid" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  signal "$1" "$2" 2>/dev/null || true
  signal "$1" CONT 2>/dev/null || true  # a paused process acts on SIGTERM only once continued
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  # Reaped by init, not by us: wait until the pid is gone so the ports are free for `start`.
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$f"
}

start_component() {
  alive "$1" && { log "$1 is running"; return 0; }
  "start_${1//-/_}"
  sleep 0.5
  alive "$1" || { log "$1 exited right after start"; tail -n 40 "$D/logs/$1.log" >&2; return 1; }
  log "$1 started"
}

# One cluster per state dir: concurrent `up`/`down` calls (test binaries, scripts) take turns.
mkdir -p "$(dirname "$D")"
exec 9>"$D.lock"
flock 9

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if [[ -f "$D/env" ]] && alive kube-apiserver; then echo up; cat "$D/env"; else echo down; exit 1; fi ;;
  logs) logs_tail ;;
  kill) component "${2:-}"; stop_component "$C" KILL; log "$C killed" ;;
  stop) component "${2:-}"; stop_component "$C" TERM; log "$C stopped" ;;
  start) component "${2:-}"; start_component "$C" ;;
  restart) component "${2:-}"; stop_component "$C" TERM; start_component "$C" ;;
  pause) component "${2:-}"; signal "$C" STOP; log "$C paused" ;;
  resume) component "${2:-}"; signal "$C" CONT; log "$C resumed" ;;
  *) echo "usage: $0 up|down|status|logs, or kill|stop|start|restart|pause|resume <component>" >&2; exit 2 ;;
esac
