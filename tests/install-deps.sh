#!/usr/bin/env bash
# Installs the Debian 12 packages dcsyncd needs to build and test, when some are missing.
set -euo pipefail

pkgs=(
	ca-certificates gcc libc6-dev pkg-config meson ninja-build
	libcurl4-openssl-dev libyajl-dev libev-dev libinih-dev libsystemd-dev zlib1g-dev libzstd-dev liblmdb-dev libxxhash-dev
	gzip zstd
	python3 python3-pytest python3-pytest-xdist curl openssl valgrind systemd groff-base man-db
	debhelper dpkg-dev fakeroot procps passwd util-linux
	# dpkg-checkbuilddeps (packaging/build-deb.sh) requires build-essential itself.
	build-essential
	# tests/test_systemd.py: a booted Debian 12 container
	systemd-container debootstrap
	# tests/test_monitoring.py: promtool, and a real Prometheus scraping node-exporter's textfile collector
	prometheus prometheus-node-exporter
	clang-14 libclang-rt-14-dev tinyproxy-bin
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
