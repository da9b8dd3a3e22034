#!/usr/bin/env bash
# A move fs -> S3 while the application keeps working: it writes new
# images, rewrites and deletes existing ones in the source, then switches to
# the target and goes on there (the zero-downtime recipe: the migration runs
# with follow and is ended once it has caught up).  Afterwards every image
# is on S3 only, with its latest content; deleted ones are nowhere.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init live || { fail "set-up"; done_testing; exit 1; }
d_mirrors
sed -i 's/^ *concurrency = .*/  concurrency = 8/' "$D_CONF"
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }

# the application: files in the fs store, rows through psql, S3 through botocore
cat >"$D_DIR/app.py" <<'PY'
import hashlib, os, random, subprocess, sys, time, types
sys.path.insert(0, "tests/harness")
import s3oracle
root, db, bucket, manifest, phase = sys.argv[1:6]
state_path = manifest + ".state"
rnd = random.Random(int(phase == "after") * 1000 + 5)
model = {}
if os.path.exists(state_path):
    for line in open(state_path):
        k, v = line.rstrip("\n").split(" ", 1)
        model[bytes.fromhex(k).decode()] = v
psql = subprocess.Popen(["psql", "-qXtA", "-v", "ON_ERROR_STOP=1", "-d", db, "-o", "/dev/null"],
                        stdin=subprocess.PIPE, text=True)
def sql(q):
    psql.stdin.write(q + "\n")
    psql.stdin.flush()
def lit(s):
    return "'" + s.replace("'", "''") + "'"
s3 = None
if phase == "after":
    a = types.SimpleNamespace(endpoint=os.environ["IMGSYNC_TEST_RGW_ENDPOINT"], region="us-east-1",
                              access_key=os.environ["IMGSYNC_TEST_RGW_ACCESS_KEY"],
                              secret_key=os.environ["IMGSYNC_TEST_RGW_SECRET_KEY"],
                              path_style=True, virtual_style=False)
    s3 = s3oracle.make_client(a)
