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
done_testing
