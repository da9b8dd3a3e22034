#!/usr/bin/env bash
# The admin command parser (imgsync.command(), what a NOTIFY payload goes
# through) under libFuzzer (tests/fuzz/fuzz_command.c), against a real
# PostgreSQL with the imgsync schema and a daemon's stores registered:
# every input is done or refused as a data error of its own, the refusal on
# one line without a control character, the catalog readable afterwards.
# IMGSYNC_FUZZ_SECONDS (default 10) is the time it runs; make fuzz runs it
# longer when IMGSYNC_FUZZ_CONNINFO names a database.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init fuzzcmd || { fail "set-up"; done_testing; exit 1; }
# a daemon has said which stores it has (start_migration checks them)
d_sql "SELECT imgsync.register_daemon('fuzz', 1, 'fuzz', NULL, '{local,cloud}')" >/dev/null
d_sql "SELECT count(imgsync.put('k/' || i || '.jpg', 'local')) FROM generate_series(1, 20) i" >/dev/null
out=$(IMGSYNC_FUZZ_CONNINFO="host=$PGHOST port=$PGPORT dbname=$D_DB" \
	tests/fuzz/run "${IMGSYNC_FUZZ_SECONDS:-10}" command 2>&1)
rc=$?
if [ $rc = 77 ]; then
	skip "fuzz_command: $(printf '%s\n' "$out" | tail -1)"
	done_testing
	exit 0
fi
line=$(printf '%s\n' "$out" | awk '$1 == "command"')
set -- $line
check "fuzz_command: ${3:-?} commands tried in ${2:-?} s, corpus ${4:-?}: ${5:-no result}" \
	test $rc = 0 -a "${5:-}" = ok
[ $rc = 0 ] || printf '%s\n' "$out" | sed 's/^/# /' | tail -20
check "... and it ran at all (more than 100 commands)" test "${3:-0}" -gt 100
check "the catalog is intact: 20 images, no migration" \
	test "$(d_sql "SELECT (SELECT count(*) FROM imgsync.images) || ' ' || (SELECT count(*) FROM imgsync.migrations)")" = "20 0"
done_testing
