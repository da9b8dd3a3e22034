#!/usr/bin/env bash
# imgsyncd keeps the S3 mirror in step with what the application writes:
# a watched table's INSERT, UPDATE (rewrite) and DELETE; ImageAttach tables
# at ImageAttach's keys; a missing source ends as a dead item while the
# rest go on; malformed NOTIFY payloads are logged and ignored.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

# --- a table with a key column (the Flask/SQLAlchemy "path" style) ---
d_init watched || { fail "set-up"; done_testing; exit 1; }
d_sql "CREATE TABLE pictures (id serial PRIMARY KEY, path text NOT NULL, mime text, rev int DEFAULT 1, link text)" >/dev/null
n=$(d_sql "SELECT imgsync.watch_table('pictures', 'local', key_column => 'path', mimetype_column => 'mime', url_column => 'link')")
check "watch_table attaches an empty table (backfilled $n)" test "$n" = 0
check "imgsyncd starts" d_start

mkdir -p "$D_ROOT/users/1"
printf 'first version' >"$D_ROOT/users/1/a b+c.jpg"
d_sql "INSERT INTO pictures (path, mime) VALUES ('users/1/a b+c.jpg', 'image/jpeg')" >/dev/null
check "an INSERT puts the image on the S3 mirror" \
	wait_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'users/1/a b+c.jpg'" "cloud,local"
got=$(s3_cat "users/1/a b+c.jpg")
check "the mirror holds the bytes: $got" test "$got" = "first version"

printf 'second, longer version' >"$D_ROOT/users/1/a b+c.jpg"
d_sql "UPDATE pictures SET rev = rev + 1 WHERE path = 'users/1/a b+c.jpg'" >/dev/null
check "an UPDATE that rewrites the image puts the new content" \
	wait_sql "SELECT array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'users/1/a b+c.jpg'" "cloud,local 22"
got=$(s3_cat "users/1/a b+c.jpg")
check "the mirror holds the new bytes: $got" test "$got" = "second, longer version"
ct=$(oracle_rgw head "$D_BUCKET" "$(printf '%s' 'users/1/a b+c.jpg' | od -An -tx1 | tr -d ' \n')" 2>&1)
case "$ct" in *image/jpeg*) pass "the mirror copy has Content-Type image/jpeg" ;;
*) fail "the mirror copy has Content-Type image/jpeg"; diag "$ct" ;; esac

d_sql "UPDATE pictures SET link = 'https://cdn/x' WHERE path = 'users/1/a b+c.jpg'" >/dev/null
check "an UPDATE of the URL column alone is not a rewrite" \
	test "$(d_sql "SELECT count(*) FROM imgsync.work")" = 0

d_sql "DELETE FROM pictures WHERE path = 'users/1/a b+c.jpg'" >/dev/null
check "a DELETE removes the catalog entry" \
	wait_sql "SELECT count(*) FROM imgsync.images" "0"
check "... and the object from the mirror" test -z "$(s3_keys)"
check "... and the file from the origin store" test ! -e "$D_ROOT/users/1/a b+c.jpg"

# --- a missing source ends dead, the rest go on ---
for i in 1 2 3; do printf "img $i" >"$D_ROOT/ok$i.png"; done
d_sql "INSERT INTO pictures (path) VALUES ('ok1.png'), ('never-written.png'), ('ok2.png'), ('ok3.png')" >/dev/null
check "the images that exist are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores) AND key LIKE 'ok%'" "3"
check "the missing one is a dead item" \
	wait_sql "SELECT state FROM imgsync.work WHERE key = 'never-written.png'" "dead"
err=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = 'never-written.png'")
case "$err" in *"source is missing"*'"local"'*never-written.png*) pass "with a clear error: $err" ;;
*) fail "with a clear error"; diag "$err" ;; esac
check "imgsyncctl status shows it" sh -c "'$BUILD/imgsyncctl' -c '$D_CONF' status | grep -q '1 dead'"
printf 'late' >"$D_ROOT/never-written.png"
"$BUILD/imgsyncctl" -c "$D_CONF" retry-dead >/dev/null
check "imgsyncctl retry-dead queues it again, and it lands once the file exists" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores) AND key LIKE '%.png'" "4"

