#!/usr/bin/env bash
# A 2,000-image move fs -> S3 with imgsyncd killed with SIGKILL at points
# the test chooses (before the first checkpoint, mid-copy, while source
# copies are being deleted): after restarts the migration finishes with
# nothing lost, nothing corrupt, and at most one batch of re-copies per kill.
# Each restart on the same host releases the dead daemon's leases at once.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init crash || { fail "set-up"; done_testing; exit 1; }
d_mirrors
# fewer transfers at once: slower, so the kills land where the test wants
sed -i 's/^ *concurrency = .*/  concurrency = 8/' "$D_CONF"
conc=$(sed -n 's/^ *concurrency = //p' "$D_CONF")

py - "$D_ROOT" "$D_DIR/manifest" <<'PY'
import hashlib, os, random, sys
root, manifest = sys.argv[1], sys.argv[2]
random.seed(11)
with open(manifest, "w") as m:
    for i in range(2000):
        d = "%02d" % (i % 50)
        os.makedirs(os.path.join(root, d), exist_ok=True)
        key = "%s/k%04d.png" % (d, i)
        data = random.randbytes(random.randint(2000, 60000))
        open(os.path.join(root, key), "wb").write(data)
        m.write("%s %d %s\n" % (key.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
d_sql "SELECT count(imgsync.put(lpad((i % 50)::text, 2, '0') || '/k' || lpad(i::text, 4, '0') || '.png', 'local', 'image/png'))
       FROM generate_series(0, 1999) i" >/dev/null
SECONDS=0
check "imgsyncd starts" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0
m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate local cloud | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a move starts (migration $m)" test -n "$m"

done_n() { d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m"; }
sources() { find "$D_ROOT" -type f | wc -l; }
kills=0
# kill AT: wait until the condition holds, then SIGKILL and restart
kill_when() { # DESCRIPTION SQL-CONDITION
	local i
	for i in $(seq 600); do
		[ "$(d_sql "SELECT $2")" = t ] && break
		sleep 0.05
	done
	local leased untagged
	leased=$(d_sql "SELECT count(*) FROM imgsync.work WHERE lease_owner IS NOT NULL")
	untagged=$(d_sql "SELECT count(*) FILTER (WHERE source_tag IS NULL) || '/' || count(*) FROM imgsync.work WHERE step = 'delete-source'")
	[ "${untagged%/*}" = 0 ] || fail "every source copy waiting for deletion has its tag recorded ($untagged without)"
	kill -KILL "$D_PID"
	wait "$D_PID" 2>/dev/null
	kills=$((kills + 1))
	diag "kill $kills ($1) at ${SECONDS}s: done $(done_n)/2000, $leased leased, $(sources) files left in the source"
	check "kill $kills ($1): imgsyncd restarts" d_start
	check "... and releases the dead daemon's leases at once" \
		wait_sql "SELECT count(*) FROM imgsync.work w JOIN imgsync.daemons d ON d.id = w.lease_owner WHERE d.state = 'gone'" 0 5
}
mdone() { echo "(SELECT done >= $1 FROM imgsync.migration_status WHERE id = $m)"; }
kill_when "before the first checkpoint" "true"
kill_when "mid-copy, a quarter done" "$(mdone 500)"
kill_when "mid-copy, half done" "$(mdone 1000)"
kill_when "while source copies are being deleted" \
	"EXISTS (SELECT 1 FROM imgsync.work WHERE migration = $m AND step = 'delete-source' AND lease_owner IS NOT NULL) AND $(mdone 1300)"
kill_when "mid-copy, near the end" "$(mdone 1800)"
diag "restarted at ${SECONDS}s"
check "the migration finishes after $kills kills" \
	wait_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $m" "done 2000/2000 0 0" 180
diag "finished at ${SECONDS}s"
check "the workers view shows the killed daemons as gone" \
	test "$(d_sql "SELECT count(*) FROM imgsync.workers WHERE state = 'gone'")" = "$kills"
check "the source store is empty ($(sources) files)" test "$(sources)" = 0
check "the catalog says every image is on S3, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'cloud' AND stores = '{cloud}'")" = 2000
check_bucket "nothing lost, nothing corrupt: every object byte-exact at the target" "$D_BUCKET" "$D_DIR/manifest"
diag "verified at ${SECONDS}s"
n=$(s3_keys | wc -l)
check "no stray objects in the bucket ($n)" test "$n" = 2000
# every copy started is logged (-v); a key copied more than once was redone
cat "$D_DIR"/imgsyncd.*.log | sed -n "s/.*migration $m: copying \"\(.*\)\" from local to cloud$/\1/p" |
	sort | uniq -c | awk '$1 > 1 {r += $1 - 1} END {print r + 0}' >"$D_DIR/recopies"
started=$(cat "$D_DIR"/imgsyncd.*.log | grep -c "migration $m: copying ")
re=$(cat "$D_DIR/recopies")
diag "copies started: $started for 2000 images; re-copies: $re over $kills kills (concurrency $conc)"
check "re-copies are bounded by one batch per kill ($re <= $kills x $conc)" test "$re" -le $((kills * conc))
check "every image was copied ($started copies started)" test "$started" -ge 2000
diag "counted at ${SECONDS}s"
d_stop
diag "stopped at ${SECONDS}s"
check "the last daemon stops cleanly" test "$D_RC" = 0
done_testing
