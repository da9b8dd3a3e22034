#!/usr/bin/env bash
# Two daemons on one database mirror 2,000 puts: every object is copied,
# both share the work, and no key is ever worked by both at once (the
# attempt log's intervals for a key never overlap across daemons).
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init multi || { fail "set-up"; done_testing; exit 1; }
check "first imgsyncd starts" d_start
p1=$D_PID
check "second imgsyncd starts" d_start
p2=$D_PID
for i in $(seq 2000); do printf 'object %d' "$i" >"$D_ROOT/o$i.bin"; done
# in 20 transactions of 100, as an application would write them
for b in $(seq 0 19); do
	d_sql "SELECT count(imgsync.put('o' || i || '.bin', 'local'))
	       FROM generate_series($((b * 100 + 1)), $((b * 100 + 100))) i" >/dev/null
done
check "all 2,000 are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 2000 120
n=$(s3_keys | wc -l)
check "the bucket holds 2,000 objects ($n)" test "$n" = 2000
share=$(d_sql "SELECT string_agg(n::text, ' ' ORDER BY daemon) FROM (SELECT daemon, count(*) n FROM imgsync.attempts GROUP BY daemon) a")
check "both daemons did part of the work ($share)" test "$(echo "$share" | wc -w)" = 2
overlap=$(d_sql "SELECT count(*) FROM imgsync.attempts a JOIN imgsync.attempts b
                 ON a.key = b.key AND a.id < b.id AND a.daemon <> b.daemon
                 AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)")
check "no key was worked by both daemons at once ($overlap overlaps)" test "$overlap" = 0
twice=$(d_sql "SELECT count(*) FROM (SELECT key FROM imgsync.attempts WHERE ok GROUP BY key HAVING count(*) > 1) k")
check "no put was done twice ($twice)" test "$twice" = 0
d_stop "$p1"
d_stop "$p2"
check "both stop cleanly" test "$(d_sql "SELECT count(*) FROM imgsync.workers WHERE state = 'stopped'")" = 2

# A daemon killed with SIGKILL mid-run: its leased items are taken over by
# another once the leases expire, and nothing is lost.
d_init takeover || fail "set-up takeover"
for i in $(seq 3000); do head -c 20000 /dev/urandom >"$D_ROOT/t$i.bin"; done
d_sql "SELECT count(imgsync.put('t' || i || '.bin', 'local')) FROM generate_series(1, 3000) i" >/dev/null
check "a first imgsyncd starts" d_start
wait_sql "SELECT count(*) > 300 FROM imgsync.images WHERE 'cloud' = ANY (stores)" t 60 >/dev/null
kill -KILL "$D_PID"
wait "$D_PID" 2>/dev/null
leased=$(d_sql "SELECT count(*) FROM imgsync.work WHERE lease_until > now()")
check "killed with SIGKILL while holding $leased leases" test "$leased" -gt 0
# as if it had run on another machine: no successor here can tell it is
# gone, so its items wait for their leases to expire
d_sql "UPDATE imgsync.daemons SET host = 'elsewhere' WHERE pid = $D_PID" >/dev/null
check "a second imgsyncd starts" d_start
check "it takes the dead daemon's items over when their leases expire, and all 3,000 land" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 3000 150
n=$(s3_keys | wc -l)
check "the bucket holds 3,000 objects ($n)" test "$n" = 3000
d_stop
done_testing
