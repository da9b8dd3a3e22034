#!/usr/bin/env bash
# The Debian package, end to end (root only, like dpkg -i): make deb builds
# it, lintian finds no error in it, it installs, the installed daemon accepts
# the installed sample configuration (also as the imgsync user it runs as),
# imgsyncctl runs, man finds the pages, systemd-analyze accepts the installed
# units, the service is installed disabled; then dpkg --purge leaves nothing
# behind but the imgsync user.  A package that was installed before the test
# is never touched; the one the test installs is purged on every exit path.
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
. tests/harness/tap.sh
skip_all() { echo "1..0 # SKIP $*"; exit 0; }

[ "$(id -u)" = 0 ] || skip_all "not root: dpkg -i needs root"
for tool in dpkg-buildpackage dh lintian; do
	command -v "$tool" >/dev/null 2>&1 ||
		skip_all "$tool is not installed (tests/harness/install-deps installs it)"
done
if [ "$(dpkg-query -W -f='${db:Status-Status}' imgsync 2>/dev/null)" != "" ] &&
	[ "$(dpkg-query -W -f='${db:Status-Status}' imgsync 2>/dev/null)" != not-installed ]; then
	skip_all "a package imgsync is already on this machine: not touching it"
fi

T=$(mktemp -d)
installed=0
cleanup() {
	if [ $installed = 1 ]; then
		dpkg --purge imgsync >/dev/null 2>&1 || echo "# cleanup: dpkg --purge imgsync failed"
	fi
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. build
version=$(sed -n 's/^VERSION *:= *//p' Makefile)
t0=$(date +%s)
if make --no-print-directory BUILD="$BUILD" deb >"$T/build.log" 2>&1; then
	pass "make deb builds the package ($(($(date +%s) - t0)) s)"
else
	fail "make deb builds the package"
	tail -30 "$T/build.log" | sed 's/^/#   /'
	done_testing
	exit 1
fi
deb=$BUILD/deb/imgsync_${version}_$(dpkg --print-architecture).deb
changes=$BUILD/deb/imgsync_${version}_$(dpkg --print-architecture).changes
check "the package is $deb" test -f "$deb"
check "the source tree's parent holds no build output" \
	test -z "$(find .. -maxdepth 1 \( -name 'imgsync*_*.deb' -o -name 'imgsync*_*.changes' \) 2>/dev/null)"
check "the unit tests ran in the package build" grep -q '^== debian/build/tests/test_conf' "$T/build.log"

# 2. lintian
lintian --display-info "$changes" >"$T/lintian.txt" 2>&1
errors=$(grep -c '^E: ' "$T/lintian.txt")
warnings=$(grep -c '^W: ' "$T/lintian.txt")
infos=$(grep -c '^I: ' "$T/lintian.txt")
if [ "$errors" = 0 ]; then
	pass "lintian: 0 errors, $warnings warnings, $infos notes"
else
	fail "lintian: $errors errors, $warnings warnings"
fi
grep -E '^[EWI]: ' "$T/lintian.txt" | sed 's/^/#   /'

# 3. install
list=$(dpkg-deb -c "$deb" | awk '{ print substr($6, 2) }' | grep -v '/$')
installed=1
if dpkg -i "$deb" >"$T/install.log" 2>&1; then
	pass "dpkg -i installs it"
else
	fail "dpkg -i installs it"
	sed 's/^/#   /' "$T/install.log"
fi
check "imgsyncd is /usr/sbin/imgsyncd, version $version" \
	test "$(/usr/sbin/imgsyncd --version 2>&1)" = "imgsyncd $version"
out=$(/usr/sbin/imgsyncd --check-config 2>&1)
rc=$?
if [ $rc = 0 ]; then
	pass "imgsyncd --check-config accepts the installed /etc/imgsync/imgsyncd.conf"
else
	fail "imgsyncd --check-config accepts the installed /etc/imgsync/imgsyncd.conf (exit $rc)"
fi
echo "# $out"
check "the system user imgsync exists, home /var/lib/imgsync" \
	test "$(getent passwd imgsync | cut -d: -f6)" = /var/lib/imgsync
check "/etc/imgsync/imgsyncd.conf is root:imgsync 0640" \
	test "$(stat -c %U:%G:%a /etc/imgsync/imgsyncd.conf 2>/dev/null)" = root:imgsync:640
as_imgsync() { runuser -u imgsync -- /usr/sbin/imgsyncd --check-config >/dev/null 2>&1; }
check "the imgsync user reads it: runuser -u imgsync imgsyncd --check-config" as_imgsync
check "/var/lib/imgsync/images exists, owned by imgsync" \
	test "$(stat -c %U /var/lib/imgsync/images 2>/dev/null)" = imgsync
check "the sample configuration is in /usr/share/imgsync/examples" \
	cmp -s etc/imgsyncd.conf /usr/share/imgsync/examples/imgsyncd.conf
check "the SQL schema is in /usr/share/imgsync/sql" test -f /usr/share/imgsync/sql/001_base.sql
out=$(imgsyncctl --help 2>&1)
rc=$?
case "$out" in *"usage: imgsyncctl"*) [ $rc = 0 ] && pass "imgsyncctl --help runs" ;;
*) fail "imgsyncctl --help runs (exit $rc)"; echo "# $out" ;; esac
if grep -rqs '^path-exclude=/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
	skip "man -w: dpkg on this machine excludes /usr/share/man"
