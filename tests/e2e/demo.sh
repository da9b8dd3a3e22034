#!/usr/bin/env bash
# make demo works: it runs the tour on its own throwaway servers, the move
# finishes, and the numbers it shows are right.
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
nok() { n=$((n + 1)); echo "not ok $n - $*"; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
IMGSYNC_DEMO_IMAGES=120 BUILD=$BUILD timeout 300 tests/harness/demo >"$out" 2>&1
rc=$?
[ $rc = 0 ] && ok "the demo runs to the end" || { nok "the demo runs to the end (exit $rc)"; sed 's/^/# /' "$out" | tail -20; }
grep -q 'done, 120/120 (100%), 0 failed' "$out" && ok "its migration moves all 120 images" || nok "its migration moves all 120 images"
grep -q '^verify local cloud: 120 images checked, 0 missing, 0 extra, 0 mismatched' "$out" && ok "imgsyncctl verify finds no difference" || nok "imgsyncctl verify finds no difference"
grep -q 'files left in the source store: 0' "$out" && ok "the source ends empty" || nok "the source ends empty"
grep -q 'listed by an independent S3 client: 120' "$out" && ok "the bucket holds them all" || nok "the bucket holds them all"
grep -q 'objects in the bucket now: 115' "$out" && ok "the application's deletes reach S3" || nok "the application's deletes reach S3"
ls -d /tmp/imgsync-demo.* >/dev/null 2>&1 && nok "the demo leaves its temporary directory" || ok "the demo leaves nothing behind"
echo "1..$n"
