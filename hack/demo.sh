#!/usr/bin/env bash
# The whole product on one machine: a local control plane, a dev-issuer playing GitLab, the operator (its
# controller and its exchange, each as the chart's own ServiceAccount), and
# a GitLab deploy job played end to end (ID token -> login -> set-image --wait -> allowed and refused
# actions), then an approval gate a GitLab approval job resumes (approve grant), then the audit trail. Then keeps it all running and prints a KUBECONFIG line until Ctrl-C (or SIGTERM),
# which stops everything it started and exits 0.
#
#   hack/demo.sh    # build what is missing, run the demo, keep it running until Ctrl-C
#
# State lives in $OAM_TRUST_CLUSTER_DIR (default: .cluster/ in the checkout). A control plane that was
# already up there is reused and left up. When a step fails, the control plane stays up for inspection.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export OAM_TRUST_CLUSTER_DIR="${OAM_TRUST_CLUSTER_DIR:-$ROOT/.cluster}"
D="$OAM_TRUST_CLUSTER_DIR"
CLUSTER_SH=hack/cluster.sh
[[ "$D" == "$ROOT/.cluster" ]] || CLUSTER_SH="OAM_TRUST_CLUSTER_DIR=$D hack/cluster.sh"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() { echo "$*" >&2; exit 1; }
wait_until() { # seconds, description, command...: polls the command until it succeeds
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { echo "timed out after ${secs}s waiting for $what" >&2; return 1; }
    sleep 0.5
  done
}

"$ROOT/hack/prerequisites.sh"
step "Building oam-trust"
cargo build --quiet --bin oam-trust
OAM="$ROOT/target/debug/oam-trust"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && OAM="$CARGO_TARGET_DIR/debug/oam-trust"

