#!/usr/bin/env bash
# The whole test suite, what CI runs (.ci/run): installs dependencies, then
#   1. the gate: the plain build (warnings are errors, crash points on), its unit tests and one
#      integration pass with the daemon unprivileged as the unit runs it. Nothing else runs
#      unless it passes.
#   2. the heavier passes, two jobs at a time: ASan/UBSan (unit + integration), TSan (unit + the
#      tests that drive the worker threads), the unit tests under valgrind, the packaged binary
#      (Debian's flags, crash points off: the integration suite), the tests where running as
#      root changes the outcome, the build-independent tests once (fake server, unit files,
#      package, the package under a booted systemd) and a replay of the fuzz corpora.
# Integration passes run with pytest-xdist (every test has its own directories and free ports).
# Ends with "N passed, M failed, K skipped"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=/usr/bin/python3
ci=$root/build-ci                # this run's logs and results, the package and its unpacked tree
out=$ci/out
jobs_max=${CI_JOBS:-2}
# xdist workers per pytest run: the tests mostly wait on the daemon and the fake server, so more
# workers than cores pay; with two jobs at a time, 3 each keeps a 2-core machine busy, not thrashed.
workers=${CI_WORKERS:-3}
t0=$SECONDS

step() { echo; echo "=== [$(( SECONDS - t0 ))s] $*"; }

bash tests/install-deps.sh || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }
rm -rf "$ci" && mkdir -p "$out"

build() { # dir, extra meson args...
	local dir=$1; shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" -Dwerror=true -Dcrashpoints=true "$@" >/dev/null || return 1
	else
		meson setup "$dir" -Dwerror=true -Dcrashpoints=true "$@" >/dev/null || return 1
	fi
	ninja -C "$dir" >"$out/ninja-$dir.log" 2>&1 || { cat "$out/ninja-$dir.log"; return 1; }
}

step "the gate's build: plain (warnings are errors)"
build build || { echo "0 passed, 1 failed, 0 skipped"; exit 1; }

# The integration tests run the daemon as the unit does (DCSYNCD_TEST_PRIV=unprivileged: its own
# user, no capabilities, UMask 0027; drops by an exporter user of the shared group; see
# tests/harness.py), and on the plain build also as root. Without root there is no other user to
# be: the daemon runs as the caller's user only.
if [ "$(id -u)" = 0 ]; then
	mode=unprivileged
else
	echo "not root: the integration tests run the daemon as $(id -un) only, and the root pass is skipped"
	mode=root
fi
# Where running the daemon and the drops as root changes the outcome: readiness (root holds a
# read lease on any file; unprivileged, another user's file waits out settle_seconds), ownership
# and modes of what the daemon and the commands make, and the checks of the privilege mode itself.
root_tests=(tests/test_privileges.py tests/test_spool_boundary.py tests/test_pipeline.py tests/test_cli.py
	tests/test_commands.py)
# What ThreadSanitizer is for: the worker threads that cut bodies ahead (src/record/record_worker.c), handed
# work and cancelled by the loop. These drive them through every hand-over: plain and gathered
# batches, every format, failures and retries mid-cut, reloads and signals while a cut runs.
tsan_tests=(tests/test_pipeline.py tests/test_formats.py tests/test_failures.py tests/test_reload_invariants.py
	tests/test_service.py)

# Tests that do not depend on the build run once, in their own job: among them the real
# Prometheus and node-exporter against the shipped rules (what they judge is the rules and the
# metrics' names, the same in every build; most of their time is Prometheus's evaluations).
once=(tests/test_fakeoptix.py tests/test_unit_files.py tests/test_package.py tests/test_systemd.py
	tests/test_monitoring.py)
per_build=()
for t in "${once[@]}"; do per_build+=(--ignore="$t"); done

results=()
pytest_run() { # label, privilege mode, binary, pytest args...
	local label=$1 mode=$2 bin=$3; shift 3
	local tmp=()
	# Each session its own tmp root: two run at once (the unprivileged mode makes its own).
	[ "$mode" = root ] && tmp=(--basetemp="$(mktemp -d /tmp/dcsyncd-ci-"$label"-XXXXXX)")
	DCSYNCD_TEST_PRIV=$mode DCSYNCD=$bin $PY -m pytest -q -p no:cacheprovider -rs -n "$workers" "${tmp[@]}" \
		--junitxml="$out/pytest-$label.xml" -o junit_family=xunit2 ${PYTEST_ARGS:-} "$@"
}
unit_run() { # build dir, label, meson test args...
	local dir=$1 label=$2; shift 2
	local rc=0
	meson test -C "$dir" --suite unit --print-errorlogs --logbase "unit-$label" "$@" || rc=1
	cp "$dir"/meson-logs/unit-"$label"*.json "$out/" || rc=1
	return $rc
}

