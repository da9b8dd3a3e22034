#!/usr/bin/env bash
# Filesystem faults under a running imgsyncd mirroring one fs store to
# another: the target disk full (a 2 MiB tmpfs as the mirror's root; with
# O_TMPFILE and with named temporary files), a source file it may not read,
# a target directory it may not write, a file that vanishes between the put
# and the copy, files that vanish during a move once the catalog has listed
# them, a directory where a file should go.
#
# Each failure names the key, the store and the cause (in imgsync.dead_work
# and the log); the other keys go on; once the fault is gone `imgsyncctl
# retry-dead` brings everything to the target byte-exact; nothing
# half-written is ever visible under an image's name, and no temporary
# file is left behind.
#
# Root ignores file permissions: as root the daemon runs as nobody here
# (setpriv), so that chmod means what it says; mounting the tmpfs needs
# root, and that part is skipped without it.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

D_MAX_ATTEMPTS=3 d_init faultsfs || { fail "set-up"; done_testing; exit 1; }
DISK="$D_DIR/disk"   # the mount point
FULL="$DISK/images"  # the mirror's root, on it
mkdir -p "$DISK"
mounted=0
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=2m,mode=0755 imgsync-test "$DISK" 2>"$D_DIR/mount.err"; then
	mounted=1
	trap 'd_cleanup; umount -l "$DISK" 2>/dev/null; _e2e_cleanup' EXIT
else
	diag "no tmpfs for the full-disk case: $(cat "$D_DIR/mount.err" 2>/dev/null || echo 'not root')"
fi
mkdir -p "$FULL"

# run as nobody when root: permissions must bite
as=()
if [ "$(id -u)" = 0 ]; then
	if setpriv --reuid=nobody --regid=nogroup --clear-groups true 2>/dev/null; then
		as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
		chown nobody "$D_DIR/secret" "$FULL"
	else
		diag "setpriv cannot switch to nobody: the permission cases are skipped"
	fi
fi
unprivileged=0
[ "$(id -u)" != 0 ] || [ ${#as[@]} -gt 0 ] && unprivileged=1

sed -i -e "s|conninfo = \"\\(.*\\)\"|conninfo = \"\\1 user=$PGUSER\"|" "$D_CONF"
d_add_fs full "$FULL"
d_mirrors full

# d_start, as the unprivileged user
start_daemon() {
	D_N=$((D_N + 1))
	D_LOG="$D_DIR/imgsyncd.$D_N.log"
	"${as[@]}" "$BUILD/imgsyncd" -v -c "$D_CONF" >"$D_LOG" 2>&1 &
	D_PID=$!
	D_PIDS="${D_PIDS:-} $D_PID"
	local i tries=100
	[ "${IMGSYNC_VALGRIND:-0}" = 1 ] && tries=600 # valgrind starts slowly
	for i in $(seq $tries); do
		grep -q 'running as daemon' "$D_LOG" && return 0
		kill -0 "$D_PID" 2>/dev/null || break
		sleep 0.1
	done
	sed 's/^/#   /' "$D_LOG"
	return 1
}
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
put() { d_sql "SELECT imgsync.put('$1', 'local')" >/dev/null; }
mk() { # KEY SIZE: a file of SIZE random bytes in the source
	mkdir -p "$(dirname "$D_ROOT/$1")"
	head -c "$2" /dev/urandom >"$D_ROOT/$1"
}
dead() { d_sql "SELECT last_error FROM imgsync.dead_work WHERE key = '$1'"; }
hidden() { find "$FULL" -name '.*.imgsync-*' 2>/dev/null | wc -l; }
same() { cmp -s "$D_ROOT/$1" "$FULL/$1"; }

check "imgsyncd starts${as:+ (as nobody)}" start_daemon

# --- the target disk full ---
if [ $mounted = 1 ]; then
	head -c $((1536 * 1024)) /dev/zero >"$DISK/ballast" # ~0.5 MiB left
	mk big.jpg $((1024 * 1024))
	for i in 1 2 3 4 5; do mk "small/$i.jpg" 20000; done
	put big.jpg
	for i in 1 2 3 4 5; do put "small/$i.jpg"; done
	check "small images still land on the nearly full disk" \
		wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'small/%' AND 'full' = ANY (stores)" 5
	check "the one that does not fit ends dead" \
		wait_sql "SELECT count(*) FROM imgsync.dead_work WHERE key = 'big.jpg'" 1 20
	m=$(dead big.jpg)
	case "$m" in *'store "full"'*'"big.jpg"'*"No space left on device"*) pass "saying why: $m" ;;
	*) fail "saying why (store, key, No space left on device)"; diag "$m" ;; esac
	check "... in the log too" grep -q 'big.jpg.*store "full".*No space left on device' "$D_LOG"
	check "... after $(d_sql "SELECT attempts FROM imgsync.dead_work WHERE key = 'big.jpg'") attempts (max_attempts 3)" \
		test "$(d_sql "SELECT attempts FROM imgsync.dead_work WHERE key = 'big.jpg'")" = 3
	check "nothing half-written under its name on the full disk" test ! -e "$FULL/big.jpg"
	check "no temporary file left on the full disk ($(hidden))" test "$(hidden)" = 0
	check "the daemon still runs" kill -0 "$D_PID"
	rm "$DISK/ballast"
	ctl retry-dead >/dev/null
	check "space freed, retry-dead: it lands" \
		wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'big.jpg'" t
	check "... byte-exact" same big.jpg
	check "... and so did the rest" sh -c 'for i in 1 2 3 4 5; do cmp -s "$1/small/$i.jpg" "$2/small/$i.jpg" || exit 1; done' _ "$D_ROOT" "$FULL"

	# again with named temporary files (.NAME.imgsync-XXXXXXXX, renamed
	# into place), as on a file system without O_TMPFILE: the half-written
	# one must go, not stay beside the image
	d_stop
	IMGSYNC_FS_NO_TMPFILE=1 start_daemon || fail "imgsyncd starts with named temporary files"
	head -c $((2048 * 1024)) /dev/zero >"$DISK/ballast" 2>/dev/null # the disk full
	mk big2.jpg $((300 * 1024))
	put big2.jpg
	check "named temporary files: the image that does not fit ends dead" \
		wait_sql "SELECT count(*) FROM imgsync.dead_work WHERE key = 'big2.jpg'" 1 20
	m=$(dead big2.jpg)
	case "$m" in *'store "full"'*'"big2.jpg"'*"No space left on device"*) pass "... saying why: $m" ;;
	*) fail "... saying why (store, key, No space left on device)"; diag "$m" ;; esac
	check "... nothing half-written under its name" test ! -e "$FULL/big2.jpg"
	check "... and no temporary file left beside it ($(hidden))" test "$(hidden)" = 0
	rm "$DISK/ballast"
	ctl retry-dead >/dev/null
	check "... space freed, retry-dead: it lands byte-exact" \
		wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'big2.jpg'" t
	check "... byte-exact" same big2.jpg
	d_stop
	start_daemon || fail "imgsyncd starts again"
