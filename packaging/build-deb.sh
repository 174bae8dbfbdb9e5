#!/bin/sh
# Build the dcsyncd Debian package from this source tree.
#
#   packaging/build-deb.sh [OUTPUT_DIR] [-- DPKG_BUILDPACKAGE_ARGS...]
#
# dpkg-buildpackage wants debian/ at the top of the source tree, but the
# packaging lives in packaging/debian/.  This script copies the source tree
# (git-tracked and untracked-but-not-ignored files of the working tree, so
# uncommitted changes are included; build directories are not) to a
# temporary directory, copies packaging/debian/ to debian/ there, runs
# "dpkg-buildpackage -us -uc -b" and copies the resulting .deb files (plus
# .buildinfo/.changes) to OUTPUT_DIR (default: ./dist).  The source tree is
# never modified.
#
# Build dependencies must be installed first, e.g.:
#   apt-get install devscripts equivs
#   mk-build-deps -i -r -t 'apt-get -y --no-install-recommends' packaging/debian/control
# DEB_BUILD_OPTIONS is honoured (e.g. DEB_BUILD_OPTIONS=nocheck).
# Set KEEP_BUILD_DIR=1 to keep the temporary directory for inspection.
set -eu

die() { echo "build-deb.sh: $*" >&2; exit 1; }

script_dir=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$script_dir/.." && pwd)
if [ ! -f "$src/meson.build" ] || [ ! -d "$src/packaging/debian" ]; then
	die "cannot find the source tree (expected $src/meson.build)"
fi

outdir=dist
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
	outdir=$1
	shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

for tool in dpkg-buildpackage dpkg-parsechangelog dpkg-checkbuilddeps; do
	command -v "$tool" >/dev/null 2>&1 ||
		die "$tool not found (apt-get install dpkg-dev debhelper)"
done

pkg_version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
upstream_version=${pkg_version#*:}
upstream_version=${upstream_version%-*}
meson_version=$(sed -n "s/^[[:space:]]*version[[:space:]]*:[[:space:]]*'\([^']*\)'.*/\1/p" \
	"$src/meson.build" | head -n 1)
if [ -n "$meson_version" ] && [ "$meson_version" != "$upstream_version" ]; then
	echo "build-deb.sh: warning: debian/changelog is $pkg_version but meson.build" \
		"says $meson_version; add a changelog entry (dch -v $meson_version-1)" >&2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dcsyncd-deb.XXXXXX")
cleanup() {
	if [ "${KEEP_BUILD_DIR:-0}" = 1 ]; then
		echo "build-deb.sh: build directory kept: $tmp" >&2
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

build="$tmp/dcsyncd-$upstream_version"
mkdir "$build"

# Keep only files that exist; skip meson build directories (any top-level
# directory containing meson-private/), debhelper build dirs, debian/ and
# dist/ (the default output directory).
# shellcheck disable=SC2016 # $f and $top are expanded by the inner sh
filter='for f; do
	top=${f%%/*}
	[ "$top" != "$f" ] && [ -d "$top/meson-private" ] && continue
	case $f in debian/*|obj-*/*|dist/*) continue ;; esac
	if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\0" "$f"; fi
done'
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Tracked plus untracked-but-not-ignored files of the working tree.
	(cd "$src" && git ls-files -z --cached --others --exclude-standard)
else
	(cd "$src" && find . -path ./.git -prune -o \( -type f -o -type l \) -print0 |
		sed -z 's|^\./||')
fi | (cd "$src" && xargs -0 -r sh -c "$filter" sh) >"$tmp/files"
tar -C "$src" --null --no-recursion -T "$tmp/files" -cf - | tar -C "$build" -xf -
[ -f "$build/meson.build" ] || die "copying the source tree to $build failed"

rm -rf "$build/debian"
cp -a "$src/packaging/debian" "$build/debian"
chmod +x "$build/debian/rules"

cd "$build"
dpkg-checkbuilddeps ||
	die "missing build dependencies; see the comment at the top of this script"
dpkg-buildpackage -us -uc -b "$@"

found=0
for f in "$tmp"/*.deb "$tmp"/*.ddeb "$tmp"/*.buildinfo "$tmp"/*.changes; do
	[ -e "$f" ] || continue
	cp "$f" "$outdir/"
	case $f in *.deb|*.ddeb) echo "build-deb.sh: wrote $outdir/$(basename "$f")"; found=1 ;; esac
done
[ "$found" = 1 ] || die "dpkg-buildpackage produced no .deb"
