#!/usr/bin/env bash
# Leases under a heartbeat that beats all the time (IMGSYNC_HEARTBEAT_MS=1):
# a 4,000-image move fs -> fs, claims answered while renewals are in
# flight, ends with no lease given up.  The heartbeat finds leases by key
# (a text[] the daemon writes): keys that such a literal must quote and
# escape are renewed like the others.  An item claimed just after a
# heartbeat left is not in that heartbeat's answer; taking its absence for
# a lost lease drops the item, which then waits out its 60-s lease.  A
# lease really taken by another claim is still given up at once.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
. tests/harness/faultproxy.sh
e2e_need_servers
trap 'kill ${PROXY_PID:-} 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT

d_init leases || { fail "set-up"; done_testing; exit 1; }
d_mirrors
d_add_fs disk "$D_DIR/disk" "  fsync = false"
py - "$D_ROOT" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(4000):
    d = os.path.join(root, "%02d" % (i % 40))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "i%05d.jpg" % i), "wb") as f:
        f.write(b"%05d" % i * 200)
PY
# 10 names of each kind a text[] literal must quote: 60 in all
hostile=('q"uote' 'back\slash' '{brace}' 'com,ma' 'sp ace' 'NULL')
names=
for h in "${hostile[@]}"; do
	mkdir -p "$D_ROOT/odd/$h"
	for i in 0 1 2 3 4 5 6 7 8 9; do
		printf '%s %s' "$h" "$i" >"$D_ROOT/odd/$h/é $i"
	done
	names="$names${names:+, }\$k\$$h\$k\$"
done
d_sql "SELECT count(imgsync.put('odd/' || h || '/é ' || i, 'local'))
         FROM unnest(ARRAY[$names]) h, generate_series(0, 9) i" >/dev/null
d_sql "SELECT count(imgsync.put(lpad((i % 40)::text, 2, '0') || '/i' || lpad(i::text, 5, '0') || '.jpg', 'local'))
         FROM generate_series(0, 3999) i" >/dev/null
export IMGSYNC_HEARTBEAT_MS=1
check "imgsyncd starts with a heartbeat every millisecond" d_start
check "... and says nothing of the setting" eval '! grep -q IMGSYNC_HEARTBEAT_MS "$D_LOG"'
m=$(d_sql "SELECT imgsync.start_migration('local', 'disk')")
# well within the lease: an item dropped by mistake would hold it up 60 s
check "the move of 4,060 images ends within 45 s" \
	wait_sql "SELECT state FROM imgsync.migration_status WHERE id = $m" done 45
check "every image is on the target" test "$(find "$D_DIR/disk" -type f | wc -l)" = 4060
check "... the 60 odd names among them" test "$(find "$D_DIR/disk/odd" -type f | wc -l)" = 60
check "... byte-exact" cmp "$D_DIR/disk/odd/back\\slash/é 7" <(printf 'back\\slash 7')
check "... none at the source" test "$(find "$D_ROOT" -type f | wc -l)" = 0
hb=$(d_sql "SELECT count(*) FROM imgsync.workers WHERE heartbeat_at > now() - interval '1 second'")
check "the heartbeat kept beating ($hb worker seen in the last second)" test "$hb" = 1
n=$(grep -c 'abandoning' "$D_LOG")
check "no lease was given up ($n abandoned)" test "$n" = 0
[ "$n" = 0 ] || grep -m 5 'abandoning' "$D_LOG" | sed 's/^/# /'
check "no heartbeat failed" eval '! grep -q "heartbeat failed" "$D_LOG"'
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0

# a lease taken over while its put is held up (the proxy holds every
# request 20 s) is given up at the next heartbeat; a stop that was waiting
# for that item (transfer.stop_timeout, 20 s) goes on at once
d_init stolen || { fail "set-up"; done_testing; exit 1; }
fp_start --stall_request 1 --stall-seconds 20
fp_stores ""
printf 'held up' >"$D_ROOT/slow.jpg"
check "imgsyncd starts (heartbeat every millisecond)" d_start
d_sql "SELECT imgsync.put('slow.jpg', 'local')" >/dev/null
check "the put is claimed" \
	wait_sql "SELECT lease_token IS NOT NULL FROM imgsync.work WHERE key = 'slow.jpg'" t 10
kill -TERM "$D_PID"
check "SIGTERM: imgsyncd waits for the item in flight" \
	wait_for_log 'stopping: waiting up to 20000 ms for 1 item(s) in flight' 5
d_sql "UPDATE imgsync.work SET lease_token = nextval('imgsync.lease_tokens') WHERE key = 'slow.jpg'" >/dev/null
check "another claim of the key: imgsyncd gives the item up while its request is held" \
	wait_for_log 'abandoning "slow.jpg": its lease was lost' 5
gone() {
	local i
	for i in $(seq 50); do
		kill -0 "$D_PID" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}
check "... and the stop goes on: imgsyncd has exited within 5 s" gone
kill $PROXY_PID 2>/dev/null
d_stop
check "... cleanly (exit $D_RC)" test "$D_RC" = 0

# a setting out of range is said once and the default used
IMGSYNC_HEARTBEAT_MS=0 d_start
check "IMGSYNC_HEARTBEAT_MS=0 is refused with a warning" \
	grep -q 'IMGSYNC_HEARTBEAT_MS=0 ignored: milliseconds from 1 to 10000 expected' "$D_LOG"
d_stop
done_testing
