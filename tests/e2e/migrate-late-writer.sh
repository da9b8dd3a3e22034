#!/usr/bin/env bash
# A writer that opened the source file just before a move deleted it, and
# writes it just after.  The kernel opens a file in two steps (the name
# looked up, then the file it found opened and truncated), and a writer
# preempted in between, as happens on a loaded machine, writes into the
# file the delete set aside, past its check.  Unlinked at once, those bytes
# were lost: the application's put() named a file that was gone.  The
# file set aside now stays for a grace, and comes back under its name when
# it was written meanwhile.  Here the writer holds the file open from
# before the delete, which makes the window as wide as needed.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers

d_init latewriter || { fail "set-up"; done_testing; exit 1; }
d_mirrors
ctl() { "$BUILD/imgsyncctl" -c "$D_CONF" "$@"; }

mkdir -p "$D_ROOT/late"
printf 'version one' >"$D_ROOT/late/a.png"
d_sql "SELECT imgsync.put('late/a.png', 'local', 'image/png')" >/dev/null
check "imgsyncd starts" d_start
check "the catalog settles" wait_sql "SELECT count(*) FROM imgsync.work" 0

# writer KEY TEXT: a writer that opens KEY's file now and writes TEXT
# over it on go KEY (a line on the FIFO $D_DIR/KEY.go), saying "open" and
# "written" in $D_DIR/KEY.out
WRITERS=
trap 'kill $WRITERS 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
writer() {
	local f="$D_DIR/${1//\//_}"
	mkfifo "$f.go"
	py -c '
import sys
f = open(sys.argv[1], "r+b")
print("open", flush=True)
open(sys.argv[2]).readline()
f.seek(0)
f.truncate()
f.write(sys.argv[3].encode())
f.close()
print("written", flush=True)
' "$D_ROOT/$1" "$f.go" "$2" >"$f.out" &
	WRITERS="$WRITERS $!"
	for _ in $(seq 50); do grep -q open "$f.out" && return 0; sleep 0.1; done
	return 1
}
# go KEY: the writer writes, once the move has deleted the file
go() {
	local f="$D_DIR/${1//\//_}"
	for _ in $(seq 500); do [ -e "$D_ROOT/$1" ] || break; sleep 0.01; done
	[ ! -e "$D_ROOT/$1" ] || return 1
	[ -z "${2:-}" ] || printf '%s' "$2" >"$D_ROOT/$1"
	echo >"$f.go"
	for _ in $(seq 50); do grep -q written "$f.out" && return 0; sleep 0.02; done
	return 1
}
empty_soon() {
	for _ in $(seq 50); do [ -z "$(find "$D_ROOT" -type f)" ] && return 0; sleep 0.1; done
	find "$D_ROOT" -type f | sed 's/^/# left: /'
	return 1
}

two="version two, written by a writer that opened the file before the move"
check "the writer has the file open" writer late/a.png "$two"
m=$(ctl migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "the move deletes the source copy, then the writer writes into it (migration $m)" \
	go late/a.png
d_sql "SELECT imgsync.put('late/a.png', 'local', 'image/png')" >/dev/null
check "the move takes the new version" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0 20
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
check "... to S3, with its bytes" test "$(s3_cat late/a.png)" = "$two"
check "... the catalog has it there only" \
	test "$(d_sql "SELECT array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'late/a.png'")" = "cloud 69"
check "... the source store is empty" empty_soon
check "... saying the file written as it was deleted was written back" \
	grep -q '"late/a.png" was written as it was deleted, by a program that had opened it just before: written back (69 bytes)' "$D_LOG"

# the same, but the application has written a newer file under the name
# before the late writer's bytes could go back: the newer one stays
printf 'version one' >"$D_ROOT/late/b.png"
check "a second writer has its file open" writer late/b.png "the late writer's version"
d_sql "SELECT imgsync.put('late/b.png', 'local', 'image/png')" >/dev/null
check "the move deletes it, a newer file takes the name, then the writer writes" \
	go late/b.png "version three, written under the name after the delete"
check "... the late writer's bytes are not written back over the newer file" \
	wait_for_log '"late/b.png" was written as it was deleted, by a program that had opened it just before, and a newer file has its name since: that one stays'
d_sql "SELECT imgsync.put('late/b.png', 'local', 'image/png')" >/dev/null
check "... the move takes the newer file" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0 20
check "... to S3, with its bytes" \
	test "$(s3_cat late/b.png)" = "version three, written under the name after the delete"
check "... the source store is empty" empty_soon
ctl cancel "$m" >/dev/null 2>&1
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
