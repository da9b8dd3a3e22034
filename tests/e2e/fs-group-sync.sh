#!/usr/bin/env bash
# Group sync of a filesystem store with fsync = true (lib/fs.c): under load,
# the small puts that have written their data are made durable together
# (one syncfs for the data, the names, a second one), and still land
# byte-exact, whole, and under their names only; new images and rewrites
# of existing files alike, next to a large image, which syncs alone, as do
# the puts onto a mount under the root.  A put that waits for its group
# only lends its transfer slot to a new claim (sync_put_parked()).
# A group whose syncfs is slow sends the puts back to syncing one by one;
# IMGSYNC_FS_NO_GROUP_SYNC=1 turns the groups off; a kill -9 amid the groups
# leaves nothing half-written and the restart finishes the work.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init groupsync || { fail "set-up"; done_testing; exit 1; }
MIRROR="$D_DIR/mirror"
d_add_fs mirror "$MIRROR"
d_mirrors mirror

fstype=$(stat -f -c %T "$MIRROR")
case $fstype in
ext2/ext3 | xfs | btrfs | tmpfs) ;;
*)
	skip "group sync" "the test directory is on $fstype, where puts sync one by one"
	done_testing
	exit 0
	;;
esac

# mk PREFIX N SALT: N images of 1-4 KiB under PREFIX/, in 20 directories
mk() {
	py - "$D_ROOT" "$1" "$2" "$3" <<'PY'
import os, random, sys
root, prefix, n, salt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rnd = random.Random(prefix + salt)
for i in range(n):
    d = os.path.join(root, prefix, "d%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "%04d.jpg" % i), "wb") as f:
        f.write(salt.encode() + rnd.randbytes(rnd.randint(1024, 4096)))
PY
}
# puts PREFIX N: one statement putting them all
puts() {
	d_sql "SELECT count(imgsync.put('$1/d' || lpad((i % 20)::text, 2, '0') || '/' || lpad(i::text, 4, '0') || '.jpg', 'local'))
	         FROM generate_series(0, $2 - 1) i" >/dev/null
}
mirrored() { # PREFIX: how many of its images the catalog has on the mirror at their version
	d_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE '$1/%' AND 'mirror' = ANY (stores)"
}
same_tree() { # PREFIX: every image of it byte-exact on the mirror, and nothing else there
	diff -r "$D_ROOT/$1" "$MIRROR/$1" >"$D_DIR/diff.out" 2>&1 && return 0
	head -5 "$D_DIR/diff.out" | sed 's/^/# /'
	return 1
}
hidden() { find "$MIRROR" -name '.*' -type f | wc -l; }
# groups LOG: "COUNT MAX SUM", the groups the log reports, the largest, and
# the puts in them
groups() { # LOG [STORE]
	grep -o "store \"${2:-mirror}\": [0-9]* puts made durable together" "$1" |
		awk '{ n++; t += $3; if ($3 > m) m = $3 } END { print n + 0, m + 0, t + 0 }'
}

# --- a burst of new images, a large one among them ---
mk burst 600 a
head -c $((3 * 1024 * 1024)) /dev/urandom >"$D_ROOT/large.jpg"
check "imgsyncd starts" d_start
puts burst 600
d_sql "SELECT imgsync.put('large.jpg', 'local')" >/dev/null
check "600 small images and a large one are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'mirror' = ANY (stores)" 601 60
check "... byte-exact, and nothing else under the mirror's burst/" same_tree burst
check "... the large one too" cmp -s "$D_ROOT/large.jpg" "$MIRROR/large.jpg"
check "... no temporary file left ($(hidden))" test "$(hidden)" = 0
read -r ng mx sum <<<"$(groups "$D_LOG")"
check "the puts were made durable in groups ($ng groups, the largest of $mx)" \
	test "$ng" -ge 1 -a "$mx" -ge 2

# --- rewrites: the new content renamed over the old files, in groups ---
mk burst 600 b
before=$ng
d_sql "SELECT count(imgsync.put(key, 'local')) FROM imgsync.images WHERE key LIKE 'burst/%'" >/dev/null
check "600 rewrites are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'burst/%' AND 'mirror' = ANY (stores) AND version = 2" 600 60
check "... the mirror holds the new contents, byte-exact" same_tree burst
check "... no temporary name left behind by the renames ($(hidden))" test "$(hidden)" = 0
read -r ng mx sum <<<"$(groups "$D_LOG")"
check "... in groups too ($((ng - before)) more)" test "$ng" -gt "$before"

# --- a mount under the root: a syncfs of the root's file system would not
# sync it, so its puts sync one by one ---
if [ "$(id -u)" = 0 ] && mkdir -p "$MIRROR/mnt" &&
	mount -t tmpfs -o size=16m imgsync-group "$MIRROR/mnt" 2>"$D_DIR/mount.err"; then
	trap 'umount -l "$MIRROR/mnt" 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
	mk mnt 300 f
	before=$ng
	puts mnt 300
	check "300 images under a mount below the mirror's root are mirrored" \
		wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'mnt/%' AND 'mirror' = ANY (stores)" 300 60
	check "... byte-exact" same_tree mnt
	read -r ng mx sum <<<"$(groups "$D_LOG")"
	check "... each synced alone ($((ng - before)) groups more)" test "$ng" = "$before"
	umount -l "$MIRROR/mnt"
else
	skip "a mount under the root" "cannot mount a tmpfs here: $(cat "$D_DIR/mount.err" 2>/dev/null || echo 'not root')"
fi
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0

# --- a slow syncfs: the puts sync one by one ---
mk slow 300 c
export IMGSYNC_FS_GROUP_SLOW_MS=0
check "imgsyncd starts (every group counts as slow)" d_start
unset IMGSYNC_FS_GROUP_SLOW_MS
puts slow 300
check "300 images are mirrored" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'slow/%' AND 'mirror' = ANY (stores)" 300 60
check "... byte-exact" same_tree slow
check "the slow group is reported, and what follows" \
	grep -q 'store "mirror": syncing [0-9]* puts together took .*puts sync one by one for the next 5 minutes' "$D_LOG"
read -r ng mx sum <<<"$(groups "$D_LOG")"
n=$(grep -c 'puts sync one by one' "$D_LOG")
check "... once ($n)" test "$n" = 1
# the puts staged by then still group; the rest sync alone
check "... the others synced alone ($sum of 300 in groups, at most 64 may be)" test "$sum" -le 64
d_stop

# --- parked puts: a put that waits only for its group's syncfs gives its
# transfer slot to a new claim, up to as many again as the concurrency.
# Each claim says in the daemon's log how many items are in hand and how
# many of them are parked: at concurrency 2, claims made for parked items,
# and never more than 4 items in hand ---
mk parked 300 g
sed -i 's/^  concurrency = 32$/  concurrency = 2/' "$D_CONF"
d_add_fs vault "$D_DIR/vault"
d_add_fs vault2 "$D_DIR/vault2"
# claims LOG: "MOST PARKED", the most items in hand after a claim, and the
# claims made while some were parked
claims() {
	sed -n 's/.*claiming \([0-9]*\).* (\([0-9]*\) in hand, \([0-9]*\) of them parked)$/\1 \2 \3/p' "$1" |
		awk '{ if ($1 + $2 > m) m = $1 + $2; if ($3 > 0) p++ } END { print m + 0, p + 0 }'
}
# (each group's syncfs 20 ms slower, as on a slow disk)
export IMGSYNC_FS_GROUP_DELAY_MS=20
check "imgsyncd starts (transfer.concurrency = 2)" d_start
puts parked 300
check "300 images are mirrored" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'parked/%' AND 'mirror' = ANY (stores)" 300 60
check "... byte-exact" same_tree parked
d_stop
read -r most parked <<<"$(claims "$D_LOG")"
check "... with claims for the slots of parked puts ($parked)" test "$parked" -gt 0
check "... and never more than twice as many items in hand as slots ($most)" test "$most" -gt 0 -a "$most" -le 4
# a migration's copies lend their slots too, unless a read-back of the
# copy (--verify) follows: that is a transfer again
check "imgsyncd starts again" d_start
"$BUILD/imgsyncctl" -c "$D_CONF" migrate local vault --copy --prefix parked/ --wait >"$D_DIR/m1.out" 2>&1
check "a copy of the 300 into another store ends" grep -q 'done, 300/300' "$D_DIR/m1.out"
d_stop
read -r most parked <<<"$(claims "$D_LOG")"
check "... with claims for the slots of parked puts too ($parked; at most $most in hand)" \
	test "$parked" -gt 0 -a "$most" -le 4
check "imgsyncd starts again" d_start
"$BUILD/imgsyncctl" -c "$D_CONF" migrate local vault2 --copy --verify --prefix parked/ --wait >"$D_DIR/m2.out" 2>&1
check "a copy with --verify into a third store ends" grep -q 'done, 300/300' "$D_DIR/m2.out"
d_stop
unset IMGSYNC_FS_GROUP_DELAY_MS
read -r most parked <<<"$(claims "$D_LOG")"
check "... its puts, each followed by a read-back, keep their slots (claims while parked: $parked; at most $most in hand)" \
	test "$parked" = 0 -a "$most" -le 2
sed -i 's/^  concurrency = 2$/  concurrency = 32/' "$D_CONF"

# --- turned off ---
mk off 300 d
export IMGSYNC_FS_NO_GROUP_SYNC=1
check "imgsyncd starts (IMGSYNC_FS_NO_GROUP_SYNC=1)" d_start
unset IMGSYNC_FS_NO_GROUP_SYNC
puts off 300
check "IMGSYNC_FS_NO_GROUP_SYNC=1: 300 images are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'off/%' AND 'mirror' = ANY (stores)" 300 60
check "... byte-exact" same_tree off
read -r ng mx sum <<<"$(groups "$D_LOG")"
check "... each synced alone (no group in the log: $ng)" test "$ng" = 0
d_stop

# --- kill -9 amid the groups ---
mk crash 4000 e
check "imgsyncd starts" d_start
puts crash 4000
for _ in $(seq 400); do
	[ "$(mirrored crash)" -ge 200 ] && break
	sleep 0.05
done
kill -KILL "$D_PID"
wait "$D_PID" 2>/dev/null
at=$(mirrored crash)
check "killed with $at of 4000 mirrored" test "$at" -gt 0 -a "$at" -lt 4000
bad=0
while IFS= read -r f; do
	cmp -s "$D_ROOT/$f" "$MIRROR/$f" || bad=$((bad + 1))
done < <(cd "$MIRROR" && find crash -type f)
check "every file under its name on the mirror is whole ($bad differ)" test "$bad" = 0
d_start
check "after a restart all 4000 are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'crash/%' AND 'mirror' = ANY (stores)" 4000 90
check "... byte-exact" same_tree crash
check "... no temporary file left ($(hidden))" test "$(hidden)" = 0
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
