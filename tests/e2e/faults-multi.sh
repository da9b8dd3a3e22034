#!/usr/bin/env bash
# Three imgsyncd instances on one database move every image fs -> S3 (a
# follow migration) while an application keeps writing: new images, images
# written again with new content, images removed.  Midway one daemon is
# killed with SIGKILL and restarted after a pause, later another one at
# once.  At the end every image is where it belongs, exactly once: the live
# ones on S3 only, with their latest content byte for byte; the removed
# ones nowhere, not even in the catalog; the fs store empty; no key was
# ever worked under two claims at once.
#
# IMGSYNC_TORTURE=1: more images, a longer application run, six kills.
# The application's choices and the kill points come from a seed, printed;
# IMGSYNC_TORTURE_SEED=N runs with it again.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

if [ "${IMGSYNC_TORTURE:-0}" = 1 ]; then
	N=8000 APP_S=45 KILLS="2:0.15:3 3:0.3:0 1:0.45:1 2:0.6:0 3:0.75:2 1:0.9:0"
else
	N=3000 APP_S=12 KILLS="2:0.3:2 3:0.6:0"
fi
seed=${IMGSYNC_TORTURE_SEED:-$(($(od -An -tu4 -N4 /dev/urandom) % 2147483647))}
diag "seed $seed (again: IMGSYNC_TORTURE_SEED=$seed${IMGSYNC_TORTURE:+ IMGSYNC_TORTURE=$IMGSYNC_TORTURE} tests/run faults-multi)"

d_init multimove || { fail "set-up"; done_testing; exit 1; }
d_mirrors
sed -i 's/^ *concurrency = .*/  concurrency = 8/' "$D_CONF"
mkdir -p "$D_DIR/app"

# the images already there, in the catalog
py - "$D_ROOT" "$N" "$seed" "$D_DIR/app/initial" <<'PY'
import hashlib, os, random, sys
root, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
with open(sys.argv[4], "w") as m:
    for i in range(n):
        d = os.path.join(root, "a%02d" % (i % 20))
        os.makedirs(d, exist_ok=True)
        data = rnd.randbytes(rnd.randint(50, 20000))
        with open(os.path.join(d, "p%05d.jpg" % i), "wb") as f:
            f.write(data)
        m.write("a%02d/p%05d.jpg %d %s\n" % (i % 20, i, len(data), hashlib.sha256(data).hexdigest()))
PY
d_sql "SELECT count(imgsync.put('a' || lpad((i % 20)::text, 2, '0') || '/p' || lpad(i::text, 5, '0') || '.jpg', 'local', 'image/jpeg'))
       FROM generate_series(0, $N - 1) i" >/dev/null

SECONDS=0
declare -a PID
for i in 1 2 3; do
	check "imgsyncd $i starts" d_start
	PID[$i]=$D_PID
done
m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a follow move fs -> S3 starts (migration $m)" test -n "$m"

# The application, for APP_S seconds: small transactions of new images,
# images written again (a new file renamed into place, then put()) and
# removals; at the end it writes down what it believes: the live keys with
# their content's SHA-256, and the removed keys.
py - "$D_ROOT" "$D_DIR/app" "$N" "$seed" "$APP_S" "$D_DB" <<'PY' >"$D_DIR/app.log" 2>&1 &
import hashlib, os, random, subprocess, sys, time
root, tmp, n, seed, secs, db = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
rnd = random.Random(seed + 1)
live = {}
for line in open(os.path.join(tmp, "initial")):
    k, size, sha = line.split()
    live[k] = (int(size), sha)
removed = set()
psql = subprocess.Popen(["psql", "-qXtA", "-v", "ON_ERROR_STOP=1", "-d", db], stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, text=True)
def write(k):
    data = rnd.randbytes(rnd.randint(50, 20000))
    os.makedirs(os.path.dirname(os.path.join(root, k)), exist_ok=True)
    t = os.path.join(tmp, "w")
    with open(t, "wb") as f:
        f.write(data)
    os.rename(t, os.path.join(root, k))
    live[k] = (len(data), hashlib.sha256(data).hexdigest())
