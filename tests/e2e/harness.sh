#!/usr/bin/env bash
# The test harness is real: Postgres answers on its socket as a non-root user, radosgw stores
# bytes exactly and refuses bad signatures, moto answers, and servers_stop leaves nothing behind.
# Uses the servers of the test runner when IMGSYNC_TEST_RGW_ENDPOINT is set, else starts its own.
# Prints TAP.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=../harness/servers.sh
. "$root/tests/harness/servers.sh"
oracle_py=$root/tests/harness/s3oracle.py

n=0
failures=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failures=$((failures + 1)); echo "not ok $n - $*"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /' "$@"; }
check() { # DESCRIPTION CMD...: ok when CMD succeeds
	local d=$1
	shift
	if "$@"; then ok "$d"; else not_ok "$d"; fi
}

own=
work=$(mktemp -d "${TMPDIR:-/tmp}/imgsync-harness.XXXXXX") || exit 1
chmod 711 "$work" # Postgres runs as another user and must reach its directory
cleanup() {
	[ -z "$own" ] || servers_stop
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -z "${IMGSYNC_TEST_RGW_ENDPOINT:-}" ]; then
	own=$work/servers
	mkdir "$own"
	t0=$(date +%s%N)
	if ! servers_start "$own"; then
		echo "Bail out! the test servers did not start"
		exit 1
	fi
	echo "# servers started in $((($(date +%s%N) - t0) / 1000000)) ms"
fi

hx() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
rgw() {
	"$IMGSYNC_TEST_PYTHON" "$oracle_py" --endpoint "$IMGSYNC_TEST_RGW_ENDPOINT" \
		--region "$IMGSYNC_TEST_RGW_REGION" --access-key "$IMGSYNC_TEST_RGW_ACCESS_KEY" \
		--secret-key "$IMGSYNC_TEST_RGW_SECRET_KEY" --path-style "$@"
}
moto() {
	"$IMGSYNC_TEST_PYTHON" "$oracle_py" --endpoint "$IMGSYNC_TEST_MOTO_ENDPOINT" \
		--region "$IMGSYNC_TEST_MOTO_REGION" --access-key testing --secret-key testing \
		--path-style "$@"
}

# 1. the environment
env_complete() {
	local v
	for v in PGHOST PGPORT PGDATABASE PGUSER IMGSYNC_TEST_RGW_ENDPOINT IMGSYNC_TEST_RGW_ACCESS_KEY \
		IMGSYNC_TEST_RGW_SECRET_KEY IMGSYNC_TEST_RGW_REGION IMGSYNC_TEST_MOTO_REGION; do
		if [ -z "${!v:-}" ]; then
			echo "# $v is not set"
			return 1
		fi
	done
	for v in IMGSYNC_TEST_MOTO_ENDPOINT IMGSYNC_TEST_MOTO_SKIP IMGSYNC_TEST_PYTHON; do
		if [ -z "${!v+set}" ]; then
			echo "# $v is not exported"
			return 1
		fi
	done
	case "$IMGSYNC_TEST_RGW_SECRET_KEY" in
	*+*/* | */*+*) ;;
	*)
		echo "# the radosgw secret has no '+' and '/'"
		return 1
		;;
	esac
}
check "the servers' environment is exported (secret with '+' and '/')" env_complete

