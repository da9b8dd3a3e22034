#!/usr/bin/env bash
# The queue's statements are planned once per session (claim() and
# complete_all()); a daemon that started on empty tables must still find
# rows by key once the tables have grown, before any ANALYZE: no batch
# reads imgsync.images or imgsync.work whole.  (Planned on empty tables, a
# plan PostgreSQL keeps scans them whole, a cost that grows with the
# catalog at every batch.)  And at a trickle of puts a daemon claims once
# per notification: the exchange that writes a result back claims with it,
# so no empty claim follows each result.  The queue's updates (claims,
# renewals, a move's next step) write no index entry (HOT), and the queue's
# functions never JIT-compile their statements.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

DB="imgsync_plans_$$"
psql -qX -d postgres -c "CREATE DATABASE \"$DB\"" >/dev/null || { fail "set-up"; done_testing; exit 1; }
mkdir -p "$T/local"
cat >"$T/imgsyncd.conf" <<CONF
database { conninfo = "host=$PGHOST port=$PGPORT dbname=$DB" }
store "local" { type = "fs"  root = "$T/local" }
CONF
check "imgsyncctl init" "$BUILD/imgsyncctl" -c "$T/imgsyncd.conf" init

# One session, as a daemon's: a claim and a result on nearly empty tables
# (the plans are made then), 5,000 puts with autovacuum kept away (no ANALYZE
# to replan), then a claim of 8 and their results, counting the tables'
# whole scans in that transaction.
psql -qXtA -v ON_ERROR_STOP=1 -d "$DB" >"$T/plans.out" 2>&1 <<'SQL'
ALTER TABLE imgsync.images SET (autovacuum_enabled = off);
ALTER TABLE imgsync.work SET (autovacuum_enabled = off);
SELECT imgsync.register_daemon('test', 1, 'plans') AS d \gset
-- a round on tables holding one image: claim it, write its result back
SELECT count(imgsync.put('first.jpg', 'local'));
CREATE TEMP TABLE claimed AS
	SELECT * FROM imgsync.exchange(:d, NULL, 5, 8, '60 s', 0) WHERE key IS NOT NULL;
PREPARE results AS SELECT count(*) FROM imgsync.exchange(:d,
	(SELECT jsonb_agg(jsonb_build_object('key', key, 'gen', gen, 'token', token, 'op', 'put',
		'ok', true, 'version', version, 'started_at', claimed_at, 'stores', '[]'::jsonb))
	   FROM claimed), 5, 8, '60 s', 0);
EXECUTE results;
SELECT 'first ' || count(*) FROM claimed;
SELECT count(imgsync.put('p/' || i || '.jpg', 'local')) FROM generate_series(1, 5000) i;
BEGIN;
CREATE TEMP TABLE before AS
	SELECT relname, seq_scan, n_tup_upd, n_tup_hot_upd
	  FROM pg_stat_xact_user_tables WHERE schemaname = 'imgsync';
TRUNCATE claimed;
INSERT INTO claimed SELECT * FROM imgsync.exchange(:d, NULL, 5, 8, '60 s', 0) WHERE key IS NOT NULL;
SELECT 'renewed ' || count(*) FILTER (WHERE h.renewed)
  FROM imgsync.heartbeat(:d, (SELECT array_agg(key) FROM claimed),
			 (SELECT array_agg(token) FROM claimed), 'running', 8, 0, 0, '60 s') h;
SELECT 'updates work ' || (a.n_tup_upd - coalesce(b.n_tup_upd, 0)) || ' hot '
       || (a.n_tup_hot_upd - coalesce(b.n_tup_hot_upd, 0))
  FROM pg_stat_xact_user_tables a LEFT JOIN before b USING (relname)
 WHERE a.schemaname = 'imgsync' AND a.relname = 'work';
EXECUTE results;
SELECT 'claimed ' || count(*) FROM claimed;
SELECT 'scans ' || a.relname || ' ' || (a.seq_scan - coalesce(b.seq_scan, 0))
  FROM pg_stat_xact_user_tables a LEFT JOIN before b USING (relname)
 WHERE a.schemaname = 'imgsync' AND a.relname IN ('images', 'work')
 ORDER BY a.relname;
