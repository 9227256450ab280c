#!/usr/bin/env bash
# Builds the real parts the tests run against, with pinned versions, into a
# cache directory outside the repository, and reuses what is already there.
#
#   TOOLS_DIR (default /var/cache/kopsnode-test-tools) holds:
#     bin/minio, bin/fake-gcs-server, bin/coredns
#     etcd/v<version>/{etcd,etcdutl}  one directory per etcd version, as
#                               etcd-manager expects in production
#     kubernetes/v<version>/{kube-apiserver,kube-controller-manager,
#                            kube-scheduler,kube-proxy,kubelet,kubectl}
#     containerd/v<version>/bin/{containerd,containerd-shim-runc-v2,ctr}
#     runc/v<version>/runc      static, with seccomp
#     cni/v<version>/{bridge,host-local,loopback,portmap,ptp}
#     images/{pause,coredns,testapp}.tar   OCI image-layout tarballs for
#                               `ctr -n k8s.io images import`
#     parts.json                every part above with its version and sha256
#
# Each part is built into a temporary directory beside its place, moved into
# place, and stamped last (.version); a part whose stamp matches is reused.
# The pinned versions are also in pkg/testtools/parts (a test compares them).
#
# Usage: tools/build-test-tools.sh [all|minio|fake-gcs-server|coredns|etcd|
#                                   kubernetes|containerd|runc|cni|images]
#
# Every step must be safe under `set -euo pipefail`: no pipe into a reader
# that exits early (head, grep -q), which kills the writer with SIGPIPE
# (exit 141) depending on timing.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-/var/cache/kopsnode-test-tools}"
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
FAKE_GCS_VERSION="v1.56.1"
COREDNS_VERSION="v1.15.0"
ETCD_VERSIONS="${ETCD_VERSIONS:-3.5.21 3.6.16 3.7.3}"
KUBERNETES_VERSION="1.37.2"
CONTAINERD_VERSION="2.4.2"
RUNC_VERSION="1.4.4"
CNI_PLUGINS_VERSION="1.10.0"
PAUSE_IMAGE="registry.k8s.io/pause:3.10.1"
COREDNS_IMAGE="registry.k8s.io/coredns/coredns:v1.15.0"
TESTAPP_IMAGE="localhost/kopsnode/testapp:v1"

# The flags of every go build below: no VCS stamp (the sources are module
# zips and temporary directories) and no DWARF in the compiled objects.
# Nothing debugs these binaries, and DWARF is work the compiler and linker
# skip (with -s -w where it was missing, a cold make tools went from 74 to
# 66 minutes of CPU; docs/e2e.md, run 3).
BUILD_GOFLAGS="-buildvcs=false -gcflags=all=-dwarf=false"

KUBERNETES_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)
CONTAINERD_BINARIES=(containerd containerd-shim-runc-v2 ctr)
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap main/ptp)

mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/etcd"
log() { echo "build-test-tools: $*" >&2; }

