#!/usr/bin/env bash
# imgsyncd --check-config, the real binary: the shipped sample passes (also
# with its commented S3 store enabled), every broken config in tests/conf
# gives exactly its golden "FILE:LINE: message" and exit 78, and no secret
# is ever printed.
cd "$(dirname "$0")/../.." || exit 2
BUILD=${BUILD:-build}
bin=$BUILD/imgsyncd
n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
nok() { n=$((n + 1)); echo "not ok $n - $*"; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

out=$("$bin" --check-config -c etc/imgsyncd.conf 2>&1)
rc=$?
[ $rc = 0 ] && ok "shipped etc/imgsyncd.conf passes --check-config" ||
	{ nok "shipped etc/imgsyncd.conf passes --check-config (exit $rc)"; echo "# $out"; }

# The documented S3 store, uncommented, with a real secret file.
secret="S3cr3t+/Value=$RANDOM"
printf '%s\n' "$secret" >"$T/cloud.secret"
chmod 600 "$T/cloud.secret"
mkdir -p "$T/images"
sed -e 's/^#\([^ #]\)/\1/' -e 's/^\(\s*\)# mirrors/\1mirrors/' \
	-e "s|/etc/imgsync/s3-secret|$T/cloud.secret|" \
	-e "s|/var/lib/imgsync/images|$T/images|" etc/imgsyncd.conf >"$T/full.conf"
out=$("$bin" --check-config -c "$T/full.conf" 2>&1)
rc=$?
case "$out" in *"(2 stores)"*) s2=1 ;; *) s2=0 ;; esac
[ $rc = 0 ] && [ $s2 = 1 ] && ok "sample with its S3 store enabled passes: $out" ||
	{ nok "sample with its S3 store enabled passes (exit $rc)"; echo "# $out"; }
case "$out" in *"$secret"*) nok "the secret appears in --check-config output" ;;
*) ok "no secret in --check-config output" ;; esac

# A world-readable secret file is warned about, naming the fix.
chmod 644 "$T/cloud.secret"
out=$("$bin" --check-config -c "$T/full.conf" 2>&1)
case "$out" in *"readable by others; chmod 600"*) ok "world-readable secret file is warned about" ;;
*) nok "world-readable secret file is warned about"; echo "# $out" ;; esac

# Every broken config: exit 78 and its golden message, nothing else.
for conf in tests/conf/bad-*.conf; do
	want=$(cat "${conf%.conf}.err")
	case "$conf" in
	*/bad-noenv-*) got=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
		-u CREDENTIALS_DIRECTORY "$bin" --check-config -c "$conf" 2>&1) ;;
	*) got=$(AWS_ACCESS_KEY_ID=AKIDENV AWS_SECRET_ACCESS_KEY=envsecret \
		"$bin" --check-config -c "$conf" 2>&1) ;;
	esac
	rc=$?
	got=$(printf '%s\n' "$got" | grep -v ': warning: ')
	if [ $rc = 78 ] && [ "$got" = "$want" ]; then
		ok "$conf: exit 78, $want"
	else
		nok "$conf: exit $rc"
		echo "#   got:  $got"
		echo "#   want: $want"
	fi
done

out=$("$bin" --check-config -c "$T/does-not-exist.conf" 2>&1)
rc=$?
[ $rc = 78 ] && ok "missing config file: exit 78 ($out)" || nok "missing config file: exit $rc"
"$bin" --version | grep -q '^imgsyncd [0-9]' && ok "--version" || nok "--version"
"$bin" --help | grep -q -- '--check-config' && ok "--help" || nok "--help"
"$bin" --no-such-option >/dev/null 2>&1
rc=$?
[ $rc = 64 ] && ok "unknown option: exit 64" || nok "unknown option: exit $rc"
echo "1..$n"
