#!/usr/bin/env bash
# Builds the real servers the tests run against, with pinned versions, into a
# cache directory outside the repository, and reuses what is already there.
#
#   TOOLS_DIR (default /var/cache/kopsnode-test-tools) holds:
#     bin/minio, bin/fake-gcs-server, bin/coredns
#     etcd/v<version>/etcd      one directory per etcd version, as etcd-manager
#                               expects in production
#
# Usage: tools/build-test-tools.sh [all|minio|fake-gcs-server|coredns|etcd]
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-/var/cache/kopsnode-test-tools}"
MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
FAKE_GCS_VERSION="v1.56.1"
COREDNS_VERSION="v1.15.0"
ETCD_VERSIONS="${ETCD_VERSIONS:-3.5.21 3.6.16 3.7.3}"

mkdir -p "$TOOLS_DIR/bin" "$TOOLS_DIR/etcd"
log() { echo "build-test-tools: $*" >&2; }

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
	local tmp
	tmp="$(mktemp -d)"
	GOBIN="$tmp" CGO_ENABLED=0 GOFLAGS=-buildvcs=false go install "$pkg@$ver"
	mv -f "$tmp/$name" "$TOOLS_DIR/bin/$name"
	rmdir "$tmp"
	echo "$pkg@$ver" >"$stamp"
}

# build_etcd VERSION: builds etcd VERSION from the Go module proxy into
# etcd/vVERSION/etcd through a tiny module whose main calls etcdmain.Main.
build_etcd() {
	local ver="$1"
	local dir="$TOOLS_DIR/etcd/v$ver"
	if [[ -x "$dir/etcd" && "$(cat "$dir/.version" 2>/dev/null)" == "$ver" ]]; then
		log "etcd $ver: cached"
		return
	fi
	log "etcd $ver: building"
	local src
	src="$(mktemp -d)"
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
		CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -o etcd .
	)
	mkdir -p "$dir"
	mv -f "$src/etcd" "$dir/etcd"
	rm -rf "$src"
	echo "$ver" >"$dir/.version"
	# No pipe into head: under pipefail a reader that exits early kills the
	# writer with SIGPIPE (exit 141) depending on timing.
	local out
	out="$("$dir/etcd" --version)"
	log "${out%%$'\n'*}"
}

what="${1:-all}"
case "$what" in
all)
	go_install github.com/minio/minio "$MINIO_VERSION" minio
	go_install github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION" fake-gcs-server
	go_install github.com/coredns/coredns "$COREDNS_VERSION" coredns
	for v in $ETCD_VERSIONS; do build_etcd "$v"; done
	;;
minio) go_install github.com/minio/minio "$MINIO_VERSION" minio ;;
fake-gcs-server) go_install github.com/fsouza/fake-gcs-server "$FAKE_GCS_VERSION" fake-gcs-server ;;
coredns) go_install github.com/coredns/coredns "$COREDNS_VERSION" coredns ;;
etcd) for v in $ETCD_VERSIONS; do build_etcd "$v"; done ;;
*) echo "unknown tool $what" >&2; exit 2 ;;
esac
log "tools in $TOOLS_DIR"
