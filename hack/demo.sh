#!/usr/bin/env bash
# The whole product on one machine: a local control plane, a dev-issuer playing GitLab, the operator, and
# a GitLab deploy job played end to end (ID token -> login -> set-image --wait -> allowed and refused
# actions -> audit trail). Leaves everything running and prints a KUBECONFIG line until Ctrl-C.
#
#   hack/demo.sh            # build what is missing, run the demo, keep the cluster up
#   DEMO_EXIT=1 hack/demo.sh  # same, but stop everything at the end (used by tests)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export OAM_TRUST_CLUSTER_DIR="${OAM_TRUST_CLUSTER_DIR:-$ROOT/.cluster}"
D="$OAM_TRUST_CLUSTER_DIR"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
say() { printf '    %s\n' "$*"; }

"$ROOT/hack/prerequisites.sh"
step "Building oam-trust"
cargo build --quiet --bin oam-trust
OAM="$ROOT/target/debug/oam-trust"
[[ -n "${CARGO_TARGET_DIR:-}" ]] && OAM="$CARGO_TARGET_DIR/debug/oam-trust"

step "Starting the local control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok)"
hack/cluster.sh up >/dev/null
# shellcheck disable=SC1091
source "$D/env"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ -n "${DEMO_EXIT:-}" ]]; then hack/cluster.sh down >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
mkdir -p "$D/demo"

step "Starting dev-issuer: a local OIDC issuer that mints GitLab-shaped CI ID tokens"
ISSUER_PORT=$(free_port)
"$OAM" dev-issuer --listen "127.0.0.1:$ISSUER_PORT" --state-dir "$D/demo/issuer" --ca-out "$D/demo/issuer-ca.pem" \
  --audience https://oam-trust.local >"$D/demo/issuer.url" 2>"$D/logs/dev-issuer.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s "$D/demo/issuer.url" ]] && break; sleep 0.1; done
ISSUER="$(head -n1 "$D/demo/issuer.url")"
say "issuer: $ISSUER"

step "Installing CRDs, the gitlab-access definitions, a GitLabTrust, the ceiling and the deploy guard"
"$OAM" crd | kubectl apply --server-side -f - >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl apply --server-side -f config/definitions/gitlab-access.yaml -f config/ceiling.yaml -f config/admission/deploy-guard.yaml >/dev/null
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

step "Starting the operator (controllers + token exchange over TLS)"
EX_PORT=$(free_port); HEALTH_PORT=$(free_port)
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=oam-trust-exchange \
  -keyout "$D/demo/exchange.key" -out "$D/demo/exchange.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$D/demo/exchange.ext"
openssl x509 -req -in "$D/demo/exchange.csr" -CA "$D/pki/ca.crt" -CAkey "$D/pki/ca.key" -CAcreateserial -days 7 \
  -extfile "$D/demo/exchange.ext" -out "$D/demo/exchange.crt" 2>/dev/null
OAM_TRUST_LOG_FORMAT=json "$OAM" run --health-addr "127.0.0.1:$HEALTH_PORT" \
  --exchange-listen "127.0.0.1:$EX_PORT" --exchange-tls-cert "$D/demo/exchange.crt" --exchange-tls-key "$D/demo/exchange.key" \
  >"$D/logs/operator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fsS "http://127.0.0.1:$HEALTH_PORT/readyz" >/dev/null || { echo "operator not ready; see $D/logs/operator.log" >&2; tail -20 "$D/logs/operator.log" >&2; exit 1; }
kubectl -n payments wait app/payments --for=jsonpath='{.status.status}'=running --timeout=120s >/dev/null
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
  [[ "$got" == "$expect" ]] || { echo "    unexpected: $out" >&2; exit 1; }
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

step "Audit trail"
kubectl -n payments get events --field-selector involvedObject.kind=Application,involvedObject.name=payments \
  --sort-by=.lastTimestamp | tail -n 8 | sed 's/^/    /'
say "audit log lines (target oam_trust::audit) in $D/logs/operator.log:"
grep '"oam_trust::audit"' "$D/logs/operator.log" | tail -n 4 | cut -c1-240 | sed 's/^/    /'

step "Done"
if [[ -n "${DEMO_EXIT:-}" ]]; then say "DEMO_EXIT is set: stopping everything."; exit 0; fi
say "The cluster, the operator and dev-issuer keep running. In another shell:"
say "  export KUBECONFIG=$KUBECONFIG"
say "  kubectl get app -A"
say "Logs: $D/logs/operator.log (JSON), $D/logs/dev-issuer.log; hack/cluster.sh logs for the control plane.
say "Press Ctrl-C to stop the operator and dev-issuer (hack/cluster.sh down stops the cluster)."
wait
