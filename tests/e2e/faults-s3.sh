#!/usr/bin/env bash
# S3 faults lose nothing.  imgsyncd talks to radosgw through faultproxy,
# which answers 500 and 503, resets connections in the middle of request
# and response bodies, stalls answers past the client's timeout, truncates
# bodies and flips bytes in uploads and downloads.  Through it: images
# mirrored fs -> S3, a move fs -> S3, a move between buckets (copies on
# the server) and a move S3 -> fs (downloads).  At
# the end every image is byte-exact where it belongs (read by the
# independent client straight from radosgw, or from the disk), the catalog
# agrees, every source is empty, and every kind of fault was injected.
#
# IMGSYNC_TORTURE=1: 6,000 images, higher fault rates, longer.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

if [ "${IMGSYNC_TORTURE:-0}" = 1 ]; then
	N_MIRROR=3000 N_MOVE=3000 RATE=0.06 N_BIG=20 WAIT=1200
else
	N_MIRROR=120 N_MOVE=130 RATE=0.03 N_BIG=4 WAIT=150
fi
SEED=${IMGSYNC_FAULT_SEED:-$RANDOM}
N=$((N_MIRROR + N_MOVE))
SECONDS=0

# faults that no transfer may be lost to; stalls cost time, so fewer
FAULTS="--error500 $RATE --error503 $RATE --reset-request $RATE --reset-response $RATE
	--truncate $RATE --corrupt-response $RATE --corrupt-request $RATE --stall 0.01
	--stall-seconds 3"
KINDS="error500 error503 reset_request reset_response stall truncate corrupt_response corrupt_request"

# the set-up: stores local (fs), cloud (S3 through the proxy), back (fs)
D_MAX_ATTEMPTS=100 d_init faults || { fail "set-up"; done_testing; exit 1; }
. tests/harness/faultproxy.sh
# shellcheck disable=SC2086
fp_start --seed "$SEED" $FAULTS
trap 'kill $PROXY_PID 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
diag "$(head -1 "$D_DIR/proxy.out")"
fp_stores '  low_speed_time = 2\n  multipart_threshold = 5M\n  part_size = 5M'
check "the store cloud goes through the proxy" grep -q "endpoint = \"$PROXY\"" "$D_CONF"

# images: mostly small (one PUT with Content-MD5 and a signed payload),
# some above 1 MiB (streamed, checked by the ETag), one in parts
py - "$D_ROOT" "$D_DIR/manifest" "$N" "$N_BIG" "$SEED" <<'PY'
import hashlib, os, random, sys
root, manifest, n, nbig, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
random.seed(seed)
with open(manifest, "w") as m:
    for i in range(n):
        key = "f/%02d/i%05d.jpg" % (i % 20, i)
        if i % 2000 == 7:
            size = 11 * 2**20 + 123  # multipart: three parts of 5 MiB
        elif i % (n // nbig) == 3:
            size = random.randint(2**20 + 1, 3 * 2**20)
        else:
            size = random.randint(1, 40000)
        data = random.randbytes(size)
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        with open(os.path.join(root, key), "wb") as f:
            f.write(data)
        m.write("%s %d %s %s\n" % (key.encode().hex(), size, hashlib.sha256(data).hexdigest(),
                                   hashlib.md5(data).hexdigest()))
PY
keys_sql() { # FROM TO: the keys of images FROM..TO
	echo "SELECT 'f/' || lpad((i % 20)::text, 2, '0') || '/i' || lpad(i::text, 5, '0') || '.jpg'
	      FROM generate_series($1, $2) i"
}
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }
status() { d_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed || ' ' || skipped FROM imgsync.migration_status WHERE id = $1"; }
files_in() { find "$1" -type f | wc -l; }

# 1. mirror fs -> S3 through the faults
d_sql "SELECT count(imgsync.put(k, 'local', 'image/jpeg')) FROM ($(keys_sql 0 $((N_MIRROR - 1)))) s(k)" >/dev/null
check "imgsyncd starts" d_start
check "all $N_MIRROR puts are mirrored through the faults" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE stores @> '{local,cloud}'" "$N_MIRROR" "$WAIT"
check "... and the queue is empty, nothing dead" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
diag "mirrored at ${SECONDS}s"

# 2. a move fs -> S3: the mirrored images only lose their source copy, the
# others are copied through the faults first
d_stop
d_mirrors
check "imgsyncd starts without mirrors" d_start
d_sql "SELECT count(imgsync.put(k, 'local', 'image/jpeg')) FROM ($(keys_sql "$N_MIRROR" $((N - 1)))) s(k)" >/dev/null
check "the new images are catalogued" wait_sql "SELECT count(*) FROM imgsync.work" 0 30
timeout "$WAIT" "$BUILD/imgsyncctl" -c "$D_CONF" migrate local cloud --wait >"$D_DIR/move1.out" 2>&1
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move fs -> S3 of $N images completes through the faults ($(status "$m"))" \
	test "$(status "$m")" = "done $N/$N 0 0"
check "the source store is empty ($(files_in "$D_ROOT") files)" test "$(files_in "$D_ROOT")" = 0
check "the catalog says every image is on S3, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'cloud' AND stores = '{cloud}'")" = "$N"
cut -d' ' -f1-3 "$D_DIR/manifest" >"$D_DIR/manifest.s3"
check_bucket "every image is byte-exact in the bucket, read straight from radosgw" \
	"$D_BUCKET" "$D_DIR/manifest.s3" --exact
