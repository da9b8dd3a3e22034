#!/usr/bin/env bash
# Links follow a move: imgsync.url() gives where an image lives now, and a
# watched table's URL column (the Flask pattern's `link`) is rewritten to the
# target store's public_url after a move, without the application's locks
# ever being waited for and without the update counting as a rewrite.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init url || { fail "set-up"; done_testing; exit 1; }
d_mirrors
sed -i "s|^  layout = \"plain\"\$|&\n  public_url = \"https://cdn.example.com/img/\"|" "$D_CONF"
sed -i '0,/public_url/{/public_url/d}' "$D_CONF" # the fs store has none
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }

d_sql "CREATE TABLE photos (id serial PRIMARY KEY, path text NOT NULL, link text)" >/dev/null
d_sql "SELECT imgsync.watch_table('photos', 'local', key_column => 'path', url_column => 'link')" >/dev/null
mkdir -p "$D_ROOT/p"
for i in $(seq 50); do printf 'photo %d' "$i" >"$D_ROOT/p/photo $i.jpg"; done
d_sql "INSERT INTO photos (path, link) SELECT 'p/photo ' || i || '.jpg', '/static/p/photo' || i FROM generate_series(1, 50) i" >/dev/null
check "imgsyncd starts" d_start
check "the photos are recorded" wait_sql "SELECT count(*) FROM imgsync.work" 0
u=$(d_sql "SELECT imgsync.url('p/photo 1.jpg')")
check "imgsync.url() gives where an image lives: $u" test "$u" = "file://$D_ROOT/p/photo%201.jpg"
check "a put leaves the application's own links alone" \
	test "$(d_sql "SELECT count(*) FROM photos WHERE link LIKE '/static/%'")" = 50

# the application holds one row locked all through the move
psql -qXtA -d "$D_DB" -c "BEGIN" -c "SELECT id FROM photos WHERE path = 'p/photo 7.jpg' FOR UPDATE" \
	-c "SELECT pg_sleep(6)" -c "COMMIT" >/dev/null &
locker=$!
sleep 0.5
SECONDS=0
ctl migrate local cloud --wait >/dev/null 2>&1
rc=$?
took=$SECONDS
check "the move completes without waiting for the application's lock (exit $rc, ${took}s)" \
	test "$rc" = 0 -a "$took" -lt 6
check "every link but the locked row's points at the CDN" \
	test "$(d_sql "SELECT count(*) FROM photos WHERE link = 'https://cdn.example.com/img/' || replace(path, ' ', '%20')")" = 49
check "... and the locked one is pending" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE url_pending")" = 1
u=$(d_sql "SELECT imgsync.url('p/photo 1.jpg')")
check "imgsync.url() follows: $u" test "$u" = "https://cdn.example.com/img/p/photo%201.jpg"
wait "$locker"
check "once the lock is gone, a heartbeat updates the last link" \
	wait_sql "SELECT link FROM photos WHERE path = 'p/photo 7.jpg'" "https://cdn.example.com/img/p/photo%207.jpg" 20
check "... nothing is pending" test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE url_pending")" = 0
check "the link updates were not taken for rewrites (every image at version 1)" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE version = 1")" = 50
check "imgsync.url() of an unknown image is NULL" test -z "$(d_sql "SELECT imgsync.url('nope.jpg')")"
d_stop
done_testing
