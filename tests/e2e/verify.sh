#!/usr/bin/env bash
# imgsyncctl verify, end to end: 500 images in a directory, mirrored to S3
# by the daemon, verify clean (sizes, then checksums); then the stores are
# tampered with behind imgsync's back: a file deleted (missing), stray
# objects (extra; a leftover temporary file is not one), an object
# rewritten with another size (mismatch), others with the same size and
# other bytes (found by --checksum only, on the file system by reading,
# on S3 by the ETag); images with work queued are skipped; an unknown
# store is refused, an unreachable one named.  Then ImageAttach layouts
# after a move: physical keys shown, a copy left behind found.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
# vrun NAME ARGS...: run verify; its output in $D_DIR/NAME.out, its status in $vrc
vrun() {
	local name=$1
	shift
	ctl verify "$@" >"$D_DIR/$name.out" 2>"$D_DIR/$name.err"
	vrc=$?
	sed 's/^/#   /' "$D_DIR/$name.out" "$D_DIR/$name.err"
}
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
md5_of() { md5sum | cut -c1-32; }

d_init verify || { fail "set-up"; done_testing; exit 1; }

py - "$D_ROOT" <<'PY'
import os, random, sys
root = sys.argv[1]
random.seed(11)
for i in range(500):
    d = os.path.join(root, "a", "%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    open(os.path.join(d, "img %d.jpg" % i), "wb").write(random.randbytes(random.randint(50, 5000)))
PY
d_sql "SELECT count(imgsync.put('a/' || lpad((i % 20)::text, 2, '0') || '/img ' || i || '.jpg', 'local', 'image/jpeg'))
       FROM generate_series(0, 499) i" >/dev/null
check "imgsyncd starts" d_start
check "the daemon mirrors the 500 images to S3" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud,local}' AND checksum IS NOT NULL" 500 120
check "... and its queue empties" wait_sql "SELECT count(*) FROM imgsync.work" 0
d_stop

vrun clean local cloud
check "a clean verify exits 0 (exit $vrc)" test "$vrc" = 0
check "... and prints only its summary" test "$(cat "$D_DIR/clean.out")" = \
	"verify local cloud: 500 images checked, 0 missing, 0 extra, 0 mismatched (sizes)"
vrun clean-sum --checksum local cloud
check "a clean verify --checksum exits 0 (exit $vrc)" test "$vrc" = 0
check "... and says it compared checksums" test "$(cat "$D_DIR/clean-sum.out")" = \
	"verify local cloud: 500 images checked, 0 missing, 0 extra, 0 mismatched (sizes and checksums)"
vrun one cloud
check "verify of one store alone exits 0 (exit $vrc)" test "$vrc" = 0 -a \
	"$(cat "$D_DIR/one.out")" = "verify cloud: 500 images checked, 0 missing, 0 extra, 0 mismatched (sizes)"

# behind imgsync's back
rm "$D_ROOT/a/01/img 1.jpg"
printf 'stray' >"$D_ROOT/a/stray.jpg"
printf 'half-written' >"$D_ROOT/a/.img 2.jpg.imgsync-0000abcd"
printf 'stray object' | oracle_rgw put "$D_BUCKET" "$(hex "b/stray.png")" - >/dev/null
size3=$(stat -c %s "$D_ROOT/a/03/img 3.jpg")
printf 'shorter' | oracle_rgw put "$D_BUCKET" "$(hex "a/03/img 3.jpg")" - >/dev/null
# same size, other bytes: in the directory, and on S3
size4=$(stat -c %s "$D_ROOT/a/04/img 4.jpg")
sum4=$(md5_of <"$D_ROOT/a/04/img 4.jpg")
head -c "$size4" /dev/zero >"$D_ROOT/a/04/img 4.jpg"
zero4=$(md5_of <"$D_ROOT/a/04/img 4.jpg")
size5=$(stat -c %s "$D_ROOT/a/05/img 5.jpg")
sum5=$(md5_of <"$D_ROOT/a/05/img 5.jpg")
head -c "$size5" /dev/zero | oracle_rgw put "$D_BUCKET" "$(hex "a/05/img 5.jpg")" - >/dev/null
zero5=$(head -c "$size5" /dev/zero | md5_of)

