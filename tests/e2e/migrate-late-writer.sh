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

# the writer: opens the file now, writes it when told (a line on its stdin)
mkfifo "$D_DIR/go"
py -c '
import sys
f = open(sys.argv[1], "r+b")
print("open", flush=True)
open(sys.argv[2]).readline()
f.seek(0)
f.truncate()
f.write(b"version two, written by a writer that opened the file before the move")
f.close()
print("written", flush=True)
' "$D_ROOT/late/a.png" "$D_DIR/go" >"$D_DIR/writer.out" &
WRITER=$!
exec 7>"$D_DIR/go"
trap 'kill $WRITER 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
for _ in $(seq 50); do grep -q open "$D_DIR/writer.out" && break; sleep 0.1; done
check "the writer has the file open" grep -q open "$D_DIR/writer.out"

m=$(ctl migrate local cloud --follow | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
gone=no
for _ in $(seq 500); do [ -e "$D_ROOT/late/a.png" ] || { gone=yes; break; }; sleep 0.01; done
check "the move deletes the source copy (migration $m)" test $gone = yes
echo >&7
exec 7>&-
for _ in $(seq 50); do grep -q written "$D_DIR/writer.out" && break; sleep 0.02; done
check "the writer writes the new version into it" grep -q written "$D_DIR/writer.out"
d_sql "SELECT imgsync.put('late/a.png', 'local', 'image/png')" >/dev/null
check "the move takes the new version" \
	wait_sql "SELECT count(*) FROM imgsync.work" 0 20
d_sql "SELECT key, state, attempts, last_error FROM imgsync.work" | sed 's/^/# left: /'
check "... to S3, with its bytes" test "$(s3_cat late/a.png)" = \
	"version two, written by a writer that opened the file before the move"
check "... the catalog has it there only" \
	test "$(d_sql "SELECT array_to_string(stores, ',') || ' ' || size FROM imgsync.images WHERE key = 'late/a.png'")" = "cloud 69"
empty_soon() {
	for _ in $(seq 50); do [ -z "$(find "$D_ROOT" -type f)" ] && return 0; sleep 0.1; done
	find "$D_ROOT" -type f | sed 's/^/# left: /'
	return 1
}
check "... the source store is empty" empty_soon
check "... saying the file written as it was deleted was written back" \
	grep -q '"late/a.png" was written as it was deleted, by a program that had opened it just before: written back (69 bytes)' "$D_LOG"
ctl cancel "$m" >/dev/null 2>&1
d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0
done_testing
