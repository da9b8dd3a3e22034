#!/usr/bin/env bash
# PostgreSQL misbehaving under a running imgsyncd, first while it mirrors
# an application's puts, then during a move fs -> S3 (follow):
#   - its sessions terminated (pg_terminate_backend), again and again;
#   - its role given a 50 ms statement_timeout, a 1 ms lock_timeout and a
#     1 s idle_session_timeout (an operator's settings it must not trip on);
#   - LOCK TABLE imgsync.work IN ACCESS EXCLUSIVE MODE held for 4 s;
#   - during the move, 8 statements of the daemon's cancelled as they run
#     (pg_cancel_backend: what a statement timeout does);
#   - an application that writes images again and put()s them in a
#     transaction that stays open 10 s (during the move: rows the
#     migration is about to reach), and, during the move, images written
#     again just before the migration takes them, put() only once it has
#     moved them (an application slow to commit);
#   - the server restarted in the middle of the move.
# The same daemon process rides it all out: it reconnects, gives way to the
# application's locks within a moment (never waits out the transaction),
# loses nothing, never works one key under two claims at once, and every
# image ends byte-identical where the catalog says.
#
# IMGSYNC_TORTURE=1: more images and every fault repeated.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers
. tests/harness/servers.sh

if [ "${IMGSYNC_TORTURE:-0}" = 1 ]; then
	MIRROR_N=4000 MOVE_N=8000 ROUNDS=3
else
	MIRROR_N=1500 MOVE_N=3000 ROUNDS=1
fi
faults=0
SECONDS=0

# The daemon connects as a role of its own, so that faults aimed at it
# (role settings, terminated sessions) spare this script's psql.
new_db() { # NAME
	d_init "$1" || return 1
	DROLE="imgsyncd_$1_$$"
	psql -qX -d postgres -c "CREATE ROLE \"$DROLE\" LOGIN SUPERUSER" >/dev/null || return 1
	sed -i "s/^  conninfo = \"\(.*\)\"$/  conninfo = \"\1 user=$DROLE\"/" "$D_CONF"
	grep -q "user=$DROLE" "$D_CONF"
}
ROLES=
drop_roles() {
	local r
	for r in $ROLES; do
		psql -qX -d postgres -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '$r'" >/dev/null 2>&1
		psql -qX -d postgres -c "DROP ROLE IF EXISTS \"$r\"" >/dev/null 2>&1
	done
}
trap 'd_cleanup; drop_roles; _e2e_cleanup' EXIT

