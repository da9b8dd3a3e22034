# shellcheck shell=bash
# Throwaway test servers on loopback: PostgreSQL, Ceph radosgw and (when installed) moto_server.
#
#   . tests/harness/servers.sh
#   dir=$(mktemp -d)
#   trap 'servers_stop; rm -rf "$dir"' EXIT
#   trap 'exit 130' INT TERM
#   servers_start "$dir" || exit 1
#
# servers_start DIR   starts everything with all files under DIR (an empty directory owned by
#                     the caller) and exports:
#     PGHOST PGPORT PGDATABASE PGUSER            psql works with no arguments
#     IMGSYNC_TEST_RGW_ENDPOINT IMGSYNC_TEST_RGW_ACCESS_KEY IMGSYNC_TEST_RGW_SECRET_KEY
#     IMGSYNC_TEST_RGW_REGION                    radosgw (path-style; the secret holds '+' and '/')
#     IMGSYNC_TEST_MOTO_ENDPOINT IMGSYNC_TEST_MOTO_REGION IMGSYNC_TEST_MOTO_SKIP
#     IMGSYNC_TEST_PYTHON                        an interpreter that can import botocore, or empty
#     IMGSYNC_TEST_SERVERS_DIR IMGSYNC_TEST_PG_DATA IMGSYNC_TEST_PG_BINDIR IMGSYNC_TEST_CEPH_CONF
#   On failure it names the server, prints the tail of its log, stops what it started and
#   returns non-zero.
# servers_stop [DIR]  stops what servers_start started: every set this very (sub)shell started,
#                     or the one under DIR; idempotent, bounded in time (about a second), safe
#                     in EXIT/INT/TERM traps, also after a partial or failed start.
# servers_pg_stop / servers_pg_start [DIR]    stop / start Postgres again (same socket and port)
# servers_rgw_stop / servers_rgw_start [DIR]  stop / start radosgw again (same port and user)
#
# Knobs: IMGSYNC_TEST_SERVERS=postgres (start PostgreSQL alone: the S3 variables are then
#          empty; for what needs no store, such as bench/queue-sql),
#        IMGSYNC_TEST_START_TIMEOUT (seconds per server, default 60),
#        IMGSYNC_TEST_RGW_MEMSTORE_BYTES (OSD capacity in RAM, default 4 GiB),
#        IMGSYNC_TEST_PG_OSUSER (who runs Postgres when we are root, default postgres).
#
# Works with `set -euo pipefail` in the caller: every command that may fail is tested.

# The sets started so far, as space-separated PID:DIR words: PID is the (sub)shell that called
# servers_start, so a subshell's servers_stop never stops its parent's servers.
_SRV_DIRS=${_SRV_DIRS:-}

_srv_log() { printf 'servers: %s\n' "$*" >&2; }

# _srv_alive PID: the process exists and is not a zombie.
_srv_alive() {
	local st=
	[ -n "${1:-}" ] || return 1
	kill -0 "$1" 2>/dev/null || return 1
	if [ -r "/proc/$1/stat" ]; then
		# the command name may contain spaces: take the field after the last ')'
		st=$(sed 's/.*) \([A-Za-z]\).*/\1/' "/proc/$1/stat" 2>/dev/null) || st=
		[ "$st" != Z ] && [ "$st" != X ] || return 1
	fi
	return 0
}

# _srv_cmdline_has PID TEXT: the process's command line contains TEXT (guards against pid reuse).
_srv_cmdline_has() {
	local cl
	[ -r "/proc/$1/cmdline" ] || return 0 # cannot tell (no procfs): trust the record
	cl=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	case "$cl" in *"$2"*) return 0 ;; esac
	return 1
}

# _srv_descendants PID: the pids of all descendants of PID, deepest last.
_srv_descendants() {
	local table todo p c out=
	table=$(ps -e -o pid=,ppid= 2>/dev/null) || return 0
	todo=$1
	while [ -n "$todo" ]; do
		set -- $todo
		p=$1
		shift
		todo=$*
		for c in $(printf '%s\n' "$table" | awk -v pp="$p" '$2 == pp { print $1 }'); do
			out="$out $c"
			todo="$todo $c"
		done
	done
	printf '%s\n' "$out"
}

