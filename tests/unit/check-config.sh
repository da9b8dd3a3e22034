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

# ${NAME} is the environment variable: set, it is used; ${NAME:-DEFAULT}
# stands in for an unset one (an unset one alone: bad-env-unset.conf).
printf 'store "local" {\n\ttype = "fs"\n\troot = "${IMGSYNC_TEST_ROOT}"\n\tlayout = ${IMGSYNC_TEST_UNSET:-imageattach}\n}\n' >"$T/env.conf"
out=$(env -u IMGSYNC_TEST_UNSET IMGSYNC_TEST_ROOT=/srv/images "$bin" --check-config -c "$T/env.conf" 2>&1)
rc=$?
[ $rc = 0 ] && ok "\${NAME} set and \${NAME:-DEFAULT} unset are fine: $out" ||
	{ nok "\${NAME} set and \${NAME:-DEFAULT} unset are fine (exit $rc)"; echo "# $out"; }

# Secret files for the configs that name @T@/...: what a mistaken file
# holds (nothing, two lines, too much, a control byte; a key id with a space).
mkdir -p "$T/fixtures" "$T/conf"
: >"$T/fixtures/empty.secret"
printf 'first\nsecond\n' >"$T/fixtures/two-lines.secret"
head -c 20000 /dev/zero | tr '\0' 'k' >"$T/fixtures/large.secret"
printf 'abc\033def\n' >"$T/fixtures/control.secret"
printf 'AKID EXAMPLE\n' >"$T/fixtures/spaces.key-id"
chmod 600 "$T"/fixtures/*

# Readable by imgsyncd's own group (root:imgsync 0640, read without
# LoadCredential=) is what that setup needs: no warning.  Readable by
# another group is a leak: warned, naming the group.
chmod 640 "$T/cloud.secret"
chgrp "$(id -g)" "$T/cloud.secret"
out=$("$bin" --check-config -c "$T/full.conf" 2>&1)
case "$out" in *"secret file"*) nok "secret file readable by the daemon's own group: no warning"; echo "# $out" ;;
*) ok "secret file readable by the daemon's own group: no warning" ;; esac
other=""
for g in 65534 $(seq 1 100); do
	case " $(id -G) " in *" $g "*) ;; *) other=$g; break ;; esac
done
if [ -n "$other" ] && chgrp "$other" "$T/cloud.secret" 2>/dev/null; then
	out=$("$bin" --check-config -c "$T/full.conf" 2>&1)
	rc=$?
	case "$out" in *"is readable by group "*", which imgsyncd is not in; chmod 600 it"*)
		[ $rc = 0 ] && ok "secret file readable by another group is warned about" ||
			nok "secret file readable by another group: exit $rc" ;;
	*) nok "secret file readable by another group is warned about"; echo "# $out" ;; esac
else
	ok "# SKIP cannot give a file to another group here (not root)"
fi
chmod 600 "$T/cloud.secret"
if [ "$(id -u)" != 0 ]; then
	chmod 000 "$T/cloud.secret"
	out=$("$bin" --check-config -c "$T/full.conf" 2>&1)
	rc=$?
	case "$out" in *"cannot read secret_access_key_file"*"Permission denied"*)
		[ $rc = 78 ] && ok "unreadable secret file: exit 78, $out" || nok "unreadable secret file: exit $rc" ;;
	*) nok "unreadable secret file names the file and the reason"; echo "# $out" ;; esac
	chmod 600 "$T/cloud.secret"
else
	ok "# SKIP root reads any file: no unreadable secret file to test"
fi

# Every broken config: exit 78 and its golden message, nothing else.  A
# config naming @T@ runs as a copy pointing at the fixtures, its output
# mapped back to the names in tests/conf.
for conf in tests/conf/bad-*.conf; do
	want=$(cat "${conf%.conf}.err")
	run=$conf
	if grep -q '@T@' "$conf"; then
		run=$T/conf/${conf##*/}
		sed "s|@T@|$T/fixtures|g" "$conf" >"$run"
	fi
	case "$conf" in
	*/bad-noenv-*) got=$(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
		-u CREDENTIALS_DIRECTORY "$bin" --check-config -c "$run" 2>&1) ;;
	*) got=$(env -u IMGSYNC_TEST_UNSET AWS_ACCESS_KEY_ID=AKIDENV \
		AWS_SECRET_ACCESS_KEY=envsecret "$bin" --check-config -c "$run" 2>&1) ;;
	esac
	rc=$?
	got=$(printf '%s\n' "$got" | grep -v ': warning: ')
	got=${got//"$run"/"$conf"}
	got=${got//"$T/fixtures"/@T@}
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
head -c 1100000 /dev/zero | tr '\0' '#' >"$T/huge.conf"
out=$("$bin" --check-config -c "$T/huge.conf" 2>&1)
rc=$?
[ $rc = 78 ] && [ "$out" = "$T/huge.conf: larger than 1024 KiB; is this a configuration file?" ] &&
	ok "a 1 MiB+ config file: exit 78 ($out)" || nok "a 1 MiB+ config file: exit $rc ($out)"
if [ "$(id -u)" != 0 ]; then
	cp tests/conf/ok-minimal.conf "$T/unreadable.conf"
	chmod 000 "$T/unreadable.conf"
	out=$("$bin" --check-config -c "$T/unreadable.conf" 2>&1)
	rc=$?
	[ $rc = 78 ] && [ "$out" = "$T/unreadable.conf: cannot open: Permission denied" ] &&
		ok "an unreadable config file: exit 78 ($out)" || nok "an unreadable config file: exit $rc ($out)"
else
	ok "# SKIP root reads any file: no unreadable config file to test"
fi
out=$("$bin" --check-config -c "$T" 2>&1)
rc=$?
[ $rc = 78 ] && [ "$out" = "$T: not a regular file" ] && ok "a directory as the config file: exit 78 ($out)" ||
	nok "a directory as the config file: exit $rc ($out)"
"$bin" --version | grep -q '^imgsyncd [0-9]' && ok "--version" || nok "--version"
"$bin" --help | grep -q -- '--check-config' && ok "--help" || nok "--help"
"$bin" --no-such-option >/dev/null 2>&1
rc=$?
[ $rc = 64 ] && ok "unknown option: exit 64" || nok "unknown option: exit $rc"
echo "1..$n"