else
	skip "target disk full: cannot mount a tmpfs here"
fi

# --- permission denied ---
if [ $unprivileged = 1 ]; then
	mk noread.jpg 1000
	chmod 000 "$D_ROOT/noread.jpg"
	mkdir -p "$FULL/locked"
	chmod 555 "$FULL/locked"
	mk locked/x.jpg 1000
	mk fine.jpg 1000
	put noread.jpg; put locked/x.jpg; put fine.jpg
	check "a readable image lands meanwhile" \
		wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'fine.jpg'" t
	check "the unreadable source and the unwritable target end dead" \
		wait_sql "SELECT count(*) FROM imgsync.dead_work WHERE key IN ('noread.jpg', 'locked/x.jpg')" 2 20
	m=$(dead noread.jpg)
	case "$m" in *'store "local"'*'"noread.jpg"'*"Permission denied"*) pass "an unreadable source, saying so: $m" ;;
	*) fail "an unreadable source, saying so (store, key, Permission denied)"; diag "$m" ;; esac
	m=$(dead locked/x.jpg)
	case "$m" in *'store "full"'*'"locked/x.jpg"'*"Permission denied"*) pass "an unwritable target directory, saying so: $m" ;;
	*) fail "an unwritable target directory, saying so (store, key, Permission denied)"; diag "$m" ;; esac
	chmod 644 "$D_ROOT/noread.jpg"
	chmod 755 "$FULL/locked"
	chown nobody "$FULL/locked" 2>/dev/null
	ctl retry-dead >/dev/null
	check "permissions fixed, retry-dead: both land" \
		wait_sql "SELECT count(*) FROM imgsync.images WHERE key IN ('noread.jpg', 'locked/x.jpg') AND 'full' = ANY (stores)" 2
	check "... byte-exact" sh -c "cmp -s '$D_ROOT/noread.jpg' '$FULL/noread.jpg' && cmp -s '$D_ROOT/locked/x.jpg' '$FULL/locked/x.jpg'"
else
	skip "permission denied: running as root and cannot switch to an unprivileged user"
fi

# --- a file that vanishes between the put and the copy ---
mk vanish.jpg 1000
cp "$D_ROOT/vanish.jpg" "$D_DIR/vanish.keep"
printf '%s\n' "BEGIN;" "SELECT imgsync.put('vanish.jpg', 'local');" "\\! rm '$D_ROOT/vanish.jpg'" "COMMIT;" |
	psql -qX -v ON_ERROR_STOP=1 -d "$D_DB" >/dev/null
check "a source gone before the copy ends dead at once" \
	wait_sql "SELECT attempts FROM imgsync.dead_work WHERE key = 'vanish.jpg'" 1
m=$(dead vanish.jpg)
case "$m" in *'"local"'*'"vanish.jpg"'*"does not exist"*) pass "naming the key and the store: $m" ;;
*) fail "naming the key and the store"; diag "$m" ;; esac
cp "$D_DIR/vanish.keep" "$D_ROOT/vanish.jpg"
ctl retry-dead >/dev/null
check "back in place, retry-dead: it lands" \
	wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'vanish.jpg'" t
