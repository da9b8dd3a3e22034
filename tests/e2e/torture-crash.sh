#!/usr/bin/env bash
# A move fs -> S3 with imgsyncd killed with SIGKILL at random moments and
# restarted each time (now and then in the middle of a graceful stop, or
# again while its successor starts).  Whatever the moment, no image is ever
# lost (after every kill each image is still in the store the catalog names
# as its home, at its size), and at the end every image is byte-identical
# in exactly the place the catalog says, the source is empty, the queue
# holds no dead work and each kill cost at most one batch of re-copies.
#
# Short form (make check): 2,000 images, 10 kills.  IMGSYNC_TORTURE=1 (make
# torture): 10,000 images, 40 kills on the way to S3, then the move back
# S3 -> fs with 15 more.  The kill moments come from a seeded generator;
# the seed is printed, and IMGSYNC_TORTURE_SEED=N runs with that one again
# (the moments are then the same points of progress, not the same instants;
# the seed also picks transfer.concurrency: 8, 16 or 32).
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

if [ "${IMGSYNC_TORTURE:-0}" = 1 ]; then
	N=10000 KILLS=40 BACK_KILLS=15 BIG=3
else
	N=2000 KILLS=10 BACK_KILLS=0 BIG=0
fi
seed=${IMGSYNC_TORTURE_SEED:-$(($(od -An -tu4 -N4 /dev/urandom) % 2147483647))}
diag "seed $seed (again: IMGSYNC_TORTURE_SEED=$seed${IMGSYNC_TORTURE:+ IMGSYNC_TORTURE=$IMGSYNC_TORTURE} tests/run torture-crash)"
diag "$N images, $KILLS kills on the way to S3, $BACK_KILLS on the way back"

# a small generator of our own: $RANDOM also serves the harness
rng=$seed
rand() { # N: a number in [0, N) in R
	rng=$(((rng * 1103515245 + 12345) % 2147483648))
	R=$(((rng >> 8) % $1))
}

d_init torture || { fail "set-up"; done_testing; exit 1; }
d_mirrors
rand 3
conc=$((8 << R))
sed -i "s/^ *concurrency = .*/  concurrency = $conc/" "$D_CONF"
diag "transfer.concurrency = $conc"

# the images: sizes from empty to 60 kB, a few above the 1 MiB streaming
# threshold in the long form, in nested directories; their SHA-256 first
py - "$D_ROOT" "$D_DIR/manifest" "$N" "$seed" "$BIG" <<'PY'
import hashlib, os, random, sys
root, manifest, n, seed, big = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
rnd = random.Random(seed)
with open(manifest, "w") as m:
    for i in range(n):
        d = "t/%02d/%d" % (i % 40, i % 3)
        os.makedirs(os.path.join(root, d), exist_ok=True)
        key = "%s/img%05d.jpg" % (d, i)
        size = 0 if i % 997 == 5 else rnd.randint(1, 60000)
        if i < big:
            size = rnd.randint(1 << 20, 3 << 20)
        data = rnd.randbytes(size)
        with open(os.path.join(root, key), "wb") as f:
            f.write(data)
        m.write("%s %d %s\n" % (key.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
d_sql "SELECT count(imgsync.put('t/' || lpad((i % 40)::text, 2, '0') || '/' || (i % 3) || '/img' ||
                                 lpad(i::text, 5, '0') || '.jpg', 'local', 'image/jpeg'))
       FROM generate_series(0, $N - 1) i" >/dev/null
SECONDS=0
check "imgsyncd starts" d_start
check "the catalog settles ($N images)" wait_sql "SELECT count(*) FROM imgsync.work" 0 60