PIDS=()           # the controller, the exchange and dev-issuer
STARTED_CLUSTER=  # set when this run starts the control plane (and so stops it on Ctrl-C)
STOPPING=         # set by Ctrl-C or SIGTERM
# shellcheck disable=SC2317  # run from the traps below (shellcheck 0.9 calls trap handlers unreachable when a script ends in exit)
stop_children() {
  (( ${#PIDS[@]} )) || return 0
  kill -TERM "${PIDS[@]}" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "${PIDS[@]}" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  kill -KILL "${PIDS[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
# shellcheck disable=SC2317  # the EXIT trap
cleanup() {
  local rc=$?
  trap "" INT TERM  # a second Ctrl-C must not cut the shutdown short
  stop_children
  if [[ -n "$STOPPING" && -n "$STARTED_CLUSTER" ]]; then
    say "stopping the local control plane"
    hack/cluster.sh down >/dev/null 2>&1 || true
  elif [[ -n "$STOPPING" ]]; then
    say "the control plane was up before the demo and stays up ($CLUSTER_SH down stops it)"
  elif (( rc != 0 )); then
    echo "hack/demo.sh failed; the control plane stays up for inspection: logs in $D/logs," \
      "'$CLUSTER_SH logs'; '$CLUSTER_SH down' stops it" >&2
  fi
}
# Ctrl-C or SIGTERM stops everything this run started. During the demo that is an interruption (exit
# 128+signal); once it has played, it is how the demo is meant to end (exit 0, see the last step).
# shellcheck disable=SC2317  # the INT and TERM traps
interrupted() { STOPPING=1; exit "$1"; }
trap 'interrupted 130' INT
trap 'interrupted 143' TERM
trap cleanup EXIT

step "Starting the local control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok)"
hack/cluster.sh status >/dev/null 2>&1 || STARTED_CLUSTER=1
hack/cluster.sh up >/dev/null
# shellcheck source=/dev/null  # written by hack/cluster.sh up
source "$D/env"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
mkdir -p "$D/demo"

step "Starting dev-issuer: a local OIDC issuer that mints GitLab-shaped CI ID tokens"
ISSUER_PORT=$(free_port)
rm -f "$D/demo/issuer.url"  # a reused control plane keeps the last run's, with its old port
"$OAM" dev-issuer --listen "127.0.0.1:$ISSUER_PORT" --state-dir "$D/demo/issuer" --ca-out "$D/demo/issuer-ca.pem" \
  --audience https://oam-trust.local >"$D/demo/issuer.url" 2>"$D/logs/dev-issuer.log" &
PIDS+=($!)
wait_until 120 "dev-issuer to print its URL" test -s "$D/demo/issuer.url" \
  || { tail -n 20 "$D/logs/dev-issuer.log" >&2; exit 1; }
ISSUER="$(head -n1 "$D/demo/issuer.url")"
say "issuer: $ISSUER"

step "Installing CRDs, the gitlab-access definitions, a GitLabTrust, the ceiling and the deploy guard"
"$OAM" crd | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply --server-side -f config/definitions/gitlab-access.yaml -f config/ceiling.yaml -f config/admission/deploy-guard.yaml -f config/admission/grant-guard.yaml >/dev/null
CA_INDENTED="$(sed 's/^/      /' "$D/demo/issuer-ca.pem")"
kubectl apply --server-side -f - >/dev/null <<EOF
apiVersion: oam-trust.dev/v1alpha1
kind: GitLabTrust
metadata: {name: gitlab-demo}
spec:
  issuer: $ISSUER
  audiences: [https://oam-trust.local]
  jwks:
    caBundle: |
$CA_INDENTED
  namespaceSelector: {matchLabels: {oam-trust.dev/gitlab: enabled}}
  allow: [{namespaceId: "72"}]
  require: {refProtected: true, maxTokenAge: 1h}
  tokens: {defaultTTL: 15m, maxTTL: 1h}
  ceiling: {clusterRoleRef: oam-trust-ceiling}
EOF

step "A team namespace with its applier, and an Application that lets project 1450 deploy the api image"
kubectl apply --server-side -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {oam-trust.dev/gitlab: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: oam-trust-applier, namespace: payments}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: oam-trust-applier, namespace: payments}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: ServiceAccount, name: oam-trust-applier, namespace: payments}]
EOF
sed 's/trust: gitlab-com/trust: gitlab-demo/' config/apps/payments.yaml | kubectl apply --server-side -f - >/dev/null

step "The operator's two identities, from the Helm chart: ServiceAccounts, RBAC and the operator guard"
OPNS=oam-trust RELEASE=demo
FULL="$RELEASE-oam-trust"
kubectl create namespace "$OPNS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm template "$RELEASE" charts/oam-trust -n "$OPNS" --set ceiling.create=false \
  --set 'ceiling.extraClusterRoles={oam-trust-ceiling}' --set admissionPolicy.enabled=false \
  --show-only templates/serviceaccount.yaml --show-only templates/rbac.yaml \
  --show-only templates/operator-guard.yaml | kubectl apply --server-side -f - >/dev/null
SERVER="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
identity_kubeconfig() { # role: a kubeconfig holding only a TokenRequest token of the role's ServiceAccount
  local cfg="$D/demo/$1.kubeconfig"
  rm -f "$cfg"
  kubectl config --kubeconfig "$cfg" set-cluster local --server="$SERVER" \
    --certificate-authority="$D/pki/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig "$cfg" set-credentials "$1" \
    --token="$(kubectl -n "$OPNS" create token "$FULL-$1" --duration=24h)" >/dev/null
  kubectl config --kubeconfig "$cfg" set-context "$1" --cluster=local --user="$1" >/dev/null
  kubectl config --kubeconfig "$cfg" use-context "$1" >/dev/null
  echo "$cfg"
}
say "controller: system:serviceaccount:$OPNS:$FULL-controller; exchange: system:serviceaccount:$OPNS:$FULL-exchange"

step "Starting the controller and the token exchange (over TLS), each as its own ServiceAccount"
EX_PORT=$(free_port); HEALTH_PORT=$(free_port); EX_HEALTH_PORT=$(free_port)
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=oam-trust-exchange \
  -keyout "$D/demo/exchange.key" -out "$D/demo/exchange.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$D/demo/exchange.ext"
openssl x509 -req -in "$D/demo/exchange.csr" -CA "$D/pki/ca.crt" -CAkey "$D/pki/ca.key" -CAcreateserial -days 7 \
  -extfile "$D/demo/exchange.ext" -out "$D/demo/exchange.crt" 2>/dev/null
KUBECONFIG="$(identity_kubeconfig controller)" OAM_TRUST_LOG_FORMAT=json "$OAM" run --role controller \
  --health-addr "127.0.0.1:$HEALTH_PORT" --lease-namespace "$OPNS" --lease-name "$FULL" \
  --controller-identity "system:serviceaccount:$OPNS:$FULL-controller" \
  --exchange-identity "system:serviceaccount:$OPNS:$FULL-exchange" --exchange-namespace-role "$FULL-exchange-namespace" \
  >"$D/logs/operator.log" 2>&1 &
PIDS+=($!)
KUBECONFIG="$(identity_kubeconfig exchange)" OAM_TRUST_LOG_FORMAT=json "$OAM" run --role exchange \
  --health-addr "127.0.0.1:$EX_HEALTH_PORT" \
  --exchange-listen "127.0.0.1:$EX_PORT" --exchange-tls-cert "$D/demo/exchange.crt" --exchange-tls-key "$D/demo/exchange.key" \
  >"$D/logs/exchange.log" 2>&1 &
PIDS+=($!)
wait_until 180 "the controller's /readyz (log: $D/logs/operator.log)" curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz" \
  || { tail -n 20 "$D/logs/operator.log" >&2; exit 1; }
wait_until 180 "the exchange's /readyz (log: $D/logs/exchange.log)" curl -fsS "http://127.0.0.1:$EX_HEALTH_PORT/readyz" \
  || { tail -n 20 "$D/logs/exchange.log" >&2; exit 1; }
kubectl -n payments wait app/payments --for=jsonpath='{.status.status}'=running --timeout=300s >/dev/null
kubectl -n payments get app payments
kubectl -n payments get app payments -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' | sed 's/^/    /'
kubectl get glt gitlab-demo

step "Playing a GitLab deploy job of project 1450 on protected main, environment production"
JOB="$D/demo/job"; mkdir -p "$JOB"
ID_TOKEN="$("$OAM" dev-issuer mint --url "$ISSUER" --ca "$D/demo/issuer-ca.pem" --claim project_id=1450 \
  --claim ref=main --claim ref_protected=true --claim environment=production)"
export ID_TOKEN
say "\$ ID_TOKEN comes from the job's id_tokens: (aud https://oam-trust.local); no secret is stored anywhere"
say "\$ oam-trust login --resource payments/payments/api"
"$OAM" login --url "https://127.0.0.1:$EX_PORT" --ca-file "$D/pki/ca.crt" --resource payments/payments/api \
  --kubeconfig-out "$JOB/kubeconfig"
say "\$ oam-trust set-image api=registry.example.com/platform/payments-api:1.5.0 --wait"
KUBECONFIG="$JOB/kubeconfig" "$OAM" set-image api=registry.example.com/platform/payments-api:1.5.0 \
  --app payments -n payments --wait --timeout 2m
say "the Deployment now runs: $(kubectl -n payments get deploy api -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "What the job may and may not do"
try() { # expect description command...
  local expect="$1" what="$2"; shift 2
  if out="$("$@" 2>&1)"; then got=allowed; else got=refused; fi
  printf '    %-8s %s\n' "$got" "$what"
  [[ "$got" == "$expect" ]] || die "    unexpected: $out"
  [[ "$got" == refused ]] && printf '             %s\n' "$(echo "$out" | tail -n1 | cut -c1-160)"
  return 0
}
JK=(kubectl --kubeconfig "$JOB/kubeconfig" -n payments)
try allowed "read its Application" "${JK[@]}" get app payments
try refused "read Secrets" "${JK[@]}" get secrets
try refused "change the scaler trait (deploy guard)" "${JK[@]}" patch app payments --type=json \
  -p='[{"op":"replace","path":"/spec/components/0/traits/0/properties/replicas","value":9}]'
try refused "touch another namespace" kubectl --kubeconfig "$JOB/kubeconfig" -n default get deployments
try refused "replay the same ID token" "$OAM" login --url "https://127.0.0.1:$EX_PORT" --ca-file "$D/pki/ca.crt" \
  --resource payments/payments/api --kubeconfig-out "$JOB/replayed"
FORK="$("$OAM" dev-issuer mint --url "$ISSUER" --ca "$D/demo/issuer-ca.pem" --claim project_id=1450 --claim ref=main \
  --claim ref_protected=false --claim environment=production)"
try refused "exchange a token from an unprotected branch" env ID_TOKEN="$FORK" "$OAM" login \
  --url "https://127.0.0.1:$EX_PORT" --ca-file "$D/pki/ca.crt" --kubeconfig-out "$JOB/unprotected"

step "An approval gate in code: staging at once, production only once a GitLab approval job resumes it"
kubectl apply --server-side -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: payments-production}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: oam-trust-applier-from-payments, namespace: payments-production}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{kind: ServiceAccount, name: oam-trust-applier, namespace: payments}]
EOF
sed 's/trust: gitlab-com/trust: gitlab-demo/' config/apps/release-gate.yaml | kubectl apply --server-side -f - >/dev/null
kubectl -n payments wait app/storefront --for=jsonpath='{.status.status}'=workflowSuspending --timeout=300s >/dev/null
kubectl -n payments get app storefront -o jsonpath='{range .status.workflow.steps[*]}{.name}: {.phase}{"\n"}{end}' | sed 's/^/    /'
say "production has no Deployment yet: $(kubectl -n payments-production get deploy -o name | wc -l) objects"
say "GitLab holds the approve-production job (protected environment, required approval); once approved it runs:"
APPROVER="$D/demo/approver"; mkdir -p "$APPROVER"
ID_TOKEN="$("$OAM" dev-issuer mint --url "$ISSUER" --ca "$D/demo/issuer-ca.pem" --claim project_id=1450 \
  --claim ref=main --claim ref_protected=true --claim environment=production --claim environment_protected=true)"