# _srv_kill_tree PID: SIGKILL PID and everything below it, and wait (2 s at most) until
# they are gone.
_srv_kill_tree() {
	local d
	_srv_alive "$1" || return 0
	d=$(_srv_descendants "$1")
	kill -STOP "$1" 2>/dev/null || true # no new children while we collect
	d="$d $(_srv_descendants "$1")"
	# shellcheck disable=SC2086
	kill -KILL "$1" $d 2>/dev/null || true
	# shellcheck disable=SC2086
	_srv_wait_gone 20 "$1" $d || true
}

# _srv_wait_gone TENTHS PID...: wait up to TENTHS tenths of a second until none of the PIDs is
# alive; 1 if some still are.
_srv_wait_gone() {
	local n=$(($1 * 2)) p left
	shift
	while :; do
		left=
		for p in "$@"; do _srv_alive "$p" && left="$left $p"; done
		[ -z "$left" ] && return 0
		[ "$n" -le 0 ] && return 1
		n=$((n - 1))
		sleep 0.05
	done
}

# _srv_free_ports N: N distinct free TCP ports on 127.0.0.1, one per line, from 20000-32767
# (below the kernel's ephemeral range, so outgoing connections do not take them).
_srv_free_ports() {
	local py
	for py in /usr/bin/python3 python3; do
		command -v "$py" >/dev/null 2>&1 || continue
		"$py" - "$1" <<'EOF' && return 0
import random, socket, sys
n, got, tries = int(sys.argv[1]), [], 0
while len(got) < n and tries < 2000:
    tries += 1
    p = random.randint(20000, 32767)
    if p in got:
        continue
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    got.append(p)
if len(got) < n:
    sys.exit(1)
print("\n".join(map(str, got)))
EOF
	done
	# no python: probe with bash's /dev/tcp (a refused connection means nobody listens)
	local got=" " p i=0
	while [ "$i" -lt "$1" ]; do
		p=$((20000 + RANDOM % 12768))
		case "$got" in *" $p "*) continue ;; esac
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			got="$got$p "
			echo "$p"
			i=$((i + 1))
		fi
	done
}

# _srv_port_open PORT
_srv_port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# _srv_randhex NBYTES
_srv_randhex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# _srv_spawn DIR NAME LOG CMD...: start CMD in the background in its own session (so a ^C at
# the terminal does not reach it; the trap that calls servers_stop does). The new process
# records "NAME PID" in DIR/.servers/pids itself before exec; _srv_spawn returns once the
# record is there and sets _SRV_SPAWNED to the pid.
_srv_spawn() {
	local dir=$1 name=$2 log=$3 n=200
	shift 3
	_SRV_SPAWNED=
	rm -f "$dir/.servers/$name.spawn"
	setsid bash -c 'echo "$1 $$" >>"$2/pids"; echo $$ >"$2/$1.spawn"; shift 2; exec "$@"' \
		_ "$name" "$dir/.servers" "$@" </dev/null >>"$log" 2>&1 &
	while [ ! -s "$dir/.servers/$name.spawn" ] && [ "$n" -gt 0 ]; do
		n=$((n - 1))
		sleep 0.01
	done
	_SRV_SPAWNED=$(cat "$dir/.servers/$name.spawn" 2>/dev/null) || _SRV_SPAWNED=
	[ -n "$_SRV_SPAWNED" ]
}

# _srv_pid DIR NAME: the last recorded pid of NAME.
_srv_pid() {
	[ -r "$1/.servers/pids" ] || return 0
	awk -v n="$2" '$1 == n { p = $2 } END { if (p != "") print p }' "$1/.servers/pids"
}

# _srv_runuser: the path of runuser (in /usr/sbin, which a root PATH may lack).
_srv_runuser() {
	local p
	for p in "$(command -v runuser 2>/dev/null)" /usr/sbin/runuser /sbin/runuser; do
		[ -n "$p" ] && [ -x "$p" ] && { echo "$p"; return 0; }
	done
	echo runuser
}

