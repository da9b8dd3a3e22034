# tests/harness/daemon.sh - running the real imgsyncd in end-to-end tests
# (bash, sourced after e2e.sh).  Each test gets its own database, fs root
# and bucket, so tests never see each other's rows or objects.

# d_init NAME [MIRROR_LAYOUT [FS_LAYOUT]]: database, stores, config, schema
d_init() {
	D_NAME=$1
	D_DIR="$T/$1"
	D_DB="imgsync_$1_$$"
	D_ROOT="$D_DIR/local"
	D_BUCKET=$(echo "$1-$$-$RANDOM" | tr '_' '-')
	D_CONF="$D_DIR/imgsyncd.conf"
	D_N=0
	mkdir -p "$D_ROOT"
	psql -qX -d postgres -c "CREATE DATABASE \"$D_DB\"" >/dev/null || return 1
	oracle_rgw mkbucket "$D_BUCKET" >/dev/null || return 1
	printf '%s' "$IMGSYNC_TEST_RGW_SECRET_KEY" >"$D_DIR/secret"
	chmod 600 "$D_DIR/secret"
	cat >"$D_CONF" <<CONF
database {
  conninfo = "host=$PGHOST port=$PGPORT dbname=$D_DB"
  channel = "imgsync"
}
store "local" {
  type = "fs"
  root = "$D_ROOT"
  layout = "${3:-plain}"
}
store "cloud" {
  type = "s3"
  endpoint = "$IMGSYNC_TEST_RGW_ENDPOINT"
  bucket = "$D_BUCKET"
  path_style = true
  access_key_id = "$IMGSYNC_TEST_RGW_ACCESS_KEY"
  secret_access_key_file = "$D_DIR/secret"
  layout = "${2:-plain}"
}
sync { mirrors = { "cloud" } }
transfer {
  concurrency = 32
  max_attempts = ${D_MAX_ATTEMPTS:-8}
}
CONF
	"$BUILD/imgsyncctl" -c "$D_CONF" init >/dev/null
}

# d_add_fs NAME ROOT [SETTINGS]: a file system store NAME at ROOT (made);
# SETTINGS, lines joined by "\n", go into it
d_add_fs() {
	mkdir -p "$2"
	cat >>"$D_CONF" <<CONF
store "$1" {
  type = "fs"
  root = "$2"
$(printf '%b' "${3:-}")
}
CONF
}

