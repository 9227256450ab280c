#!/usr/bin/env bash
# Runs nodeup's main job on the embedded default store (file://), converging a
# scratch root directory instead of this machine:
#   1. stages a state store in a temp directory with the cluster spec, a
#      worker node configuration whose assets are small local files (file://
#      mirrors, pinned by sha256), and what a control-plane node publishes
#      for workers: the kubernetes CA's public certificate and the node
#      bootstrap token (a worker reads no CA key);
#   2. prints the plan (nodeup apply --dry-run);
#   3. converges the root (nodeup apply --root), then again to show that a
#      converged node changes nothing;
#   4. prints nodeup status.
# Usage: examples/demo/run.sh [WORKDIR]   (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
NODEUP="${NODEUP:-$PWD/bin/nodeup}"
[ -x "$NODEUP" ] || { echo "demo: $NODEUP not found; run 'make build' first" >&2; exit 1; }
WORK="${1:-$(mktemp -d /tmp/nodeup-demo.XXXXXX)}"
mkdir -p "$WORK"
STORE="$WORK/store" ROOT="$WORK/root" ASSETS="$WORK/assets"
CLUSTER=example.k8s.local
rm -rf "$STORE" "$ROOT" "$ASSETS"
mkdir -p "$STORE/$CLUSTER/nodeup" "$ROOT" "$ASSETS/containerd/bin" "$ASSETS/cni"

# Stand-in binaries: enough for nodeup to install and wire up.
fake() { printf '#!/bin/sh\n# demo stand-in for %s\nexec sleep infinity\n' "$1" >"$2"; chmod 755 "$2"; }
fake kubelet "$ASSETS/kubelet"
fake runc "$ASSETS/runc"
fake containerd "$ASSETS/containerd/bin/containerd"
fake containerd-shim-runc-v2 "$ASSETS/containerd/bin/containerd-shim-runc-v2"
fake ctr "$ASSETS/containerd/bin/ctr"
for p in bridge host-local loopback portmap; do fake "$p" "$ASSETS/cni/$p"; done
tar -C "$ASSETS/containerd" -czf "$ASSETS/containerd.tar.gz" bin
tar -C "$ASSETS/cni" -czf "$ASSETS/cni-plugins.tgz" .
sha() { sha256sum "$1" | cut -d' ' -f1; }

cp examples/cluster.yaml "$STORE/$CLUSTER/cluster.yaml"
# Stand-ins for what the first control-plane node publishes.
mkdir -p "$STORE/$CLUSTER/pki/kubernetes-ca" "$STORE/$CLUSTER/secrets"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj /CN=kubernetes-ca -addext basicConstraints=critical,CA:TRUE \
  -keyout "$WORK/ca.key" -out "$STORE/$CLUSTER/pki/kubernetes-ca/ca.crt" 2>/dev/null
echo "$(openssl rand -hex 3).$(openssl rand -hex 8)" >"$STORE/$CLUSTER/secrets/node-bootstrap-token"
cat >"$STORE/$CLUSTER/nodeup/nodes.yaml" <<YAML
apiVersion: agents.kopsnode.io/v1alpha1
kind: NodeConfig
metadata:
  name: nodes
spec:
  clusterName: $CLUSTER
  role: node
  kubernetesVersion: 1.32.4
  assets:
    - name: kubelet
      sha256: $(sha "$ASSETS/kubelet")
      urls: [file://$ASSETS/kubelet]
    - name: containerd
      sha256: $(sha "$ASSETS/containerd.tar.gz")
      urls: [file://$ASSETS/containerd.tar.gz]
      extract: true
    - name: runc
      sha256: $(sha "$ASSETS/runc")
      urls: [file://$ASSETS/runc]
    - name: cni-plugins
      sha256: $(sha "$ASSETS/cni-plugins.tgz")
      urls: [file://$ASSETS/cni-plugins.tgz]
      extract: true
  networking:
    mode: cni
    provider: bridge
  sysctls:
    net.ipv4.ip_forward: "1"
  kernelModules: [br_netfilter, overlay]
  gossip:
    seeds: store
YAML
HASH="$(sha "$STORE/$CLUSTER/nodeup/nodes.yaml")"
ARGS=(--store "file://$STORE" --cluster "$CLUSTER" --group nodes --config-hash "$HASH" --root "$ROOT")

echo "== plan (nodeup apply --dry-run): nothing is changed or downloaded"
"$NODEUP" apply "${ARGS[@]}" --dry-run --log-level warn
echo
echo "== converge $ROOT"
"$NODEUP" apply "${ARGS[@]}" --log-level warn
echo
echo "== converge again: a converged node changes nothing"
"$NODEUP" apply "${ARGS[@]}" --dry-run --log-level warn
echo
echo "== nodeup status"
"$NODEUP" status --root "$ROOT"
echo
echo "demo: store $STORE, converged root $ROOT"
