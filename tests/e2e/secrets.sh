#!/usr/bin/env bash
# Secrets never leak.  A full run with distinctive secrets: the S3 secret
# key (in a file, and inline in the configuration), an S3 session token
# (sent as a header: the HTTP trace must hide it), a PostgreSQL password
# in the conninfo (a role that must authenticate with it), a wrong S3
# secret and a wrong PostgreSQL password.  The daemon runs with -v and
# every HTTP exchange shown (IMGSYNC_CURL_VERBOSE=1); it mirrors to S3,
# runs a migration, a migration that fails on the wrong secret, a reload
# (SIGHUP) and a refused reload; imgsyncctl runs status, workers, verify
# and migrate; `imgsyncd --check-config` checks good and broken files.
# Then every log, every output, the status views and tables, the
# PostgreSQL server log and the command lines of all processes are
# searched for each secret (also percent-encoded): none may appear.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

D_MAX_ATTEMPTS=2 d_init secrets || { fail "set-up"; done_testing; exit 1; }
OUTD="$D_DIR/out"
mkdir -p "$OUTD"
rnd() { od -An -tx1 -N8 /dev/urandom | tr -d ' \n'; }
S3SK=$IMGSYNC_TEST_RGW_SECRET_KEY
WRONGSK="WrongS3Secret+$(rnd)/canary"
PGPW="PgPassword-$(rnd)-canary"
WRONGPW="WrongPgPassword-$(rnd)-canary"
TOKEN="SessionToken+$(rnd)/canary="
ROLE="imgsync_pw_$$"

# --- a role that logs in with a password ---
psql -qX -d postgres -v ON_ERROR_STOP=1 \
	-c "CREATE ROLE $ROLE LOGIN SUPERUSER PASSWORD '$PGPW'" >/dev/null
hba=$(psql -qXtA -d postgres -c 'SHOW hba_file')
pw_enforced=0
if [ -w "$hba" ]; then
	cp "$hba" "$D_DIR/hba.saved"
	# written in place: the file keeps its owner (PostgreSQL's user)
	{ echo "local all $ROLE scram-sha-256"; cat "$D_DIR/hba.saved"; } >"$D_DIR/hba.new"
	cat "$D_DIR/hba.new" >"$hba"
	psql -qXtA -d postgres -c 'SELECT pg_reload_conf()' >/dev/null
	trap 'cat "$D_DIR/hba.saved" >"$hba"; psql -qXtA -d postgres -c "SELECT pg_reload_conf()" >/dev/null 2>&1; d_cleanup; _e2e_cleanup' EXIT
	sleep 0.3
	if PGPASSWORD=nope psql -qXtA "host=$PGHOST port=$PGPORT dbname=$D_DB user=$ROLE" -c 'SELECT 1' >/dev/null 2>&1; then
		diag "password authentication is not enforced; the password is present but unused"
	else
		pw_enforced=1
	fi
else
	diag "cannot edit $hba: the password is present in the conninfo but unused"
fi
if [ $pw_enforced = 1 ]; then
	check "the daemon's role must authenticate with its password (scram-sha-256)" \
		sh -c "PGPASSWORD='$PGPW' psql -qXtA 'host=$PGHOST port=$PGPORT dbname=$D_DB user=$ROLE' -c 'SELECT 1' >/dev/null"
else
	skip "password authentication: pg_hba.conf cannot be changed here"
fi

