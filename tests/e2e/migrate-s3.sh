#!/usr/bin/env bash
# Moves out of S3: bucket to bucket on one server (the server copies, no
# bytes through imgsyncd; multipart above the threshold), and S3 back to a
# filesystem.  Each ends byte-exact, the source empty, verify clean.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init s3mig || { fail "set-up"; done_testing; exit 1; }
d_mirrors
d_add_archive "$IMGSYNC_TEST_RGW_ENDPOINT" '  multipart_threshold = 5M\n  part_size = 5M' ||
	fail "second bucket"
# a migration waited for, with a bound: a daemon that is not there must
# not hang the test
ctl() { timeout 600 "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
env_start() { TMPDIR=$1 d_start; }
status() { d_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $1"; }
started() { sed -n 's/^migration \([0-9]*\) started.*/\1/p'; }

# 400 small images and 2 above the multipart threshold, first moved to S3
py - "$D_ROOT" "$D_DIR/manifest" <<'PY'
import hashlib, os, random, sys
root, manifest = sys.argv[1], sys.argv[2]
random.seed(3)
with open(manifest, "w") as m:
    for i in range(402):
        key = "p/%02d/im %d+x=%%.jpg" % (i % 10, i) if i < 400 else "big/%d.jpg" % i
        data = random.randbytes(random.randint(100, 20000) if i < 400 else 11 * 2**20 + i)
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        open(os.path.join(root, key), "wb").write(data)
        m.write("%s %d %s\n" % (key.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
d_sql "SELECT count(imgsync.put(k, 'local', 'image/jpeg')) FROM (
         SELECT 'p/' || lpad((i % 10)::text, 2, '0') || '/im ' || i || '+x=%.jpg' AS k FROM generate_series(0, 399) i
         UNION ALL SELECT 'big/' || i || '.jpg' FROM generate_series(400, 401) i) s" >/dev/null
check "imgsyncd starts" d_start
ctl migrate local cloud --wait >/dev/null 2>&1
check "a move fs -> S3 fills the first bucket" test "$(s3_keys | wc -l)" = 402

# S3 -> S3 on one server
ctl migrate cloud archive --wait >"$D_DIR/s3s3.out" 2>&1
rc=$?
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move S3 -> S3 completes (exit $rc, $(status "$m"))" test "$rc/$(status "$m")" = "0/done 402/402 0 0"
n=$(grep -c "migration $m: copying .* from cloud to archive (server-side)$" "$D_DIR"/imgsyncd.*.log)
check "every image was copied by the server ($n server-side copies)" test "$n" = 402
check "the first bucket is empty" test -z "$(s3_keys)"
check_bucket "the second bucket holds every image byte-exact, multipart copies included" "$ARCHIVE" "$D_DIR/manifest" --exact
ctl verify cloud archive >"$D_DIR/verify1.out" 2>&1
rc=$?
check "imgsyncctl verify cloud archive finds no difference (exit $rc): $(tail -1 "$D_DIR/verify1.out")" test "$rc" = 0
ct=$(oracle_rgw head "$ARCHIVE" "$(printf 'p/00/im 0+x=%%.jpg' | od -An -tx1 | tr -d ' \n')" 2>/dev/null)
check "the copies carry the image's Content-Type ($ct)" sh -c "echo '$ct' | grep -q image/jpeg"

# a copy back with verify: read back and compared
ctl migrate archive cloud --copy --verify --prefix p/01/ --wait >/dev/null 2>&1
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a verified server-side copy of a prefix completes ($(status "$m"))" test "$(status "$m")" = "done 40/40 0 0"
check "... both buckets hold those images" test "$(s3_keys | grep -c '^p/01/')" = 40
d_sql "UPDATE imgsync.images SET stores = array_remove(stores, 'cloud') WHERE key LIKE 'p/01/%'" >/dev/null
oracle_rgw rmbucket "$D_BUCKET" >/dev/null 2>&1 || true
oracle_rgw mkbucket "$D_BUCKET" >/dev/null

# S3 -> fs, with no spool directory: downloads land in unnamed files on the
# filesystem store's own disk, linked into place (written once).  Under
# valgrind TMPDIR must exist (valgrind keeps files of its own there): the
# run checks memory, a plain run checks that no spool file is needed.
d_stop
spool=$D_DIR/no-such-spool-dir
if [ "${IMGSYNC_VALGRIND:-0}" = 1 ]; then spool=$D_DIR/valgrind-tmp; mkdir -p "$spool"; fi
check "imgsyncd starts again, TMPDIR $(basename "$spool")" env_start "$spool"
ctl migrate archive local --wait >"$D_DIR/s3fs.out" 2>&1
rc=$?
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move S3 -> fs completes (exit $rc, $(status "$m"))" test "$rc/$(status "$m")" = "0/done 402/402 0 0"
bad=$(py - "$D_ROOT" "$D_DIR/manifest" <<'PY'
import hashlib, os, sys
root, manifest = sys.argv[1], sys.argv[2]
bad = 0
for line in open(manifest):
    hexkey, size, sha = line.split()
    try:
        data = open(os.path.join(root, bytes.fromhex(hexkey).decode()), "rb").read()
    except OSError:
        data = None
    bad += data is None or hashlib.sha256(data).hexdigest() != sha
print(bad)
PY
)
check "every file is back byte-exact ($bad differ)" test "$bad" = 0
check "the second bucket is empty" test -z "$(oracle_rgw list "$ARCHIVE")"
check "the catalog says every image is in the filesystem, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'local' AND stores = '{local}'")" = 402
ctl verify local archive >"$D_DIR/verify2.out" 2>&1
rc=$?
check "imgsyncctl verify local archive finds no difference (exit $rc): $(tail -1 "$D_DIR/verify2.out")" test "$rc" = 0

# a mirror from S3 into the filesystem, still with no spool directory: the
# one mirror to copy to lends its own file (12 MB: downloaded in ranges)
head -c 12000000 /dev/urandom >"$D_DIR/m.bin"
oracle_rgw put "$ARCHIVE" "$(printf '%s' m/one.jpg | od -An -tx1 | tr -d ' \n')" "$D_DIR/m.bin" >/dev/null
d_mirrors local
kill -HUP "$D_PID"
check "a reload makes the filesystem a mirror" wait_for_log "mirrors now: local"
d_sql "SELECT imgsync.put('m/one.jpg', 'archive', 'image/jpeg')" >/dev/null
check "an image put into S3 is mirrored to the filesystem" \
	wait_sql "SELECT 'local' = ANY (stores) FROM imgsync.images WHERE key = 'm/one.jpg'" t 30
check "... byte-exact" cmp -s "$D_DIR/m.bin" "$D_ROOT/m/one.jpg"
d_stop

# A move finds the key taken by a file the catalog does not know, written
# after its record of the image, but not moments ago (no put() of it is
# coming): never replaced, reported for an operator to decide.  Between two
# directories, whose files' times a test can set.
d_mirrors
d_add_fs back "$D_DIR/back"
mkdir -p "$D_DIR/back/taken" "$D_ROOT/taken"
printf 'the catalog version' >"$D_ROOT/taken/t.jpg"
touch -d '10 minutes ago' "$D_ROOT/taken/t.jpg"
d_sql "SELECT imgsync.put('taken/t.jpg', 'local', 'image/jpeg');
       UPDATE imgsync.images SET home_at = now() - interval '5 minutes' WHERE key = 'taken/t.jpg'" >/dev/null
printf 'written there by someone else' >"$D_DIR/back/taken/t.jpg"
touch -d '2 minutes ago' "$D_DIR/back/taken/t.jpg"
check "imgsyncd starts again" d_start
m=$(ctl migrate local back --prefix taken/ | started)
check "a file written after the catalog's record, a while ago, is not replaced: the item says why" \
	wait_sql "SELECT last_error LIKE '%holds another \"taken/t.jpg\" (29 bytes) that the catalog does not record, written after the catalog''s record of the one being copied: not replacing it; if it is the image, record it with imgsync.put(''taken/t.jpg'', ''back''), otherwise delete it' FROM imgsync.work WHERE key = 'taken/t.jpg'" t 20
check "... the file is left as it was" test "$(cat "$D_DIR/back/taken/t.jpg")" = "written there by someone else"
check "... and the source too" test "$(cat "$D_ROOT/taken/t.jpg")" = "the catalog version"
ctl cancel "$m" >/dev/null 2>&1
d_stop
done_testing