# --- rewrites while older copies are in flight: the newest content wins ---
d_sql "INSERT INTO pictures (path) VALUES ('hot.bin')" >/dev/null 2>&1
for v in $(seq 1 40); do
	head -c $((200000 + v)) /dev/zero | tr '\0' "$(printf "\\$(printf '%03o' $((65 + v % 26)))")" >"$D_ROOT/hot.bin.tmp"
	mv "$D_ROOT/hot.bin.tmp" "$D_ROOT/hot.bin"
	d_sql "UPDATE pictures SET rev = rev + 1 WHERE path = 'hot.bin'" >/dev/null
done
check "40 quick rewrites settle" wait_sql "SELECT count(*) FROM imgsync.work WHERE key = 'hot.bin'" 0
size=$(s3_keys | awk '$1 == "hot.bin" {print $2}')
check "the mirror holds the last version, not an older one in flight ($size bytes)" test "$size" = 200040
got=$(s3_cat hot.bin | head -c 5)
check "content of the newest rewrite ($got)" test "$got" = "OOOOO"

# --- NOTIFY payloads that are not commands ---
d_sql "NOTIFY imgsync, '{\"command\": 42'" >/dev/null
d_sql "SELECT pg_notify('imgsync', repeat('x', 7999))" >/dev/null
d_sql "NOTIFY imgsync, '$(printf 'line\\nbreak')'" >/dev/null
printf 'after' >"$D_ROOT/after-notify.png"
d_sql "INSERT INTO pictures (path) VALUES ('after-notify.png')" >/dev/null
check "after malformed and oversized notifications the daemon still mirrors" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key = 'after-notify.png' AND 'cloud' = ANY (stores)" "1"
check "the daemon is still running" kill -0 "$D_PID"
check "each refused notification is logged with the reason" test "$(grep -c 'refused a ' "$D_LOG")" = 3
check "... and recorded for admins" test "$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'refused command%'")" = 3
check "the reason says what is wrong" grep -q 'refused a command: not a JSON command' "$D_LOG"
check "an oversized one is called so" grep -q 'oversized' "$D_LOG"
d_sql "NOTIFY imgsync, '{\"command\": \"migrate\", \"source\": \"local\", \"target\": \"local'';DROP TABLE pictures;--\"}'" >/dev/null
sleep 0.5
check "SQL in a string field is only a (wrong) store name" \
	test "$(d_sql "SELECT count(*) FROM pictures")" -gt 0

# --- a key imgsync cannot accept does not abort the application ---
d_sql "INSERT INTO pictures (path) VALUES ('/absolute/path.jpg')" >/dev/null 2>&1
check "an INSERT with an invalid image key still commits" \
	test "$(d_sql "SELECT count(*) FROM pictures WHERE path = '/absolute/path.jpg'")" = 1
check "... and the refusal is recorded for admins" \
	test "$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE '%invalid image key%'")" = 1

# --- one result whose error message is cut inside a character (a long
# Cyrillic key) does not keep the others from being recorded ---
long=$(printf 'ж%.0s' $(seq 480))
for i in 1 2 3; do printf "batch $i" >"$D_ROOT/batch$i.png"; done
d_sql "SELECT imgsync.put('$long.jpg', 'local'), imgsync.put('batch1.png', 'local'),
       imgsync.put('batch2.png', 'local'), imgsync.put('batch3.png', 'local')" >/dev/null
check "the other results of the batch are recorded" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'batch%' AND 'cloud' = ANY (stores)" 3
check "the long key's missing source is a dead item" \
	wait_sql "SELECT state FROM imgsync.work WHERE key = '$long.jpg'" dead