# One build at a time per cache: a second run waits, then finds the parts
# cached. Under the lock, temporary directories left by a killed run are
# stale and removed.
exec 9>"$TOOLS_DIR/.lock"
flock 9
rm -rf "$TOOLS_DIR"/.tmp-*
TMPS=()
BG=() # background builds, stopped if this script ends first
cleanup() {
	if ((${#BG[@]})); then kill "${BG[@]}" 2>/dev/null || true; fi
	if ((${#TMPS[@]})); then rm -rf "${TMPS[@]}"; fi
}
trap cleanup EXIT

# new_tmp NAME: sets NEW_TMP to a fresh temporary directory on the cache's
# filesystem (so the final mv is a rename), removed on exit if still there.
# Not called as $(new_tmp): a subshell would not record it in TMPS.
new_tmp() {
	NEW_TMP="$(mktemp -d "$TOOLS_DIR/.tmp-$1-XXXXXX")"
	TMPS+=("$NEW_TMP")
}

# cached DIR STAMP FILE...: DIR's stamp says STAMP and every FILE is there.
cached() {
	local dir="$1" stamp="$2" f
	shift 2
	[[ "$(cat "$dir/.version" 2>/dev/null)" == "$stamp" ]] || return 1
	for f in "$@"; do [[ -x "$dir/$f" ]] || return 1; done
}

# place TMP DIR STAMP: moves the built TMP to DIR, then writes the stamp.
place() {
	local tmp="$1" dir="$2" stamp="$3"
	mkdir -p "$(dirname "$dir")"
	chmod 755 "$tmp" # mktemp -d made it 0700
	rm -rf "$dir"
	mv "$tmp" "$dir"
	echo "$stamp" >"$dir/.version"
}

# first_line TEXT: the first line, without a pipe (see the note at the top).
first_line() { echo "${1%%$'\n'*}"; }

# go_install PKG VERSION NAME: installs PKG@VERSION as bin/NAME unless the
# stamp says that exact version is already there.
go_install() {
	local pkg="$1" ver="$2" name="$3"
	local stamp="$TOOLS_DIR/bin/.$name.version"
	if [[ -x "$TOOLS_DIR/bin/$name" && "$(cat "$stamp" 2>/dev/null)" == "$pkg@$ver" ]]; then
		log "$name $ver: cached"
		return
	fi
	log "$name $ver: building (this can take minutes)"
	local tmp start=$SECONDS
	new_tmp "$name"
	tmp="$NEW_TMP"
	GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS="$BUILD_GOFLAGS" go install -trimpath -ldflags "-s -w" "$pkg@$ver"
	mv -f "$tmp/$name" "$TOOLS_DIR/bin/$name"
	echo "$pkg@$ver" >"$stamp"
	log "$name $ver: built in $((SECONDS - start))s"
}

# build_etcd VERSION: builds etcd VERSION from the Go module proxy into
# etcd/vVERSION/etcd through a tiny module whose main calls etcdmain.Main.
build_etcd() {
	local ver="$1"
	local dir="$TOOLS_DIR/etcd/v$ver"
	if cached "$dir" "$ver" etcd; then
		log "etcd $ver: cached"
		return
	fi
	log "etcd $ver: building"
	local src out start=$SECONDS
	new_tmp "etcd-src"
	src="$NEW_TMP"
	new_tmp "etcd"
	out="$NEW_TMP"
	cat >"$src/main.go" <<GO
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
	(
		cd "$src"
		go mod init etcdbuild >/dev/null 2>&1
		GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ver" >/dev/null 2>&1
		GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1
		CGO_ENABLED=0 GOFLAGS="$BUILD_GOFLAGS" go build -trimpath -ldflags "-s -w" -o "$out/etcd" .
	)
	place "$out" "$dir" "$ver"
	log "$(first_line "$("$dir/etcd" --version)") (built in $((SECONDS - start))s)"
}

# build_etcdutl VERSION: builds etcdutl VERSION (etcd-manager restores
# snapshots with `etcdutl snapshot restore`) into etcd/vVERSION/etcdutl,
# beside etcd. The command is the root package of its module, so the tiny
# module names it in a tool directive and builds it by path. It has its own
# stamp and is moved in as one file: rebuilding it never removes the etcd
# binary that running tests use.
build_etcdutl() {
	local ver="$1"
	local dir="$TOOLS_DIR/etcd/v$ver"
	local stamp="$dir/.etcdutl.version"
	if [[ -x "$dir/etcdutl" && "$(cat "$stamp" 2>/dev/null)" == "$ver" ]]; then
		log "etcdutl $ver: cached"
		return
	fi
	log "etcdutl $ver: building"
	local src out start=$SECONDS
	new_tmp "etcdutl-src"
	src="$NEW_TMP"
	new_tmp "etcdutl"
	out="$NEW_TMP"
	(
		cd "$src"
		go mod init etcdutlbuild >/dev/null 2>&1
		GOFLAGS=-mod=mod go get -tool "go.etcd.io/etcd/etcdutl/v3@v$ver" >/dev/null 2>&1
		CGO_ENABLED=0 GOFLAGS="-mod=mod $BUILD_GOFLAGS" go build -trimpath -ldflags "-s -w" -o "$out/etcdutl" go.etcd.io/etcd/etcdutl/v3
	)
	mkdir -p "$dir"
	chmod 755 "$out/etcdutl"
	mv -f "$out/etcdutl" "$dir/etcdutl"
	echo "$ver" >"$stamp"
	log "etcdutl: $(first_line "$("$dir/etcdutl" version)") (built in $((SECONDS - start))s)"
}

# build_kubernetes: the Kubernetes commands, through a wrapper module that
# requires k8s.io/kubernetes and replaces its ./staging modules with the
# published ones (tools/k8smodule), in one go build so the packages build in
# parallel. The -X flags make --version say the real version.
build_kubernetes() {
	local ver="$KUBERNETES_VERSION"
	local dir="$TOOLS_DIR/kubernetes/v$ver"
	if cached "$dir" "v$ver" "${KUBERNETES_BINARIES[@]}"; then
		log "kubernetes v$ver: cached"
		return
	fi
	log "kubernetes v$ver: building (cold: about 15 minutes on 2 cores)"
	local src out gomod start=$SECONDS
	new_tmp kubernetes-src
	src="$NEW_TMP"
	new_tmp kubernetes
	out="$NEW_TMP"
	local pkgs=() b
	for b in "${KUBERNETES_BINARIES[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	gomod="$(cd "$src" && go list -m -f '{{.GoMod}}' "k8s.io/kubernetes@v$ver")"
	(cd "$REPO" && go run ./tools/k8smodule --kubernetes-gomod "$gomod" --version "$ver" --out "$src" "${pkgs[@]}")
	local minor="${ver#*.}"
	minor="${minor%%.*}"
	local ldflags="-s -w" p
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $p.gitVersion=v$ver -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
	done
	(
		cd "$src"
		GOFLAGS=-mod=mod go mod tidy
		CGO_ENABLED=0 GOFLAGS="-mod=mod $BUILD_GOFLAGS" go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
	)
	place "$out" "$dir" "v$ver"
	log "kubernetes: $(first_line "$("$dir/kube-apiserver" --version)") (built in $((SECONDS - start))s)"
}

# build_containerd: containerd, its runc shim and ctr, without btrfs (which
# needs cgo headers) and statically.
build_containerd() {
	local ver="$CONTAINERD_VERSION"
	local dir="$TOOLS_DIR/containerd/v$ver"
	local bins=() b
	for b in "${CONTAINERD_BINARIES[@]}"; do bins+=("bin/$b"); done
	if cached "$dir" "v$ver" "${bins[@]}"; then
		log "containerd v$ver: cached"
		return
	fi
	log "containerd v$ver: building"
	local out start=$SECONDS pkgs=()
	new_tmp containerd
	out="$NEW_TMP"
	for b in "${CONTAINERD_BINARIES[@]}"; do pkgs+=("github.com/containerd/containerd/v2/cmd/$b@v$ver"); done
	GOBIN="$out/bin" CGO_ENABLED=0 GOFLAGS="$BUILD_GOFLAGS" go install -trimpath -tags no_btrfs \
		-ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$ver" "${pkgs[@]}"
	place "$out" "$dir" "v$ver"
	log "containerd: $(first_line "$("$dir/bin/containerd" --version)") (built in $((SECONDS - start))s)"
}

# build_runc: runc with seccomp, linked statically against libseccomp
# (Debian's libseccomp-dev) so it runs in any machine tree.
build_runc() {
	local ver="$RUNC_VERSION"
	local dir="$TOOLS_DIR/runc/v$ver"
	if cached "$dir" "v$ver" runc; then
		log "runc v$ver: cached"
		return
	fi
	log "runc v$ver: building"
	if ! pkg-config --exists libseccomp; then
		echo "runc needs libseccomp's headers: apt-get install -y libseccomp-dev pkg-config gcc libc6-dev" >&2
		exit 1
	fi
	local out start=$SECONDS
	new_tmp runc
	out="$NEW_TMP"
	GOBIN="$out" CGO_ENABLED=1 GOFLAGS="$BUILD_GOFLAGS" go install -trimpath \
		-tags "seccomp urfave_cli_no_docs netgo osusergo" \
		-ldflags "-s -w -X main.version=$ver -extldflags -static" \
		"github.com/opencontainers/runc@v$ver"
	place "$out" "$dir" "v$ver"
	log "$(first_line "$("$dir/runc" --version)") (built in $((SECONDS - start))s)"
}

# build_cni: the CNI plugins the kubenet-style pod network uses.
build_cni() {
	local ver="$CNI_PLUGINS_VERSION"
	local dir="$TOOLS_DIR/cni/v$ver"
	local names=() p
	for p in "${CNI_PLUGINS[@]}"; do names+=("${p#*/}"); done
	if cached "$dir" "v$ver" "${names[@]}"; then
		log "cni plugins v$ver: cached"
		return
	fi
	log "cni plugins v$ver: building"
	local out start=$SECONDS pkgs=()
	new_tmp cni
	out="$NEW_TMP"
	for p in "${CNI_PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@v$ver"); done
	GOBIN="$out" CGO_ENABLED=0 GOFLAGS="$BUILD_GOFLAGS" go install -trimpath \
		-ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=v$ver" "${pkgs[@]}"
	place "$out" "$dir" "v$ver"
	log "cni plugins v$ver: built in $((SECONDS - start))s"
}

# build_images: the pause, test workload and CoreDNS images, packed by
# tools/ociimage from static binaries. The programs live in this repository,
# so the stamp is the hash of every input rather than a version.
build_images() {
	go_install github.com/coredns/coredns "$COREDNS_VERSION" coredns
	local dir="$TOOLS_DIR/images" out start=$SECONDS
	new_tmp images
	out="$NEW_TMP"
	(cd "$REPO" && CGO_ENABLED=0 GOFLAGS="$BUILD_GOFLAGS" go build -trimpath -ldflags "-s -w" -o "$out/" \
		./tools/ociimage ./tools/images/pause ./tools/images/testapp)
	local sums
	sums="$(sha256sum "$out/ociimage" "$out/pause" "$out/testapp" "$TOOLS_DIR/bin/coredns")"
	local stamp="${sums//$out\//}
$PAUSE_IMAGE $COREDNS_IMAGE $TESTAPP_IMAGE"
	if cached "$dir" "$stamp" && [[ -f "$dir/pause.tar" && -f "$dir/coredns.tar" && -f "$dir/testapp.tar" ]]; then
		log "images: cached"
		return
	fi
	log "images: building"
	"$out/ociimage" --name "$PAUSE_IMAGE" --out "$out/pause.tar" --entrypoint /pause --file "$out/pause=/pause"
	"$out/ociimage" --name "$TESTAPP_IMAGE" --out "$out/testapp.tar" --entrypoint /testapp --file "$out/testapp=/testapp"
	"$out/ociimage" --name "$COREDNS_IMAGE" --out "$out/coredns.tar" --entrypoint /coredns --file "$TOOLS_DIR/bin/coredns=/coredns"
	rm -f "$out/ociimage" "$out/pause" "$out/testapp"
	place "$out" "$dir" "$stamp"
	log "images: $PAUSE_IMAGE $COREDNS_IMAGE $TESTAPP_IMAGE (built in $((SECONDS - start))s)"
}

# write_manifest: parts.json lists every part present, with its sha256.
write_manifest() {
	(cd "$REPO" && go run ./tools/partsmanifest --dir "$TOOLS_DIR" --etcd-versions "$ETCD_VERSIONS")
}

what="${1:-all}"
case "$what" in
all)
	# Two streams: Kubernetes (about 17 of the 40 minutes of a cold build
	# on 2 cores) beside the rest, so that one stream's downloads, module
	# resolution and single-threaded links overlap the other's compiles.
	# A subshell does not inherit the EXIT trap: it sets its own.
	(
		TMPS=() BG=()
		trap cleanup EXIT
		build_kubernetes
	) &
	BG+=($!)
	# As root with debootstrap (CI), the booted machines' Debian trees too:
	# downloads and unpacking, beside the compiles. Elsewhere the tests
	# build them on first use.
	trees=""
	if [[ $EUID -eq 0 ]] && command -v debootstrap >/dev/null; then
		(cd "$REPO" && go run ./tools/basetrees) &
		trees=$!
		BG+=("$trees")
	fi
	go_install github.com/minio/minio "$MINIO_VERSION" minio
	go_install github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION" fake-gcs-server
	go_install github.com/coredns/coredns "$COREDNS_VERSION" coredns
	for v in $ETCD_VERSIONS; do
		build_etcd "$v"
		build_etcdutl "$v"
	done
	build_containerd
	build_runc
	build_cni
	if ! wait "${BG[0]}"; then
		log "kubernetes v$KUBERNETES_VERSION: the build failed (its output is above)"
		exit 1
	fi
	if [[ -n "$trees" ]] && ! wait "$trees"; then
		log "booted-machine trees: not built (see above); the e2e tests build them on first use"
	fi
	BG=()
	build_images
	;;
minio) go_install github.com/minio/minio "$MINIO_VERSION" minio ;;
fake-gcs-server) go_install github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION" fake-gcs-server ;;
coredns) go_install github.com/coredns/coredns "$COREDNS_VERSION" coredns ;;
etcd) for v in $ETCD_VERSIONS; do
	build_etcd "$v"
	build_etcdutl "$v"
done ;;
kubernetes) build_kubernetes ;;
containerd) build_containerd ;;
runc) build_runc ;;
cni) build_cni ;;
images) build_images ;;
*)
	echo "unknown tool $what" >&2
	exit 2
	;;
esac
write_manifest
log "tools in $TOOLS_DIR"
