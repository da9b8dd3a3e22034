#!/usr/bin/env bash
# An image written again while a move's copy of it is in flight.  The copy
# lands, but the application's put() to a third store (or its remove())
# commits first: the result finds the version moved on, so the catalog never
# records that copy.  The key's next item deletes it (work.strays) while it
# is still the copy that attempt wrote: no orphan stays in the target.
# faultproxy holds the answer to the copy's PUT (the object is on the server
# already) for a few seconds while the application acts.  Then a mirror's
# copy of a new image, finding the key taken, and of a rewritten one,
# finding the mirror's earlier version replaced meanwhile.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init inflight || { fail "set-up"; done_testing; exit 1; }
d_mirrors
. tests/harness/faultproxy.sh
: >"$D_DIR/proxy.control"
fp_start --control "$D_DIR/proxy.control" --stall-seconds 5
trap 'kill $PROXY_PID 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
fp_stores ''
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
stalls() { awk '$1 == "stall" { n = $2 } END { print n + 0 }' "$PROXY_STATS" 2>/dev/null; }
in_cloud() { oracle_rgw head "$D_BUCKET" "$(hex "$1")" >/dev/null 2>&1; }

mkdir -p "$D_ROOT/fly"
for k in x-third x-removed kept; do printf 'version one of %s' "$k" >"$D_ROOT/fly/$k.png"; done
d_sql "SELECT imgsync.put('fly/' || k || '.png', 'local', 'image/png') FROM unnest(ARRAY['x-third', 'x-removed', 'kept']) k" >/dev/null
check "imgsyncd starts" d_start
check "the images are recorded" wait_sql "SELECT count(*) FROM imgsync.work" 0

# hold the answers to the copies of two of them
printf 'stall 1\nonly /fly/x-\n' >"$D_DIR/proxy.control.new"
mv "$D_DIR/proxy.control.new" "$D_DIR/proxy.control"
sleep 0.3
m=$(ctl migrate local cloud --prefix fly/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a move starts (migration $m)" test -n "$m"
for _ in $(seq 100); do [ "$(stalls)" -ge 2 ] && break; sleep 0.1; done
check "the copies' answers are held (the objects landed)" test "$(stalls)" -ge 2
: >"$D_DIR/proxy.control"
# meanwhile the application writes third.png to another store, for good
mkdir -p "$D_DIR/back/fly"
printf 'version two, in back' >"$D_DIR/back/fly/x-third.png"
d_sql "SELECT imgsync.put('fly/x-third.png', 'back', 'image/png')" >/dev/null
check "... the put to a third store commits while the copy is in flight" \
	test "$(d_sql "SELECT lease_owner IS NOT NULL FROM imgsync.work WHERE key = 'fly/x-third.png'")" = t
d_sql "SELECT imgsync.remove('fly/x-removed.png')" >/dev/null
check "the migration ends" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 60
check "... and the queue empties" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
check "the copy that landed after the put is recorded as a stray, then deleted" \
	grep -q 'deleted the copy of "fly/x-third.png" in store "cloud"' "$D_LOG"
check "... the target holds no orphan of it" eval '! in_cloud fly/x-third.png'
check "... the catalog has it in the third store only" \
	test "$(d_sql "SELECT array_to_string(stores, ',') || ' ' || origin FROM imgsync.images WHERE key = 'fly/x-third.png'")" = "back back"
check "... with its bytes there" test "$(cat "$D_DIR/back/fly/x-third.png")" = "version two, in back"
check "... and the earlier version on disk is gone" test ! -e "$D_ROOT/fly/x-third.png"
check "the image removed while its copy was in flight is nowhere" \
	eval '! in_cloud fly/x-removed.png && test ! -e "$D_ROOT/fly/x-removed.png"'
check "... nor in the catalog" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE key = 'fly/x-removed.png'")" = 0
check "the third one moved as usual" \
	test "$(s3_cat fly/kept.png)" = "version one of kept"
check "... and its source copy is gone" test ! -e "$D_ROOT/fly/kept.png"
check "no item failed" \
	test "$(d_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead'")" = 0
d_stop

# A mirror's copy of an image new to the catalog only creates the object
# too.  In the mirror it finds: the same bytes (an attempt whose result was
# lost): kept; an older object: replaced; the application's newer version,
# written there after the catalog's record with its put() to come: never
# replaced, and once the put commits it is the image.
d_mirrors cloud
mkdir -p "$D_ROOT/mir"
printf 'the same bytes' >"$D_ROOT/mir/same.png"
printf 'an older object' | oracle_rgw put "$D_BUCKET" "$(hex mir/old.png)" - >/dev/null
sleep 1.1
printf 'version one of old' >"$D_ROOT/mir/old.png"
printf 'version one of newer, on disk' >"$D_ROOT/mir/newer.png"
d_sql "SELECT imgsync.put('mir/' || k || '.png', 'local', 'image/png') FROM unnest(ARRAY['same', 'old', 'newer']) k" >/dev/null
sleep 2.1
printf 'the same bytes' | oracle_rgw put "$D_BUCKET" "$(hex mir/same.png)" - >/dev/null
printf 'the application, on S3 now' | oracle_rgw put "$D_BUCKET" "$(hex mir/newer.png)" - >/dev/null
check "imgsyncd starts again, mirroring to cloud" d_start
check "the application's newer version in the mirror, its put to come, is waited for" \
	wait_sql "SELECT last_error LIKE '%not replacing it; waiting for the application''s put()%' FROM imgsync.work WHERE key = 'mir/newer.png'" t 20
