#!/usr/bin/env bash
# make demo works: it runs the tour on its own throwaway servers, the move
# finishes, and the numbers it shows are right.
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
. tests/harness/tap.sh
out=$(mktemp)
trap 'rm -f "$out"' EXIT
IMGSYNC_DEMO_IMAGES=120 BUILD=$BUILD timeout 300 tests/harness/demo >"$out" 2>&1
rc=$?
[ $rc = 0 ] && pass "the demo runs to the end" || { fail "the demo runs to the end (exit $rc)"; sed 's/^/# /' "$out" | tail -20; }
grep -q 'done, 120/120 (100%), 0 failed' "$out" && pass "its migration moves all 120 images" || fail "its migration moves all 120 images"
grep -q '^verify local cloud: 120 images checked, 0 missing, 0 extra, 0 mismatched' "$out" && pass "imgsyncctl verify finds no difference" || fail "imgsyncctl verify finds no difference"
grep -q 'files left in the source store: 0' "$out" && pass "the source ends empty" || fail "the source ends empty"
grep -q 'listed by an independent S3 client: 120' "$out" && pass "the bucket holds them all" || fail "the bucket holds them all"
grep -q 'objects in the bucket now: 115' "$out" && pass "the application's deletes reach S3" || fail "the application's deletes reach S3"
ls -d /tmp/imgsync-demo.* >/dev/null 2>&1 && fail "the demo leaves its temporary directory" || pass "the demo leaves nothing behind"
done_testing