# d_mirrors [NAME...]: the sync section mirrors to these stores (none: no
# sync section)
d_mirrors() {
	local list= s
	sed -i '/^sync /d' "$D_CONF"
	[ $# -gt 0 ] || return 0
	for s in "$@"; do list="$list${list:+, }\"$s\""; done
	echo "sync { mirrors = { $list } }" >>"$D_CONF"
}

# d_add_archive ENDPOINT [SETTINGS]: a second bucket of radosgw
# (ARCHIVE, created) as the store "archive", reached at ENDPOINT (radosgw
# or a proxy in front of it); SETTINGS, lines joined by "\n", go into it
d_add_archive() {
	ARCHIVE="$D_BUCKET-archive"
	oracle_rgw mkbucket "$ARCHIVE" >/dev/null || return 1
	cat >>"$D_CONF" <<CONF
store "archive" {
  type = "s3"
  endpoint = "$1"
  bucket = "$ARCHIVE"
  path_style = true
  access_key_id = "$IMGSYNC_TEST_RGW_ACCESS_KEY"
  secret_access_key_file = "$D_DIR/secret"
$(printf '%b' "${2:-}")
}
CONF
}

oracle_rgw() {
	oracle "$IMGSYNC_TEST_RGW_ENDPOINT" "$IMGSYNC_TEST_RGW_ACCESS_KEY" \
		"$IMGSYNC_TEST_RGW_SECRET_KEY" "$@"
}

# d_sql SQL: one value per line, no headers
d_sql() { psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" -c "$1"; }

# d_start: start an imgsyncd; its pid in D_PID, its log in D_LOG
d_start() {
	D_N=$((D_N + 1))
	D_LOG="$D_DIR/imgsyncd.$D_N.log"
	NOTIFY_SOCKET=${D_NOTIFY:-} "$BUILD/imgsyncd" -v -c "$D_CONF" >"$D_LOG" 2>&1 &
	D_PID=$!
	D_PIDS="${D_PIDS:-} $D_PID"
	local i tries=100
	[ "${IMGSYNC_VALGRIND:-0}" = 1 ] && tries=600 # valgrind starts slowly
	for i in $(seq $tries); do
		grep -q 'running as daemon' "$D_LOG" && return 0
		kill -0 "$D_PID" 2>/dev/null || break
		sleep 0.1
	done
	echo "# imgsyncd did not start:"
	sed 's/^/#   /' "$D_LOG"
	return 1
}

# d_stop [PID [WAIT_PID]]: SIGTERM to PID and wait for WAIT_PID (default
# PID: another when the daemon runs under a tracer that outlives it); the
# exit status is in D_RC
d_stop() {
	local p=${1:-$D_PID} i
	local w=${2:-$p}
	kill -TERM "$p" 2>/dev/null
	for i in $(seq 300); do
		kill -0 "$w" 2>/dev/null || break
		sleep 0.1
	done
	wait "$w" 2>/dev/null
	D_RC=$?
}

# d_notify_listen: daemons started from now on tell a socket of ours what
# they would tell systemd (D_NOTIFY); the messages land in $D_DIR/notify.log
d_notify_listen() {
	D_NOTIFY="$D_DIR/notify.sock"
	# python itself in the background, not the py function (a subshell
	# whose kill at the end would leave python running)
	"${IMGSYNC_TEST_PYTHON:-python3}" tests/harness/notify-listen.py "$D_NOTIFY" \
		"$D_DIR/notify.log" &
	D_LISTENER=$!
	local i
	for i in $(seq 50); do
		[ -S "$D_NOTIFY" ] && return 0
		sleep 0.1
	done
	return 1
}

# kill every daemon this test started (on exit)
d_cleanup() {
	local p
	for p in ${D_PIDS:-}; do kill -KILL "$p" 2>/dev/null; done
	[ -n "${D_LISTENER:-}" ] && kill "$D_LISTENER" 2>/dev/null
}
trap 'd_cleanup; _e2e_cleanup' EXIT

# wait_sql SQL WANT [SECONDS]: poll until the query prints WANT
wait_sql() {
	local got i n=$((${3:-30} * 10))
	for i in $(seq $n); do
		got=$(d_sql "$1" 2>&1)
		[ "$got" = "$2" ] && return 0
		sleep 0.1
	done
	echo "# waited for [$1] to give [$2], last got [$got]"
	return 1
}

# check_bucket DESCRIPTION BUCKET MANIFEST [--exact]: every object of the
# manifest ("KEYHEX SIZE SHA256" lines) byte-exact in the bucket, read by
# the independent client; with --exact, nothing else in it; false when not,
# the client's report in $CHECK_BUCKET_LOG
check_bucket() {
	local d=$1 b=$2 m=$3 log="$D_DIR/verify.$RANDOM.log"
	shift 3
	CHECK_BUCKET_LOG=$log
	if oracle_rgw verify "$b" "$m" "$@" >"$log" 2>&1; then
		pass "$d ($(tail -1 "$log"))"
	else
		fail "$d"
		head -10 "$log" | sed 's/^/# /'
		return 1
	fi
}

# wait_for_log TEXT [SECONDS]: until the current daemon's log has TEXT
wait_for_log() {
	local i n=$((${2:-10} * 10))
	for i in $(seq $n); do
		grep -qF -- "$1" "$D_LOG" && return 0
		sleep 0.1
	done
	echo "# no [$1] in $D_LOG; its end:"
	tail -5 "$D_LOG" | sed 's/^/#   /'
	return 1
}

# the objects in the bucket, as "KEY SIZE" lines
s3_keys() {
	oracle_rgw list "$D_BUCKET" | py -c '
import sys
for line in sys.stdin:
    h, size = line.split()[:2]
    print(bytes.fromhex(h).decode(), size)'
}

# s3_cat KEY: the object's bytes on stdout
s3_cat() {
	local hex
	hex=$(printf '%s' "$1" | od -An -tx1 | tr -d ' \n')
	oracle_rgw get "$D_BUCKET" "$hex" "$D_DIR/cat.tmp" >/dev/null && cat "$D_DIR/cat.tmp"
	rm -f "$D_DIR/cat.tmp"
}
