#!/usr/bin/env bash
# Hostile admin commands: NOTIFY payloads on the daemon's channel and the
# admin SQL functions called with bad arguments.  Malformed JSON, wrong
# types, unknown commands, unknown stores, oversized and deeply nested
# payloads, SQL in string fields, huge ids, control characters.
#
# Each notification is refused one by one: the daemon logs a warning with
# the reason and records an event (imgsync.events) naming it; a refusal
# never forges a log line; the daemon keeps running and mirroring; no
# table is touched.  The SQL functions raise errors that say what is wrong.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers
unhex() { py -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$1"; }

d_init commands || { fail "set-up"; done_testing; exit 1; }
SCR="$D_DIR/scratch"
mkdir -p "$SCR"
d_sql "CREATE TABLE pictures (id serial PRIMARY KEY, path text NOT NULL)" >/dev/null
d_sql "SELECT imgsync.watch_table('pictures', 'local', key_column => 'path')" >/dev/null
check "imgsyncd starts" d_start
printf 'before' >"$D_ROOT/before.jpg"
d_sql "INSERT INTO pictures (path) VALUES ('before.jpg')" >/dev/null
check "an image is mirrored before the barrage" \
	wait_sql "SELECT stores @> '{cloud}' FROM imgsync.images WHERE key = 'before.jpg'" t

tables() {
	d_sql "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_tables
	       WHERE schemaname IN ('imgsync', 'public')"
	d_sql "SELECT count(*) FROM imgsync.images"
	d_sql "SELECT count(*) FROM pictures"
	d_sql "SELECT count(*) FROM imgsync.watched"
}
tables >"$SCR/tables.before"
mig_before=$(d_sql "SELECT count(*) FROM imgsync.migrations")

# --- the payloads: "HEX<TAB>what the refusal must say", one a line ---
py - >"$SCR/payloads" <<'PY'
import json
deep_list = "[" * 1500 + "]" * 1500
deep_obj = '{"a":' * 600 + "1" + "}" * 600
p = [
    ('{"command": 42', "not a JSON command"),
    ('', None),  # placeholder, replaced below
    ('   ', "not a JSON command"),
    ("{'command': 'pause', 'id': 1}", "not a JSON command"),
    ('{"command": 42}', 'a JSON object with a "command" string'),
    ('[1, 2, 3]', 'a JSON object with a "command" string'),
    ('"migrate"', 'a JSON object with a "command" string'),
    ('null', 'a JSON object with a "command" string'),
    ('{}', 'a JSON object with a "command" string'),
    ('{"command": ["pause"]}', 'a JSON object with a "command" string'),
    ('{"command": "obliterate"}', 'unknown command "obliterate"'),
    ('{"command": "PAUSE", "id": 1}', 'unknown command "PAUSE"'),
    ('{"command": "pause"}', '"id" is the number of a migration'),
    ('{"command": "pause", "id": "1"}', '"id" is the number of a migration'),
    ('{"command": "pause", "id": -1}', '"id" is the number of a migration'),
    ('{"command": "pause", "id": 1.5}', '"id" is the number of a migration'),
    ('{"command": "pause", "id": true}', '"id" is the number of a migration'),
    ('{"command": "pause", "id": 424242}', "no migration 424242"),
    ('{"command": "cancel", "id": 0}', "no migration 0"),
    ('{"command": "pause", "id": 1, "force": true}', 'pause: unknown field "force"'),
    ('{"command": "resume", "id": 99999999999999999999999999}', "out of range"),
    ('{"command": "pause", "id": 1e400}', "out of range"),
    ('{"command": "retry_failed", "id": 424243}', "no migration 424243"),
    ('{"command": "migrate", "source": "local"}', '"source", "target" (and "mode") are strings'),
    ('{"command": "migrate", "source": 1, "target": 2}', '"source", "target" (and "mode") are strings'),
    ('{"command": "migrate", "source": "local", "target": "local"}', "source and target are both \"local\""),
    ('{"command": "migrate", "source": "local", "target": "cloud", "mode": "obliterate"}', "mode must be move or copy"),
    ('{"command": "migrate", "source": "local", "target": "cloud", "mode": 7}', '"source", "target" (and "mode") are strings'),
    ('{"command": "migrate", "source": "local", "target": "cloud", "options": {"rm": true}}', "unknown option \"rm\""),
    ('{"command": "migrate", "source": "local", "target": "cloud", "dry_run": "yes"}', "must be true or false"),
    ('{"command": "migrate", "source": "local", "target": "cloud", "prefix": 5}', "prefix must be a string"),
    ('{"command": "migrate", "source": "local", "target": "cloud", "rm": "-rf"}', 'unknown field "rm"'),
    ('{"command": "migrate", "source": "local", "target": "cloud", "options": %s}' % deep_list, '"options" is an object'),
    ('{"command": "migrate", "source": "local", "target": "cloud", "options": %s}' % deep_obj, "unknown option \"a\""),
    # stores this daemon does not know: a migration to them cannot run
    ('{"command": "migrate", "source": "local", "target": "nowhere"}', "nowhere"),
    ('{"command": "migrate", "source": "local\'; DROP TABLE imgsync.images; --", "target": "cloud"}', "DROP TABLE"),
    ('{"command": "migrate", "source": "lo\\"cal", "target": "cl\'oud"}', "no imgsyncd has a store named"),
    # control characters and a forged log line
    ('junk\nimgsyncd: notice: command: migration 99 started', "not a JSON command"),
    ('\x1b[2J\x1b[31m{"command": "pause", "id": 1}', "not a JSON command"),
    ('{"command": "pause", "id": 1, "pad": "%s"}' % ("x" * 4070), "oversized"),
    ('x' * 7999, "oversized"),
]
# exactly 4096 bytes is not oversized: SQL reads it (and finds the unknown field)
pad = '{"command": "pause", "id": 424244, "pad": "%s"}'
p[1] = (pad % ("y" * (4096 - len(pad % ""))), "pause: unknown field \"pad\"")
assert len(p[1][0].encode()) == 4096
for payload, want in p:
    print("%s\t%s" % (payload.encode().hex(), want))
PY
n=0 refused=0
while IFS=$'\t' read -r hex want; do
	n=$((n + 1))
	before=$(d_sql "SELECT count(*) FROM imgsync.events")
	d_sql "SELECT pg_notify('imgsync', convert_from(decode('$hex', 'hex'), 'UTF8'))" >/dev/null
	shown=$(unhex "$hex" | head -c 70 | LC_ALL=C tr -c '[:print:]' '?')
	if wait_sql "SELECT count(*) FROM imgsync.events" $((before + 1)) 3 >/dev/null; then
		refused=$((refused + 1))
		m=$(d_sql "SELECT message FROM imgsync.events ORDER BY id DESC LIMIT 1")
		case "$m" in
		"refused command"*"$want"*) pass "refused with the reason: ${m:0:200}" ;;
		*) fail "[$shown] refused saying [$want]"; diag "got: $m" ;;
		esac
	else
		fail "[$shown] refused saying [$want]"
		diag "no event; the daemon's log says: $(grep -a 'command' "$D_LOG" | tail -1)"
	fi
