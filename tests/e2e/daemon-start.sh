#!/usr/bin/env bash
# imgsyncd refuses to start, saying why and with the SPEC's exit code, when
# the schema is missing or from another version, when the channel differs
# from the database's, and when PostgreSQL cannot be reached.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init start || { fail "set-up"; done_testing; exit 1; }
run_daemon() { # CONF: run in the foreground, at most 60 s
	timeout 60 "$BUILD/imgsyncd" -c "$1" >"$D_DIR/out" 2>&1
	D_RC=$?
}

d_sql "DROP SCHEMA imgsync CASCADE" >/dev/null 2>&1
run_daemon "$D_CONF"
check "no schema: exit 78 (got $D_RC)" test "$D_RC" = 78
check "... naming the command that fixes it" grep -q 'run "imgsyncctl init"' "$D_DIR/out"

"$BUILD/imgsyncctl" -c "$D_CONF" init >/dev/null
cur=$(d_sql "SELECT max(version) FROM imgsync.schema_version")
d_sql "UPDATE imgsync.schema_version SET version = 99 WHERE version = $cur" >/dev/null
run_daemon "$D_CONF"
check "a schema version it does not know: exit 78 (got $D_RC)" test "$D_RC" = 78
check "... saying which versions and what to run" grep -q "version 99, this imgsyncd speaks version $cur" "$D_DIR/out"
d_sql "UPDATE imgsync.schema_version SET version = $cur WHERE version = 99" >/dev/null

sed 's/channel = "imgsync"/channel = "other"/' "$D_CONF" >"$D_DIR/chan.conf"
run_daemon "$D_DIR/chan.conf"
check "a channel the database does not notify: exit 78 (got $D_RC)" test "$D_RC" = 78
check "... explained" grep -q 'notifies channel "imgsync" but the configuration listens on "other"' "$D_DIR/out"

sed "s/port=$PGPORT/port=1/" "$D_CONF" >"$D_DIR/down.conf"
run_daemon "$D_DIR/down.conf"
check "PostgreSQL unreachable at start: exit 69 after retries (got $D_RC)" test "$D_RC" = 69
check "... with libpq's reason" grep -q 'cannot connect to PostgreSQL after 5 attempts' "$D_DIR/out"

# The open-file limit: the soft one raised to the hard one (up to twice
# transfer.concurrency items in hand, each with a few files); a hard limit
# too low for the concurrency is warned about.
nofile_run() { # HARD SOFT: start imgsyncd under these limits; its soft one in NOFILE
	NOFILE=
	(ulimit -Sn "$2" && ulimit -Hn "$1" && exec "$BUILD/imgsyncd" -c "$D_CONF") >"$D_DIR/nofile.out" 2>&1 &
	local pid=$! i
	for i in $(seq 100); do
		grep -q 'running as daemon' "$D_DIR/nofile.out" && break
		sleep 0.1
	done
	NOFILE=$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")
	kill -TERM "$pid"
	wait "$pid"
}
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] || [ "$hard" -gt 4096 ] && hard=4096 # lowered, never raised
nofile_run "$hard" 256
check "the soft limit on open files is raised to the hard one (256 -> $NOFILE)" test "$NOFILE" = "$hard"
check "... without a warning" eval '! grep -q "open files (RLIMIT_NOFILE)" "$D_DIR/nofile.out"'
nofile_run 200 100
check "a hard limit of 200: the soft one raised to it ($NOFILE)" test "$NOFILE" = 200
check "... and a warning, with what to do" \
	grep -q 'at most 200 open files (RLIMIT_NOFILE) for transfer.concurrency 32: raise LimitNOFILE= in the unit, or lower transfer.concurrency' "$D_DIR/nofile.out"
nofile_run 200 200
check "soft and hard limits of 200 alike: the same warning" grep -q 'at most 200 open files (RLIMIT_NOFILE)' "$D_DIR/nofile.out"
done_testing