# --- the configuration: secrets in a file, inline, and in the conninfo ---
printf '%s' "$S3SK" >"$D_DIR/secret"
sed -i -e "s|conninfo = \"\\(.*\\)\"|conninfo = \"\\1 user=$ROLE password=$PGPW\"|" -e '/^sync /d' "$D_CONF"
cat >>"$D_CONF" <<CONF
store "inline" {
  type = "s3"
  endpoint = "$IMGSYNC_TEST_RGW_ENDPOINT"
  bucket = "$D_BUCKET"
  prefix = "inline/"
  path_style = true
  access_key_id = "$IMGSYNC_TEST_RGW_ACCESS_KEY"
  secret_access_key = "$S3SK"
}
store "wrong" {
  type = "s3"
  endpoint = "$IMGSYNC_TEST_RGW_ENDPOINT"
  bucket = "$D_BUCKET"
  prefix = "wrong/"
  path_style = true
  access_key_id = "$IMGSYNC_TEST_RGW_ACCESS_KEY"
  secret_access_key = "$WRONGSK"
}
store "tokened" {
  type = "s3"
  endpoint = "$IMGSYNC_TEST_RGW_ENDPOINT"
  bucket = "$D_BUCKET"
  prefix = "tokened/"
  path_style = true
  access_key_id = "$IMGSYNC_TEST_RGW_ACCESS_KEY"
  secret_access_key_file = "$D_DIR/secret"
  session_token_file = "$D_DIR/token"
}
sync { mirrors = { "cloud" } }
CONF
printf '%s\n' "$TOKEN" >"$D_DIR/token"
chmod 600 "$D_DIR/token"
check "the configuration holds the secrets (so the searches below can find them)" \
	sh -c "grep -qF -- '$PGPW' '$D_CONF' && grep -qF -- '$WRONGSK' '$D_CONF' && grep -qF -- '$S3SK' '$D_DIR/secret' && grep -qF -- '$TOKEN' '$D_DIR/token'"

# run COMMAND..., its stdout and stderr kept under NAME
n_out=0
keep() { # NAME COMMAND...
	local name=$1
	shift
	n_out=$((n_out + 1))
	"$@" >"$OUTD/$n_out.$name.out" 2>"$OUTD/$n_out.$name.err"
}
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }

check "imgsyncd --check-config accepts it" keep check-config "$BUILD/imgsyncd" --check-config -c "$D_CONF"
bad() { # NAME SED: a broken copy of the configuration, checked
	sed "$2" "$D_CONF" >"$D_DIR/$1.conf"
	keep "check-$1" "$BUILD/imgsyncd" --check-config -c "$D_DIR/$1.conf"
	test $? = 78
}
check "--check-config refuses a secret with junk after it (exit 78)" \
	bad junk "s|secret_access_key = \"$WRONGSK\"|secret_access_key = \"$WRONGSK\" junk|"
check "--check-config refuses an unquoted secret (exit 78)" \
	bad unquoted "s|secret_access_key = \"$WRONGSK\"|secret_access_key = $WRONGSK|"
check "--check-config refuses a broken conninfo holding a password (exit 78)" \
	bad conninfo "s|password=$PGPW\"|password=$PGPW sslmode\"|"
check "--check-config refuses an unknown option next to a secret (exit 78)" \
	bad option "s|secret_access_key = \"$WRONGSK\"|secret_access_key = \"$WRONGSK\"\n  secret_acess_key = \"$WRONGSK\"|"

# --- a full run ---
export IMGSYNC_CURL_VERBOSE=1
check "imgsyncd starts with -v, every HTTP exchange shown, logging in with the password" d_start
unset IMGSYNC_CURL_VERBOSE
ps -eo pid,args >"$OUTD/ps.running"
d_sql "CREATE TABLE pictures (id serial PRIMARY KEY, path text NOT NULL)" >/dev/null
d_sql "SELECT imgsync.watch_table('pictures', 'local', key_column => 'path')" >/dev/null
for i in 1 2 3; do head -c $((i * 3000)) /dev/urandom >"$D_ROOT/p$i.jpg"; done
d_sql "INSERT INTO pictures (path) VALUES ('p1.jpg'), ('p2.jpg'), ('p3.jpg')" >/dev/null
check "images are mirrored to S3" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 3
check "imgsyncctl migrate local inline --copy --wait" keep migrate ctl migrate local inline --copy --wait
id=$(d_sql "SELECT id FROM imgsync.migrations ORDER BY id DESC LIMIT 1")
check "... a migration to the store with the inline secret is done" \
	wait_sql "SELECT state FROM imgsync.migrations WHERE id = $id" done
d_sql "SELECT imgsync.start_migration('local', 'wrong', 'copy')" >/dev/null
check "a migration to the store with the wrong secret fails" \
	wait_sql "SELECT state FROM imgsync.migrations ORDER BY id DESC LIMIT 1" failed