vrun diff local cloud
check "differences make verify exit 1 (exit $vrc)" test "$vrc" = 1
cat >"$D_DIR/diff.want" <<OUT
extra local a/stray.jpg
missing local a/01/img 1.jpg
extra cloud b/stray.png
mismatch cloud a/03/img 3.jpg: size 7 in the store, $size3 in the catalog
verify local cloud: 500 images checked, 1 missing, 2 extra, 1 mismatched (sizes)
OUT
check "a deleted file is missing, stray objects are extra, a rewritten object's size is a mismatch" \
	diff -u "$D_DIR/diff.want" "$D_DIR/diff.out"
check "... a leftover temporary file is no stray" sh -c "! grep -q imgsync- '$D_DIR/diff.out'"
check "... and same-size rewrites pass without --checksum" sh -c "! grep -q 'img [45]' '$D_DIR/diff.out'"
check "... nothing on stderr" test ! -s "$D_DIR/diff.err"

vrun diff-sum local cloud --checksum
check "verify --checksum exits 1 (exit $vrc)" test "$vrc" = 1
check "... finds the same-size rewrite in the directory (read and hashed)" grep -qxF \
	"mismatch local a/04/img 4.jpg: MD5 $zero4 in the store, $sum4 in the catalog" "$D_DIR/diff-sum.out"
check "... and on S3 (its ETag)" grep -qxF \
	"mismatch cloud a/05/img 5.jpg: MD5 $zero5 in the store, $sum5 in the catalog" "$D_DIR/diff-sum.out"
check "... with the others, once each" test "$(tail -1 "$D_DIR/diff-sum.out")" = \
	"verify local cloud: 500 images checked, 1 missing, 2 extra, 3 mismatched (sizes and checksums)"

# where the catalog has no size and checksum yet, the two copies are compared
d_sql "UPDATE imgsync.images SET size = NULL, checksum = NULL WHERE key IN ('a/03/img 3.jpg', 'a/05/img 5.jpg')" >/dev/null
vrun between local cloud --checksum
check "without the catalog's size, the copies' sizes are compared" grep -qxF \
	"mismatch cloud a/03/img 3.jpg: size 7 in the store, $size3 in local (the catalog records no size)" "$D_DIR/between.out"
check "... and without its checksum, their MD5s" grep -qxF \
	"mismatch cloud a/05/img 5.jpg: MD5 $zero5 in the store, $sum5 in local (the catalog records no checksum)" "$D_DIR/between.out"

# work queued (no daemon runs): a rewrite and a remove are on their way
printf 'rewritten' >"$D_ROOT/a/06/img 6.jpg"
d_sql "SELECT imgsync.put('a/06/img 6.jpg', 'local', 'image/jpeg'); SELECT imgsync.remove('a/07/img 7.jpg')" >/dev/null
vrun queued local cloud
check "images with work queued are skipped, not reported ($(tail -1 "$D_DIR/queued.out"))" \
	sh -c "! grep -q 'img [67]' '$D_DIR/queued.out' && tail -1 '$D_DIR/queued.out' | grep -q '^verify local cloud: 498 images checked, .*; 2 skipped while work is queued for them (sizes)\$'"

vrun unknown local nowhere
check "an unknown store is refused (exit $vrc): $(cat "$D_DIR/unknown.err")" \
	sh -c "test $vrc = 64 && test \$(wc -l <'$D_DIR/unknown.err') = 1 && grep -q 'no store named \"nowhere\"' '$D_DIR/unknown.err' && test ! -s '$D_DIR/unknown.out'"
