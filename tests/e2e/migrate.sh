#!/usr/bin/env bash
# Migrations, end to end: a 2,000-image move fs -> S3 (every object byte-
# exact at the target, the source empty, the catalog pointing at S3); a
# dry run writes nothing; a prefix moves only its keys; pause holds
# progress and resume continues it.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init migrate || { fail "set-up"; done_testing; exit 1; }
# no mirrors here: the migration alone moves the images
d_mirrors
status() { d_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $1"; }

py - "$D_ROOT" "$D_DIR/manifest" <<'PY'
import hashlib, os, random, sys
root, manifest = sys.argv[1], sys.argv[2]
random.seed(7)
with open(manifest, "w") as m:
    for i in range(2000):
        d = ("a" if i < 1500 else "b") + "/%02d" % (i % 37)
        os.makedirs(os.path.join(root, d), exist_ok=True)
        key = "%s/img %d.jpg" % (d, i)
        data = random.randbytes(random.randint(100, 30000))
        open(os.path.join(root, key), "wb").write(data)
        m.write("%s %d %s\n" % (key.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
d_sql "SELECT count(imgsync.put(key, 'local', 'image/jpeg')) FROM (
         SELECT (CASE WHEN i < 1500 THEN 'a' ELSE 'b' END) || '/' || lpad((i % 37)::text, 2, '0') || '/img ' || i || '.jpg' AS key
         FROM generate_series(0, 1999) i) k" >/dev/null
check "a notification socket stands in for systemd" d_notify_listen
check "imgsyncd starts" d_start
check "the catalog's puts settle (no mirrors: nothing to copy)" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0

# a dry run: counts and bytes, nothing written
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
# (a session LISTENing for migrations' ends meanwhile, until one ended)
psql -qXtA -d "$D_DB" -c 'LISTEN imgsync_migrations' -c "DO \$\$ BEGIN
	FOR i IN 1..1200 LOOP
		EXIT WHEN EXISTS (SELECT 1 FROM imgsync.migrations WHERE state = 'done');
		PERFORM pg_sleep(0.1);
	END LOOP; END \$\$" >"$D_DIR/ends.out" 2>&1 &
lpid=$!
sleep 0.5 # its LISTEN first
ctl migrate local cloud --dry-run --wait >"$D_DIR/dry.out" 2>&1
rc=$?
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
wait $lpid
check "its end is announced on imgsync_migrations, payload $m (what --wait listens for)" \
	grep -q "notification \"imgsync_migrations\" with payload \"$m\"" "$D_DIR/ends.out"
check "imgsyncctl migrate --dry-run --wait follows a dry run to its end (exit $rc)" test "$rc" = 0
check "... in plain lines when not on a terminal" grep -q "^migration $m move local -> cloud: done, 2000/2000" "$D_DIR/dry.out"
check "a dry run completes" wait_sql "SELECT state FROM imgsync.migration_status WHERE id = $m" done 60
want=$(awk '{s += $2} END {print s}' "$D_DIR/manifest")
check "it counts every image and their bytes ($(status "$m"))" \
	test "$(d_sql "SELECT done || ' ' || bytes_done FROM imgsync.migration_status WHERE id = $m")" = "2000 $want"
check "... and writes nothing" test -z "$(s3_keys)"
check "... the source is untouched" test "$(find "$D_ROOT" -type f | wc -l)" = 2000

# a prefix, paused and resumed
m=$(ctl migrate local cloud --prefix b/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncctl migrate --prefix starts migration $m" test -n "$m"
ctl pause "$m" >/dev/null
sleep 1
before=$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m")
sleep 2
check "pause holds progress ($before, then $(d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m"))" \
	test "$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m")" = "$before"
check "imgsyncctl status shows it paused" sh -c "'$BUILD/imgsyncctl' -c '$D_CONF' status | grep -q '^migration $m move local -> cloud: paused'"
ctl resume "$m" >/dev/null
check "resume continues it to the end" wait_sql "SELECT state FROM imgsync.migration_status WHERE id = $m" done 120
check "the prefix migration moved its 500 keys ($(status "$m"))" test "$(status "$m")" = "done 500/500 0 0"
check "... and only those" test "$(s3_keys | grep -vc '^b/')" = 0
check "... the a/ images stay in the source" test "$(find "$D_ROOT/a" -type f | wc -l)" = 1500

# the whole move
ctl migrate local cloud --wait >"$D_DIR/move.out" 2>&1
rc=$?
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a 2,000-image move fs -> S3 completes: imgsyncctl migrate --wait exits $rc" test "$rc" = 0
check "... with progress lines on the way" test "$(grep -c "^migration $m " "$D_DIR/move.out")" -ge 1
check "... counting every image ($(status "$m"))" test "$(status "$m")" = "done 2000/2000 0 0"
line=$(grep "STATUS=.*migration $m local->cloud [0-9]*/2000" "$D_DIR/notify.log" | tail -1)
took=$(d_sql "SELECT extract(epoch FROM finished_at - started_at) FROM imgsync.migrations WHERE id = $m")
# the STATUS line is refreshed every 2 s: a faster move may finish unseen
if [ -z "$line" ] && awk -v t="$took" 'BEGIN { exit !(t < 2.5) }'; then
	skip "the daemon's systemd STATUS line showed its progress: the move took only $took s"
else
	check "the daemon's systemd STATUS line showed its progress: ${line#* STATUS=}" test -n "$line"
fi
check "the source store is empty" test "$(find "$D_ROOT" -type f | wc -l)" = 0
check "the catalog says every image is on S3, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'cloud' AND stores = '{cloud}'")" = 2000
check_bucket "every object at the target is byte-exact" "$D_BUCKET" "$D_DIR/manifest"
check "the status view has rates and timestamps" \
	test "$(d_sql "SELECT finished_at IS NOT NULL AND started_at IS NOT NULL FROM imgsync.migration_status WHERE id = $m")" = t