def write(key):
    data = rnd.randbytes(rnd.randint(500, 40000))
    if s3 is None:
        path = os.path.join(root, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:  # in place, as SQLAlchemy-ImageAttach writes
            f.write(data)
        sql("SELECT imgsync.put(%s, 'local', 'image/png');" % lit(key))
    else:
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        sql("SELECT imgsync.put(%s, 'cloud', 'image/png');" % lit(key))
    model[key] = "%d %s" % (len(data), hashlib.sha256(data).hexdigest())
if phase == "seed":
    for i in range(1000):
        write("img/%02d/%04d.png" % (i % 20, i))
else:
    n = 0
    deadline = time.time() + float(os.environ.get("APP_SECONDS", "4"))
    while time.time() < deadline:
        live = sorted(k for k, v in model.items() if v != "deleted")
        op = rnd.random()
        if op < 0.35:
            write("img/%02d/new-%s-%04d.png" % (rnd.randrange(20), phase, n))
        elif op < 0.75:
            write(rnd.choice(live))
        else:
            k = rnd.choice(live)
            sql("SELECT imgsync.remove(%s);" % lit(k))
            model[k] = "deleted"
        n += 1
        time.sleep(0.01)
    print("app %s: %d operations" % (phase, n))
psql.stdin.close()
psql.wait()
with open(state_path, "w") as f:
    for k, v in model.items():
        f.write("%s %s\n" % (k.encode().hex(), v))
with open(manifest, "w") as f:
    for k, v in model.items():
        if v != "deleted":
            f.write("%s %s\n" % (k.encode().hex(), v))
PY
app() { APP_SECONDS=${2:-4} py "$D_DIR/app.py" "$D_ROOT" "$D_DB" "$D_BUCKET" "$D_DIR/manifest" "$1"; }

app seed
check "imgsyncd starts" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0
m=$(ctl migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a move with follow starts (migration $m)" test -n "$m"
# the application's statements never fail because of imgsync (no lock of
# imgsync's is ever waited for in them: no deadlock, no timeout)
for phase in "during 5" "after 3"; do
	if out=$(app $phase 2>&1); then
		pass "the application works on without an error ($out)"
	else
		fail "the application works on without an error"
		echo "$out" | tail -5 | sed 's/^/# /'
	fi
done
check "the migration catches up: nothing left to do for it" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0 120
check "it is still running (follow) until ended" \
	test "$(d_sql "SELECT state FROM imgsync.migration_status WHERE id = $m")" = running
ctl cancel "$m" >"$D_DIR/end.out" 2>&1
check "ending a caught-up follow migration makes it done: $(cat "$D_DIR/end.out")" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 10
d_sql "SELECT state, done, failed, skipped FROM imgsync.migration_status WHERE id = $m" | sed 's/^/# status: /'
live=$(wc -l <"$D_DIR/manifest")
dead=$(grep -c ' deleted$' "$D_DIR/manifest.state")
check "the catalog holds the $live live images, each on S3 only" \
	test "$(d_sql "SELECT count(*) FILTER (WHERE origin = 'cloud' AND stores = '{cloud}') || ' ' || count(*) FROM imgsync.images")" = "$live $live"
left=$(find "$D_ROOT" -type f | wc -l)
check "the source store is empty ($left files)" test "$left" = 0
check_bucket "S3 holds each live image with its latest content, and the $dead deleted ones nowhere" "$D_BUCKET" "$D_DIR/manifest" --exact
check "no item failed" test "$(d_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead'")" = 0
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
d_stop

# The application rewrites a source copy in place after it was copied and
# before its put() commits.  The state is set up as a move leaves it between
# its two steps (copied and committed, the size and the source's tag
# recorded), with the file written again since, at another size: the source
# copy must not be deleted, and the key waits for the put (no failure).
printf 'version one' >"$D_ROOT/late.png"
d_sql "SELECT imgsync.put('late.png', 'local', 'image/png')" >/dev/null
check "imgsyncd starts again" d_start
check "the image is recorded" wait_sql "SELECT count(*) FROM imgsync.work" 0
d_stop
m=$(ctl migrate local cloud --prefix late | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
printf 'version one' | oracle_rgw put "$D_BUCKET" "$(printf late.png | od -An -tx1 | tr -d ' \n')" - >/dev/null
d_sql "UPDATE imgsync.images SET origin = 'cloud', stores = '{cloud,local}', size = 11 WHERE key = 'late.png';
       UPDATE imgsync.migrations SET cursor = 'late.png', scanned = true WHERE id = $m;
       INSERT INTO imgsync.work (key, op, migration, step, source_tag)
       VALUES ('late.png', 'migrate', $m, 'delete-source', 'the tag of version one')" >/dev/null
printf 'version two, not committed yet' >"$D_ROOT/late.png"
check "imgsyncd starts again" d_start
check "a source copy written again since it was copied is not deleted" \
	wait_sql "SELECT last_error LIKE '%changed since it was copied%' FROM imgsync.work WHERE key = 'late.png'" t 20
check "... and it is to be tried again, not failed" \
	test "$(d_sql "SELECT state FROM imgsync.work WHERE key = 'late.png'")" = pending
check "... the new bytes are still there" test "$(cat "$D_ROOT/late.png")" = "version two, not committed yet"
d_sql "SELECT imgsync.put('late.png', 'local', 'image/png')" >/dev/null
check "once the application's put commits, the new version moves" \
	wait_sql "SELECT state FROM imgsync.migration_status WHERE id = $m" done 30
check "... the target holds the new bytes" test "$(s3_cat late.png)" = "version two, not committed yet"
check "... and the source copy is gone" test ! -e "$D_ROOT/late.png"
d_stop

# The application switches stores before imgsync moved an image: it wrote
# the image to the source, then writes it again to the target.  The source
# copy is the earlier version and goes, whether or not a migration is
# running; one written there again after that put stays, and so does one
# a second writer wrote there before that put, its own put() still to come
# (written well after the version the put superseded was recorded).
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
for k in switched.png rewritten.png; do
	printf 'on disk first' >"$D_ROOT/$k"
	d_sql "SELECT imgsync.put('$k', 'local', 'image/png')" >/dev/null
	printf 'then on S3' | oracle_rgw put "$D_BUCKET" "$(hex "$k")" - >/dev/null
	d_sql "SELECT imgsync.put('$k', 'cloud', 'image/png')" >/dev/null
done
d_sql "SELECT imgsync.remove('removed.png')" >/dev/null # not in the catalog: a no-op
printf 'on disk, removed, then put to S3' >"$D_ROOT/removed.png"
d_sql "SELECT imgsync.put('removed.png', 'local'); SELECT imgsync.remove('removed.png')" >/dev/null
printf 'then on S3' | oracle_rgw put "$D_BUCKET" "$(hex removed.png)" - >/dev/null
d_sql "SELECT imgsync.put('removed.png', 'cloud')" >/dev/null
printf 'on disk first' >"$D_ROOT/racing.png"
d_sql "SELECT imgsync.put('racing.png', 'local', 'image/png')" >/dev/null
sleep 1.5
printf 'a second writer, its put to come' >"$D_ROOT/racing.png"
printf 'then on S3' | oracle_rgw put "$D_BUCKET" "$(hex racing.png)" - >/dev/null
d_sql "SELECT imgsync.put('racing.png', 'cloud', 'image/png')" >/dev/null
sleep 0.05
printf 'on disk again, not put yet' >"$D_ROOT/rewritten.png"
check "the superseded copies are recorded" \
	test "$(d_sql "SELECT string_agg(key || ':' || array_to_string(stale, ','), ' ' ORDER BY key) FROM imgsync.work")" = "racing.png:local removed.png:local rewritten.png:local switched.png:local"
check "imgsyncd starts again" d_start
check "the puts are carried out" wait_sql "SELECT count(*) FROM imgsync.work" 0
check "the earlier version on disk is deleted" test ! -e "$D_ROOT/switched.png"
check "... also when a removal came between" test ! -e "$D_ROOT/removed.png"
check "... the catalog has each on S3 only" \
	test "$(d_sql "SELECT string_agg(key || ':' || array_to_string(stores, ','), ' ' ORDER BY key) FROM imgsync.images WHERE key IN ('switched.png', 'removed.png', 'rewritten.png')")" = "removed.png:cloud rewritten.png:cloud switched.png:cloud"
check "... S3 holds the later version" test "$(s3_cat switched.png)" = "then on S3"
check "a copy written after the put stays" \
	test "$(cat "$D_ROOT/rewritten.png")" = "on disk again, not put yet"
check "... saying so" grep -q 'not deleting the copy of "rewritten.png" in store "local" that its put to store "cloud" superseded: it was written after that version was recorded' "$D_LOG"
check "a copy a second writer wrote before the put stays" \
	test "$(cat "$D_ROOT/racing.png")" = "a second writer, its put to come"
d_sql "SELECT imgsync.put('racing.png', 'local', 'image/png')" >/dev/null
check "... and once its put commits, it is the image" \
	wait_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'racing.png'" local
check "... with its bytes" test "$(cat "$D_ROOT/racing.png")" = "a second writer, its put to come"
d_stop

# A move finds the key taken in the target.  The same bytes (what an
# attempt killed before it could record its copy left): kept.  An earlier
# version, written before the catalog's record of this one: replaced.  The
# application's newer version, written there moments ago with its put()
# still to come: never replaced by the copy in flight, and once the put
# commits it is the image.
mkdir -p "$D_ROOT/taken"
printf 'the same bytes' >"$D_ROOT/taken/same.png"
printf 'the same bytes' | oracle_rgw put "$D_BUCKET" "$(hex taken/same.png)" - >/dev/null
printf 'an earlier copy' | oracle_rgw put "$D_BUCKET" "$(hex taken/old.png)" - >/dev/null
sleep 1.1
printf 'the current version' >"$D_ROOT/taken/old.png"
printf 'on disk, about to be superseded' >"$D_ROOT/taken/newer.png"
d_sql "SELECT imgsync.put(k, 'local', 'image/png') FROM unnest(ARRAY['taken/same.png', 'taken/old.png', 'taken/newer.png']) k" >/dev/null
sleep 2.1
printf 'the application, on S3 now' | oracle_rgw put "$D_BUCKET" "$(hex taken/newer.png)" - >/dev/null
m=$(ctl migrate local cloud --prefix taken/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "a newer version in the target, its put to come, is waited for" \
	wait_sql "SELECT last_error LIKE '%not replacing it; waiting for the application''s put()%' FROM imgsync.work WHERE key = 'taken/newer.png'" t 20
check "... not replaced" test "$(s3_cat taken/newer.png)" = "the application, on S3 now"
check "the other two are moved" \
	wait_sql "SELECT string_agg(key || ':' || array_to_string(stores, ','), ' ' ORDER BY key) FROM imgsync.images WHERE key LIKE 'taken/%'" \
	"taken/newer.png:local taken/old.png:cloud taken/same.png:cloud" 20
check "... the same bytes kept, saying so" grep -q 'store "cloud" holds "taken/same.png" already (an earlier attempt copied it): kept' "$D_LOG"
check "... the earlier version replaced, saying so" grep -q 'store "cloud" holds an earlier "taken/old.png" (15 bytes) that the catalog does not record there: replacing it' "$D_LOG"
check "... with the current version" test "$(s3_cat taken/old.png)" = "the current version"
d_sql "SELECT imgsync.put('taken/newer.png', 'cloud', 'image/png')" >/dev/null
check "once the application's put commits, the migration is done" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 30
check "... the application's version is the image, on S3 only" \
	test "$(d_sql "SELECT array_to_string(stores, ',') FROM imgsync.images WHERE key = 'taken/newer.png'")" = cloud
check "... with its bytes" test "$(s3_cat taken/newer.png)" = "the application, on S3 now"
left=$(find "$D_ROOT/taken" -type f | wc -l)
check "... and the source is empty ($left files)" test "$left" = 0
d_stop

# The application writes a source copy again in place, its put() still to
# come, before the move reaches it: the move waits for the put (spending
# no attempt) instead of moving bytes the catalog does not describe and
# deleting the file the put is about to name.  Once the put commits, the
# new version moves.
mkdir -p "$D_ROOT/again"
printf 'version one' >"$D_ROOT/again/a.png"
d_sql "SELECT imgsync.put('again/a.png', 'local', 'image/png')" >/dev/null
sleep 2.1
printf 'version two, its put to come' >"$D_ROOT/again/a.png.tmp"
mv "$D_ROOT/again/a.png.tmp" "$D_ROOT/again/a.png"
m=$(ctl migrate local cloud --prefix again/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "a source written again after its put, the put to come, is waited for" \
	wait_sql "SELECT last_error LIKE '%waiting for the application''s put() of it%' FROM imgsync.work WHERE key = 'again/a.png'" t 20
check "... spending no attempt, the file left alone" \
	test "$(d_sql "SELECT attempts FROM imgsync.work WHERE key = 'again/a.png'"):$(cat "$D_ROOT/again/a.png")" = "0:version two, its put to come"
d_sql "SELECT imgsync.put('again/a.png', 'local', 'image/png')" >/dev/null
check "once the put commits, the new version moves" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 30
check "... to S3, with its bytes" test "$(s3_cat again/a.png)" = "version two, its put to come"
check "... and the source copy is gone" test ! -e "$D_ROOT/again/a.png"
d_stop

# The same within the second of grace the application has to write the
# file after its put() began: the move copies what it finds, but deletes
# the source copy only once the put had time to commit.  It does: the key
# starts over, and the new version moves.
printf 'version one' >"$D_ROOT/again/b.png"
d_sql "SELECT imgsync.put('again/b.png', 'local', 'image/png')" >/dev/null
sleep 0.3
printf 'version two, its put to come' >"$D_ROOT/again/b.png.tmp"
mv "$D_ROOT/again/b.png.tmp" "$D_ROOT/again/b.png"
m=$(ctl migrate local cloud --prefix again/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "a source written moments after its put() is copied, its deletion put off" \
	wait_sql "SELECT step || ' ' || (not_before > now() + interval '20 seconds') FROM imgsync.work WHERE key = 'again/b.png'" "delete-source true" 20
check "... saying so" grep -q 'migration [0-9]*: "again/b.png" was written 0\.[0-9]* s after the catalog.s record of it: its source copy goes in [0-9]* s, unless a put() of it comes first' "$D_LOG"
check "... the file left alone" test "$(cat "$D_ROOT/again/b.png")" = "version two, its put to come"
d_sql "SELECT imgsync.put('again/b.png', 'local', 'image/png')" >/dev/null
check "once the put commits, the key starts over and moves" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 20
check "... to S3, with its bytes" test "$(s3_cat again/b.png)" = "version two, its put to come"
check "... the catalog says so" \
	test "$(d_sql "SELECT origin || ' ' || array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'again/b.png'")" = "cloud cloud 28"
check "... and the source copy is gone" test ! -e "$D_ROOT/again/b.png"
d_stop

# A move whose target holds the image already (a mirror copied it) looks
# at the source before deleting it: written again in place since, its put()
# to come, those bytes are nowhere else and stay until the put commits;
# then the new version moves over the mirror's copy.
printf 'version one' >"$D_ROOT/again/c.png"
d_sql "SELECT imgsync.put('again/c.png', 'local', 'image/png')" >/dev/null
printf 'version one' | oracle_rgw put "$D_BUCKET" "$(hex again/c.png)" - >/dev/null
d_sql "UPDATE imgsync.images SET stores = '{cloud,local}', size = 11 WHERE key = 'again/c.png';
       DELETE FROM imgsync.work WHERE key = 'again/c.png'" >/dev/null
sleep 2.1
printf 'version two, its put to come' >"$D_ROOT/again/c.png.tmp"
mv "$D_ROOT/again/c.png.tmp" "$D_ROOT/again/c.png"
m=$(ctl migrate local cloud --prefix again/c | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "a source the target holds already, written again since, waits for its put()" \
	wait_sql "SELECT last_error LIKE '%looking at the source: the source was written%waiting for the application''s put() of it%' FROM imgsync.work WHERE key = 'again/c.png'" t 20
check "... the file left alone" test "$(cat "$D_ROOT/again/c.png")" = "version two, its put to come"
d_sql "SELECT imgsync.put('again/c.png', 'local', 'image/png')" >/dev/null
check "once the put commits, the new version moves" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 30
check "... over the mirror's copy" test "$(s3_cat again/c.png)" = "version two, its put to come"
check "... and the source copy is gone" test ! -e "$D_ROOT/again/c.png"
d_stop

# A source whose time is in the future (a clock set wrong, a file restored
# with its time) says nothing about a put() to come: it moves, at once.
printf 'from the future' >"$D_ROOT/again/d.png"
d_sql "SELECT imgsync.put('again/d.png', 'local', 'image/png')" >/dev/null
touch -d "@$(($(date +%s) + 3600))" "$D_ROOT/again/d.png"
m=$(ctl migrate local cloud --prefix again/d | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "a source dated an hour ahead moves without waiting" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 15
check "... to S3, with its bytes" test "$(s3_cat again/d.png)" = "from the future"
d_stop

# The delete step takes the source copy just as the application's put()
# of the key begins: the put() names bytes written before the delete (any
# write after it makes a new file), which are the ones moved.  The key
# starts over and finds its source gone: the copy in the target is the
# image, not a failure.  The session below holds the image's row as a
# put() does from its first statement, while the delete step runs.
mkdir -p "$D_ROOT/race"
d_sql "SELECT imgsync.put('race/a.png', 'local', 'image/png')" >/dev/null
sleep 0.2
printf 'written just after its put' >"$D_ROOT/race/a.png"
m=$(ctl migrate local cloud --prefix race/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "the copy is made, its source's deletion put off" \
	wait_sql "SELECT step FROM imgsync.work WHERE key = 'race/a.png' AND not_before > now()" delete-source 20
d_stop
d_sql "UPDATE imgsync.work SET not_before = now() WHERE key = 'race/a.png'" >/dev/null
rm -f "$D_DIR/app.fifo" && mkfifo "$D_DIR/app.fifo"
psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" <"$D_DIR/app.fifo" >"$D_DIR/app.out" 2>&1 &
app_psql=$!
exec 7>"$D_DIR/app.fifo"
echo "BEGIN; SELECT 'locked' FROM imgsync.images WHERE key = 'race/a.png' FOR UPDATE;" >&7
for _ in $(seq 100); do grep -q locked "$D_DIR/app.out" && break; sleep 0.05; done
check "imgsyncd starts again, the application's put() under way" d_start 7>&-
for _ in $(seq 100); do [ -e "$D_ROOT/race/a.png" ] || break; sleep 0.05; done
check "the delete step takes the source copy" test ! -e "$D_ROOT/race/a.png"
echo "SELECT imgsync.put('race/a.png', 'local', 'image/png'); COMMIT;" >&7
exec 7>&-
wait $app_psql
check "the application's put() commits ($(tr '\n' ' ' <"$D_DIR/app.out"))" test "$(cat "$D_DIR/app.out")" = locked
check "the key starts over, and the migration is done" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 20
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
check "... the catalog has the image on S3 only" \
	test "$(d_sql "SELECT origin || ' ' || array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'race/a.png'")" = "cloud cloud 26"
check "... with its bytes" test "$(s3_cat race/a.png)" = "written just after its put"
check "... saying why" grep -q 'migration [0-9]*: "race/a.png" was moved to cloud while the application.s put() of it was under way; the source copy is gone' "$D_LOG"
d_stop

# Many such images (an application that writes each file just after its
# put() began) do not hold up the rest of a migration while their deletes
# wait: 100 of them, more than the queue takes of one migration at a time
# (2 x concurrency + 64 = 80), ahead of 40 ordinary ones.
py - "$D_ROOT/many" <<'PY'
import os, sys
os.makedirs(sys.argv[1], exist_ok=True)
for i in range(40):
    open(os.path.join(sys.argv[1], "z%03d.png" % i), "w").write("ordinary %d" % i)
PY
d_sql "SELECT count(imgsync.put('many/' || k, 'local', 'image/png'))
       FROM (SELECT 'a' || lpad(i::text, 3, '0') || '.png' k FROM generate_series(0, 99) i
             UNION ALL SELECT 'z' || lpad(i::text, 3, '0') || '.png' FROM generate_series(0, 39) i) s" >/dev/null
sleep 0.2
for i in $(seq -w 0 99); do printf 'written just after its put %s' "$i" >"$D_ROOT/many/a0$i.png"; done
m=$(ctl migrate local cloud --prefix many/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "imgsyncd starts again" d_start
check "the ordinary images move while the deletes of the others wait" \
	wait_sql "SELECT count(*) FILTER (WHERE key LIKE 'many/z%' AND stores = '{cloud}') || ' '
	                 || count(*) FILTER (WHERE key LIKE 'many/a%' AND stores = '{cloud,local}')
	          FROM imgsync.images WHERE key LIKE 'many/%'" "40 100" 20
d_sql "SELECT count(imgsync.put('many/a' || lpad(i::text, 3, '0') || '.png', 'local', 'image/png')) FROM generate_series(0, 99) i" >/dev/null
check "once their puts commit, they move too" \
	wait_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 140 0" 30
left=$(find "$D_ROOT/many" -type f | wc -l)
check "... and the source is empty ($left files)" test "$left" = 0
d_stop
done_testing