# _srv_as_pg CMD...: run CMD as the Postgres OS user when we are root.
_srv_as_pg() {
	if [ "$(id -u)" = 0 ]; then
		"$(_srv_runuser)" -u "${IMGSYNC_TEST_PG_OSUSER:-postgres}" -- "$@"
	else
		"$@"
	fi
}

# _srv_pg_bindir: directory holding initdb, pg_ctl and postgres.
_srv_pg_bindir() {
	local p d best='' bestv=-1 v
	p=$(command -v initdb 2>/dev/null) || p=
	if [ -n "$p" ]; then
		d=$(dirname "$(readlink -f "$p")")
		if [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return 0
		fi
	fi
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] || continue
		v=$(basename "$(dirname "$d")")
		v=${v%%.*}
		case "$v" in '' | *[!0-9]*) v=0 ;; esac
		if [ "$v" -gt "$bestv" ]; then
			bestv=$v
			best=$d
		fi
	done
	[ -n "$best" ] || return 1
	echo "$best"
}

# _srv_tail LOG...: the end of logs, for failure reports.
_srv_tail() {
	local f
	for f in "$@"; do
		[ -s "$f" ] || continue
		printf -- '--- last lines of %s ---\n' "$f" >&2
		tail -n 25 "$f" >&2
	done
}

# ---------------------------------------------------------------------------------------
# PostgreSQL

_srv_pg_start_server() { # DIR
	local dir=$1 bindir
	bindir=$(cat "$dir/pg/bindir") || return 1
	(cd "$dir/pg" && _srv_as_pg "$bindir/pg_ctl" start -w -t "${IMGSYNC_TEST_START_TIMEOUT:-60}" \
		-D "$dir/pg/data" -l "$dir/pg/postgres.log" -s) >>"$dir/pg/start.log" 2>&1
}

# _srv_pg_setup DIR PORT: initdb, start, create the caller's role and imgsync_test.
_srv_pg_setup() {
	local dir=$1 port=$2 bindir me boot osuser
	me=$(id -un)
	bindir=$(cat "$dir/pg/bindir") || return 1
	if [ "$(id -u)" = 0 ]; then
		osuser=${IMGSYNC_TEST_PG_OSUSER:-postgres}
		boot=$osuser
		id -u "$osuser" >/dev/null 2>&1 || { echo "no user $osuser to run Postgres as"; return 1; }
		chown "$osuser" "$dir/pg" "$dir/pg/sock" || return 1
		if ! "$(_srv_runuser)" -u "$osuser" -- test -x "$dir/pg/sock"; then
			echo "user $osuser cannot reach $dir (a parent directory is not traversable)"
			return 1
		fi
	else
		boot=$me
	fi
	echo "initdb as $boot"
	(cd "$dir/pg" && _srv_as_pg "$bindir/initdb" -D "$dir/pg/data" -U "$boot" -A trust -E UTF8 \
		--no-locale -N) >"$dir/pg/initdb.log" 2>&1 || { cat "$dir/pg/initdb.log"; return 1; }
	cat >>"$dir/pg/data/postgresql.conf" <<EOF || return 1

# imgsync test harness
listen_addresses = ''
port = $port
unix_socket_directories = '$dir/pg/sock'
unix_socket_permissions = 0777
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 32MB
max_wal_size = 1GB
log_min_messages = warning
log_line_prefix = '%m [%p] '
EOF
	_srv_pg_start_server "$dir" || { cat "$dir/pg/start.log"; return 1; }
	if [ "$me" != "$boot" ]; then
		"$bindir/psql" -X -q -h "$dir/pg/sock" -p "$port" -U "$boot" -d postgres \
			-v ON_ERROR_STOP=1 -v me="$me" <<'EOF' || return 1
CREATE ROLE :"me" SUPERUSER LOGIN;
EOF
	fi
	"$bindir/psql" -X -q -h "$dir/pg/sock" -p "$port" -U "$me" -d postgres \
		-v ON_ERROR_STOP=1 -v me="$me" <<'EOF' || return 1
CREATE DATABASE imgsync_test OWNER :"me";
EOF
	echo "postgres ready"
}