check "no result failed to be written" sh -c "! grep -q 'result(s) back failed' '$D_LOG'"

# --- a removed image written again before the removal is carried out: the
# new file stays ---
printf 'old' >"$D_ROOT/reused.jpg"
d_sql "INSERT INTO pictures (path) VALUES ('reused.jpg')" >/dev/null
wait_sql "SELECT count(*) FROM imgsync.images WHERE key = 'reused.jpg' AND 'cloud' = ANY (stores)" 1 >/dev/null
d_stop
d_sql "DELETE FROM pictures WHERE path = 'reused.jpg'" >/dev/null
sleep 1.2
printf 'the new image' >"$D_ROOT/reused.jpg"
check "imgsyncd starts again" d_start
check "the removal is carried out" wait_sql "SELECT count(*) FROM imgsync.work WHERE key = 'reused.jpg'" 0
check "... on the mirror" test -z "$(s3_keys | grep '^reused.jpg ')"
check "... but the origin keeps the file written after the removal" \
	test "$(cat "$D_ROOT/reused.jpg" 2>/dev/null)" = "the new image"
check "... saying so" grep -q 'not deleting "reused.jpg" from store "local": it was written after the removal' "$D_LOG"
d_sql "INSERT INTO pictures (path) VALUES ('reused.jpg')" >/dev/null
check "and the new image, put again, is mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key = 'reused.jpg' AND 'cloud' = ANY (stores)" 1
check "... with its new bytes" test "$(s3_cat reused.jpg)" = "the new image"

d_stop
check "SIGTERM stops it cleanly (exit $D_RC)" test "$D_RC" = 0
check "... and marks it stopped" test "$(d_sql "SELECT count(*) FROM imgsync.workers WHERE state <> 'stopped'")" = 0

# --- SQLAlchemy-ImageAttach tables land at ImageAttach's keys ---
d_init imageattach imageattach imageattach || fail "set-up imageattach"
# as ImageAttach declares it: the object id is the one primary key column
# besides width and height (here user_id), not a column named object_id
d_sql "CREATE TABLE user_picture (user_id bigint, width int, height int, mimetype text, original boolean, created_at timestamptz DEFAULT now(), PRIMARY KEY (user_id, width, height))" >/dev/null
# FileSystemStore paths: <type>/<id % 1000>/<id // 1000>/<id>.<W>x<H><ext>
mkdir -p "$D_ROOT/user-picture/345/12" "$D_ROOT/user-picture/7/0"
printf 'jpeg bytes' >"$D_ROOT/user-picture/345/12/12345.100x80.jpe"
printf 'png bytes' >"$D_ROOT/user-picture/7/0/7.640x480.png"
d_sql "INSERT INTO user_picture VALUES (12345, 100, 80, 'image/jpeg', true)" >/dev/null
n=$(d_sql "SELECT imgsync.watch_table('user_picture', 'local', mapping => 'imageattach')")
check "watch_table backfills the existing ImageAttach row ($n)" test "$n" = 1
check "imgsyncd starts" d_start
d_sql "INSERT INTO user_picture VALUES (7, 640, 480, 'image/png', false)" >/dev/null
check "both images are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" "2"
keys=$(s3_keys | sort | tr '\n' ';')
check "at S3Store's keys: $keys" test "$keys" = "user-picture/12345/100x80.jpe 10;user-picture/7/640x480.png 9;"
check "with the filesystem's bytes" test "$(s3_cat user-picture/12345/100x80.jpe)" = "jpeg bytes"
d_sql "DELETE FROM user_picture WHERE user_id = 7" >/dev/null
check "deleting the row removes both copies" \
	wait_sql "SELECT count(*) FROM imgsync.images" "1"
check "... from S3" test "$(s3_keys | wc -l)" = 1
check "... and from the file system" test ! -e "$D_ROOT/user-picture/7/0/7.640x480.png"
d_stop
done_testing
