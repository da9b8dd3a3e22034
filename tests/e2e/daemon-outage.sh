#!/usr/bin/env bash
# Nothing is lost: puts made while no daemon runs, while PostgreSQL
# restarts under a running daemon, and while the S3 server is down all end
# on the mirror.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers
. tests/harness/servers.sh

# two attempts only: an outage must not spend them (store-wide trouble is
# waited out, it does not kill items)
D_MAX_ATTEMPTS=2 d_init outage || { fail "set-up"; done_testing; exit 1; }
put_range() { # FROM TO: write files and put them, in one transaction
	local i
	for i in $(seq "$1" "$2"); do printf 'image %d' "$i" >"$D_ROOT/img-$i.jpg"; done
	d_sql "SELECT count(imgsync.put('img-' || i || '.jpg', 'local', 'image/jpeg'))
	       FROM generate_series($1, $2) i" >/dev/null
}
mirrored() { d_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)"; }

# 500 puts while no daemon runs
put_range 1 500
check "500 puts recorded while no daemon runs" test "$(d_sql "SELECT count(*) FROM imgsync.work")" = 500
check "imgsyncd starts" d_start
check "all 500 are mirrored after it starts" wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 500 60
check "the queue is empty" test "$(d_sql "SELECT count(*) FROM imgsync.work")" = 0

# PostgreSQL restarted under the running daemon, puts right after
servers_pg_stop >/dev/null 2>&1
sleep 1
servers_pg_start >/dev/null 2>&1 || fail "PostgreSQL came back"
put_range 501 1000
check "500 puts made across a PostgreSQL restart are all mirrored, same daemon" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 1000 90
check "the same daemon process did it" kill -0 "$D_PID"
check "it noticed and reconnected" grep -q 'lost the PostgreSQL connection' "$D_LOG"

# the S3 server down for a while
servers_rgw_stop >/dev/null 2>&1
put_range 1001 1100
sleep 8
check "while S3 is down the puts wait in the queue (retrying)" \
	test "$(d_sql "SELECT count(*) FROM imgsync.work WHERE state = 'pending'")" = 100
check "... and nothing is dead" test "$(d_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead'")" = 0
servers_rgw_start >/dev/null 2>&1 || fail "radosgw came back"
check "once S3 is back, all 100 land" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 1100 90
n=$(s3_keys | wc -l)
check "the bucket holds 1100 objects ($n)" test "$n" = 1100
check "retries were logged with the reason" grep -q 'failed (next try in .* cannot talk to' "$D_LOG"
bad=$(d_sql "SELECT count(*) FROM imgsync.images WHERE size IS DISTINCT FROM octet_length('image ' || substr(key, 5, length(key) - 8))")
check "every catalog size matches its file ($bad off)" test "$bad" = 0
d_stop
check "SIGTERM stops it cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