# ---------------------------------------------------------------------------------------
# Ceph radosgw

# _srv_ceph CONF ARGS...: the ceph CLI, bounded in time.
_srv_ceph() {
	local conf=$1
	shift
	timeout "${IMGSYNC_TEST_START_TIMEOUT:-60}" ceph -c "$conf" --connect-timeout 30 "$@"
}

# _srv_ceph_retry DIR CONF ARGS...: an idempotent ceph command, retried while the monitor runs.
# Just after it starts, the monitor now and then refuses a command (EPERM, "problem getting
# command descriptions": the client sent it before it knew the cluster's fsid).
_srv_ceph_retry() {
	local dir=$1 n
	shift
	n=$((${IMGSYNC_TEST_START_TIMEOUT:-60} * 10))
	until _srv_ceph "$@"; do
		n=$((n - 1))
		if [ "$n" -le 0 ] || ! _srv_alive "$(_srv_pid "$dir" ceph-mon)"; then
			echo "ceph-mon does not answer"
			return 1
		fi
		echo "(retrying)"
		sleep 0.1
	done
}

_srv_rgw_start_daemon() { # DIR
	local dir=$1
	_srv_spawn "$dir" radosgw "$dir/ceph/log/daemons.log" \
		radosgw -f -c "$dir/ceph/ceph.conf" -n client.rgw.test || { echo "radosgw did not start"; return 1; }
}

# _srv_rgw_wait DIR PORT: wait until radosgw answers on PORT.
_srv_rgw_wait() {
	local dir=$1 port=$2 n pid
	n=$((${IMGSYNC_TEST_START_TIMEOUT:-60} * 20))
	while ! _srv_port_open "$port"; do
		pid=$(_srv_pid "$dir" radosgw)
		if [ -n "$pid" ] && ! _srv_alive "$pid"; then
			echo "radosgw exited"
			return 1
		fi
		n=$((n - 1))
		[ "$n" -gt 0 ] || { echo "radosgw: port $port not answering"; return 1; }
		sleep 0.05
	done
}

# _srv_rgw_setup DIR MONPORT RGWPORT ACCESS SECRET
_srv_rgw_setup() {
	local dir=$1 monport=$2 rgwport=$3 ak=$4 sk=$5 c fsid osdid
	c=$dir/ceph/ceph.conf
	fsid=$(cat /proc/sys/kernel/random/uuid) || return 1
	osdid=$(cat /proc/sys/kernel/random/uuid) || return 1
	mkdir -p "$dir/ceph/run" "$dir/ceph/log" "$dir/ceph/mon" "$dir/ceph/osd" || return 1
	cat >"$c" <<EOF || return 1
[global]
fsid = $fsid
mon host = v1:127.0.0.1:$monport
mon initial members = a
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = $dir/ceph/keyring
run dir = $dir/ceph/run
admin socket = $dir/ceph/run/\$name.asok
pid file = $dir/ceph/run/\$name.pid
log file = $dir/ceph/log/\$name.log
mon cluster log to file = false
mon cluster log file = $dir/ceph/log/cluster.\$channel.log
mon data = $dir/ceph/mon
osd data = $dir/ceph/osd
osd objectstore = memstore
memstore device bytes = ${IMGSYNC_TEST_RGW_MEMSTORE_BYTES:-4294967296}
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush update on start = false
osd class update on start = false
paxos propose interval = 0.01
paxos min wait = 0.001
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false

[client.rgw.test]
rgw frontends = beast endpoint=127.0.0.1:$rgwport
EOF
	echo "monmaptool"
	monmaptool --create --fsid "$fsid" --addv a "v1:127.0.0.1:$monport" "$dir/ceph/monmap" \
		|| return 1
	echo "ceph-mon --mkfs"
	ceph-mon -c "$c" -i a --mkfs --monmap "$dir/ceph/monmap" || return 1
	_srv_spawn "$dir" ceph-mon "$dir/ceph/log/daemons.log" ceph-mon -f -c "$c" -i a || return 1
	echo "ceph osd new"
	_srv_ceph_retry "$dir" "$c" osd new "$osdid" || return 1
	_srv_ceph_retry "$dir" "$c" osd crush add osd.0 1.0 root=default host=localhost || return 1
	echo "ceph-osd --mkfs"
	ceph-osd -c "$c" -i 0 --mkfs --osd-uuid "$osdid" || return 1
	_srv_spawn "$dir" ceph-osd "$dir/ceph/log/daemons.log" ceph-osd -f -c "$c" -i 0 || return 1
	echo "radosgw"
	_srv_rgw_start_daemon "$dir" || return 1
	echo "radosgw-admin user create"
	timeout "${IMGSYNC_TEST_START_TIMEOUT:-60}" radosgw-admin -c "$c" -n client.rgw.test \
		user create --uid test --display-name test --access-key "$ak" --secret "$sk" \
		>"$dir/ceph/user.json" || return 1
	_srv_rgw_wait "$dir" "$rgwport" || return 1
	echo "radosgw ready"
}

