#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds dcsyncd (plain with crash points, ASan/UBSan,
# TSan) and the Debian package, then runs two jobs at a time: the unit tests (also under valgrind)
# and the integration tests on each build, the integration tests on the packaged binary (what
# ships: crash points off, Debian's flags), the build-independent tests once (fake server, unit
# files, package, the package under a booted systemd) and a short fuzzing run. Ends with
# "N passed, M failed, K skipped"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PY=/usr/bin/python3
ci=$root/build-ci                # this run's logs and results, the package and its unpacked tree
out=$ci/out
jobs_max=${CI_JOBS:-2}
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

step "builds: plain, ASan/UBSan, TSan (warnings are errors), and the Debian package"
build build &&
	build build-asan -Db_sanitize=address,undefined -Db_lundef=false &&
	build build-tsan -Db_sanitize=thread -Db_lundef=false ||
	{ echo "0 passed, 1 failed, 0 skipped"; exit 1; }
# What ships: packaging/build-deb.sh (crash points off, dpkg-buildflags' hardening flags). Its
# binary runs the integration tests below; the .deb goes to test_package and test_systemd.
if DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" sh packaging/build-deb.sh "$ci/dist" >"$out/deb.log" 2>&1 &&
	deb=$(ls "$ci"/dist/dcsyncd_*.deb) && dpkg-deb -x "$deb" "$ci/shipped"; then
	export DCSYNCD_DEB=$deb
else
	tail -40 "$out/deb.log"
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
fi

# The integration tests run the daemon as the unit does (DCSYNCD_TEST_PRIV=unprivileged: its own
# user, no capabilities, UMask 0027; drops by an exporter user of the shared group; see
# tests/harness.py), and on the plain build also as root. Without root there is no other user to
# be: the daemon runs as the caller's user only.
if [ "$(id -u)" = 0 ]; then
	plain_modes=(unprivileged root) other_mode=unprivileged
else
	echo "not root: the integration tests run the daemon as $(id -un) only"
	plain_modes=(root) other_mode=root
fi

# Tests that do not depend on the build run once, in their own job.
once=(tests/test_fakeoptix.py tests/test_unit_files.py tests/test_package.py tests/test_systemd.py)
per_build=()
for t in "${once[@]}"; do per_build+=(--ignore="$t"); done

results=()
pytest_run() { # label, privilege mode, binary, pytest args...
	local label=$1 mode=$2 bin=$3; shift 3
	local tmp=()
	# Each session its own tmp root: two run at once (the unprivileged mode makes its own).
	[ "$mode" = root ] && tmp=(--basetemp="$(mktemp -d /tmp/dcsyncd-ci-"$label"-XXXXXX)")
	DCSYNCD_TEST_PRIV=$mode DCSYNCD=$bin $PY -m pytest -q -p no:cacheprovider -rs "${tmp[@]}" \
		--junitxml="$out/pytest-$label.xml" -o junit_family=xunit2 ${PYTEST_ARGS:-} "$@"
}
unit_run() { # build dir, label, meson test args...
	local dir=$1 label=$2; shift 2
	local rc=0
	meson test -C "$dir" --suite unit --print-errorlogs --logbase "unit-$label" "$@" || rc=1
	cp "$dir"/meson-logs/unit-"$label"*.json "$out/" || rc=1
	return $rc
}

job_plain() {
	local rc=0
	unit_run build plain || rc=1
	pytest_run "plain-${plain_modes[0]}" "${plain_modes[0]}" "$root/build/src/dcsyncd" tests "${per_build[@]}" || rc=1
	return $rc
}
job_plain_root() {
	pytest_run plain-root root "$root/build/src/dcsyncd" tests "${per_build[@]}"
}
job_valgrind() {
	# meson names the log after the wrapper too: unit-memcheck-valgrind.json.
	unit_run build memcheck \
		--wrap='valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=1'
}
job_asan() {
	export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
	local rc=0
	unit_run build-asan asan || rc=1
	pytest_run "asan-$other_mode" "$other_mode" "$root/build-asan/src/dcsyncd" tests "${per_build[@]}" || rc=1
	return $rc
}
# The parse threads (src/worker.c) share a connection's state with the loop by hand-over only:
# ThreadSanitizer checks that claim on every test. A race report makes the daemon exit 66, which
# fails the test that ran it.
job_tsan() {
	export TSAN_OPTIONS=halt_on_error=0:exitcode=66
	local probe
	if ! probe=$(build-tsan/tests/test-worker 2>&1) && grep -q "FATAL: ThreadSanitizer" <<<"$probe"; then
		# Some kernels' address-space randomisation leaves TSan no room; that is the machine's limit.
		echo "ThreadSanitizer cannot run on this kernel, skipped: $(grep -m1 FATAL <<<"$probe")"
		return 0
	fi
	local rc=0
	unit_run build-tsan tsan || rc=1
	pytest_run "tsan-$other_mode" "$other_mode" "$root/build-tsan/src/dcsyncd" tests "${per_build[@]}" || rc=1
	return $rc
}
# The packaged binary: tests that need crash points skip (saying so).
job_shipped() {
	pytest_run "shipped-$other_mode" "$other_mode" "$ci/shipped/usr/bin/dcsyncd" tests "${per_build[@]}"
}
job_once() {
	pytest_run once "$other_mode" "$root/build/src/dcsyncd" "${once[@]}"
}
# Short libFuzzer run of the parsers (tests/fuzz): the committed corpus, then ~25 s per target.
job_fuzz() {
	bash tests/fuzz/run.sh -b build-fuzz -j "$out/fuzz.xml"
	local rc=$?
	[ $rc = 77 ] && rc=0        # no clang: said so, counted as skipped
	return $rc
}

# Longest first; two at a time (the machine's cores; the tests mostly wait). Every job has its
# own tmp root, a free port per fake server and its own result file.
queue=(plain asan tsan once plain_root shipped valgrind fuzz)
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
for name in "${queue[@]}"; do
	[ "$running" -lt "$jobs_max" ] || finish_one
	step "$name: started"
	start_of[$name]=$SECONDS
	( "job_$name" ) >"$out/job-$name.log" 2>&1 &
	pid_job[$!]=$name
	running=$((running + 1))
done
while [ "$running" -gt 0 ]; do finish_one; done

step "summary (${#failed_jobs[@]} job(s) with failures${failed_jobs[*]:+: ${failed_jobs[*]}})"
results=("$out"/unit-*.json "$out"/pytest-*.xml)
[ -f "$out/fuzz.xml" ] && results+=("$out/fuzz.xml")
# A job that failed without a failed test (a crash before its results) counts as a failure too.
$PY tests/summarize.py "${results[@]}" ${failed_jobs[@]/#/--failed-job=}