new = puts = rewrites = removes = 0
end = time.time() + secs
while time.time() < end:
    sql = ["BEGIN;"]
    for _ in range(rnd.randint(1, 8)):
        r = rnd.random()
        if r < 0.45:
            k = "b%02d/n%05d.jpg" % (new % 20, new)
            new += 1
            write(k)
            sql.append("SELECT imgsync.put('%s', 'local', 'image/jpeg');" % k)
            puts += 1
        elif r < 0.7 and live:
            k = rnd.choice(list(live))
            write(k)
            sql.append("SELECT imgsync.put('%s', 'local', 'image/jpeg');" % k)
            rewrites += 1
        elif live:
            k = rnd.choice(list(live))
            del live[k]
            removed.add(k)
            sql.append("SELECT imgsync.remove('%s');" % k)
            removes += 1
    sql.append("COMMIT;")
    psql.stdin.write("\n".join(sql) + "\n")
    psql.stdin.flush()
    time.sleep(rnd.random() * 0.05)
psql.stdin.close()
rc = psql.wait()
with open(os.path.join(tmp, "manifest"), "w") as f:
    for k, (size, sha) in sorted(live.items()):
        f.write("%s %d %s\n" % (k.encode().hex(), size, sha))
with open(os.path.join(tmp, "removed"), "w") as f:
    f.write("".join(k + "\n" for k in sorted(removed)))
print("app: %d new, %d rewritten, %d removed; %d live; psql exit %d" % (puts, rewrites, removes, len(live), rc))
sys.exit(rc)
PY
app=$!

kills=0
for k in $KILLS; do
	IFS=: read -r which frac pause <<<"$k"
	# wait for this point of the application's run
	sleep_to=$(py -c "print($APP_S * $frac)")
	while [ "$(py -c "print(int($SECONDS < $sleep_to))")" = 1 ]; do sleep 0.2; done
	sleep "0.$((RANDOM % 9))"
	kill -KILL "${PID[$which]}"
	wait "${PID[$which]}" 2>/dev/null
	kills=$((kills + 1))
	diag "kill $kills at ${SECONDS}s: imgsyncd $which (pid ${PID[$which]}), migration at $(d_sql "SELECT done || '/' || total FROM imgsync.migration_status WHERE id = $m"), back in $pause s"
	sleep "$pause"
	killed="${killed:-} ${PID[$which]}"
	check "imgsyncd $which restarts after kill $kills" d_start
	PID[$which]=$D_PID
	# the newcomer releases the leases of the daemons of this host that
	# are gone, and only of those
	sleep 1
	wrong=$(for p in $(d_sql "SELECT pid FROM imgsync.daemons WHERE stopped_at IS NOT NULL"); do
		case " $killed " in *" $p "*) ;; *) printf '%s ' "$p" ;; esac
	done)
	check "after restart $kills only killed daemons are taken for gone${wrong:+ (live pids taken for gone: ${wrong% })}" \
		test -z "$wrong"
done
wait "$app"
rc=$?
check "the application's transactions all committed ($(tail -1 "$D_DIR/app.log"))" test "$rc" = 0
diag "the application stopped at ${SECONDS}s"

# caught up: nothing queued, nothing left in the source; then the follow
# migration is ended, which makes it done
check "the daemons catch up with the application" \
	wait_sql "SELECT (SELECT count(*) FROM imgsync.work) + (SELECT count(*) FROM imgsync.images WHERE origin = 'local')" 0 180
d_sql "SELECT key, op, state, step, attempts, last_error FROM imgsync.work LIMIT 5" | sed 's/^/# /'
d_sql "SELECT imgsync.cancel_migration($m)" >/dev/null
check "the migration ends as done, nothing failed" \
	test "$(d_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m")" = "done 0"