job_gate() {
	local rc=0
	unit_run build plain || rc=1
	pytest_run "plain-$mode" "$mode" "$root/build/src/dcsyncd" tests "${per_build[@]}" || rc=1
	return $rc
}
job_root() {
	pytest_run plain-root root "$root/build/src/dcsyncd" "${root_tests[@]}"
}
job_valgrind() {
	# meson names the log after the wrapper too: unit-memcheck-valgrind.json.
	unit_run build memcheck \
		--wrap='valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1'
}
job_asan() {
	build build-asan -Db_sanitize=address,undefined -Db_lundef=false || return 1
	export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	local rc=0
	unit_run build-asan asan || rc=1
	pytest_run "asan-$mode" "$mode" "$root/build-asan/src/dcsyncd" tests "${per_build[@]}" || rc=1
	return $rc
}
# A race report makes the daemon exit 66, which fails the test that ran it.
job_tsan() {
	build build-tsan -Db_sanitize=thread -Db_lundef=false || return 1
	export TSAN_OPTIONS=halt_on_error=0:exitcode=66
	local probe
	if ! probe=$(build-tsan/tests/test-worker 2>&1) && grep -q "FATAL: ThreadSanitizer" <<<"$probe"; then
		# Some kernels' address-space randomisation leaves TSan no room; that is the machine's limit.
		echo "ThreadSanitizer cannot run on this kernel, skipped: $(grep -m1 FATAL <<<"$probe")"
		return 0
	fi
	local rc=0
	unit_run build-tsan tsan || rc=1
	pytest_run "tsan-$mode" "$mode" "$root/build-tsan/src/dcsyncd" "${tsan_tests[@]}" || rc=1
	return $rc
}
# What ships: packaging/build-deb.sh (crash points off, dpkg-buildflags' hardening flags). Its
# binary runs the integration suite (tests that need crash points say they skipped); the .deb
# goes to test_package and test_systemd.
build_deb() { # once, for whichever job needs it first; the other waits on the lock
	(
		flock 9
		[ -f "$ci/deb.ok" ] && exit 0
		DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" sh packaging/build-deb.sh "$ci/dist" >"$out/deb.log" 2>&1 &&
			dpkg-deb -x "$(ls "$ci"/dist/dcsyncd_*.deb)" "$ci/shipped" && touch "$ci/deb.ok" ||
			{ tail -40 "$out/deb.log"; exit 1; }
	) 9>"$ci/deb.lock"
}
job_shipped() {
	build_deb || return 1
	pytest_run "shipped-$mode" "$mode" "$ci/shipped/usr/bin/dcsyncd" tests "${per_build[@]}"
}
job_once() {
	build_deb || return 1
	# One module per worker: test_package and test_systemd share a package install and one
	# booted container across their tests (module fixtures), made once, not once per worker.
	DCSYNCD_DEB=$(ls "$ci"/dist/dcsyncd_*.deb) pytest_run once "$mode" "$root/build/src/dcsyncd" --dist loadfile "${once[@]}"
}
# The fuzz targets replay their committed corpora (tests/fuzz/corpus): every past crash and seed
# still passes. Fuzzing campaigns are long and belong elsewhere: tests/fuzz/run.sh -t SECONDS.
job_fuzz() {
	bash tests/fuzz/run.sh -t 0 -b build-fuzz -j "$out/fuzz.xml"
	local rc=$?
	[ $rc = 77 ] && rc=0        # no clang: said so, counted as skipped
	return $rc
}

declare -A pid_job start_of
running=0 failed_jobs=()
finish_one() {
	local pid rc
	wait -n -p pid
	rc=$?
	local name=${pid_job[$pid]}
	running=$((running - 1))
	step "$name: finished (exit $rc, $(( SECONDS - ${start_of[$name]} ))s); its output:"
	cat "$out/job-$name.log"
	[ "$rc" = 0 ] || failed_jobs+=("$name")
}
start_job() {
	step "$1: started"
	start_of[$1]=$SECONDS
	( "job_$1" ) >"$out/job-$1.log" 2>&1 &
	pid_job[$!]=$1
	running=$((running + 1))
}

start_job gate
finish_one
if [ ${#failed_jobs[@]} -eq 0 ]; then
	# Longest first; two at a time (the tests mostly wait, the machine has 2 cores).
	queue=(asan shipped tsan once valgrind fuzz)
	[ "$mode" = unprivileged ] && queue+=(root)
	for name in "${queue[@]}"; do
		[ "$running" -lt "$jobs_max" ] || finish_one
		start_job "$name"
	done
	while [ "$running" -gt 0 ]; do finish_one; done
else
	step "the gate failed: the heavier passes do not run"
fi

step "summary (${#failed_jobs[@]} job(s) with failures${failed_jobs[*]:+: ${failed_jobs[*]}})"
results=("$out"/unit-*.json "$out"/pytest-*.xml)
[ -f "$out/fuzz.xml" ] && results+=("$out/fuzz.xml")
# A job that failed without a failed test (a crash before its results) counts as a failure too.
$PY tests/summarize.py "${results[@]}" ${failed_jobs[@]/#/--failed-job=}
