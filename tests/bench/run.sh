#!/usr/bin/env bash
# dcsyncd performance benchmark: builds a release dcsyncd and the bench tools in build-bench/,
# generates the data once (cached in build-bench/data/), runs the workloads against the loopback
# sink and prints a markdown table with the targets.
#
#   tests/bench/run.sh --skip [--only W8,W9]   (skip_unchanged: tests/bench/skip.py)
#   tests/bench/run.sh [--only W1,W1C,W2,W3,W4,W5,W6,W7] [--repeat N] [--timeout SECONDS] [--profile [W]] [--callgrind] [--json FILE] [--strict]
#
#   W1  1 file of 1,000,000 records        target: CPU <= 2x yajl bare parse, >= 1,000,000 records/s
#   W1C W1 with field_catalog = no         target: W1's CPU <= 1.05x this (the field catalog's cost)
#   W2  1 file of 10,000,000 records       target: peak RSS <= 32 MiB and within 2 MiB of W1
#   W3  10,000 files of 10 records         target: >= 5,000 files/s
#   W4  4 connections x 250,000 records    target: total records/s >= W1's
#   W5  W1 as .ndjson.gz                   target: CPU <= 1.3x (gzip -dc + yajl bare parse)
#   W6  1 CSV of 1,000,000 rows, 10 cols   target: >= 1,000,000 rows/s
#   W7  1 CSV of 10,000,000 rows           target: peak RSS within 2 MiB of W6's (flat)
#
# --profile [W] also runs workload W (default W1) under `perf record` and prints the daemon's
# top symbols and how its threads (the loop, the cut workers) share the time.
# BENCH_RUN_DIR=DIR puts the spool and state elsewhere (e.g. /dev/shm/dcsyncd-bench, to see the
# cost of fsync); the default is build-bench/run, on the same filesystem as the data.
# Exits 1 when a run went wrong (a record missing at the sink, a batch left open, a malformed
# body, dcsyncd failing or killed after --timeout, default 600 s); missed targets only with --strict.
# Wall and CPU are the median of --repeat runs (default 5; W2 runs once), peak RSS the largest.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
build=$root/build-bench
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

if ! command -v meson >/dev/null || ! command -v ninja >/dev/null || ! pkg-config --exists yajl libcurl; then
	bash tests/install-deps.sh
fi
if [ ! -x /usr/bin/time ]; then   # GNU time measures the daemon's CPU and peak RSS
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >&2
fi
case " $* " in *" --profile"*)
	command -v perf >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf >&2 ;;
esac

echo "== building a release dcsyncd in $build" >&2
if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" --buildtype=release >"$root/build-bench.setup.log" 2>&1 ||
		{ cat "$root/build-bench.setup.log" >&2; exit 1; }
	rm -f "$root/build-bench.setup.log"
fi
if ! ninja -C "$build" >"$build/ninja.log" 2>&1; then
	tail -40 "$build/ninja.log" >&2
	echo "the build failed (log: $build/ninja.log)" >&2
	exit 1
fi

sink=$build/tests/bench/sink
yajl_parse=$build/tests/bench/yajl_parse
"$sink" --selftest >/dev/null || { echo "sink self-test failed" >&2; "$sink" --selftest >&2; exit 1; }

# --fleet: three daemons sharing one key (tests/test_fleet.py) with its 429 bound checked and the
# share of the key's budget printed; DCSYNCD_FLEET_REQUESTS (default 100) requests per host.
if [ "${1:-}" = --fleet ]; then
	DCSYNCD_FLEET_BENCH=1 DCSYNCD_FLEET_REQUESTS=${DCSYNCD_FLEET_REQUESTS:-100} DCSYNCD="$build/src/dcsyncd" \
		exec "$PY" -m pytest -q -s -p no:cacheprovider tests/test_fleet.py
fi

# --skip: W8 and W9, skip_unchanged against a warm store (tests/bench/skip.py; --only W8 or W9).
if [ "${1:-}" = --skip ]; then
	shift
	exec "$PY" tests/bench/skip.py --dcsyncd "$build/src/dcsyncd" --sink "$sink" --data-dir "$build/data" \
		--run-dir "${BENCH_RUN_DIR:-$build/run}/skip" "$@"
fi

exec "$PY" tests/bench/bench.py --dcsyncd "$build/src/dcsyncd" --sink "$sink" --yajl-parse "$yajl_parse" \
	--data-dir "$build/data" --run-dir "${BENCH_RUN_DIR:-$build/run}" "$@"
