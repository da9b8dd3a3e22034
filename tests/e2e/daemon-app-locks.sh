#!/usr/bin/env bash
# An application's transactions never fail because of imgsyncd: while the
# daemon writes results back in batches, the application re-puts hundreds
# of images per transaction in random order (row locks taken in an order
# the daemon cannot know).  imgsyncd gives way (lock_timeout, results sent
# again), so no transaction of the application deadlocks or is aborted.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init locks || { fail "set-up"; done_testing; exit 1; }
for i in $(seq 300); do printf 'image %d' "$i" >"$D_ROOT/k$i.jpg"; done
d_sql "SELECT count(imgsync.put('k' || i || '.jpg', 'local')) FROM generate_series(1, 300) i" >/dev/null
check "imgsyncd starts" d_start
check "300 images are mirrored" wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 300 60

writer() { # N: 15 transactions re-putting keys N*100+1 .. N*100+100 in random
	# order (writers never share a key: a deadlock could only be with imgsyncd)
	py - "$1" <<'PY' | psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" >/dev/null
import random, sys
n = int(sys.argv[1])
rnd = random.Random(n)
for t in range(15):
    keys = rnd.sample(range(n * 100 + 1, n * 100 + 101), 100)
    print("BEGIN;")
    for k in keys:
        print("SELECT imgsync.put('k%d.jpg', 'local');" % k)
        if rnd.random() < 0.05:
            print("SELECT pg_sleep(0.01);")
    print("COMMIT;")
PY
}
writer 0 & w1=$!
writer 1 & w2=$!
writer 2 & w3=$!
ok=0
for w in $w1 $w2 $w3; do wait "$w" && ok=$((ok + 1)); done
check "45 application transactions of 100 puts each, all committed ($ok of 3 writers without an error)" test "$ok" = 3
check "the queue drains" wait_sql "SELECT count(*) FROM imgsync.work" 0 120
check "every image's latest version is mirrored" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud,local}'")" = 300
[ "$(d_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud,local}'")" = 300 ] ||
	d_sql "SELECT i.key, i.stores, i.version, (SELECT string_agg(a.gen || ':' || a.ok, ' ' ORDER BY a.id) FROM imgsync.attempts a WHERE a.key = i.key) FROM imgsync.images i WHERE stores <> '{cloud,local}' LIMIT 5" | sed 's/^/# /'
check "no result was lost on the way" \
	test "$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'result for % not recorded%'")" = 0
n=$(grep -c "met rows the application holds" "$D_LOG")
diag "the daemon gave way $n time(s)"
d_stop

# imgsync.complete() itself, with no daemon about: a batch it cannot take
# whole goes result by result; a malformed result is an event and sinks no
# other; a result whose row the application holds comes back to be sent again
lease() { # KEY TOKEN: queue KEY again and lease it to a pretend daemon
	d_sql "SELECT imgsync.put('$1', 'local')" >/dev/null
	d_sql "UPDATE imgsync.work SET lease_owner = 999999, lease_token = $2,
	       lease_until = now() + interval '1 minute' WHERE key = '$1'" >/dev/null
}
result() { # KEY TOKEN [GEN]: a successful result for the lease, as JSON
	d_sql "SELECT json_build_object('key', w.key, 'gen', ${3:-w.gen}, 'token', $2, 'op', 'put',
	       'ok', true, 'version', i.version, 'started_at', now()::text,
	       'stores', json_build_array('cloud'))
	       FROM imgsync.work w JOIN imgsync.images i USING (key) WHERE w.key = '$1'"
}
d_sql "INSERT INTO imgsync.daemons (id, host, pid, version) VALUES (999999, 'test', 1, 'test')" >/dev/null
lease k1.jpg 4242
lease k2.jpg 4343
batch="[$(result k1.jpg 4242),$(result k2.jpg 4343 "'not a number'")]"
back=$(d_sql "SELECT count(*) FROM imgsync.complete(999999, '$batch'::jsonb, 8)")
check "complete(): a malformed result goes back nowhere ($back returned)" test "$back" = 0
check "... it is recorded as an event naming the key" \
	test "$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'result for \"k2.jpg\" not recorded%'")" = 1
check "... and the other result of the batch is applied (k1.jpg: cloud recorded, work done)" \
	test "$(d_sql "SELECT ('cloud' = ANY (stores))::text || ' ' || (SELECT count(*) FROM imgsync.work WHERE key = 'k1.jpg') FROM imgsync.images WHERE key = 'k1.jpg'")" = "true 0"
lease k3.jpg 4444
batch="[$(result k3.jpg 4444)]"
psql -qXtA -d "$D_DB" -c "BEGIN; SELECT imgsync.put('k3.jpg', 'local'); SELECT pg_sleep(3); ROLLBACK" >/dev/null 2>&1 &
holder=$!
sleep 1
back=$(d_sql "SELECT r ->> 'key' FROM imgsync.complete(999999, '$batch'::jsonb, 8) r")
check "complete(): a result whose row the application holds comes back at once ($back)" test "$back" = k3.jpg
wait "$holder"
back=$(d_sql "SELECT count(*) FROM imgsync.complete(999999, '$batch'::jsonb, 8)")
check "... and is applied once the application is done ($back returned)" \
	test "$back" = 0 -a "$(d_sql "SELECT count(*) FROM imgsync.work WHERE key = 'k3.jpg'")" = 0
done_testing