COMMIT;
SELECT 'left ' || count(*) FROM imgsync.work;
SQL
rc=$?
check "the session ran (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/# /' "$T/plans.out"
check "the first round claimed the one image" grep -qx 'first 1' "$T/plans.out"
check "the claim took 8 of the 5,000 puts" grep -qx 'claimed 8' "$T/plans.out"
check "a heartbeat renewed the 8 leases, found by key" grep -qx 'renewed 8' "$T/plans.out"
# each claim and each renewal updates a queue row: with no index on the
# lease columns and room on the page, none writes an index entry (HOT)
u=$(sed -n 's/^updates work //p' "$T/plans.out")
check "the claim's and the heartbeat's 16 updates of imgsync.work are all HOT (${u:-?})" \
	test "${u:-x}" = "16 hot 16"
check "their results took them off the queue" grep -qx 'left 4992' "$T/plans.out"
for t in images work; do
	n=$(sed -n "s/^scans $t //p" "$T/plans.out")
	check "no whole scan of imgsync.$t in the claim, a heartbeat and the results (${n:-?})" test "${n:-x}" = 0
done

# A move's copy recorded: the key's row stays queued for its next step,
# the source's delete, which comes without a wait and keeps its place in
# the queue, so that update is HOT too.
psql -qXtA -v ON_ERROR_STOP=1 -d "$DB" >"$T/move.out" 2>&1 <<'SQL'
SELECT id AS d FROM imgsync.daemons \gset
DELETE FROM imgsync.work; -- the puts left: the move is alone in the queue
SELECT imgsync.start_migration('local', 'cloud') AS m \gset
SELECT imgsync.advance_migrations(16);
CREATE TEMP TABLE copying AS
	SELECT * FROM imgsync.exchange(:d, NULL, 5, 8, '60 s', 0) WHERE key IS NOT NULL;
BEGIN;
CREATE TEMP TABLE before AS
	SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
	 WHERE schemaname = 'imgsync' AND relname = 'work';
SELECT count(*) FROM imgsync.exchange(:d,
	(SELECT jsonb_agg(jsonb_build_object('key', key, 'gen', gen, 'token', token, 'op', 'migrate',
		'ok', true, 'version', version, 'started_at', claimed_at, 'stores', '["cloud"]'::jsonb,
		'migration', :m, 'home', 'cloud', 'next_step', 'delete-source', 'src_tag', 't@1'))
	   FROM copying), 5, 0, '60 s', 0);
SELECT 'next ' || count(*) FROM imgsync.work
 WHERE step = 'delete-source' AND lease_token IS NULL AND not_before <= now();
SELECT 'updates work ' || (a.n_tup_upd - b.n_tup_upd) || ' hot ' || (a.n_tup_hot_upd - b.n_tup_hot_upd)
  FROM pg_stat_xact_user_tables a, before b
 WHERE a.schemaname = 'imgsync' AND a.relname = 'work';
COMMIT;
SQL
rc=$?
check "the move's session ran (exit $rc)" test "$rc" = 0
[ "$rc" = 0 ] || sed 's/^/# /' "$T/move.out"
check "8 copies recorded: their delete steps are ready" grep -qx 'next 8' "$T/move.out"
u=$(sed -n 's/^updates work //p' "$T/move.out")
check "the 8 updates to the next step are HOT (${u:-?})" test "${u:-x}" = "8 hot 8"

# JIT: the queue's functions (claim(), complete_all(), heartbeat()) run
# with jit = off.  Planned with enable_seqscan = off, a scan with no index
# to use is costed so high that PostgreSQL would otherwise compile it at
# every call.  With compilation forced for every statement of the session,
# auto_explain shows each statement nested in them: none compiled, while
# the session's own statements (and exchange()'s calls of them) are, which
# shows that JIT works here at all.
if [ "$(psql -qXtA -d "$DB" -c 'SELECT pg_jit_available()' 2>/dev/null)" != t ]; then
	skip "the queue's functions never JIT-compile" "JIT is not available in this PostgreSQL (no llvmjit)"