done <"$SCR/payloads"
w=$(grep -c 'warning: refused a ' "$D_LOG")
check "each refused notification is a warning in the daemon's log ($w of $refused)" test "$w" = "$refused"
check "no forged log line" sh -c "! grep -q '^imgsyncd: notice: command: migration 99' '$D_LOG'"
no_ctl() { LC_ALL=C tr -d '\n\t' <"$1" | LC_ALL=C grep -q '[[:cntrl:]]' && return 1; return 0; }
check "no raw control character in the daemon's log" no_ctl "$D_LOG"
ev=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message ~ '[\\x01-\\x1f\\x7f]'")
check "... nor in the events ($ev)" test "$ev" = 0
mig=$(d_sql "SELECT count(*) FROM imgsync.migrations")
check "no refused command started a migration ($mig, was $mig_before)" test "$mig" = "$mig_before"
d_sql "SELECT id, source, target, state, last_error FROM imgsync.migrations" | sed 's/^/# migration: /'

out=$(psql -qXtA -d "$D_DB" -c "SELECT pg_notify('imgsync', repeat('z', 8000))" 2>&1)
case "$out" in *"payload string too long"*) pass "8000 bytes and more never reach the daemon: PostgreSQL refuses the NOTIFY" ;;
*) fail "8000 bytes and more never reach the daemon"; diag "$out" ;; esac

