# tests/harness/e2e.sh - shared by the end-to-end tests (bash, sourced).
#
# Gives each test: a private temp dir ($T), running servers (started here
# when the test runs alone, outside tests/run), TAP helpers that number
# checks across sub-programs, and the independent S3 client.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
BUILD=${BUILD:-build}
T=$(mktemp -d "${IMGSYNC_TEST_TMP:-/tmp}/e2e.XXXXXX")
chmod 755 "$T"
_e2e_own_servers=0
_e2e_cleanup() {
	[ $_e2e_own_servers = 1 ] && servers_stop >/dev/null 2>&1
	[ "${IMGSYNC_KEEP_TMP:-0}" = 1 ] && echo "# kept $T" || rm -rf "$T"
}
trap _e2e_cleanup EXIT
trap 'exit 130' INT TERM

e2e_need_servers() {
	if [ -z "${IMGSYNC_TEST_RGW_ENDPOINT:-}" ]; then
		. tests/harness/servers.sh
		_e2e_own_servers=1
		mkdir -p "$T/servers"
		servers_start "$T/servers" || { echo "1..0 # servers did not start"; exit 1; }
	fi
}

. tests/harness/tap.sh

# IMGSYNC_VALGRIND=1: every imgsyncd and imgsyncctl the test starts runs
# under valgrind (tests/harness/valgrind-wrap), through a build directory of
# links whose two programs are wrappers; tests/run reports the logs.
if [ "${IMGSYNC_VALGRIND:-0}" = 1 ] && [ -x "$BUILD/imgsyncd" ]; then
	_vg_real=$(cd "$BUILD" && pwd)
	mkdir -p "$T/vgbuild"
	for _f in "$_vg_real"/*; do
		ln -s "$_f" "$T/vgbuild/"
	done
	for _b in imgsyncd imgsyncctl; do
		rm -f "$T/vgbuild/$_b"
		printf '#!/bin/sh\nexec "%s/tests/harness/valgrind-wrap" "%s/%s" "$@"\n' \
			"$PWD" "$_vg_real" "$_b" >"$T/vgbuild/$_b"
		chmod +x "$T/vgbuild/$_b"
	done
	BUILD=$T/vgbuild
fi

# Run a TAP program; re-number its checks into ours, prefixed by NAME.
run_tap() { # NAME COMMAND...
	local name=$1 line rc bad=0 out
	shift
	out="$T/tap.$$.$RANDOM"
	"$@" >"$out" 2>&1
	rc=$?
	while IFS= read -r line; do
		case "$line" in
		"ok "*) _n=$((_n + 1)); echo "ok $_n - $name: ${line#ok * - }" ;;
		"not ok "*) _n=$((_n + 1)); bad=1; echo "not ok $_n - $name: ${line#not ok * - }" ;;
		1..*) ;;
		*) echo "# $line" ;;
		esac
	done <"$out"
	if [ $rc != 0 ] && [ $bad = 0 ]; then
		fail "$name: exited with status $rc"
	fi
	rm -f "$out"
}

py() { "${IMGSYNC_TEST_PYTHON:-python3}" "$@"; }

oracle() { # ENDPOINT AK SK COMMAND...
	local ep=$1 ak=$2 sk=$3
	shift 3
	py tests/harness/s3oracle.py --endpoint "$ep" --region us-east-1 --access-key "$ak" \
		--secret-key "$sk" --path-style "$@"
}
