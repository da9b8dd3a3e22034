#!/usr/bin/env bash
# The libFuzzer harnesses (tests/fuzz/), a few seconds each: every parser
# still holds its invariants on its seeds and on what a short run finds.
# `make fuzz` runs them for longer.  Skipped when clang or libFuzzer's
# runtime is missing.  IMGSYNC_FUZZ_SECONDS: seconds per harness (5).
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
export BUILD
secs=${IMGSYNC_FUZZ_SECONDS:-5}
out=$(tests/fuzz/run "$secs" 2>&1)
rc=$?
if [ $rc = 77 ]; then
	echo "1..0 # SKIP $(printf '%s\n' "$out" | tail -1)"
	exit 0
fi
n=0
while read -r name s runs corpus result; do
	[ "$name" = harness ] && continue
	case "$name" in '' | ' '*) continue ;; esac
	[ -f "tests/fuzz/fuzz_$name.c" ] || continue
	n=$((n + 1))
	if [ "$result" = ok ]; then
		echo "ok $n - fuzz_$name: $runs runs in ${s}s, corpus $corpus"
	else
		echo "not ok $n - fuzz_$name: $result"
	fi
done <<<"$out"
if [ $rc != 0 ] || [ $n = 0 ]; then
	n=$((n + 1))
	echo "not ok $n - tests/fuzz/run exited $rc"
	printf '%s\n' "$out" | sed 's/^/# /'
fi
echo "1..$n"
