#!/usr/bin/env bash
# A follow move fs -> S3 while the application writes images again in
# place, each twice in a row 10 ms apart, its put()s pipelined through one
# psql session: copies read while a file is rewritten, copies that land
# after the next put() committed, delete steps that meet a put() under way.
# Afterwards every image is on S3 only with the bytes written last, and no
# item failed.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init rewrites || { fail "set-up"; done_testing; exit 1; }
d_mirrors
sed -i 's/^ *concurrency = .*/  concurrency = 8/' "$D_CONF"
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }

# the application: writes in place (as SQLAlchemy-ImageAttach does), then
# put(); prints "KEYHEX SIZE SHA256" of the last bytes of each image
cat >"$D_DIR/app.py" <<'PY'
import hashlib, os, random, subprocess, sys, time
root, db, phase = sys.argv[1:4]
rnd = random.Random(7 if phase == "seed" else 8)
psql = subprocess.Popen(["psql", "-qXtA", "-v", "ON_ERROR_STOP=1", "-d", db, "-o", "/dev/null"],
                        stdin=subprocess.PIPE, text=True)
last = {}
hist = open(os.path.join(os.path.dirname(root.rstrip("/")), "writes." + phase), "w")
def write(key):
    data = rnd.randbytes(rnd.randint(500, 40000))
    path = os.path.join(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    psql.stdin.write("SELECT imgsync.put('%s', 'local', 'image/png');\n" % key)
    psql.stdin.flush()
    hist.write("%s %d %.3f\n" % (key, len(data), time.time()))
    hist.flush()
    last[key] = "%d %s" % (len(data), hashlib.sha256(data).hexdigest())
keys = ["img/%02d/%04d.png" % (i % 20, i) for i in range(1000)]
if phase == "seed":
    for k in keys:
        write(k)
else:
    for n in range(300):
        k = rnd.choice(keys)
        write(k)
        time.sleep(0.01)
        write(k)
        time.sleep(0.02)
psql.stdin.close()
if psql.wait() != 0:
    sys.exit("psql failed")
for k, v in last.items():
    print(k.encode().hex(), v)
PY
app() { py "$D_DIR/app.py" "$D_ROOT" "$D_DB" "$1" >"$D_DIR/$1"; }
check "the application writes 1000 images" app seed
check "imgsyncd starts" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0
m=$(ctl migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a move with follow starts (migration $m)" test -n "$m"
check "the application writes 300 of them again, twice each" app again
# the last bytes of each: the second run's where it wrote the key
awk '!seen[$1]++' "$D_DIR/again" "$D_DIR/seed" >"$D_DIR/manifest"
check "the migration catches up" wait_sql "SELECT count(*) FROM imgsync.work" 0 90
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
ctl cancel "$m" >/dev/null 2>&1
check "ended, it is done with no failure" \
	wait_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 0" 10
check "the catalog has each image on S3 only" \
	test "$(d_sql "SELECT count(*) FILTER (WHERE origin = 'cloud' AND stores = '{cloud}') || ' ' || count(*) FROM imgsync.images")" = "1000 1000"
# what happened to an image S3 holds other bytes of: its writes, attempts
# and the daemon's lines about it
explain() {
	local h k
	sed -n 's/^MISMATCH \([0-9a-f]*\) .*/\1/p' "$CHECK_BUCKET_LOG" | head -3 | while read -r h; do
		k=$(py -c 'import sys; print(bytes.fromhex(sys.argv[1]).decode())' "$h")
		echo "# $k: written (size, time):"
		grep -h "^$k " "$D_DIR"/writes.* | sed 's/^/#   /'
		echo "# $k: attempts (gen, ok, started, finished, error):"
		d_sql "SELECT gen, ok, extract(epoch FROM started_at), extract(epoch FROM finished_at), error
		         FROM imgsync.attempts WHERE key = '$k' ORDER BY id" | sed 's/^/#   /'
		echo "# $k: the daemon's lines:"
		grep -hF "$k" "$D_DIR"/imgsyncd.*.log | tail -40 | sed 's/^/#   /'
	done
}
check_bucket "S3 holds the bytes written last of each" "$D_BUCKET" "$D_DIR/manifest" --exact ||
	explain
left=$(find "$D_ROOT" -type f | wc -l)
check "the source store is empty ($left files)" test "$left" = 0
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