check "... byte-exact" same vanish.jpg

# --- files that vanish once the catalog has listed them, during a move ---
# (a migration walks the catalog, not the directory: the catalog is its
# listing; the files go after it and before the copies)
for i in $(seq 20); do mk "mv/$i.jpg" 3000; done
# a move deletes its sources: the daemon's user owns their directory
[ ${#as[@]} -gt 0 ] && chown nobody "$D_ROOT/mv"
d_sql "SELECT count(imgsync.put('mv/' || i || '.jpg', 'local')) FROM generate_series(1, 20) i" >/dev/null
check "the images to move are mirrored first" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'mv/%' AND 'full' = ANY (stores)" 20
rm -rf "$D_DIR/mvfull"
mkdir -p "$D_DIR/mvfull"
d_sql "UPDATE imgsync.images SET stores = '{local}' WHERE key LIKE 'mv/%'" >/dev/null
rm -r "$FULL/mv"
for i in 3 7 11; do rm "$D_ROOT/mv/$i.jpg"; done
out=$(timeout 120 "$BUILD/imgsyncctl" -c "$D_CONF" migrate local full --prefix mv/ --wait 2>&1)
mid=$(d_sql "SELECT max(id) FROM imgsync.migrations")
st=$(d_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = $mid")
check "a move whose sources vanished in part ends: 17 done, 3 failed ($st)" test "$st" = "failed 17 3"
m=$(d_sql "SELECT string_agg(last_error, ' | ' ORDER BY key) FROM imgsync.migration_failures WHERE migration = $mid")
n=$(printf '%s' "$m" | grep -o 'does not exist' | wc -l)
case "$m" in *'from "local" to "full"'*'"mv/11.jpg"'*) check "... each failure naming the key, the store and the cause ($n): ${m:0:160}" test "$n" = 3 ;;
*) fail "... each failure naming the key, the store and the cause"; diag "$m" ;; esac
check "... the other 17 moved byte-exact, gone from the source" \
	sh -c 'n=0; for i in $(seq 20); do case $i in 3|7|11) continue ;; esac
		[ ! -e "$1/mv/$i.jpg" ] && [ -s "$2/mv/$i.jpg" ] && n=$((n + 1)); done; [ $n = 17 ]' _ "$D_ROOT" "$FULL"
check "... the catalog says so: 17 in full only, 3 still in local" \
	test "$(d_sql "SELECT count(*) FILTER (WHERE stores = '{full}') || ' ' || count(*) FILTER (WHERE stores = '{local}') FROM imgsync.images WHERE key LIKE 'mv/%'")" = "17 3"
check "... and the daemon goes on" kill -0 "$D_PID"
d_sql "SELECT imgsync.remove('mv/' || i || '.jpg') FROM generate_series(1, 20) i" >/dev/null
check "... removed, they are gone everywhere" wait_sql "SELECT count(*) FROM imgsync.work" 0

# --- a directory where the file should go ---
mkdir -p "$FULL/clash.jpg/inside"
mk clash.jpg 1000
mk notclash.jpg 1000
put clash.jpg; put notclash.jpg
check "the other image lands" \
	wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'notclash.jpg'" t
check "the one blocked by a directory ends dead" \
	wait_sql "SELECT count(*) FROM imgsync.dead_work WHERE key = 'clash.jpg'" 1 20
m=$(dead clash.jpg)
case "$m" in *'store "full"'*'"clash.jpg"'*"directory"*) pass "saying a directory is in the way: $m" ;;
*) fail "saying a directory is in the way"; diag "$m" ;; esac
check "the directory is left alone" test -d "$FULL/clash.jpg/inside"
check "no temporary file left behind ($(hidden))" test "$(hidden)" = 0
rm -r "$FULL/clash.jpg"
ctl retry-dead >/dev/null
check "directory moved away, retry-dead: it lands" \
	wait_sql "SELECT 'full' = ANY (stores) FROM imgsync.images WHERE key = 'clash.jpg'" t
check "... byte-exact" same clash.jpg

# --- in the end ---
check "nothing is dead or pending" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0
check "imgsyncctl verify finds the stores in step" sh -c "'$BUILD/imgsyncctl' -c '$D_CONF' verify local full >'$D_DIR/verify.out' 2>&1"
sed 's/^/# /' "$D_DIR/verify.out" | tail -2
check "no temporary file left anywhere ($(hidden))" test "$(hidden)" = 0
d_stop
check "SIGTERM stops it cleanly (exit $D_RC)" test "$D_RC" = 0
diag "figures: $([ $mounted = 1 ] && echo "2 full disks (O_TMPFILE, named temporary files), ")$([ $unprivileged = 1 ] && echo "2 permissions denied, ")4 sources vanished, 1 directory in the way; $(d_sql "SELECT count(*) FROM imgsync.images WHERE 'full' = ANY (stores)") images in the target, checked by imgsyncctl verify, ${SECONDS}s"
[ $mounted = 1 ] && umount "$DISK"
done_testing
