#!/usr/bin/env bash
# The systemd units, sysusers/tmpfiles files and man pages, offline:
# - systemd-analyze verify finds nothing to say about either unit (pointed
#   at the built binary: /usr/sbin/imgsyncd need not be installed);
# - systemd-analyze security rates both at an exposure of 2.0 or lower;
# - the units say what the daemon does (Type=notify, the imgsync user, a
#   stop timeout above transfer.stop_timeout's default, the credential the
#   sample configuration names), and the template hardens like the unit;
# - sysusers.d and tmpfiles.d create the user and the state directory in a
#   scratch root;
# - every man page renders with no groff warning, and every page the units
#   cite exists.
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
. tests/harness/tap.sh
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

bin=$(cd "$BUILD" 2>/dev/null && pwd)/imgsyncd
conf=$PWD/etc/imgsyncd.conf
MAX_EXPOSURE=2.0
STOP_TIMEOUT_DEFAULT=20 # seconds: transfer.stop_timeout, imgsyncd.conf(5)

# A unit's value of KEY (the last one set), from the [Service] section.
unit_get() { # FILE KEY
	awk -v k="$2" '/^\[/ { sec = $0 } sec == "[Service]" && index($0, k "=") == 1 {
		v = substr($0, length(k) + 2) } END { print v }' "$1"
}
# Seconds of a systemd time span such as 30s, 1min 30s, 2min.
span_s() {
	awk '{ t = 0; for (i = 1; i <= NF; i++) { v = $i + 0
		if ($i ~ /min$/) v *= 60; else if ($i ~ /h$/) v *= 3600; else if ($i ~ /ms$/) v /= 1000
		t += v } print int(t) }' <<<"$1"
}

have_analyze=1
command -v systemd-analyze >/dev/null 2>&1 || have_analyze=0

