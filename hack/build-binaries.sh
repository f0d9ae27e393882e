#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules (no GitHub, no container registry) and caches
# them outside the checkout, keyed by version: a second run builds nothing.
#   hack/build-binaries.sh            -> prints the bin directory on stdout (last line)
# Cache root: $OAM_TRUST_CACHE (default ~/.cache/oam-trust).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE="${OAM_TRUST_CACHE:-$HOME/.cache/oam-trust}"
BIN="$CACHE/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
mkdir -p "$BIN" "$CACHE/gomod"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
log() { echo "[build-binaries] $*" >&2; }

have() { [[ -x "$BIN/$1" ]]; }

build_k8s() {
  if have kube-apiserver && have kube-controller-manager && have kube-scheduler && have kubectl; then return; fi
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${K8S_VERSION#v1.}"
  local d="$CACHE/gomod/k8s-$K8S_VERSION"; mkdir -p "$d"; cd "$d"
  if [[ ! -f go.mod ]]; then
    {
      echo "module example.invalid/k8sbins"; echo; echo "go 1.26"; echo; echo "replace ("
      for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
        cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api cri-client \
        csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator \
        kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils \
        pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
        echo "	k8s.io/$m => k8s.io/$m $staging"
      done
      echo ")"
    } > go.mod
  fi
  log "resolving k8s.io/kubernetes $K8S_VERSION"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go get -tool "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >&2
  done
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "building kube-apiserver kube-controller-manager kube-scheduler kubectl (slow on a cold cache)"
  go build -trimpath -ldflags "$ld" -o "$BIN/" k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl >&2
}

build_etcd() {
  have etcd && return
  local d="$CACHE/gomod/etcd-$ETCD_VERSION"; mkdir -p "$d"; cd "$d"
  [[ -f go.mod ]] || printf 'module example.invalid/etcdbin\n\ngo 1.26\n' > go.mod
  go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3 >&2
}

build_kwok() {
  have kwok && return
  local d="$CACHE/gomod/kwok-$KWOK_VERSION"; mkdir -p "$d"; cd "$d"
  [[ -f go.mod ]] || printf 'module example.invalid/kwokbin\n\ngo 1.26\n' > go.mod
  go get -tool "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/kwok" sigs.k8s.io/kwok/cmd/kwok >&2
  # the default node/pod stages kwokctl uses ship in the module zip
  local src; src="$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  cat "$src/kustomize/stage/node/fast/node-initialize.yaml" <(echo "---") \
      "$src/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml" <(echo "---") \
      "$src/kustomize/stage/pod/fast/pod-ready.yaml" <(echo "---") \
      "$src/kustomize/stage/pod/fast/pod-complete.yaml" <(echo "---") \
      "$src/kustomize/stage/pod/fast/pod-delete.yaml" > "$BIN/kwok-stages.yaml"
}

build_helm() {
  have helm && return
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
}

what="${1:-all}"
case "$what" in
  all) build_etcd; build_k8s; build_kwok; build_helm ;;
  k8s) build_k8s ;; etcd) build_etcd ;; kwok) build_kwok ;; helm) build_helm ;;
  *) echo "usage: $0 [all|k8s|etcd|kwok|helm]" >&2; exit 2 ;;
esac
echo "$BIN"