files_in() { find "$1" -type f | wc -l; }
# after a kill, with no daemon running: every image is in its home store
# (the catalog's origin) at its size, and somewhere at all
home_check() { # DESCRIPTION
	d_sql "SELECT key, origin FROM imgsync.images" >"$D_DIR/catalog"
	oracle_rgw list "$D_BUCKET" >"$D_DIR/listing" || { fail "$1: listing the bucket"; return; }
	local out
	if out=$(py - "$D_DIR/manifest" "$D_ROOT" "$D_DIR/listing" "$D_DIR/catalog" <<'PY'
import os, sys
manifest, root, listing, catalog = sys.argv[1:5]
want = {}
for line in open(manifest):
    h, size, _ = line.split()
    want[bytes.fromhex(h).decode()] = int(size)
s3 = {}
for line in open(listing):
    h, size = line.split()[:2]
    s3[bytes.fromhex(h).decode()] = int(size)
home = dict(line.rstrip("\n").split("|", 1) for line in open(catalog) if line.strip())
def fs_size(k):
    try:
        return os.stat(os.path.join(root, k)).st_size
    except FileNotFoundError:
        return None
bad, both = [], 0
for k, size in want.items():
    f, o = fs_size(k), s3.get(k)
    if f is not None and o is not None:
        both += 1
    h = home.get(k)
    at = {"local": f, "cloud": o}.get(h)
    if at != size:
        bad.append("%s: home %s holds %s bytes, not %d (fs %s, s3 %s)" % (k, h, at, size, f, o))
print("%d images, %d in both stores, %d not in their home" % (len(want), both, len(bad)))
for b in bad[:10]:
    print(b)
sys.exit(1 if bad else 0)
PY
	); then
		pass "$1: $(echo "$out" | head -1)"
	else
		fail "$1: $(echo "$out" | head -1)"
		echo "$out" | tail -n +2 | sed 's/^/# /'
	fi
}

# d_spawn: start an imgsyncd without waiting for it to be up
d_spawn() {
	D_N=$((D_N + 1))
	D_LOG="$D_DIR/imgsyncd.$D_N.log"
	"$BUILD/imgsyncd" -v -c "$D_CONF" >"$D_LOG" 2>&1 &
	D_PID=$!
	D_PIDS="${D_PIDS:-} $D_PID"
}
ms() { sleep "$(($1 / 1000)).$(printf %03d $(($1 % 1000)))"; }

kills=0 checked=0 stopping=0 starting=0
# kill_at MIGRATION TARGET: once the migration has TARGET done, after a
# random pause, SIGKILL the daemon (now and then in the middle of a
# graceful stop, or again while its successor starts); check; restart
kill_at() {
	local m=$1 target=$2 i got how pause mode
	for i in $(seq 1200); do
		got=$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m")
		[ "${got:-0}" -ge "$target" ] && break
		sleep 0.05
	done
	rand 500
	pause=$R
	rand 100
	mode=$R
	ms "$pause"
	how="after $pause ms"
	if [ "$mode" -lt 15 ]; then
		kill -TERM "$D_PID"
		rand 400
		ms "$R"
		how="$how, $R ms into a graceful stop"
		stopping=$((stopping + 1))
	fi
	kill -KILL "$D_PID"
	wait "$D_PID" 2>/dev/null
	kills=$((kills + 1))
	got=$(d_sql "SELECT done || '/' || total FROM imgsync.migration_status WHERE id = $m")
	diag "kill $kills at ${SECONDS}s, target $target, $how: migration $m at $got, $(files_in "$D_ROOT") files in the fs store"
	# a full look at both stores is dear: every kill in the short form,
	# every fourth (and the first) in the long one
	if [ "$N" -le 2000 ] || [ $((kills % 4)) = 1 ]; then
		home_check "after kill $kills nothing is lost"
		checked=$((checked + 1))
	fi
	if [ "$mode" -ge 85 ]; then
		# the successor killed too, while it connects, registers, reaps
		d_spawn
		rand 150
		ms "$R"
		kill -KILL "$D_PID"
		wait "$D_PID" 2>/dev/null
		kills=$((kills + 1))
		starting=$((starting + 1))
		diag "kill $kills: its successor, $R ms after it was started$(grep -q 'running as daemon' "$D_LOG" && echo ', registered')"
	fi
	d_start || { fail "imgsyncd restarts after kill $kills"; return 1; }
}

# kills over a migration, at sorted random points of its progress (two
# close points kill a daemon just restarted)
torture() { # MIGRATION KILLS
	local t
	for t in $(for i in $(seq "$2"); do rand $((N * 70 / 100)); echo $R; done | sort -n); do
		kill_at "$1" "$t" || return 1
	done
}

m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate local cloud | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a move fs -> S3 starts (migration $m)" test -n "$m"
torture "$m" "$KILLS"
check "the move finishes after $kills kills" \
	wait_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $m" "done $N/$N 0 0" 300