vrun usage
check "verify with no store is a usage error (exit $vrc)" test "$vrc" = 64

# a store that cannot be reached: one line naming it, exit 69
sed -e "s|endpoint = \".*\"|endpoint = \"http://127.0.0.1:1\"|" -e 's/max_attempts = .*/max_attempts = 2/' \
	"$D_CONF" >"$D_DIR/down.conf"
"$BUILD/imgsyncctl" -c "$D_DIR/down.conf" verify local cloud >"$D_DIR/down.out" 2>"$D_DIR/down.err"
rc=$?
check "an unreachable store stops verify with exit 69 and one line (exit $rc): $(cat "$D_DIR/down.err")" \
	sh -c "test $rc = 69 && test \$(wc -l <'$D_DIR/down.err') = 1 && grep -q 'store \"cloud\"' '$D_DIR/down.err'"
"$BUILD/imgsyncctl" -c "$D_CONF" -d "host=$PGHOST port=$PGPORT dbname=no_such_db_$$" verify local cloud \
	>/dev/null 2>"$D_DIR/nodb.err"
rc=$?
check "an unreachable database: exit 69 (exit $rc): $(cat "$D_DIR/nodb.err")" test "$rc" = 69

# --- ImageAttach layouts, after a move from the file system to S3 ---
d_init verify_ia imageattach imageattach || fail "set-up imageattach"
d_mirrors
mkdir -p "$D_ROOT/user-picture/345/12" "$D_ROOT/user-picture/7/0"
printf 'jpeg bytes' >"$D_ROOT/user-picture/345/12/12345.100x80.jpe"
printf 'png bytes' >"$D_ROOT/user-picture/7/0/7.640x480.png"
d_sql "SELECT imgsync.put('pic-12345', 'local', 'image/jpeg', '{\"object_type\": \"user-picture\", \"object_id\": 12345, \"width\": 100, \"height\": 80}');
       SELECT imgsync.put('pic-7', 'local', 'image/png', '{\"object_type\": \"user-picture\", \"object_id\": \"7\", \"width\": 640, \"height\": 480}')" >/dev/null
check "imgsyncd starts" d_start
check "the puts settle" wait_sql "SELECT count(*) FROM imgsync.work" 0
vrun ia-before local cloud
check "before the move, verify finds both images in the directory (exit $vrc)" test "$vrc" = 0 -a \
	"$(cat "$D_DIR/ia-before.out")" = "verify local cloud: 2 images checked, 0 missing, 0 extra, 0 mismatched (sizes)"
ctl migrate local cloud --wait >/dev/null 2>&1
check "a move to S3 completes" wait_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud}'" 2
d_stop
vrun ia local cloud --checksum
check "after the move, verify is clean (exit $vrc)" test "$vrc" = 0 -a \
	"$(cat "$D_DIR/ia.out")" = "verify local cloud: 2 images checked, 0 missing, 0 extra, 0 mismatched (sizes and checksums)"
# a copy left behind in the directory, an object lost on S3
mkdir -p "$D_ROOT/user-picture/7/0"
printf 'png bytes' >"$D_ROOT/user-picture/7/0/7.640x480.png"
oracle_rgw rm "$D_BUCKET" "$(hex user-picture/12345/100x80.jpe)" >/dev/null
vrun ia-diff local cloud
check "ImageAttach keys: exit 1 (exit $vrc)" test "$vrc" = 1
cat >"$D_DIR/ia-diff.want" <<OUT
extra local user-picture/7/0/7.640x480.png: the catalog does not record image "pic-7" in local
missing cloud pic-12345 (at user-picture/12345/100x80.jpe)
verify local cloud: 2 images checked, 1 missing, 1 extra, 0 mismatched (sizes)
OUT
check "... a leftover copy is extra, a lost object missing, both at their physical keys" \
	diff -u "$D_DIR/ia-diff.want" "$D_DIR/ia-diff.out"
done_testing