# ---------------------------------------------------------------------------------------

# _srv_find_python: an interpreter that imports botocore (its real path), or nothing.
_srv_find_python() {
	local py
	for py in python3 /usr/bin/python3; do
		command -v "$py" >/dev/null 2>&1 || continue
		"$py" -c 'import sys, botocore; print(sys.executable)' 2>/dev/null && return 0
	done
	return 0
}

_srv_fail() { # DIR WHAT LOG...: report a failed start, stop the set
	local dir=$1 what=$2
	shift 2
	_srv_log "$what failed to start"
	_srv_tail "$@"
	servers_stop "$dir"
	return 1
}

servers_start() {
	local dir=${1:-} ports pgport monport rgwport motoport ak sk bindir py
	local pgjob cephjob='' motopid='' t0 n rc s3=1
	case ${IMGSYNC_TEST_SERVERS:-} in
	'') ;;
	postgres) s3= ;;
	*)
		_srv_log "IMGSYNC_TEST_SERVERS is empty (all) or \"postgres\", not \"$IMGSYNC_TEST_SERVERS\""
		return 2
		;;
	esac
	if [ -z "$dir" ] || [ ! -d "$dir" ]; then
		_srv_log "usage: servers_start DIR (an existing empty directory)"
		return 2
	fi
	dir=$(cd "$dir" && pwd -P) || return 2
	unset PGHOSTADDR PGSERVICE PGSERVICEFILE PGPASSFILE PGOPTIONS PGSSLMODE PGTARGETSESSIONATTRS
	t0=$(date +%s%N)
	mkdir -p "$dir/.servers" "$dir/pg/sock" "$dir/ceph/log" "$dir/moto" || return 1
	: >>"$dir/.servers/pids"
	case " $_SRV_DIRS " in *" $BASHPID:$dir "*) ;; *) _SRV_DIRS="$_SRV_DIRS $BASHPID:$dir" ;; esac
	if [ ${#dir} -gt 80 ]; then
		_srv_fail "$dir" "postgres (directory path too long for a unix socket: $dir)"
		return 1
	fi
	ports=$(_srv_free_ports 4) || ports=
	set -- $ports
	if [ $# -ne 4 ]; then
		_srv_fail "$dir" "port selection"
		return 1
	fi
	pgport=$1 monport=$2 rgwport=$3 motoport=$4
	ak=IMGSYNC$(_srv_randhex 7)
	ak=${ak^^}
	sk=$(head -c 27 /dev/urandom | base64 | tr -d '\n') || sk=
	[ ${#sk} -eq 36 ] || sk=$(_srv_randhex 18)
	sk="${sk:0:12}+${sk:12:12}/${sk:24}"
	chmod a+x "$dir" || true # Postgres runs as another user and must reach its files

	# PostgreSQL (background)
	bindir=$(_srv_pg_bindir) || {
		_srv_fail "$dir" "postgres (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)"
		return 1
	}
	echo "$bindir" >"$dir/pg/bindir"
	echo "$pgport" >"$dir/pg/port"
	(echo "starter $BASHPID" >>"$dir/.servers/pids" && _srv_pg_setup "$dir" "$pgport") \
		</dev/null >"$dir/pg/setup.log" 2>&1 &
	pgjob=$!
	echo "starter $pgjob" >>"$dir/.servers/pids"

	# Ceph radosgw (background)
	if [ -n "$s3" ]; then
		echo "$rgwport" >"$dir/ceph/rgwport"
		(echo "starter $BASHPID" >>"$dir/.servers/pids" &&
			_srv_rgw_setup "$dir" "$monport" "$rgwport" "$ak" "$sk") </dev/null \
			>"$dir/ceph/setup.log" 2>&1 &
		cephjob=$!
		echo "starter $cephjob" >>"$dir/.servers/pids"
	fi

	# moto_server (here)
	if [ -n "$s3" ] && command -v moto_server >/dev/null 2>&1; then
		if ! _srv_spawn "$dir" moto_server "$dir/moto/moto.log" \
			moto_server -H 127.0.0.1 -p "$motoport"; then
			_srv_fail "$dir" "moto_server" "$dir/moto/moto.log"
			return 1
		fi
		motopid=$_SRV_SPAWNED
	fi
	py=$(_srv_find_python)

	if [ -n "$motopid" ]; then
		n=$((${IMGSYNC_TEST_START_TIMEOUT:-60} * 20))
		while ! _srv_port_open "$motoport"; do
			n=$((n - 1))
			if ! _srv_alive "$motopid" || [ "$n" -le 0 ]; then
				_srv_fail "$dir" "moto_server" "$dir/moto/moto.log"
				return 1
			fi
			sleep 0.05
		done
	fi

	rc=0
	wait "$pgjob" || rc=$?
	if [ "$rc" -ne 0 ]; then
		_srv_fail "$dir" "postgres" "$dir/pg/setup.log" "$dir/pg/start.log" "$dir/pg/postgres.log"
		return 1
	fi
	rc=0
	[ -z "$cephjob" ] || wait "$cephjob" || rc=$?
	if [ "$rc" -ne 0 ]; then
		_srv_fail "$dir" "radosgw (ceph)" "$dir/ceph/setup.log" "$dir/ceph/log/daemons.log" \
			"$dir/ceph/log/mon.a.log" "$dir/ceph/log/osd.0.log" "$dir/ceph/log/client.rgw.test.log"
		return 1
	fi

	export PGHOST="$dir/pg/sock" PGPORT="$pgport" PGDATABASE=imgsync_test PGUSER
	PGUSER=$(id -un)
	export IMGSYNC_TEST_SERVERS_DIR="$dir"
	export IMGSYNC_TEST_PG_DATA="$dir/pg/data" IMGSYNC_TEST_PG_BINDIR="$bindir"
	export IMGSYNC_TEST_CEPH_CONF="$dir/ceph/ceph.conf"
	export IMGSYNC_TEST_RGW_ENDPOINT="${s3:+http://127.0.0.1:$rgwport}"
	export IMGSYNC_TEST_RGW_ACCESS_KEY="$ak" IMGSYNC_TEST_RGW_SECRET_KEY="$sk"
	export IMGSYNC_TEST_RGW_REGION=us-east-1
	export IMGSYNC_TEST_MOTO_REGION=us-east-1
	if [ -n "$motopid" ]; then
		export IMGSYNC_TEST_MOTO_ENDPOINT="http://127.0.0.1:$motoport" IMGSYNC_TEST_MOTO_SKIP=
	elif [ -n "$s3" ]; then
		export IMGSYNC_TEST_MOTO_ENDPOINT='' IMGSYNC_TEST_MOTO_SKIP="moto_server not installed"
	else
		export IMGSYNC_TEST_MOTO_ENDPOINT='' IMGSYNC_TEST_MOTO_SKIP="not started (IMGSYNC_TEST_SERVERS=postgres)"
	fi
	export IMGSYNC_TEST_PYTHON="$py"
	echo "$(($(($(date +%s%N) - t0)) / 1000000))" >"$dir/.servers/start_ms"
	return 0
}

# _srv_pg_stop DIR: immediate shutdown, then SIGKILL the postmaster and its children if still there.
# _srv_pg_stop DIR [MODE]: immediate for teardown; "fast" for a clean
# restart under a running test (a checkpoint: nothing committed is lost,
# even with synchronous_commit off)
_srv_pg_stop() {
	local dir=$1 mode=${2:-immediate} bindir pid=
	[ -d "$dir/pg/data" ] || return 0
	if [ -r "$dir/pg/data/postmaster.pid" ]; then
		pid=$(head -n 1 "$dir/pg/data/postmaster.pid" 2>/dev/null) || pid=
		case "$pid" in '' | *[!0-9]*) pid= ;; esac
	fi
	[ -n "$pid" ] || return 0
	_srv_alive "$pid" || return 0
	bindir=$(cat "$dir/pg/bindir" 2>/dev/null) || bindir=
	if [ -n "$bindir" ]; then
		set -- timeout 10
		[ "$(id -u)" != 0 ] || set -- "$@" "$(_srv_runuser)" -u "${IMGSYNC_TEST_PG_OSUSER:-postgres}" --
		(cd / && "$@" "$bindir/pg_ctl" stop -D "$dir/pg/data" -m "$mode" -w -t 5 -s) \
			>/dev/null 2>&1 || true
	fi
	if _srv_alive "$pid" && _srv_cmdline_has "$pid" "$dir"; then
		# the postmaster and its children (each in a session of its own)
		_srv_kill_tree "$pid"
		_srv_wait_gone 20 "$pid" || true
	fi
}

# _srv_stop_one DIR
_srv_stop_one() {
	local dir=$1 f=$1/.servers/pids name pid starters='' daemons='' mons='' pids='' p
	[ -f "$f" ] || return 0
	while read -r name pid; do
		case "$pid" in '' | *[!0-9]*) continue ;; esac
		case "$name" in
		starter) starters="$starters $pid" ;;
		ceph-mon) mons="$mons $pid" ;;
		*) daemons="$daemons $name:$pid" ;;
		esac
	done <"$f"
	# 1. the start-up subshells and their children (initdb, ceph CLI...), so nothing new starts;
	# stderr off: bash reports a killed background job with a "Killed" notice
	local killed=0
	{
		for p in $starters; do
			if _srv_alive "$p"; then
				_srv_kill_tree "$p"
				killed=1
			fi
		done
		if [ "$killed" = 1 ]; then
			_srv_wait_gone 20 $starters || true
			for p in $starters; do # reap our own children here, not at some later command
				_srv_alive "$p" || wait "$p" || true
			done
		fi
	} 2>/dev/null
	# a daemon spawned at that instant records itself a moment later: re-read the records
	if [ "$killed" = 1 ]; then
		sleep 0.1
		daemons=
		mons=
		while read -r name pid; do
			case "$pid" in '' | *[!0-9]*) continue ;; esac
			case "$name" in
			starter) ;;
			ceph-mon) mons="$mons $pid" ;;
			*) daemons="$daemons $name:$pid" ;;
			esac
		done <"$f"
	fi
	# 2. Postgres
	_srv_pg_stop "$dir"
	# 3. radosgw, OSD, moto first (an OSD waits for the monitor while it stops), then the monitor
	for p in $daemons; do
		name=${p%%:*}
		p=${p#*:}
		_srv_alive "$p" || continue
		case "$name" in
		moto_server) _srv_cmdline_has "$p" moto || continue ;;
		*) _srv_cmdline_has "$p" "$dir" || continue ;;
		esac
		# radosgw takes 5-10 s to exit on SIGTERM; its state is in the OSD: SIGKILL at once
		if [ "$name" = radosgw ]; then
			kill -KILL "$p" 2>/dev/null || true
		else
			kill -TERM "$p" 2>/dev/null || true
		fi
		pids="$pids $p"
	done
	# half a second, then SIGKILL
	# shellcheck disable=SC2086
	if [ -n "$pids" ] && ! _srv_wait_gone 5 $pids; then
		for p in $pids; do
			_srv_alive "$p" && kill -KILL "$p" 2>/dev/null || true
		done
		_srv_wait_gone 20 $pids || true
	fi
	for p in $mons; do
		_srv_alive "$p" && _srv_cmdline_has "$p" "$dir" || continue
		kill -TERM "$p" 2>/dev/null || true
		pids="$pids $p"
	done
	# shellcheck disable=SC2086
	[ -z "$pids" ] || _srv_wait_gone 10 $pids || true
	# 4. whatever did not listen
	for p in $pids; do
		_srv_alive "$p" && kill -KILL "$p" 2>/dev/null || true
	done
	# shellcheck disable=SC2086
	[ -z "$pids" ] || _srv_wait_gone 20 $pids || true
	# reap those that were children of this shell now, so bash prints no "Killed" notice later
	for p in $pids; do
		_srv_alive "$p" || wait "$p" 2>/dev/null || true
	done
	# 5. a helper (radosgw-admin, ceph ...) a killed starter left behind, orphaned
	# before its tree was walked: anything whose command line names this set's dir
	local left
	left=$(pgrep -f -- "$dir/" 2>/dev/null || true)
	for p in $left; do
		[ "$p" != "$$" ] && [ "$p" != "$BASHPID" ] && _srv_cmdline_has "$p" "$dir/" &&
			kill -KILL "$p" 2>/dev/null || true
	done
	# shellcheck disable=SC2086
	[ -z "$left" ] || _srv_wait_gone 20 $left || true
	# the records are spent (their pids may be reused later)
	mv -f "$f" "$f.stopped" 2>/dev/null || true
}