# 2. Postgres through its unix socket
pg_socket() {
	local out
	case "$PGHOST" in /*) ;; *) echo "# PGHOST is not a socket directory: $PGHOST"; return 1 ;; esac
	out=$(psql -X -A -t -v ON_ERROR_STOP=1 \
		-c "select 1, inet_server_addr() is null, current_setting('listen_addresses') = ''" 2>&1)
	[ "$out" = "1|t|t" ] || { echo "# psql: $out"; return 1; }
}
check "psql select 1 works through the unix socket (no TCP)" pg_socket

# 3. Postgres does not run as root
if [ "$(id -u)" != 0 ]; then
	skip "Postgres runs as an unprivileged user" "not running as root"
else
	pg_user() {
		local pid user
		# the postmaster (a backend is gone as soon as psql is): first line of postmaster.pid
		pid=$(psql -X -A -t -c "select split_part(pg_read_file('postmaster.pid'), E'\\n', 1)" \
			2>/dev/null) || return 1
		user=$(ps -o user= -p "$pid" 2>/dev/null | tr -d ' ')
		echo "# postmaster $pid runs as $user"
		[ -n "$user" ] && [ "$user" != root ]
	}
	check "Postgres runs as an unprivileged user" pg_user
fi

# 4-5. radosgw
if [ -z "${IMGSYNC_TEST_PYTHON:-}" ]; then
	skip "radosgw stores an object byte-exactly" "no python with botocore"
	skip "radosgw refuses a wrong secret" "no python with botocore"
else
	bucket=harness-$$-$RANDOM
	key=$(printf 'dir/ünï cödé+%s/it'\''s (1)!&$=;,.jpg' "$RANDOM")
	head -c 300001 /dev/urandom >"$work/obj"
	rgw_roundtrip() {
		local kh list
		kh=$(hx "$key")
		rgw mkbucket "$bucket" &&
			rgw put "$bucket" "$kh" "$work/obj" &&
			rgw get "$bucket" "$kh" "$work/obj.back" &&
			cmp "$work/obj" "$work/obj.back" || return 1
		list=$(rgw list "$bucket") || return 1
		[ "$list" = "$kh 300001 $(md5sum <"$work/obj" | cut -c1-32)" ] || {
			echo "# list: $list"
			return 1
		}
		echo "$kh 300001 $(sha256sum <"$work/obj" | cut -c1-64)" >"$work/manifest"
		rgw verify "$bucket" "$work/manifest" --exact >"$work/verify" 2>&1 || {
			diag "$work/verify"
			return 1
		}
	}
	check "radosgw stores an object under a hostile key byte-exactly" rgw_roundtrip

	rgw_wrong_secret() {
		# the secret with its last character changed (to x, or to y when it
		# is an x already)
		local rc=0 sk=$IMGSYNC_TEST_RGW_SECRET_KEY wrong
		case "$sk" in *x) wrong=${sk%?}y ;; *) wrong=${sk%?}x ;; esac
		"$IMGSYNC_TEST_PYTHON" "$oracle_py" --endpoint "$IMGSYNC_TEST_RGW_ENDPOINT" \
			--region "$IMGSYNC_TEST_RGW_REGION" --access-key "$IMGSYNC_TEST_RGW_ACCESS_KEY" \
			--secret-key "$wrong" --path-style \
			get "$bucket" "$(hx "$key")" "$work/wrong" 2>"$work/wrong.err" || rc=$?
		diag "exit $rc: $(head -c 300 "$work/wrong.err")"
		[ "$rc" = 3 ] && grep -q SignatureDoesNotMatch "$work/wrong.err" && [ ! -e "$work/wrong" ]
	}
	check "radosgw refuses a request signed with a wrong secret (SignatureDoesNotMatch)" \
		rgw_wrong_secret
	rgw rmbucket "$bucket" --force || true
fi

# 6. moto
if [ -n "${IMGSYNC_TEST_MOTO_SKIP:-}" ]; then
	skip "moto_server answers" "$IMGSYNC_TEST_MOTO_SKIP"
elif [ -z "${IMGSYNC_TEST_PYTHON:-}" ]; then
	skip "moto_server answers" "no python with botocore"
else
	moto_roundtrip() {
		local b=harness-$$-$RANDOM kh
		kh=$(hx "a/b c+d.png")
		moto mkbucket "$b" &&
			moto put "$b" "$kh" "$work/obj" &&
			moto get "$b" "$kh" "$work/obj.moto" &&
			cmp "$work/obj" "$work/obj.moto" &&
			moto rmbucket "$b" --force
	}
	check "moto_server answers and stores an object byte-exactly" moto_roundtrip
fi

# Every process of a server set: its records, the postmaster and its children, and anything
# whose command line names the set's directory.
set_processes() { # DIR
	local dir=$1 f p pm=
	for f in "$dir/.servers/pids" "$dir/.servers/pids.stopped"; do
		[ -r "$f" ] && awk '{ print $2 }' "$f"
	done
	if [ -r "$dir/.servers/postmaster" ]; then
		p=$(cat "$dir/.servers/postmaster")
		echo "$p"
		pm=" $p "
	fi
	ps -e -o pid=,ppid=,args= 2>/dev/null | while read -r p pp args; do
		case "$args" in *"$dir"*) echo "$p" ;; esac
		case "$pm" in *" $pp "*) echo "$p" ;; esac
	done
}
still_running() { # PID...: print those alive
	local p
	for p in "$@"; do
		_srv_alive "$p" && echo "$p"
	done
	return 0
}

# 7. a second set next to the first, stopped by servers_stop (the first one keeps running)
second_set() {
	local d2=$work/second out
	mkdir "$d2"
	out=$(
		trap 'servers_stop "$d2"' EXIT
		servers_start "$d2" >&2 || exit 1
		head -n 1 "$d2/pg/data/postmaster.pid" >"$d2/.servers/postmaster"
		psql -X -A -t -c 'select 1' >/dev/null || exit 1
		set_processes "$d2" | sort -u >"$d2/before"
		servers_stop       # the set this subshell started, not its parent's
		servers_stop "$d2" # idempotent
		servers_stop
		echo stopped
	) 2>"$work/second.err"
	if [ "$out" != stopped ]; then
		echo "# the second set did not start or stop:"
		diag "$work/second.err"
		return 1
	fi
	local before left
	before=$(cat "$d2/before")
	echo "# second set had $(echo "$before" | wc -w) processes"
	[ "$(echo "$before" | wc -w)" -ge 5 ] || return 1
	# shellcheck disable=SC2086,SC2046
	left=$(still_running $before $(set_processes "$d2"))
	if [ -n "$left" ]; then
		echo "# still running:"
		# shellcheck disable=SC2086
		ps -o pid=,args= -p "$(echo $left | tr ' ' ',')" | sed 's/^/# /'
		return 1
	fi
	if ! psql -X -A -t -c 'select 1' >/dev/null; then
		echo "# the first set's Postgres is gone"
		return 1
	fi
}
check "servers_stop stops every process of a second server set, and only those" second_set

# 8. PostgreSQL alone (IMGSYNC_TEST_SERVERS=postgres, as bench/queue-sql starts it)
pg_only_set() {
	local d4=$work/pgonly out before left
	mkdir "$d4"
	out=$(
		trap 'servers_stop "$d4"' EXIT
		IMGSYNC_TEST_SERVERS=postgres servers_start "$d4" >&2 || exit 1
		head -n 1 "$d4/pg/data/postmaster.pid" >"$d4/.servers/postmaster"
		[ "$(psql -X -A -t -c 'select 1')" = 1 ] || exit 1
		[ -z "$IMGSYNC_TEST_RGW_ENDPOINT" ] && [ -z "$IMGSYNC_TEST_MOTO_ENDPOINT" ] || exit 1
		if ps -e -o args= | grep -F "$d4" | grep -Eq 'radosgw|ceph-(mon|osd)|moto_server'; then
			echo "# an S3 server was started:" >&2
			exit 1
		fi
		set_processes "$d4" | sort -u >"$d4/before"
		servers_stop
		echo stopped
	) 2>"$work/pgonly.err"
	if [ "$out" != stopped ]; then
		echo "# the PostgreSQL-only set did not start, held more, or did not stop:"
		diag "$work/pgonly.err"
		return 1
	fi
	before=$(cat "$d4/before")
	# shellcheck disable=SC2086,SC2046
	left=$(still_running $before $(set_processes "$d4"))
	[ -z "$left" ] || { echo "# still running: $left"; return 1; }
}
check "IMGSYNC_TEST_SERVERS=postgres starts PostgreSQL alone, no S3 server, and stops it" pg_only_set
bad_knob() {
	local d5=$work/badknob rc=0
	mkdir "$d5"
	(IMGSYNC_TEST_SERVERS=minio servers_start "$d5") 2>"$work/badknob.err" || rc=$?
	[ "$rc" = 2 ] && grep -q 'IMGSYNC_TEST_SERVERS' "$work/badknob.err" && [ ! -d "$d5/pg/data" ]
}
check "an unknown IMGSYNC_TEST_SERVERS is refused before anything starts" bad_knob

# 9. a set interrupted while it starts
interrupted_set() {
	local d3=$work/third pid left
	mkdir "$d3"
	(
		trap 'servers_stop' EXIT
		trap 'servers_stop; exit 143' TERM
		servers_start "$d3"
	) >/dev/null 2>&1 &
	pid=$!
	sleep 0.5
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	[ -r "$d3/pg/data/postmaster.pid" ] &&
		head -n 1 "$d3/pg/data/postmaster.pid" >"$d3/.servers/postmaster"
	# shellcheck disable=SC2046
	left=$(still_running $(set_processes "$d3"))
	if [ -n "$left" ]; then
		echo "# still running:"
		# shellcheck disable=SC2086
		ps -o pid=,args= -p "$(echo $left | tr ' ' ',')" | sed 's/^/# /'
		return 1
	fi
}
check "servers_stop from a TERM trap in the middle of servers_start leaves nothing running" \
	interrupted_set

echo "1..$n"
[ "$failures" = 0 ]