for unit in imgsyncd.service imgsyncd@.service; do
	src=etc/$unit
	name=${unit/@./@unittest.}
	if [ ! -f "$src" ]; then
		fail "$src exists"
		continue
	fi

	# Static checks: what the daemon and its documentation promise.
	check "$unit: Type=notify" test "$(unit_get "$src" Type)" = notify
	check "$unit: runs as imgsync:imgsync" \
		test "$(unit_get "$src" User):$(unit_get "$src" Group)" = imgsync:imgsync
	check "$unit: ExecStart runs /usr/sbin/imgsyncd in the foreground" \
		grep -qE '^ExecStart=/usr/sbin/imgsyncd -c /etc/imgsync/[^ ]+\.conf$' "$src"
	check "$unit: the configuration is checked first" \
		grep -qE '^ExecStartPre=/usr/sbin/imgsyncd --check-config -c /etc/imgsync/' "$src"
	check "$unit: reload sends SIGHUP" \
		test "$(unit_get "$src" ExecReload)" = '/bin/kill -HUP $MAINPID'
	stop=$(span_s "$(unit_get "$src" TimeoutStopSec)")
	check "$unit: TimeoutStopSec (${stop}s) is above transfer.stop_timeout (${STOP_TIMEOUT_DEFAULT}s)" \
		test "$stop" -gt "$STOP_TIMEOUT_DEFAULT"
	check "$unit: WatchdogSec is set" test -n "$(unit_get "$src" WatchdogSec)"
	check "$unit: configuration and usage errors are not restarted" \
		test "$(unit_get "$src" RestartPreventExitStatus)" = "64 78"
	check "$unit: no capabilities" test -z "$(unit_get "$src" CapabilityBoundingSet)" -a \
		"$(grep -c '^CapabilityBoundingSet=$' "$src")" = 1
	# ProcSubset=pid would hide /proc/sys/kernel/random/boot_id (lib/host.c)
	check "$unit: /proc/sys stays visible (no ProcSubset=pid)" \
		test "$(unit_get "$src" ProcSubset)" != pid
	for page in $(sed -n 's/^Documentation=//p' "$src"); do
		p=${page#man:}
		f=man/${p%%(*}.${p#*(}
		f=${f%)}
		check "$unit: Documentation $page is man/${f#man/}" test -f "$f"
	done

	if [ $have_analyze = 0 ]; then
		skip "$unit: systemd-analyze verify (systemd-analyze not installed)"
		skip "$unit: systemd-analyze security (systemd-analyze not installed)"
		continue
	fi

	# A copy that runs the built binary on the sample configuration.
	mkdir -p "$T/units"
	sed -e "s|/usr/sbin/imgsyncd|$bin|g" \
		-e "s|/etc/imgsync/imgsyncd.conf|$conf|g" -e "s|/etc/imgsync/%i.conf|$conf|g" \
		"$src" >"$T/units/$name"
	out=$(cd "$T/units" && systemd-analyze verify --man=false "./$name" 2>&1)
	mine=$(printf '%s\n' "$out" | grep -F -e "$name" -e "$T/units" || true)
	if [ -z "$mine" ]; then
		pass "$unit: systemd-analyze verify has nothing to say"
	else
		fail "$unit: systemd-analyze verify"
		printf '%s\n' "$mine" | sed 's/^/#   /'
	fi

	out=$(cd "$T/units" && systemd-analyze security --offline=true "./$name" 2>&1)
	score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
	if [ -n "$score" ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
		pass "$unit: systemd-analyze security exposure $score (at most $MAX_EXPOSURE)"
	else
		fail "$unit: systemd-analyze security exposure ${score:-unknown} (at most $MAX_EXPOSURE)"
		printf '%s\n' "$out" | grep -E '✗|Overall' | sed 's/^/#   /'
	fi
done

# The template differs from the unit only where the instance name goes: the
# same hardening for every instance.
harden() { # UNIT: [Service] settings, instance-specific ones left out
	awk '/^\[/ { sec = $0; next } sec == "[Service]" && /^[A-Za-z]/' "$1" |
		grep -v -e '%i' -e '/etc/imgsync/' -e '^LoadCredential=' -e '^SetCredential='
}
if [ -f etc/imgsyncd.service ] && [ -f etc/imgsyncd@.service ]; then
	d=$(diff <(harden etc/imgsyncd.service) <(harden etc/imgsyncd@.service))
	if [ -z "$d" ]; then
		pass "imgsyncd@.service has the same settings as imgsyncd.service"
	else
		fail "imgsyncd@.service has the same settings as imgsyncd.service"
		printf '%s\n' "$d" | sed 's/^/#   /'
	fi
fi

# The credential the unit loads is the file the sample configuration names
# (the daemon reads it from $CREDENTIALS_DIRECTORY by its base name).
check "the unit loads the credential the sample configuration names (s3-secret)" \
	grep -q '^LoadCredential=s3-secret:/etc/imgsync/s3-secret$' etc/imgsyncd.service
check "the sample configuration names /etc/imgsync/s3-secret" \
	grep -q 'secret_access_key_file = "/etc/imgsync/s3-secret"' etc/imgsyncd.conf
check "the template loads NAME.s3-secret for instance NAME" \
	grep -q '^LoadCredential=%i.s3-secret:/etc/imgsync/%i.s3-secret$' etc/imgsyncd@.service

# sysusers.d and tmpfiles.d in a scratch root (root only: tmpfiles chowns).
if [ "$(id -u)" != 0 ] || ! command -v systemd-sysusers >/dev/null 2>&1 ||
	! command -v systemd-tmpfiles >/dev/null 2>&1; then
	skip "sysusers.d creates imgsync (needs root and systemd-sysusers)"
	skip "tmpfiles.d creates /var/lib/imgsync/images owned by imgsync (needs root)"
else
	root=$T/root
	mkdir -p "$root/etc"
	out=$(systemd-sysusers --root="$root" "$PWD/etc/sysusers.d/imgsync.conf" 2>&1)
	if grep -q '^imgsync:x:[0-9]*:[0-9]*:[^:]*:/var/lib/imgsync:' "$root/etc/passwd" 2>/dev/null; then
		pass "sysusers.d creates the system user imgsync, home /var/lib/imgsync"
	else
		fail "sysusers.d creates the system user imgsync"
		echo "# $out"
	fi
	out=$(systemd-tmpfiles --root="$root" --create "$PWD/etc/tmpfiles.d/imgsync.conf" 2>&1)
	uid=$(awk -F: '$1 == "imgsync" { print $3 }' "$root/etc/passwd" 2>/dev/null)
	if [ -n "$uid" ] && [ "$(stat -c %u:%a "$root/var/lib/imgsync/images" 2>/dev/null)" = "$uid:755" ]; then
		pass "tmpfiles.d creates /var/lib/imgsync/images, 0755, owned by imgsync"
	else
		fail "tmpfiles.d creates /var/lib/imgsync/images owned by imgsync"
		echo "# $out"
	fi
fi

# Man pages: no groff warning, and man(1) renders them.
for page in man/*.[1-8]; do
	if ! command -v groff >/dev/null 2>&1; then
		skip "$page: groff not installed"
		continue
	fi
	out=$(LC_ALL=C.UTF-8 groff -man -ww -z "$page" 2>&1)
	if [ -z "$out" ]; then
		pass "$page: groff -man -ww reports nothing"
	else
		fail "$page: groff -man -ww"
		printf '%s\n' "$out" | head -20 | sed 's/^/#   /'
	fi
	if command -v man >/dev/null 2>&1; then
		err=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >"$T/page.txt")
		if [ -z "$err" ] && grep -q '^NAME' "$T/page.txt" && grep -q '^SEE ALSO' "$T/page.txt"; then
			pass "$page: man -l renders it ($(wc -l <"$T/page.txt") lines), no warning"
		else
			fail "$page: man -l"
			printf '%s\n' "$err" | head -20 | sed 's/^/#   /'
		fi
	else
		skip "$page: man not installed"
	fi
done
for page in man/imgsyncd.8 man/imgsyncd.conf.5 man/imgsyncctl.1; do
	check "$page exists" test -f "$page"
done
# Every option of the configuration has its entry in imgsyncd.conf(5).
if [ -f man/imgsyncd.conf.5 ]; then
	missing=""
	for o in $(grep -v 'CFG_SEC' lib/conf.c |
		sed -n 's/^[[:space:]]*CFG_[A-Z_]*("\([a-z_]*\)".*/\1/p' | sort -u); do
		grep -qE "^\.B[IR]? (.*[ \"])?$o( |\"|\$)" man/imgsyncd.conf.5 || missing="$missing $o"
	done
	check "imgsyncd.conf(5) documents every option of lib/conf.c${missing:+ (missing:$missing)}" \
		test -z "$missing"
fi
done_testing