export ID_TOKEN
say "\$ oam-trust login --resource payments/storefront"
"$OAM" login --url "https://127.0.0.1:$EX_PORT" --ca-file "$D/pki/ca.crt" --resource payments/storefront \
  --kubeconfig-out "$APPROVER/kubeconfig"
AK=(kubectl --kubeconfig "$APPROVER/kubeconfig" -n payments)
try refused "the approver changes the image (approve grant: no spec)" "${AK[@]}" patch app storefront --type=json \
  -p='[{"op":"replace","path":"/spec/components/0/properties/image","value":"evil:1"}]'
try refused "the approver marks the production step succeeded (approve guard)" "${AK[@]}" patch app storefront \
  --subresource=status --type=merge -p='{"status":{"workflow":{"suspend":false,"steps":[]}}}'
say "\$ oam-trust resume storefront -n payments"
KUBECONFIG="$APPROVER/kubeconfig" "$OAM" resume storefront -n payments
kubectl -n payments wait app/storefront --for=jsonpath='{.status.status}'=running --timeout=300s >/dev/null
kubectl -n payments get app storefront -o jsonpath='{range .status.workflow.steps[*]}{.name}: {.phase} {.reason}{"\n"}{end}' | sed 's/^/    /'
say "production now runs $(kubectl -n payments-production get deploy web -o jsonpath='{.spec.replicas}') replicas of $(kubectl -n payments-production get deploy web -o jsonpath='{.spec.template.spec.containers[0].image}')"