diag "caught up at ${SECONDS}s: $(d_sql "SELECT state || ': ' || done || ' done, ' || failed || ' failed, ' || skipped || ' skipped of ' || total || coalesce(' (' || last_error || ')', '') FROM imgsync.migration_status WHERE id = $m")"
d_sql "SELECT key, last_error FROM imgsync.migration_failures WHERE migration = $m LIMIT 5" | sed 's/^/# failure: /'
grep -h "failed for good" "$D_DIR"/imgsyncd.*.log | head -5 | sed 's/^/# /'
d_sql "SELECT count(*) || ' x ' || e FROM (SELECT regexp_replace(error, '\"[^\"]*\"', '\"…\"', 'g') e
       FROM imgsync.attempts WHERE NOT ok) a GROUP BY e ORDER BY count(*) DESC LIMIT 8" | sed 's/^/# failed attempts: /'

live=$(wc -l <"$D_DIR/app/manifest")
nrem=$(wc -l <"$D_DIR/app/removed")
check "the catalog holds the $live live images, each on S3 only" \
	test "$(d_sql "SELECT count(*) FILTER (WHERE origin = 'cloud' AND stores = '{cloud}' AND NOT deleted) || '/' || count(*) FROM imgsync.images")" = "$live/$live"
py - "$D_DIR/app/removed" <<'PY' >"$D_DIR/removed.sql"
import sys
keys = [l.strip() for l in open(sys.argv[1]) if l.strip()]
print("SELECT count(*) FROM imgsync.images WHERE key = ANY (ARRAY[%s]::text[])" %
      ",".join("'%s'" % k for k in keys) if keys else "SELECT 0")
PY
check "none of the $nrem removed images is left in the catalog" test "$(d_sql "$(cat "$D_DIR/removed.sql")")" = 0
check_bucket "every live image byte-identical on S3 with its latest content, nothing else there" \
	"$D_BUCKET" "$D_DIR/app/manifest" --exact
n=$(find "$D_ROOT" -type f ! -name '.*' | wc -l)
check "the fs store holds no image ($n files)" test "$n" = 0
t=$(find "$D_ROOT" -type f -name '.*' | wc -l)
[ "$t" = 0 ] || diag "$t hidden temporary file(s) left in the fs store"
overlap=$(d_sql "SELECT count(*) FROM imgsync.attempts a JOIN imgsync.attempts b
                 ON a.key = b.key AND a.id < b.id AND (a.daemon, a.started_at) <> (b.daemon, b.started_at)
                 AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)")
check "no key was worked under two claims at once ($overlap overlaps)" test "$overlap" = 0
[ "$overlap" = 0 ] || d_sql "SELECT a.key, a.daemon, a.started_at, a.finished_at, a.ok, b.daemon, b.started_at, b.finished_at, b.ok
                            FROM imgsync.attempts a JOIN imgsync.attempts b
                            ON a.key = b.key AND a.id < b.id AND (a.daemon, a.started_at) <> (b.daemon, b.started_at)
                            AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at) LIMIT 5" | sed 's/^/# /'
share=$(d_sql "SELECT string_agg(n::text, ' ' ORDER BY daemon) FROM (SELECT daemon, count(*) n FROM imgsync.attempts GROUP BY daemon) a")
check "every daemon did part of the work ($share)" test "$(echo "$share" | wc -w)" -ge 3
lost=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'result for % not recorded%'")
check "no result was refused ($lost)" test "$lost" = 0
check "the $kills killed daemons are gone, the others running" \
	test "$(d_sql "SELECT count(*) FILTER (WHERE state = 'gone') || ' ' || count(*) FILTER (WHERE state = 'running') FROM imgsync.workers")" = "$kills 3"
for i in 1 2 3; do d_stop "${PID[$i]}"; done
check "the three daemons stop cleanly" test "$(d_sql "SELECT count(*) FROM imgsync.workers WHERE state = 'stopped'")" = 3
diag "figures: seed $seed, $kills kills, $live live and $nrem removed images checked, ${SECONDS}s"
done_testing
