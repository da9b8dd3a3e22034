#!/usr/bin/env bash
# imgsyncd under systemd's eyes: a notification socket of ours stands in
# for systemd.  READY, STATUS and WATCHDOG in order; SIGHUP reloads as a
# transaction (RELOADING then READY; a broken file or a change that needs a
# restart keeps the old configuration; a new mirror applies without
# dropping work); STOPPING on SIGTERM.  A SIGTERM during a migration
# releases its claims and a second daemon carries on at once.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init systemd || { fail "set-up"; done_testing; exit 1; }
check "a notification socket stands in for systemd" d_notify_listen
cp "$D_CONF" "$D_DIR/good.conf"
notes() { sed 's/^[0-9.]* //' "$D_DIR/notify.log"; }
# the line number of the first NOTIFY message matching a pattern
at() { grep -n -m1 "$1" "$D_DIR/notify.log" | cut -d: -f1; }

WATCHDOG_USEC=400000 d_start
check "imgsyncd starts under a watchdog" kill -0 "$D_PID"
for i in $(seq 60); do printf 'image %d' "$i" >"$D_ROOT/a$i.jpg"; done
d_sql "SELECT count(imgsync.put('a' || i || '.jpg', 'local')) FROM generate_series(1, 60) i" >/dev/null
check "puts are mirrored" wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 60
sleep 2.5
check "READY=1 once connected and registered" test -n "$(at '^[0-9.]* READY=1$')"
check "STATUS= lines follow it: $(notes | grep STATUS= | tail -1)" \
	test "$(at 'STATUS=')" -gt "$(at 'READY=1')"
n=$(grep -c ' WATCHDOG=1$' "$D_DIR/notify.log")
check "WATCHDOG=1 from the loop, about every 200 ms ($n in ~3 s)" test "$n" -ge 8

# a broken file: refused, the old configuration stays
{ head -3 "$D_DIR/good.conf"; echo '  bogus_option = 1'; tail -n +4 "$D_DIR/good.conf"; } >"$D_CONF"
: >"$D_DIR/notify.log"
kill -HUP "$D_PID"
check "SIGHUP with a broken file: the reload is refused and says where" \
	wait_for_log "reload refused, still running on the previous configuration: $D_CONF:4:"
check "... RELOADING=1 (with MONOTONIC_USEC) then READY=1" \
	sh -c "sleep 0.3; grep -q 'MONOTONIC_USEC=[0-9]' '$D_DIR/notify.log' && test \"\$(sed 's/^[0-9.]* //' '$D_DIR/notify.log' | grep -E '^(RELOADING|READY)=1$' | tr '\n' ' ')\" = 'RELOADING=1 READY=1 '"
check "... and the daemon goes on working" kill -0 "$D_PID"
printf 'after a bad reload' >"$D_ROOT/b1.jpg"
d_sql "SELECT imgsync.put('b1.jpg', 'local')" >/dev/null
check "... still mirroring" wait_sql "SELECT 'cloud' = ANY (stores) FROM imgsync.images WHERE key = 'b1.jpg'" t

# a change that needs a restart: refused whole
sed 's/channel = "imgsync"/channel = "other"/' "$D_DIR/good.conf" >"$D_CONF"
kill -HUP "$D_PID"
check "a changed database.channel is refused: it needs a restart" \
	wait_for_log "database.channel changed: that needs a restart"

# a new mirror while 600 puts are in flight
mkdir -p "$D_DIR/archive"
sed -e 's/^sync { mirrors = { "cloud" } }$/sync { mirrors = { "cloud", "archive" } }/' "$D_DIR/good.conf" >"$D_CONF"
cat >>"$D_CONF" <<CONF
store "archive" {
  type = "fs"
  root = "$D_DIR/archive"
}
CONF
for i in $(seq 600); do head -c 3000 /dev/urandom >"$D_ROOT/c$i.jpg"; done
d_sql "SELECT count(imgsync.put('c' || i || '.jpg', 'local')) FROM generate_series(1, 600) i" >/dev/null
diag "$(d_sql "SELECT count(*) FROM imgsync.work") items queued or in flight at the reload"
kill -HUP "$D_PID"
check "SIGHUP with a new mirror applies it" wait_for_log "reloaded $D_CONF: 3 stores, 2 mirrors; stores added: archive; mirrors now: cloud archive"
check "no work is dropped: all 600 reach S3" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'c%' AND 'cloud' = ANY (stores)" 600 60
check "... nothing failed or was abandoned" \
	sh -c "! grep -q 'abandoning\|failed' '$D_LOG'"
printf 'after a good reload' >"$D_ROOT/d1.jpg"
d_sql "SELECT imgsync.put('d1.jpg', 'local')" >/dev/null
check "puts after the reload reach the new mirror too" \
	wait_sql "SELECT stores::text FROM imgsync.images WHERE key = 'd1.jpg'" "{archive,cloud,local}"
check "... as a file" test "$(cat "$D_DIR/archive/d1.jpg" 2>/dev/null)" = "after a good reload"

# SIGTERM during a migration: claims released, a second daemon carries on
d_mirrors cloud
kill -HUP "$D_PID"
check "a reload takes the mirror away again" wait_for_log "mirrors now: cloud"
for i in $(seq 1500); do head -c 20000 /dev/urandom >"$D_ROOT/m$i.jpg"; done
d_sql "SELECT count(imgsync.put('m' || i || '.jpg', 'local')) FROM generate_series(1, 1500) i" >/dev/null
wait_sql "SELECT count(*) FROM imgsync.work" 0 120 >/dev/null
first=$D_PID
D_NOTIFY= d_start
second=$D_PID
m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate local archive --prefix m | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
wait_sql "SELECT done >= 200 FROM imgsync.migration_status WHERE id = $m" t 60 >/dev/null
: >"$D_DIR/notify.log"
d_stop "$first"
check "the first daemon stops cleanly on SIGTERM mid-migration (exit $D_RC)" test "$D_RC" = 0
check "... it said STOPPING=1" grep -q ' STOPPING=1$' "$D_DIR/notify.log"
held=$(d_sql "SELECT count(*) FROM imgsync.work w JOIN imgsync.daemons d ON d.id = w.lease_owner WHERE d.pid = $first")
check "... and released every claim it held ($held left)" test "$held" = 0
check "the second daemon finishes the migration" \
	wait_sql "SELECT state || ' ' || done || '/' || total || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 1500/1500 0" 120
n=$(find "$D_DIR/archive" -name 'm*.jpg' | wc -l)
check "nothing is lost: 1500 files moved ($n), none left in the source" \
	test "$n/$(find "$D_ROOT" -name 'm*.jpg' | wc -l)" = "1500/0"
d_stop "$second"
done_testing