step "Audit trail"
kubectl -n payments get events --field-selector involvedObject.kind=Application,involvedObject.name=payments \
  --sort-by=.lastTimestamp | tail -n 8 | sed 's/^/    /'
say "audit log lines (target oam_trust::audit) in $D/logs/exchange.log:"
grep '"oam_trust::audit"' "$D/logs/exchange.log" | tail -n 4 | cut -c1-240 | sed 's/^/    /'

step "Done"
say "The control plane, the controller, the exchange and dev-issuer keep running. In another shell:"
say "  export KUBECONFIG=$KUBECONFIG"
say "  kubectl get app -A"
say "Controller: health http://127.0.0.1:$HEALTH_PORT/readyz; token exchange https://127.0.0.1:$EX_PORT (health http://127.0.0.1:$EX_HEALTH_PORT/readyz)"
say "Logs: $D/logs/operator.log (the controller, JSON), $D/logs/exchange.log (the exchange and its audit lines), $D/logs/dev-issuer.log; '$CLUSTER_SH logs' for the control plane."
if [[ -n "$STARTED_CLUSTER" ]]; then
  say "Press Ctrl-C to stop them all."
else
  say "Press Ctrl-C to stop the controller, the exchange and dev-issuer (the control plane was up before; '$CLUSTER_SH down' stops it)."
fi
trap 'interrupted 0' INT TERM
# Returns when the controller, the exchange or dev-issuer exits on its own, which is a failure.
wait -n "${PIDS[@]}" || true
die "the controller, the exchange or dev-issuer exited unexpectedly; see $D/logs/operator.log, $D/logs/exchange.log and $D/logs/dev-issuer.log"