elif ! command -v man >/dev/null 2>&1; then
	skip "man -w: man-db is not installed"
else
	for page in imgsyncd imgsyncd.conf imgsyncctl; do
		where=$(man -w "$page" 2>&1)
		case "$where" in /usr/share/man/*) pass "man -w $page: $where" ;;
		*) fail "man -w $page: $where" ;; esac
	done
	for page in imgsyncd imgsyncd.conf imgsyncctl; do
		check "man $page renders with no warning" \
			test -z "$(MANWIDTH=80 man --warnings "$page" 2>&1 >/dev/null)"
	done
fi
for unit in imgsyncd.service imgsyncd@.service; do
	check "/lib/systemd/system/$unit is installed" test -f "/lib/systemd/system/$unit"
done
if command -v systemd-analyze >/dev/null 2>&1; then
	out=$(systemd-analyze verify /lib/systemd/system/imgsyncd.service 2>&1 |
		grep -F imgsyncd || true)
	if [ -z "$out" ]; then
		pass "systemd-analyze verify accepts the installed imgsyncd.service"
	else
		fail "systemd-analyze verify accepts the installed imgsyncd.service"
		printf '%s\n' "$out" | sed 's/^/#   /'
	fi
	check "imgsyncd.service is installed disabled" \
		test "$(systemctl is-enabled imgsyncd.service 2>/dev/null)" = disabled
else
	skip "systemd-analyze is not installed"
fi

# 4. purge
if dpkg --purge imgsync >"$T/purge.log" 2>&1; then
	installed=0
	pass "dpkg --purge removes it"
else
	fail "dpkg --purge removes it"
	sed 's/^/#   /' "$T/purge.log"
fi
check "dpkg knows no imgsync any more" \
	test "$(dpkg-query -W -f='${db:Status-Status}' imgsync 2>/dev/null)" != installed
left=""
for f in $list /etc/imgsync /var/lib/imgsync; do
	[ -e "$f" ] && left="$left $f"
done
check "nothing is left behind${left:+:$left}" test -z "$left"
check "no dpkg-statoverride is left" test -z "$(dpkg-statoverride --list | grep imgsync)"
check "no unit state is left" \
	test -z "$(find /var/lib/systemd/deb-systemd-helper-enabled /etc/systemd/system \
		-name 'imgsyncd*' 2>/dev/null)"
done_testing