diag "moved to S3 at ${SECONDS}s"

# 3. a move S3 -> S3 on one server: CopyObject and UploadPartCopy through
# the faults
timeout "$WAIT" "$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud archive --wait >"$D_DIR/move2.out" 2>&1
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move S3 -> S3 of $N images completes through the faults ($(status "$m"))" \
	test "$(status "$m")" = "done $N/$N 0 0"
n=$(cat "$D_DIR"/imgsyncd.*.log | grep -c "migration $m: copying .* (server-side)$")
check "... copied by the server ($n server-side copies started)" test "$n" -ge "$N"
n=$(oracle_rgw list "$D_BUCKET" | wc -l)
check "the first bucket is empty ($n objects)" test "$n" = 0
check_bucket "every image is byte-exact in the second bucket" "$ARCHIVE" "$D_DIR/manifest.s3" --exact
diag "moved between buckets at ${SECONDS}s"

# 4. a move S3 -> fs: downloads through the faults
timeout "$WAIT" "$BUILD/imgsyncctl" -c "$D_CONF" migrate archive back --wait >"$D_DIR/move3.out" 2>&1
m=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move S3 -> fs of $N images completes through the faults ($(status "$m"))" \
	test "$(status "$m")" = "done $N/$N 0 0"
n=$(oracle_rgw list "$ARCHIVE" | wc -l)
check "the second bucket is empty ($n objects)" test "$n" = 0
bad=$(py - "$D_DIR/back" "$D_DIR/manifest" <<'PY'
import hashlib, os, sys
root, manifest = sys.argv[1], sys.argv[2]
bad = 0
for line in open(manifest):
    hexkey, size, sha = line.split()[:3]
    path = os.path.join(root, bytes.fromhex(hexkey).decode())
    try:
        data = open(path, "rb").read()
    except OSError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != sha:
        bad += 1
        print("# differs: %s" % path, file=sys.stderr)
print(bad)
PY
)
check "every image is byte-exact in the filesystem ($bad differ)" test "$bad" = 0
check "... and nothing else is there" test "$(files_in "$D_DIR/back")" = "$N"
check "the catalog says every image is in back, and only there" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images WHERE origin = 'back' AND stores = '{back}'")" = "$N"
# what the catalog records of each image: its size, and its MD5 where known
d_sql "SELECT encode(convert_to(key, 'UTF8'), 'hex') || ' ' || size || ' ' || coalesce(checksum, '-') FROM imgsync.images" |
	sort >"$D_DIR/catalog"
wrong=$(sort "$D_DIR/manifest" | join - "$D_DIR/catalog" |
	awk '$2 != $5 || ($6 != "-" && index($6, $4) == 0) { n++ } END { print n + 0 }')
check "the catalog's sizes and checksums match the images ($wrong differ)" test "$wrong" = 0
check "nothing is dead or waiting" test "$(d_sql "SELECT count(*) FROM imgsync.work")" = 0
diag "moved back at ${SECONDS}s"

d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
# (under SANITIZE=1 the sanitizers' reports are files named by pid: tests/run)
san=
for p in ${D_PIDS:-}; do
	san="$san$(ls "${IMGSYNC_SANITIZER_LOGS:-/nonexistent}"/*."$p" 2>/dev/null)"
done
check "imgsyncd never crashed" test -z "$(grep -E 'AddressSanitizer|runtime error|Segmentation' "$D_DIR"/imgsyncd.*.log)$san"
kill -TERM "$PROXY_PID"
wait "$PROXY_PID" 2>/dev/null
for k in $KINDS; do
	c=$(awk -v k="$k" '$1 == k { print $2 }' "$PROXY_STATS")
	check "faults injected: $k ${c:-0}" test "${c:-0}" -gt 0
done
diag "proxy: $(tr '\n' ' ' <"$PROXY_STATS")"
diag "seed $SEED (IMGSYNC_FAULT_SEED=$SEED to draw the same faults)"
# the server refused corrupted uploads, or imgsync caught them by the ETag
refused=$(cat "$D_DIR"/imgsyncd.*.log | grep -c 'received different bytes than were sent')
caught=$(cat "$D_DIR"/imgsyncd.*.log | grep -c 'stored different bytes')
badget=$(cat "$D_DIR"/imgsyncd.*.log | grep -cE 'GET .*: the bytes received do not match')
diag "corrupted uploads refused by the server: $refused, caught by the ETag: $caught; corrupted downloads caught: $badget"
n=$(awk '$1 == "corrupt_request" { print $2 }' "$PROXY_STATS")
check "every corrupted upload was refused or caught ($((refused + caught)) for $n)" \
	test $((refused + caught)) -ge "$n"
n=$(awk '$1 == "corrupt_response" { print $2 }' "$PROXY_STATS")
check "every corrupted download was caught ($badget for $n)" test "$badget" -ge "$n"
diag "figures: seed $SEED, $(awk '$1 !~ /^(requests|forwarded|connections|upstream_errors)$/ { n += $2 } END { print n + 0 }' "$PROXY_STATS") faults injected ($(awk '$1 !~ /^(requests|forwarded|connections|upstream_errors)$/ && $2 > 0 { printf "%s%s %s", sep, $2, $1; sep = ", " }' "$PROXY_STATS") of $(awk '$1 == "requests" { print $2 }' "$PROXY_STATS") requests), $refused corrupted uploads refused and $caught caught by the ETag, $badget corrupted downloads caught, ${SECONDS}s"
done_testing
