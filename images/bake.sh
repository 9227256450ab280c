#!/bin/sh
# bake.sh: prepare a machine image tree for one instance group, so that a
# node booted from it converges without downloads: nodeup is installed at
# /usr/local/bin/nodeup, and `nodeup apply --phase bake --root ROOT` installs
# the group's OS packages (apt or dnf, in a chroot) and downloads and
# verifies its assets into ROOT/var/cache/nodeup/assets.
#
# The tree itself comes from elsewhere (debootstrap, an unpacked cloud image,
# a mounted disk). Run as root.
#
# Usage:
#   images/bake.sh --root DIR --nodeup PATH --store URL --cluster NAME --group NAME
#                  [--config-hash SHA256] [--follow-updates] [-- EXTRA nodeup apply FLAGS]
set -eu

usage() {
	sed -n '2,/^set -eu/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}
die() { echo "bake.sh: $*" >&2; exit 1; }

ROOT= NODEUP= STORE= CLUSTER= GROUP= HASH= FOLLOW=
while [ $# -gt 0 ]; do
	case "$1" in
	--root) ROOT=${2:?--root needs a value}; shift 2 ;;
	--nodeup) NODEUP=${2:?--nodeup needs a value}; shift 2 ;;
	--store) STORE=${2:?--store needs a value}; shift 2 ;;
	--cluster) CLUSTER=${2:?--cluster needs a value}; shift 2 ;;
	--group) GROUP=${2:?--group needs a value}; shift 2 ;;
	--config-hash) HASH=${2:?--config-hash needs a value}; shift 2 ;;
	--follow-updates) FOLLOW=1; shift ;;
	-h|--help) usage ;;
	--) shift; break ;;
	*) echo "bake.sh: unknown argument $1" >&2; usage ;;
	esac
done
[ -n "$ROOT" ] || die "--root is required"
[ -n "$NODEUP" ] || die "--nodeup is required"
[ -n "$STORE" ] || die "--store is required"
[ -n "$CLUSTER" ] || die "--cluster is required"
[ -n "$GROUP" ] || die "--group is required"
[ -d "$ROOT" ] || die "root $ROOT is not a directory"
[ -d "$ROOT/etc" ] && [ -d "$ROOT/usr" ] || die "root $ROOT does not look like an OS tree (no /etc or /usr)"
[ -x "$NODEUP" ] || die "nodeup binary $NODEUP is missing or not executable"

# Install nodeup through a temporary file and a rename, so that a tree is
# never left with a half-written binary.
mkdir -p "$ROOT/usr/local/bin"
tmp="$ROOT/usr/local/bin/.nodeup.bake.$$"
trap 'rm -f "$tmp"' EXIT
cp "$NODEUP" "$tmp"
chmod 0755 "$tmp"
mv -f "$tmp" "$ROOT/usr/local/bin/nodeup"
trap - EXIT

set -- apply --phase bake --root "$ROOT" --store "$STORE" --cluster "$CLUSTER" --group "$GROUP" "$@"
[ -z "$HASH" ] || set -- "$@" --config-hash "$HASH"
[ -z "$FOLLOW" ] || set -- "$@" --follow-updates
echo "bake.sh: nodeup $*" >&2
"$NODEUP" "$@"
echo "bake.sh: baked $ROOT for $CLUSTER/$GROUP" >&2
