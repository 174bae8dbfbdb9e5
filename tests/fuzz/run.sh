#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -Dfuzz=true), replays the committed corpus of each and
# fuzzes each for a while; one line per target ("fuzz-ndjson: 123456 runs, 0 crashes"), exit 1
# on a crash. A crash's input is kept under BUILD_DIR/fuzz-artifacts/TARGET/.
#
#   tests/fuzz/run.sh [-t SECONDS_PER_TARGET] [-b BUILD_DIR] [-j JUNIT_XML] [TARGET...]
#
# Defaults: 25 s per target, build-fuzz/, the five targets (ndjson csv journal config catalog).
# -t 0 replays the corpus only. Without clang and libFuzzer it says so and exits 77 (skipped).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=25 build=build-fuzz junit=
while getopts "t:b:j:" o; do
	case $o in
	t) secs=$OPTARG ;;
	b) build=$OPTARG ;;
	j) junit=$OPTARG ;;
	*) sed -n '2,9p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ndjson csv journal config catalog)
cd "$root"

declare -A result detail
write_junit() { # the targets' results as one JUnit suite, for tests/summarize.py
	[ -n "$junit" ] || return 0
	local t fails=0 skips=0 cases=
	for t in "${targets[@]}"; do
		case ${result[$t]} in
		fail) fails=$((fails + 1)); cases+="<testcase classname=\"fuzz\" name=\"fuzz-$t\"><failure message=\"${detail[$t]}\"/></testcase>" ;;
		skip) skips=$((skips + 1)); cases+="<testcase classname=\"fuzz\" name=\"fuzz-$t\"><skipped message=\"${detail[$t]}\"/></testcase>" ;;
		*) cases+="<testcase classname=\"fuzz\" name=\"fuzz-$t\"><system-out>${detail[$t]}</system-out></testcase>" ;;
		esac
	done
	mkdir -p "$(dirname "$junit")"
	printf '<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="fuzz" tests="%d" failures="%d" errors="0" skipped="%d">%s</testsuite></testsuites>\n' \
		"${#targets[@]}" "$fails" "$skips" "$cases" >"$junit"
}
all() { # state, message: every target alike (no build)
	local t
	for t in "${targets[@]}"; do result[$t]=$1 detail[$t]=$2; done
	write_junit
}

# $CC if it is a clang, else clang-14 or clang.
cc=
case $(basename "${CC:-none}") in clang*) cc=$CC ;; esac
[ -n "$cc" ] || cc=$(command -v clang-14 || command -v clang || true)
probe=$(mktemp -d)
if [ -z "$cc" ] || ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
	"$cc" -fsanitize=fuzzer,address,undefined -x c - -o "$probe/probe" 2>/dev/null; then
	rm -rf "$probe"
	msg="no clang with libFuzzer (apt-get install clang-14 libclang-rt-14-dev): fuzzing skipped"
	echo "$msg"
	all skip "$msg"
	exit 77
fi
rm -rf "$probe"

if [ ! -f "$build/build.ninja" ]; then
	CC=$cc meson setup "$build" -Dwerror=true -Dfuzz=true >/dev/null || { all fail "meson setup failed"; exit 1; }
fi
if ! ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}" >/dev/null; then
	ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz-}" | tail -30
	all fail "build failed"
	exit 1
fi

# The targets' scratch files (journal, catalog fsyncs) cost nothing on tmpfs.
[ -w /dev/shm ] && export TMPDIR=/dev/shm
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
crashed=0
for t in "${targets[@]}"; do
	work=$(mktemp -d) art="$build/fuzz-artifacts/$t" log="$build/fuzz-$t.log"
	mkdir -p "$art"
	seeds=("$here/corpus/$t")
	# JSON documents from JSONTestSuite as extra seeds, read in place when the checkout has them.
	[ "$t" = ndjson ] && [ -d "$root/../shared/testdata/JSONTestSuite/test_parsing" ] &&
		seeds+=("$root/../shared/testdata/JSONTestSuite/test_parsing")
	# The work corpus comes first: libFuzzer adds what it finds there, never to the seeds.
	if [ "$secs" -gt 0 ]; then
		args=(-max_total_time="$secs")
	else
		args=(-runs=0)
	fi
	"$build/tests/fuzz/fuzz-$t" "${args[@]}" -max_len=16384 -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$art/" "$work" "${seeds[@]}" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	rm -rf "$work"
	if [ $rc -eq 0 ]; then
		result[$t]=pass detail[$t]="fuzz-$t: ${runs:-0} runs, 0 crashes"
		echo "${detail[$t]}"
	else
		crashed=1
		input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
		result[$t]=fail detail[$t]="fuzz-$t: ${runs:-?} runs, 1 crash (exit $rc), input ${input:-none}, log $log"
		echo "${detail[$t]}"
		grep -E "ERROR|check failed|SUMMARY|^    #[0-9]" "$log" | head -20 | sed 's/^/    /'
	fi
done
write_junit
exit $crashed