diag "move to S3 done at ${SECONDS}s"
check "the source store is empty ($(files_in "$D_ROOT") files left)" test "$(files_in "$D_ROOT")" = 0
check "the catalog says every image is on S3, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'cloud' AND stores = '{cloud}' AND NOT deleted")" = "$N"
check_bucket "every image byte-identical on S3, nothing else there" "$D_BUCKET" "$D_DIR/manifest" --exact
check "no work left, none dead" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
d_sql "SELECT key, op, state, last_error FROM imgsync.work LIMIT 5" | sed 's/^/# /'

# re-copies: every copy started is logged (-v); a key copied again was redone
recopies() { # MIGRATION SOURCE TARGET
	cat "$D_DIR"/imgsyncd.*.log | sed -n "s/.*migration $1: copying \"\(.*\)\" from $2 to $3$/\1/p" |
		sort | uniq -c | awk '$1 > 1 {r += $1 - 1} END {print r + 0}'
}
re1=$(recopies "$m" local cloud)
diag "re-copies on the way to S3: $re1 over $kills kills (concurrency $conc)"
check "re-copies bounded by one batch per kill ($re1 <= $kills x $conc)" test "$re1" -le $((kills * conc))
k1=$kills re2=0

if [ "$BACK_KILLS" -gt 0 ]; then
	m2=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud local | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
	check "the move back S3 -> fs starts (migration $m2)" test -n "$m2"
	torture "$m2" "$BACK_KILLS"
	check "the move back finishes after $((kills - k1)) more kills" \
		wait_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $m2" "done $N/$N 0 0" 300
	diag "move back done at ${SECONDS}s"
	n=$(s3_keys | wc -l)
	check "the bucket is empty ($n objects)" test "$n" = 0
	check "the catalog says every image is in the fs store, and only there" \
		test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'local' AND stores = '{local}' AND NOT deleted")" = "$N"
	out=$(py - "$D_DIR/manifest" "$D_ROOT" <<'PY'
import hashlib, os, sys
manifest, root = sys.argv[1:3]
want = {}
for line in open(manifest):
    h, size, sha = line.split()
    want[bytes.fromhex(h).decode()] = sha
found, tmp = set(), 0
for d, _, files in os.walk(root):
    for f in files:
        k = os.path.relpath(os.path.join(d, f), root)
        if ".imgsync-" in f:
            tmp += 1
        else:
            found.add(k)
bad = []
for k, sha in want.items():
    if k not in found:
        bad.append("missing " + k)
        continue
    with open(os.path.join(root, k), "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != sha:
            bad.append("differs " + k)
bad += ["extra " + k for k in sorted(found - set(want))]
print("%d images checked, %d wrong, %d temporary files left by killed writes" % (len(want), len(bad), tmp))
for b in bad[:10]:
    print(b)
sys.exit(1 if bad else 0)
PY
	)
	check "every image byte-identical in the fs store, nothing else there ($(echo "$out" | head -1))" \
		test -z "$(echo "$out" | tail -n +2)"
	echo "$out" | tail -n +2 | head -10 | sed 's/^/# /'
	check "no work left after the move back, none dead" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
	re2=$(recopies "$m2" cloud local)
	diag "re-copies on the way back: $re2 over $((kills - k1)) kills"
	check "re-copies bounded by one batch per kill ($re2 <= $((kills - k1)) x $conc)" \
		test "$re2" -le $(((kills - k1) * conc))
fi

overlap=$(d_sql "SELECT count(*) FROM imgsync.attempts a JOIN imgsync.attempts b
                 ON a.key = b.key AND a.id < b.id AND (a.daemon, a.started_at) <> (b.daemon, b.started_at)
                 AND tstzrange(a.started_at, a.finished_at) && tstzrange(b.started_at, b.finished_at)")
check "no key was worked under two claims at once ($overlap overlaps)" test "$overlap" = 0
lost=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE 'result for % not recorded%'")
check "no result was refused ($lost)" test "$lost" = 0
check "the workers view shows every killed daemon gone or stopped, one running" \
	test "$(d_sql "SELECT count(*) FROM imgsync.workers WHERE state NOT IN ('gone', 'stopped')")" = 1
d_stop
check "the last daemon stops cleanly" test "$D_RC" = 0
diag "figures: seed $seed, kills survived $kills ($stopping during a graceful stop, $starting during a start), images checked $N (byte-exact at the end$([ "$BACK_KILLS" -gt 0 ] && echo ", both ways"); home checks after $checked kills), re-copies $((re1 + re2)), ${SECONDS}s"
done_testing