terminate() { # terminate every session of the daemon's role
	local n
	n=$(d_sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '$DROLE'")
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: terminated $n session(s) of the daemon"
}
terminate_round() { # several times, a moment apart (one may hit a reconnect)
	local i
	for i in 1 2 3; do
		terminate
		rand_sleep
	done
}
rand_sleep() { sleep "0.$((RANDOM % 9 + 1))"; }

# the longest a session of the daemon has been waiting for a lock, sampled
# every 0.2 s while the pid runs, in ms, into $1
lock_sampler() { # OUTFILE PID
	local max=0 w
	while kill -0 "$2" 2>/dev/null; do
		w=$(d_sql "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start) * 1000)::int, 0)
		           FROM pg_stat_activity WHERE usename = '$DROLE' AND wait_event_type = 'Lock'")
		[ "${w:-0}" -gt "$max" ] && max=$w
		sleep 0.2
	done
	echo "$max" >"$1"
}

# app_hold SECONDS KEY...: the application writes the images again (new
# content, renamed into place), then a transaction of its put()s them and
# stays open; waits until it has committed.  The daemon's longest lock
# wait meanwhile lands in $HOLD_WAIT (ms); the new content's manifest
# lines replace the old ones in $D_DIR/manifest, if there is one.
app_hold() {
	local secs=$1 k sql="BEGIN;" p t0
	shift
	printf '%s\n' "$@" >"$D_DIR/rewritten"
	py - "$D_ROOT" "$D_DIR/rewritten" "$D_DIR/manifest" <<'PY' || fail "the application writes its images"
import hashlib, os, sys
root, keys, manifest = sys.argv[1:4]
new = {}
for k in open(keys).read().split():
    data = os.urandom(1000 + len(new) * 37)
    t = os.path.join(root, os.path.dirname(k), ".app-tmp")
    with open(t, "wb") as f:
        f.write(data)
    os.rename(t, os.path.join(root, k))
    new[k.encode().hex()] = "%s %d %s" % (k.encode().hex(), len(data), hashlib.sha256(data).hexdigest())
if os.path.exists(manifest):
    lines = [new.pop(l.split()[0], l.rstrip("\n")) for l in open(manifest)]
    with open(manifest, "w") as f:
        f.write("".join(l + "\n" for l in lines + list(new.values())))
PY
	t0=$(d_sql "SELECT clock_timestamp()")
	# an application busy a while between writing its files and put():
	# APP_LATE=1 waits until the migration has been at each of them since
	# (moved it, or refused to move it; 20 s at most)
	if [ "${APP_LATE:-0}" = 1 ] && [ $# -gt 0 ]; then
		local list
		list=$(printf "'%s'," "$@")
		wait_sql "SELECT count(*) FROM imgsync.images i WHERE i.key IN (${list%,}) AND i.origin <> 'cloud'
		          AND NOT EXISTS (SELECT 1 FROM imgsync.attempts a WHERE a.key = i.key AND a.started_at > '$t0' AND NOT a.ok)" 0 20 >/dev/null
	fi
	for k in "$@"; do sql="$sql SELECT imgsync.put('$k', 'local');"; done
	sql="$sql SELECT pg_sleep($secs); COMMIT;"
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: an application transaction puts $# images written again and stays open $secs s"
	psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" -c "$sql" >"$D_DIR/app_hold.log" 2>&1 &
	p=$!
	lock_sampler "$D_DIR/hold_wait" "$p"
	wait "$p"
	HOLD_RC=$?
	HOLD_WAIT=$(cat "$D_DIR/hold_wait")
}

lock_work() { # SECONDS: LOCK TABLE imgsync.work held that long
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: imgsync.work locked ACCESS EXCLUSIVE for $1 s"
	d_sql "BEGIN; LOCK TABLE imgsync.work IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($1); COMMIT" >/dev/null
}

cancel_storm() { # N SECONDS: statements of the daemon's seen running are cancelled, N of them (SECONDS at most)
	local n
	# server-side, a check every 2 ms: a psql per try would mostly miss
	# the daemon's statements, which last milliseconds
	# (pg_cancel_backend() in a WHERE may run before the other conditions,
	# on every session: a loop over the daemon's pids instead)
	n=$(psql -qXtA -d "$D_DB" -c "DO \$\$ DECLARE n int := 0; t0 timestamptz := clock_timestamp(); p int; BEGIN
		WHILE n < $1 AND clock_timestamp() < t0 + interval '$2 s' LOOP
			PERFORM pg_stat_clear_snapshot();
			FOR p IN SELECT pid FROM pg_stat_activity
				  WHERE usename = '$DROLE' AND state = 'active' AND pid <> pg_backend_pid() LOOP
				IF pg_cancel_backend(p) THEN
					n := n + 1;
				END IF;
			END LOOP;
			PERFORM pg_sleep(0.002);
		END LOOP;
		RAISE NOTICE 'cancelled %', n; END \$\$" 2>&1)
	printf '%s\n' "$n" | grep -v 'cancelled [0-9]' | sed 's/^/# /'
	n=$(printf '%s\n' "$n" | sed -n 's/.*cancelled \([0-9]*\).*/\1/p')
	CANCELLED=$((${CANCELLED:-0} + ${n:-0}))
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: ${n:-no} statements of the daemon cancelled (pg_cancel_backend)"
}

role_timeouts() { # the role's settings, taking effect on its next sessions
	d_sql "ALTER ROLE \"$DROLE\" SET statement_timeout = '50ms';
	       ALTER ROLE \"$DROLE\" SET lock_timeout = '1ms';
	       ALTER ROLE \"$DROLE\" SET idle_session_timeout = '1s'" >/dev/null
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: the daemon's role gets statement_timeout 50ms, lock_timeout 1ms, idle_session_timeout 1s"
	terminate
}

# every image byte-identical in the bucket: a manifest from the fs store's
# files (the originals)
manifest_of() { # OUTFILE KEYFILE: the manifest of the keys listed
	py - "$D_ROOT" "$2" >"$1" <<'PY'
import hashlib, os, sys
root = sys.argv[1]
for k in open(sys.argv[2]).read().split():
    data = open(os.path.join(root, k), "rb").read()
    print(k.encode().hex(), len(data), hashlib.sha256(data).hexdigest())
PY
}

common_checks() { # WHAT
	local overlap lost dead
	overlap=$(d_sql "SELECT count(*) FROM imgsync.attempts a JOIN imgsync.attempts b
	                 ON a.key = b.key AND a.id < b.id AND (a.daemon, a.started_at) <> (b.daemon, b.started_at)
	                 AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)")
	check "$1: no key was worked under two claims at once ($overlap overlaps)" test "$overlap" = 0
	lost=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'result for % not recorded%'")
	check "$1: no result was refused ($lost)" test "$lost" = 0
	check "$1: the queue is empty, nothing dead" wait_sql "SELECT count(*) FROM imgsync.work" 0 20
	d_sql "SELECT key, op, state, attempts, last_error FROM imgsync.work LIMIT 5" | sed 's/^/# /'
	check "$1: the same daemon process rode it all out" kill -0 "$D_PID"
	n=$(grep -c 'lost the PostgreSQL connection' "$D_LOG")
	check "$1: it noticed and reconnected ($n times)" test "$n" -ge 3
	check "$1: the daemon's role lost no session for being idle" \
		test "$(grep -c 'idle-session timeout' "$D_LOG")" = 0
	grep 'idle-session timeout' "$D_LOG" | head -3 | sed 's/^/# /'
}

# --- 1. mirroring: an application puts images while the faults come ------

new_db faultsmirror || { fail "set-up"; done_testing; exit 1; }
ROLES="$DROLE"
for i in $(seq "$MIRROR_N"); do printf 'mirrored image %d %s' "$i" "$(head -c $((i % 300)) /dev/zero | tr '\0' x)" >"$D_ROOT/m$i.jpg"; done
check "imgsyncd starts (as role $DROLE)" d_start

# the application: puts of 25 new images at a time, until all are put
app_loop() {
	local b=0
	while [ $((b * 25)) -lt "$MIRROR_N" ]; do
		psql -qXtA -d "$D_DB" -c "SELECT count(imgsync.put('m' || i || '.jpg', 'local', 'image/jpeg'))
		                          FROM generate_series($((b * 25 + 1)), $((b * 25 + 25))) i" >/dev/null ||
			echo "put batch $b failed" >>"$D_DIR/app.errors"
		b=$((b + 1))
		sleep 0.1
	done
}
app_loop &
app=$!
for r in $(seq "$ROUNDS"); do
	sleep 1
	terminate_round
	# rows the daemon has mirrored, written again by a slow transaction
	mapfile -t keys < <(d_sql "SELECT key FROM imgsync.images WHERE 'cloud' = ANY (stores) ORDER BY random() LIMIT 30")
	app_hold 10 "${keys[@]}"
	check "mirroring: the application's transaction commits ($HOLD_RC)" test "$HOLD_RC" = 0
	check "mirroring: imgsyncd waited at most 2 s for the application's locks (longest wait ${HOLD_WAIT} ms)" \
		test "$HOLD_WAIT" -le 2000
	lock_work 4
	terminate_round
done
role_timeouts
sleep 3
terminate_round
wait "$app"
check "the application's puts all committed" test ! -s "$D_DIR/app.errors"
check "all $MIRROR_N images are mirrored, current versions" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud,local}'" "$MIRROR_N" 120
d_sql "SELECT key FROM imgsync.images ORDER BY key" >"$D_DIR/keys"
manifest_of "$D_DIR/manifest" "$D_DIR/keys"
check_bucket "mirroring: every image byte-identical on S3, nothing else there" "$D_BUCKET" "$D_DIR/manifest" --exact
common_checks mirroring
diag "mirroring done at ${SECONDS}s"
d_stop
check "the daemon stops cleanly (exit $D_RC)" test "$D_RC" = 0

# --- 2. a move fs -> S3 while the faults come ----------------------------

new_db faultsmove || { fail "set-up"; done_testing; exit 1; }
ROLES="$ROLES $DROLE"
d_mirrors
# fewer transfers at once: the move lasts long enough for every fault
sed -i 's/^ *concurrency = .*/  concurrency = 8/' "$D_CONF"
py - "$D_ROOT" "$MOVE_N" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(5)
for i in range(n):
    d = os.path.join(root, "g%02d" % (i % 30))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "i%05d.png" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(100, 30000)))
PY
(cd "$D_ROOT" && find . -type f | sed 's|^\./||' | sort) >"$D_DIR/keys"
manifest_of "$D_DIR/manifest" "$D_DIR/keys"
d_sql "SELECT count(imgsync.put('g' || lpad((i % 30)::text, 2, '0') || '/i' || lpad(i::text, 5, '0') || '.png', 'local', 'image/png'))
       FROM generate_series(0, $MOVE_N - 1) i" >/dev/null
check "imgsyncd starts (as role $DROLE)" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0 60
# follow: images the application writes again after the migration passed
# them move too (the zero-downtime recipe); ended once it has caught up
m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a follow move starts (migration $m)" test -n "$m"
done_n() { d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m"; }
at_done() { # N: wait until the migration has done N (or 60 s)
	local i
	for i in $(seq 600); do
		[ "$(done_n)" -ge "$1" ] && return 0
		sleep 0.1
	done
	return 1
}
step=$((MOVE_N / (6 * ROUNDS + 2)))
target=$step
for r in $(seq "$ROUNDS"); do
	at_done $target
	terminate_round
	target=$((target + step))
	at_done $target
	faults=$((faults + 1))
	diag "fault $faults at ${SECONDS}s: PostgreSQL restarted with the move at $(done_n)/$MOVE_N"
	servers_pg_stop >/dev/null 2>&1
	sleep 1
	servers_pg_start >/dev/null 2>&1 || fail "PostgreSQL came back"
	target=$((target + step))
	at_done $target
	# images ahead of the migration's cursor, written again and put by a
	# slow transaction: the migration reaches their rows while it is open
	mapfile -t keys < <(d_sql "SELECT key FROM imgsync.images i, imgsync.migrations m
	                           WHERE m.id = $m AND i.key > coalesce(m.cursor, '') ORDER BY i.key OFFSET 300 LIMIT 30")
	app_hold 10 "${keys[@]}"
	check "moving: the application's transaction commits ($HOLD_RC)" test "$HOLD_RC" = 0
	check "moving: imgsyncd waited at most 2 s for the application's locks (longest wait ${HOLD_WAIT} ms)" \
		test "$HOLD_WAIT" -le 2000
	# images the migration is about to take, written again; their put()s
	# commit once the move has taken the new bytes: the new version is at
	# the target, and the catalog must say so
	mapfile -t near < <(d_sql "SELECT key FROM imgsync.images i, imgsync.migrations m
	                           WHERE m.id = $m AND i.key > coalesce(m.cursor, '') ORDER BY i.key OFFSET 150 LIMIT 20")
	APP_LATE=1 app_hold 0 "${near[@]}"
	check "moving: the application's second transaction commits ($HOLD_RC)" test "$HOLD_RC" = 0
	target=$((target + step))
	at_done $target
	lock_work 4
	cancel_storm 8 30
	target=$((target + step))
	at_done $target
	[ "$r" = 1 ] && role_timeouts
	terminate_round
	target=$((target + step))
done
n=$(grep -c 'canceling statement due to user request' "$D_LOG")
check "moving: statements were cancelled under the daemon (${CANCELLED:-0}), and it said so ($n log lines)" \
	test "${CANCELLED:-0}" -gt 0 -a "$n" -gt 0
check "the move catches up: nothing queued, nothing left in the source" \
	wait_sql "SELECT (SELECT count(*) FROM imgsync.work) + (SELECT count(*) FROM imgsync.images WHERE origin = 'local')" 0 60
d_sql "SELECT imgsync.cancel_migration($m)" >/dev/null
check "the move ends as done, nothing failed" \
	test "$(d_sql "SELECT state || ' ' || failed FROM imgsync.migration_status WHERE id = $m")" = "done 0"
d_sql "SELECT state, done, total, failed, skipped, last_error FROM imgsync.migration_status WHERE id = $m" | sed 's/^/# /'
d_sql "SELECT key, last_error FROM imgsync.migration_failures LIMIT 5" | sed 's/^/# /'
d_sql "SELECT key, origin, stores, version FROM imgsync.images WHERE origin <> 'cloud' OR stores <> '{cloud}' LIMIT 5" | sed 's/^/# /'
n=$(find "$D_ROOT" -type f | wc -l)
check "the source store is empty ($n files)" test "$n" = 0
check "the catalog says every image is on S3, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'cloud' AND stores = '{cloud}'")" = "$MOVE_N"
check_bucket "moving: every image byte-identical on S3, nothing else there" "$D_BUCKET" "$D_DIR/manifest" --exact
common_checks moving
d_stop
check "the daemon stops cleanly (exit $D_RC)" test "$D_RC" = 0
diag "figures: $faults faults injected (${CANCELLED:-0} statements cancelled), $((MIRROR_N + MOVE_N)) images checked byte-exact, ${SECONDS}s"
done_testing