check "... and the bytes moved, every image's ($(d_sql "SELECT bytes_done || ' bytes, ' || bytes_per_s || ' bytes/s' FROM imgsync.migration_status WHERE id = $m"))" \
	test "$(d_sql "SELECT bytes_done = $want AND bytes_per_s > 0 FROM imgsync.migration_status WHERE id = $m")" = t
# commands as NOTIFY payloads, as from a psql session
d_sql "NOTIFY imgsync, '{\"command\": \"migrate\", \"source\": \"cloud\", \"target\": \"local\", \"mode\": \"copy\", \"prefix\": \"a/00/\"}'" >/dev/null
check "a migration started by a raw NOTIFY runs to the end" \
	wait_sql "SELECT state FROM imgsync.migration_status WHERE source = 'cloud' AND prefix = 'a/00/'" done 60
n=$(find "$D_ROOT/a/00" -type f | wc -l)
check "... copying its keys back ($n files, $(s3_keys | grep -c '^a/00/') in the bucket)" \
	test "$n" -gt 0 -a "$n" = "$(s3_keys | grep -c '^a/00/')"
# a move back to the filesystem, cancelled midway
ctl migrate cloud local >/dev/null
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
wait_sql "SELECT done >= 400 FROM imgsync.migration_status WHERE id = $m" t 60 >/dev/null
ctl cancel "$m" >/dev/null
check "imgsyncctl cancel ends a move midway ($(status "$m"))" \
	wait_sql "SELECT state FROM imgsync.migration_status WHERE id = $m" cancelled 10
check "... the items in flight finish their step" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
split=$(d_sql "SELECT count(*) FILTER (WHERE stores = '{local}') || ' local, ' || count(*) FILTER (WHERE stores = '{cloud}') || ' on S3, ' || count(*) FILTER (WHERE stores = '{cloud,local}') || ' both, ' || count(*) FILTER (WHERE cardinality(stores) = 0) || ' nowhere' FROM imgsync.images")
check "every image is in at least one place ($split)" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE cardinality(stores) = 0")" = 0
ctl verify --checksum local cloud >"$D_DIR/cancel-verify.out" 2>&1
rc=$?
check "... and exactly where the catalog says, content checked (exit $rc): $(tail -1 "$D_DIR/cancel-verify.out")" test "$rc" = 0
ctl migrate nowhere local >"$D_DIR/bad.out" 2>&1
rc=$?
check "a migrate naming an unknown store is refused (exit $rc): $(cat "$D_DIR/bad.out")" \
	sh -c "test $rc = 64 && test \$(wc -l <'$D_DIR/bad.out') = 1 && grep -q 'no store named \"nowhere\"' '$D_DIR/bad.out'"
before=$(d_sql "SELECT max(id) FROM imgsync.migrations")
d_sql "NOTIFY imgsync, '{\"command\": \"migrate\", \"source\": \"cloud\"}'" >/dev/null
d_sql "NOTIFY imgsync, '{\"command\": \"pause\", \"id\": \"1; DROP TABLE x\"}'" >/dev/null
d_sql "NOTIFY imgsync, '{\"command\": \"explode\"}'" >/dev/null
check "malformed commands are refused and recorded with the reason" \
	wait_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'refused command:%'" 3 20
d_sql "SELECT message FROM imgsync.events WHERE message LIKE 'refused command:%' ORDER BY id" | sed 's/^/# /'
check "... harming nothing: no migration started by them" \
	test "$(d_sql "SELECT max(id) FROM imgsync.migrations")" = "$before"
check "the daemon is still running" kill -0 "$D_PID"

# a failed image, retried once its cause is gone
d_sql "SELECT imgsync.put('r/late.jpg', 'local', 'image/jpeg')" >/dev/null
ctl migrate local cloud --prefix r/ --wait >"$D_DIR/retry.out" 2>&1
rc=$?
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move whose only image is missing from the source fails (exit $rc, $(status "$m"))" \
	test "$rc" != 0 -a "$(status "$m")" = "failed 0/1 1 0"
check "... imgsync.migration_failures names it and why" \
	test "$(d_sql "SELECT key || ' ' || (last_error LIKE '%does not exist%') FROM imgsync.migration_failures WHERE migration = $m")" = "r/late.jpg true"
# restored from a backup, with its time (a file written after its put()
# would be moved too, its source copy deleted 30 s later: see migrate-live)
mkdir -p "$D_ROOT/r"
printf 'late, but here' >"$D_ROOT/r/late.jpg"
touch -d "@$(($(date +%s) - 60))" "$D_ROOT/r/late.jpg"
ctl retry "$m" >/dev/null
check "imgsyncctl retry runs it again to the end" \
	wait_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 1/1 0" 30
check "... the image is on S3" test "$(s3_cat r/late.jpg)" = "late, but here"
d_stop
done_testing
