#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds dcsyncd (plain, ASan/UBSan, TSan), runs the
# unit tests (also under valgrind), the integration tests and a short fuzzing run, and ends with
# "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=/usr/bin/python3

bash tests/install-deps.sh || exit 1

results=()
step() { echo; echo "=== $*"; }

build() { # dir, extra meson args...
	local dir=$1; shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" -Dwerror=true -Dcrashpoints=true "$@" >/dev/null || return 1
	else
		meson setup "$dir" -Dwerror=true -Dcrashpoints=true "$@" >/dev/null || return 1
	fi
	ninja -C "$dir"
}

# The integration tests run the daemon as the unit does (DCSYNCD_TEST_PRIV=unprivileged: its own
# user, no capabilities, UMask 0027; drops by an exporter user of the shared group; see
# tests/harness.py), and on the plain build also as root. Without root there is no other user to
# be: the daemon runs as the caller's user only.
if [ "$(id -u)" = 0 ]; then
	plain_modes=(unprivileged root) sanitizer_modes=(unprivileged)
else
	echo "not root: the integration tests run the daemon as $(id -un) only"
	plain_modes=(root) sanitizer_modes=(root)
fi

run_suite() { # build dir, label, privilege modes...
	local dir=$1 label=$2 mode; shift 2
	step "$label: unit tests"
	meson test -C "$dir" --suite unit --print-errorlogs --logbase "unit-$label"
	results+=("$dir/meson-logs/unit-$label.json")
	for mode in "$@"; do
		step "$label: integration tests, daemon $mode"
		rm -f "$dir/pytest-$label-$mode.xml"
		DCSYNCD_TEST_PRIV=$mode DCSYNCD="$root/$dir/src/dcsyncd" $PY -m pytest -q -p no:cacheprovider tests \
			--junitxml="$dir/pytest-$label-$mode.xml" -o junit_family=xunit2 ${PYTEST_ARGS:-}
		results+=("$dir/pytest-$label-$mode.xml")
	done
}

step "build (warnings are errors)"
build build || { echo "0 passed, 1 failed"; exit 1; }
run_suite build plain "${plain_modes[@]}"

step "valgrind: unit tests"
meson test -C build --suite unit --print-errorlogs --logbase unit-memcheck \
	--wrap='valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1'
# meson names the log after the wrapper too: unit-memcheck-valgrind.json.
results+=(build/meson-logs/unit-memcheck*.json)

step "build with AddressSanitizer and UndefinedBehaviorSanitizer"
if build build-asan -Db_sanitize=address,undefined -Db_lundef=false; then
	export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	run_suite build-asan asan "${sanitizer_modes[@]}"
else
	echo "0 passed, 1 failed"
	exit 1
fi

# The parse threads (src/worker.c) share a connection's state with the loop by hand-over only:
# ThreadSanitizer checks that claim on every test. A race report makes the daemon exit 66, which
# fails the test that ran it.
step "build with ThreadSanitizer"
if build build-tsan -Db_sanitize=thread -Db_lundef=false; then
	unset ASAN_OPTIONS UBSAN_OPTIONS
	export TSAN_OPTIONS=halt_on_error=0:exitcode=66
	if probe=$(build-tsan/tests/test-worker 2>&1) || ! grep -q "FATAL: ThreadSanitizer" <<<"$probe"; then
		run_suite build-tsan tsan "${sanitizer_modes[@]}"
	else
		# Some kernels' address-space randomisation leaves TSan no room; that is the machine's limit.
		echo "ThreadSanitizer cannot run on this kernel, skipped: $(grep -m1 FATAL <<<"$probe")"
	fi
else
	echo "0 passed, 1 failed"
	exit 1
fi

# Short libFuzzer run of the parsers (tests/fuzz): the committed corpus, then ~25 s per target.
step "fuzz: corpus replay and a short run of each target"
unset TSAN_OPTIONS
bash tests/fuzz/run.sh -b build-fuzz -j build-fuzz/fuzz.xml
results+=(build-fuzz/fuzz.xml)

step "summary"
$PY tests/summarize.py "${results[@]}"