# --- the admin functions, called from SQL ---
sqlerr() { # SQL WANT: the statement fails saying WANT
	local out
	out=$(psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" -c "$1" 2>&1)
	case "$out" in
	*ERROR:*"$2"*) pass "${1:0:90}: ${out:0:160}" ;;
	*) fail "${1:0:90} fails saying [$2]"; diag "got: $out" ;;
	esac
}
sqlerr "SELECT imgsync.command('{\"command\": 42')" "not a JSON command"
sqlerr "SELECT imgsync.command(repeat(' ', 5000))" "at most 4096 bytes"
sqlerr "SELECT imgsync.command(NULL)" "JSON object"
sqlerr "SELECT imgsync.start_migration(NULL, 'cloud')" "name a source and a target"
sqlerr "SELECT imgsync.start_migration('local', 'cloud', 'move', '[1]')" "options must be a JSON object"
sqlerr "SELECT imgsync.start_migration('local', 'cloud', 'move', '{\"prefix\": 5}')" "prefix must be a string"
sqlerr "SELECT imgsync.start_migration('local', 'cloud', 'shred')" "mode must be move or copy"
sqlerr "SELECT imgsync.pause_migration(NULL)" "no migration"
sqlerr "SELECT imgsync.pause_migration(-1)" "no migration -1"
sqlerr "SELECT imgsync.resume_migration(9223372036854775807)" "no migration 9223372036854775807"
sqlerr "SELECT imgsync.cancel_migration(424242)" "no migration 424242"
sqlerr "SELECT imgsync.retry_failed(424242)" "no migration 424242"
sqlerr "SELECT imgsync.start_migration('local', 'nowhere')" "nowhere"
sqlerr "SELECT imgsync.start_migration('local', \$\$x'; DROP TABLE imgsync.images; --\$\$)" "DROP TABLE"
# what was wrongly accepted above must not block what follows
d_sql "SELECT imgsync.cancel_migration(id) FROM imgsync.migrations
       WHERE state IN ('pending', 'running', 'paused') AND id > $mig_before" >/dev/null 2>&1

tables >"$SCR/tables.after"
check "every table is intact, with its rows" diff "$SCR/tables.before" "$SCR/tables.after"

# --- and the daemon goes on ---
check "the daemon is still running" kill -0 "$D_PID"
printf 'after' >"$D_ROOT/after.jpg"
d_sql "INSERT INTO pictures (path) VALUES ('after.jpg')" >/dev/null
check "a put after the barrage is mirrored" \
	wait_sql "SELECT stores @> '{cloud}' FROM imgsync.images WHERE key = 'after.jpg'" t
check "... with its bytes" test "$(s3_cat after.jpg)" = after
d_sql "NOTIFY imgsync, '{\"command\": \"migrate\", \"source\": \"local\", \"target\": \"cloud\", \"mode\": \"copy\", \"dry_run\": true}'" >/dev/null
check "a good command still works" wait_for_log "command: migration"
check "... and its migration ends" \
	wait_sql "SELECT state FROM imgsync.migrations ORDER BY id DESC LIMIT 1" done
d_stop
check "SIGTERM stops it cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