m=$(d_sql "SELECT last_error FROM imgsync.migration_failures LIMIT 1")
case "$m" in *SignatureDoesNotMatch*secret*) pass "saying the secret is wrong: ${m:0:200}" ;;
*) fail "saying the secret is wrong"; diag "$m" ;; esac
# a session token radosgw has not issued: the copy may well be refused,
# what matters is that the token went out and was never shown
d_sql "SELECT imgsync.start_migration('local', 'tokened', 'copy')" >/dev/null
id=$(d_sql "SELECT id FROM imgsync.migrations ORDER BY id DESC LIMIT 1")
check "a migration to the store with a session token ends" \
	wait_sql "SELECT state IN ('done', 'failed') FROM imgsync.migrations WHERE id = $id" t 60
check "the session token was sent, and the trace hid it" \
	grep -q '^> x-amz-security-token: (hidden)' "$D_DIR/imgsyncd.1.log"
keep status ctl status
keep workers ctl workers
keep verify ctl verify local cloud
keep verify-wrong ctl verify local wrong
check "imgsyncctl verify against the wrong secret fails" test -s "$OUTD/$n_out.verify-wrong.err" -o -s "$OUTD/$n_out.verify-wrong.out"
sed -i 's/concurrency = 32/concurrency = 16/' "$D_CONF"
kill -HUP "$D_PID"
check "SIGHUP reloads" wait_for_log "reloaded $D_CONF"
sed -i "s|secret_access_key = \"$WRONGSK\"|secret_access_key = \"$WRONGSK\" junk|" "$D_CONF"
kill -HUP "$D_PID"
check "a reload of a broken file is refused" wait_for_log "reload refused"
sed -i "s|secret_access_key = \"$WRONGSK\" junk|secret_access_key = \"$WRONGSK\"|" "$D_CONF"
ps -eo pid,args >"$OUTD/ps.later"
d_stop
check "SIGTERM stops it cleanly (exit $D_RC)" test "$D_RC" = 0

# a wrong PostgreSQL password, for the tool and the daemon
sed "s|password=$PGPW|password=$WRONGPW|" "$D_CONF" >"$D_DIR/wrongpw.conf"
keep wrongpw-status "$BUILD/imgsyncctl" -c "$D_DIR/wrongpw.conf" status
if [ $pw_enforced = 1 ]; then
	check "imgsyncctl says the password was refused" grep -q 'password authentication failed' "$OUTD/$n_out.wrongpw-status.err"
	timeout 60 "$BUILD/imgsyncd" -v -c "$D_DIR/wrongpw.conf" >"$D_DIR/imgsyncd.wrongpw.log" 2>&1
	rc=$?
	check "imgsyncd with a wrong password exits 69 (exit $rc)" test "$rc" = 69
fi

# --- everything there is to read ---
for v in events attempts dead_work work migration_status migration_failures workers queue_status daemons migrations images settings; do
	d_sql "SELECT * FROM imgsync.$v" >"$OUTD/sql.$v" 2>&1
done
psql -qXtA -d postgres -c "SELECT * FROM pg_stat_activity" >"$OUTD/sql.pg_stat_activity" 2>&1
pglog=${IMGSYNC_TEST_SERVERS_DIR:+$IMGSYNC_TEST_SERVERS_DIR/pg/postgres.log}
[ -n "$pglog" ] && [ -r "$pglog" ] && cp "$pglog" "$OUTD/postgres.log"
files=$(ls "$D_DIR"/*.log "$OUTD"/* | wc -l)
check "the daemon logged at debug level with HTTP exchanges ($(cat "$D_DIR"/imgsyncd.*.log | wc -l) lines)" \
	grep -q 'Authorization: AWS4-HMAC-SHA256' "$D_DIR/imgsyncd.1.log"
leaks() { # SECRET: the files that contain it, raw or percent-encoded
	local enc
	enc=$(py -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1")
	grep -rlF -e "$1" -e "$enc" "$D_DIR"/*.log "$OUTD" 2>/dev/null
}
for s in S3SK WRONGSK PGPW WRONGPW TOKEN; do
	l=$(leaks "${!s}")
	if [ -z "$l" ]; then
		pass "$s appears in none of $files logs, outputs, views, tables and process lists"
	else
		fail "$s appears in none of the logs, outputs, views, tables and process lists"
		for f in $l; do
			diag "in $f: $(grep -F -e "${!s}" "$f" | head -2 | cut -c1-200)"
		done
	fi
done
check "the process list was searched while the daemon ran" grep -q "imgsyncd -v -c $D_CONF" "$OUTD/ps.running"
psql -qX -d postgres -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
done_testing