check "... not replaced" test "$(s3_cat mir/newer.png)" = "the application, on S3 now"
check "the other two are mirrored" \
	wait_sql "SELECT string_agg(key || ':' || array_to_string(stores, ','), ' ' ORDER BY key) FROM imgsync.images WHERE key LIKE 'mir/%'" \
	"mir/newer.png:local mir/old.png:cloud,local mir/same.png:cloud,local" 20
check "... the same bytes kept, saying so" grep -q 'store "cloud" holds "mir/same.png" already (an earlier attempt copied it): kept' "$D_LOG"
check "... the older object replaced, saying so" grep -q 'store "cloud" holds an earlier "mir/old.png" (15 bytes) that the catalog does not record there: replacing it' "$D_LOG"
check "... with the current version" test "$(s3_cat mir/old.png)" = "version one of old"
d_sql "SELECT imgsync.put('mir/newer.png', 'cloud', 'image/png')" >/dev/null
check "once the application's put commits, its version is the image, in the mirror only" \
	wait_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mir/newer.png'" cloud 20
check "... with its bytes" test "$(s3_cat mir/newer.png)" = "the application, on S3 now"
check "... the queue empties" wait_sql "SELECT count(*) FROM imgsync.work" 0 20
check "... and the earlier version on disk is gone" test ! -e "$D_ROOT/mir/newer.png"

# A mirror holding an earlier version is looked at first, and only that
# object replaced: the copy of a rewritten image is held on its way while
# the application writes a newer version into the mirror itself and puts
# it there.  The held copy must not land over it (If-Match refuses it).
held() { awk '$1 == "stall_request" { n = $2 } END { print n + 0 }' "$PROXY_STATS" 2>/dev/null; }
printf 'version one of rewritten' >"$D_ROOT/mir/rewritten.png"
d_sql "SELECT imgsync.put('mir/rewritten.png', 'local', 'image/png')" >/dev/null
check "an image is mirrored" \
	wait_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mir/rewritten.png'" cloud,local 20
printf 'stall_request 1\nonly /mir/rewritten\nexcept HEAD |GET \n' >"$D_DIR/proxy.control.new"
mv "$D_DIR/proxy.control.new" "$D_DIR/proxy.control"
sleep 0.3
printf 'version two of rewritten, longer' >"$D_ROOT/mir/rewritten.png"
d_sql "SELECT imgsync.put('mir/rewritten.png', 'local', 'image/png')" >/dev/null
for _ in $(seq 100); do [ "$(held)" -ge 1 ] && break; sleep 0.1; done
check "it is rewritten, and the copy of the new version to the mirror is held" test "$(held)" -ge 1
: >"$D_DIR/proxy.control"
printf 'version three, the application wrote it to S3' | oracle_rgw put "$D_BUCKET" "$(hex mir/rewritten.png)" - >/dev/null
d_sql "SELECT imgsync.put('mir/rewritten.png', 'cloud', 'image/png')" >/dev/null
check "... the application's put into the mirror commits meanwhile" \
	test "$(d_sql "SELECT origin FROM imgsync.images WHERE key = 'mir/rewritten.png'")" = cloud
check "the queue empties" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
check "the held copy was refused, the mirror's object having changed" \
	grep -q 'mir/rewritten.png.*the key no longer holds the object looked at' "$D_LOG"
check "... the application's version is the image, in the mirror" \
	test "$(s3_cat mir/rewritten.png)" = "version three, the application wrote it to S3"
check "... the catalog says so" \
	test "$(d_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mir/rewritten.png'")" = cloud
check "... and the earlier version on disk is gone" test ! -e "$D_ROOT/mir/rewritten.png"
check "no item failed" \
	test "$(d_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead'")" = 0

# a rewrite of the same size: the mirror's earlier version is replaced
# without being read back first
printf 'version two of samesize' >"$D_ROOT/mir/samesize.png"
d_sql "SELECT imgsync.put('mir/samesize.png', 'local', 'image/png')" >/dev/null
check "an image of the same size as the next is mirrored" \
	wait_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mir/samesize.png'" cloud,local 20
sleep 1.1
printf 'version six of samesize' >"$D_ROOT/mir/samesize.png"
d_sql "SELECT imgsync.put('mir/samesize.png', 'local', 'image/png')" >/dev/null
check "rewritten with as many bytes, it is mirrored again" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key = 'mir/samesize.png'" 0 20
check "... the mirror holds the new bytes" test "$(s3_cat mir/samesize.png)" = "version six of samesize"
check "... and the catalog has it in both stores" \
	test "$(d_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'mir/samesize.png'")" = cloud,local
d_stop
done_testing