else
	psql -qXtA -v ON_ERROR_STOP=1 -d "$DB" >"$T/jit.out" 2>&1 <<'SQL'
SELECT id AS d FROM imgsync.daemons \gset
DELETE FROM imgsync.work;
SELECT count(imgsync.put('jit/' || i || '.jpg', 'local')) FROM generate_series(1, 4) i;
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_level = notice;
SET client_min_messages = notice;
SET jit = on;
SET jit_above_cost = 0;
CREATE TEMP TABLE c AS
	SELECT * FROM imgsync.exchange(:d, NULL, 5, 4, '60 s', 0) WHERE key IS NOT NULL;
SELECT count(*) FROM imgsync.heartbeat(:d, (SELECT array_agg(key) FROM c),
	(SELECT array_agg(token) FROM c), 'running', 4, 0, 0, '60 s');
SELECT count(*) FROM imgsync.exchange(:d,
	(SELECT jsonb_agg(jsonb_build_object('key', key, 'gen', gen, 'token', token, 'op', 'put',
		'ok', true, 'version', version, 'started_at', claimed_at, 'stores', '[]'::jsonb))
	   FROM c), 5, 0, '60 s', 0);
SQL
	rc=$?
	check "the session with JIT forced ran (exit $rc)" test "$rc" = 0
	[ "$rc" = 0 ] || sed 's/^/# /' "$T/jit.out"
	# "COMPILED NESTED": plans that show JIT, and those of them nested in
	# the queue's functions (any statement but the session's own and
	# exchange()'s calls)
	read -r compiled nested inner <<<"$(py - "$T/jit.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
outer = ("CREATE TEMP TABLE", "SELECT count(*) FROM imgsync.heartbeat(",
         "SELECT count(*) FROM imgsync.exchange(", "SELECT * FROM imgsync.complete(",
         "SELECT c.*")
compiled = nested = inner = 0
for block in text.split("NOTICE:  duration:")[1:]:
    m = re.search(r"Query Text: (.*)", block)
    q = m.group(1).strip() if m else ""
    mine = not q.startswith(outer)
    inner += mine
    if "JIT:" in block:
        compiled += 1
        nested += mine
        if mine:
            print("# compiled:", q[:100], file=sys.stderr)
print(compiled, nested, inner)
PY
)"
	check "statements nested in claim(), heartbeat() and complete_all() were shown ($inner)" test "${inner:-0}" -ge 5
	check "the session's own statements were compiled ($compiled): JIT works here" test "${compiled:-0}" -ge 3
	check "... but none of those nested in the queue's functions ($nested)" test "${nested:-x}" = 0
fi

# A trickle: 30 puts a fifth of a second apart, each mirrored before the
# next.  The daemon's session counts its calls of imgsync.claim() (those
# inside imgsync.exchange() included); its statistics reach the server
# when the daemon stops.
d_init trickle || { fail "set-up"; done_testing; exit 1; }
d_sql "ALTER DATABASE \"$D_DB\" SET track_functions = 'all'" >/dev/null
check "imgsyncd starts" d_start
for i in $(seq 30); do
	printf 'image %d' "$i" >"$D_ROOT/t$i.jpg"
	d_sql "SELECT imgsync.put('t$i.jpg', 'local')" >/dev/null
	sleep 0.2
done
check "the 30 puts reach the mirror" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 30 30
d_stop
check "imgsyncd stops (exit $D_RC)" test "$D_RC" = 0
calls() { d_sql "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE schemaname = 'imgsync' AND funcname = '$1'"; }
claims=$(calls claim)
exchanges=$(calls exchange)
alone=$((claims - exchanges))
# one per put's notification, and a few at start and from the poll; an
# empty claim after each result would make it 60 or more
check "claims of their own: $alone for 30 puts ($claims claims, $exchanges exchanges)" \
	test "$claims" -gt 0 -a "$alone" -le 40
done_testing
