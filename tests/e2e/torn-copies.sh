#!/usr/bin/env bash
# A source written again in place while it is copied.  The copy in the
# target may mix two versions, and it lands there after the application's
# put() of the new version committed: written later than the catalog's
# record, it looks like another writer's object.  The attempt names it as
# its own (work.strays), so the next attempt replaces it with the new
# version instead of waiting for a put() that already came.  faultproxy
# holds the copy's PUT while the test writes the file again and commits
# its put(), the way an application that rewrites images in place does.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init torn || { fail "set-up"; done_testing; exit 1; }
. tests/harness/faultproxy.sh
: >"$D_DIR/proxy.control"
fp_start --control "$D_DIR/proxy.control" --stall-seconds 2
trap 'kill $PROXY_PID 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
fp_stores ''
d_mirrors
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
stalls() { awk '$1 == "stall_request" { n = $2 } END { print n + 0 }' "$PROXY_STATS" 2>/dev/null; }
control() { printf '%b' "$1" >"$D_DIR/proxy.control.new" && mv "$D_DIR/proxy.control.new" "$D_DIR/proxy.control"; }
# held N: wait until faultproxy held N PUTs in all, then hold no more
held() {
	for _ in $(seq 100); do [ "$(stalls)" -ge "$1" ] && break; sleep 0.05; done
	control ""
	test "$(stalls)" = "$1"
}

# a move
mkdir -p "$D_ROOT/move"
printf 'version one, in place' >"$D_ROOT/move/a.png"
d_sql "SELECT imgsync.put('move/a.png', 'local', 'image/png')" >/dev/null
check "imgsyncd starts" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0
control "stall_request 1\nonly /move/\n"
m=$(ctl migrate local cloud --prefix move/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "the move's PUT is held" held 1
printf 'version two, written in place over the first' >"$D_ROOT/move/a.png"
d_sql "SELECT imgsync.put('move/a.png', 'local', 'image/png')" >/dev/null
check "the copy is known for one that may mix two versions" \
	wait_sql "SELECT count(*) FROM imgsync.attempts WHERE key = 'move/a.png' AND error LIKE '%written again while it was copied%'" 1 10
check "the new version moves, over the copy the attempt left" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 20
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
check "... to S3, with its bytes" test "$(s3_cat move/a.png)" = "version two, written in place over the first"
check "... the catalog has it there only, at its size" \
	test "$(d_sql "SELECT array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'move/a.png'")" = "cloud 44"
check "... and the source copy is gone" test ! -e "$D_ROOT/move/a.png"
check "... saying it replaced the copy an earlier attempt wrote" \
	grep -q 'store "cloud" holds a copy of "move/a.png" an earlier attempt wrote of a version written again meanwhile: replacing it' "$D_LOG"
d_stop

# A mirror: the new version's put() comes only after the attempt ended.
# The copy the attempt left is not recorded as the image in the mirror
# (it may mix two versions), and the next attempt replaces it.  Its PUT is
# held as well, so the catalog is read before it can write anything.
d_mirrors cloud
mkdir -p "$D_ROOT/mirror"
printf 'version one, in place' >"$D_ROOT/mirror/b.png"
check "imgsyncd starts, mirroring to cloud" d_start
control "stall_request 1\nonly /mirror/\n"
d_sql "SELECT imgsync.put('mirror/b.png', 'local', 'image/png')" >/dev/null
for _ in $(seq 100); do [ "$(stalls)" -ge 2 ] && break; sleep 0.05; done
check "the mirror's PUT is held" test "$(stalls)" = 2
printf 'version two, written in place over the first' >"$D_ROOT/mirror/b.png"
check "the copy is known for one that may mix two versions" \
	wait_sql "SELECT count(*) FROM imgsync.attempts WHERE key = 'mirror/b.png' AND error LIKE '%written again while it was copied%'" 1 10
check "... and the catalog does not take it for the image in the mirror" \
	test "$(d_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mirror/b.png'")" = local
control ""
d_sql "SELECT imgsync.put('mirror/b.png', 'local', 'image/png')" >/dev/null
check "the new version is mirrored, over the copy the attempt left" \
	wait_sql "SELECT array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'mirror/b.png'" "cloud,local 44" 20
check "... and the queue is empty" wait_sql "SELECT count(*) FROM imgsync.work" 0 10
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
check "... S3 holds its bytes" test "$(s3_cat mirror/b.png)" = "version two, written in place over the first"
check "... saying it replaced the copy an earlier attempt wrote" \
	grep -q 'store "cloud" holds a copy of "mirror/b.png" an earlier attempt wrote' "$D_LOG"
check "... and the source is untouched" test "$(cat "$D_ROOT/mirror/b.png")" = "version two, written in place over the first"
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
