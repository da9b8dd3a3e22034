#!/usr/bin/env bash
# Transfer slots: a slow transfer holds its own slot and no other.  While
# items are in flight a claim waits for a few slots to be free, so that one
# round trip to PostgreSQL serves many items; with transfer.concurrency = 4
# and three PUTs whose answers faultproxy holds for 8 seconds, the one free
# slot still goes on mirroring the other images.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init slots || { fail "set-up"; done_testing; exit 1; }
. tests/harness/faultproxy.sh
: >"$D_DIR/proxy.control"
fp_start --control "$D_DIR/proxy.control" --stall-seconds 8
trap 'kill $PROXY_PID 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
fp_stores ''
d_mirrors cloud
sed -i 's/^  concurrency = 32$/  concurrency = 4/' "$D_CONF"
stalls() { awk '$1 == "stall" { n = $2 } END { print n + 0 }' "$PROXY_STATS" 2>/dev/null; }
mirrored() { # PREFIX: its images the catalog has in the cloud
	d_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE '$1/%' AND 'cloud' = ANY (stores)"
}

mkdir -p "$D_ROOT/slow" "$D_ROOT/fast"
for i in 1 2 3; do head -c 2000 /dev/urandom >"$D_ROOT/slow/$i.jpg"; done
for i in $(seq -w 1 30); do head -c 3000 /dev/urandom >"$D_ROOT/fast/$i.jpg"; done
printf 'stall 1\nonly /slow/\n' >"$D_DIR/proxy.control.new"
mv "$D_DIR/proxy.control.new" "$D_DIR/proxy.control"
check "imgsyncd starts (transfer.concurrency = 4)" d_start
d_sql "SELECT imgsync.put('slow/' || i || '.jpg', 'local') FROM generate_series(1, 3) i" >/dev/null
for _ in $(seq 100); do [ "$(stalls)" -ge 3 ] && break; sleep 0.05; done
check "three PUTs are held by the proxy, in three of the four slots" test "$(stalls)" = 3
t0=$(date +%s%N)
d_sql "SELECT imgsync.put('fast/' || lpad(i::text, 2, '0') || '.jpg', 'local') FROM generate_series(1, 30) i" >/dev/null
check "the one free slot mirrors 30 other images meanwhile" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'fast/%' AND 'cloud' = ANY (stores)" 30 6
ms=$((($(date +%s%N) - t0) / 1000000))
check "... while the held ones still wait (${ms} ms; $(mirrored slow) of them mirrored)" test "$(mirrored slow)" = 0
check "then the held ones are mirrored too" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'slow/%' AND 'cloud' = ANY (stores)" 3 30
check "... and the queue is empty" wait_sql "SELECT count(*) FROM imgsync.work" 0 10
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