servers_stop() {
	local d w dirs='' keep=''
	if [ $# -gt 0 ] && [ -n "${1:-}" ]; then
		dirs=$(cd "$1" 2>/dev/null && pwd -P) || dirs=$1
	fi
	for w in $_SRV_DIRS; do
		if [ -n "$dirs" ]; then
			[ "${w#*:}" = "$dirs" ] || keep="$keep $w"
		elif [ "${w%%:*}" = "$BASHPID" ]; then
			dirs="$dirs ${w#*:}"
		else
			keep="$keep $w"
		fi
	done
	_SRV_DIRS=$keep
	for d in $dirs; do
		# stderr off: bash notices about the background jobs it sees die are noise here
		{ _srv_stop_one "$d"; } 2>/dev/null
	done
	return 0
}

# --- restarts, for tests of "Postgres restarted" and "store was down" ---

# a clean shutdown, as an operator's restart is
servers_pg_stop() {
	local d=${1:-${IMGSYNC_TEST_SERVERS_DIR:-}}
	[ -n "$d" ] || return 1
	_srv_pg_stop "$d" fast
}

servers_pg_start() {
	local d=${1:-${IMGSYNC_TEST_SERVERS_DIR:-}}
	[ -n "$d" ] || return 1
	_srv_pg_start_server "$d" || { _srv_tail "$d/pg/start.log" "$d/pg/postgres.log"; return 1; }
}

servers_rgw_stop() {
	local d=${1:-${IMGSYNC_TEST_SERVERS_DIR:-}} p
	[ -n "$d" ] || return 1
	p=$(_srv_pid "$d" radosgw)
	[ -n "$p" ] && _srv_alive "$p" && _srv_cmdline_has "$p" "$d" || return 0
	{
		kill -KILL "$p" || true # as if it crashed (SIGTERM takes radosgw 5-10 s)
		_srv_wait_gone 20 "$p" || true
		_srv_alive "$p" || wait "$p" || true
	} 2>/dev/null
}

servers_rgw_start() {
	local d=${1:-${IMGSYNC_TEST_SERVERS_DIR:-}}
	[ -n "$d" ] || return 1
	_srv_rgw_start_daemon "$d"
	_srv_rgw_wait "$d" "$(cat "$d/ceph/rgwport")" >&2 || {
		_srv_tail "$d/ceph/log/client.rgw.test.log"
		return 1
	}
}
