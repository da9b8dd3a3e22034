#!/usr/bin/env bash
# Hostile S3 answers, through faultproxy switched from mode to mode: a wrong
# ETag on uploads and downloads, no ETag at all, error bodies that are not
# XML or are 50 MB long, a ListObjects answer that is not XML, an abort of a
# failed upload that fails too, a corrupted download of an object uploaded
# in parts, ranges of a download answered 503 or with a Content-Range
# that is not the range asked for; and an https endpoint whose
# certificate is not trusted.
# imgsync names what was wrong, does not crash, keeps its memory small and
# records nothing as done that the server did not confirm; once the server
# behaves, everything lands byte-exact.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers
SECONDS=0

D_MAX_ATTEMPTS=100 d_init hostile || { fail "set-up"; done_testing; exit 1; }
CTL="$D_DIR/proxy.ctl"
: >"$CTL"
. tests/harness/faultproxy.sh
fp_start --control "$CTL"
trap 'kill $PROXY_PID ${TLS_PID:-} 2>/dev/null; d_cleanup; _e2e_cleanup' EXIT
fp_stores '  multipart_threshold = 5M\n  part_size = 5M\n  range_size = 8M'

# mode LINES...: what the proxy does from now on (empty: forward faithfully)
mode() {
	printf '%s\n' "$@" >"$CTL.tmp"
	mv "$CTL.tmp" "$CTL"
	sleep 0.2
}
# faults of a kind injected so far (the proxy writes a fault's count at
# once: what happened before the call is counted)
injected() {
	awk -v k="$1" '$1 == k { print $2 }' "$PROXY_STATS"
}
# images BATCH COUNT [SIZE]: files in the fs store and their puts; the
# manifest ("KEYHEX SIZE SHA256") in $D_DIR/BATCH.manifest
images() {
	py - "$D_ROOT" "$1" "$2" "${3:-0}" >"$D_DIR/$1.manifest" <<'PY'
import hashlib, os, random, sys
root, batch, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    key = "%s/%03d.png" % (batch, i)
    data = random.randbytes(size or random.randint(1, 30000))
    os.makedirs(os.path.join(root, batch), exist_ok=True)
    open(os.path.join(root, key), "wb").write(data)
    print(key.encode().hex(), len(data), hashlib.sha256(data).hexdigest())
PY
	d_sql "SELECT count(imgsync.put('$1/' || lpad(i::text, 3, '0') || '.png', 'local', 'image/png'))
	       FROM generate_series(0, $2 - 1) i" >/dev/null
}
mirrored() { d_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE '$1/%' AND 'cloud' = ANY (stores)"; }
failed_with() { # BATCH TEXT: items of the batch whose last error has TEXT
	d_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE '$1/%' AND last_error LIKE '%$2%'"
}
hwm_kb() { awk '/^VmHWM/ { print $2 }' "/proc/${1:-$D_PID}/status" 2>/dev/null; }
# peak OUT CMD...: run CMD (output to OUT); its peak memory (VmHWM, kB) in
# $PEAK, sampled until it exits; its exit status is ours
peak() {
	local out=$1 pid h rc
	shift
	"$@" >"$out" 2>&1 &
	pid=$!
	PEAK=0
	while h=$(hwm_kb "$pid") && [ -n "$h" ]; do
		PEAK=$h
		sleep 0.05
	done
	wait "$pid"
	rc=$?
	return $rc
}

check "imgsyncd starts" d_start
images warm 20
check "a first batch is mirrored with the proxy faithful" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE 'cloud' = ANY (stores)" 20 30
hwm0=$(hwm_kb)
diag "imgsyncd VmHWM after a first batch: $hwm0 kB"

# 1. a wrong ETag on every PUT answer: the server confirms other bytes than
# were sent; nothing may be recorded as mirrored
mode "wrong_etag 1" "only /etag/"
images etag 10
check "wrong ETags: every small upload fails, naming the ETag" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'etag/%' AND last_error LIKE '%the server stored different bytes (ETag %'" 10 30
sleep 1
check "... and none is recorded as mirrored ($(mirrored etag))" test "$(mirrored etag)" = 0
mode "wrong_etag 1" "only /etag-big/"
images etag-big 3 2000000
check "wrong ETags: every streamed upload fails too" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'etag-big/%' AND last_error LIKE '%stored different bytes%'" 3 30
check "... and none is recorded as mirrored ($(mirrored etag-big))" test "$(mirrored etag-big)" = 0
diag "wrong ETags injected: $(injected wrong_etag)"
mode ""

# 2. no ETag on PUT answers: nothing to compare the bytes stored with, so
# every upload the daemon makes carries a checksum the server checks
# (Content-MD5, or a signed payload): new images, and the rewritten ones
# that replace the mirror's earlier version (hashed first as well, since
# such a copy may only replace the object it looked at)
images noetag-big 3 1500000
check "new images above 1 MiB are mirrored with a checksum" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'noetag-big/%' AND 'cloud' = ANY (stores)" 3 30
mode "no_etag 1" "only /noetag"
images noetag-big 3 1500000
check "no ETag: rewritten images above 1 MiB, sent with Content-MD5, are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'noetag-big/%' AND 'cloud' = ANY (stores) AND NOT EXISTS (SELECT 1 FROM imgsync.work w WHERE w.key = images.key)" 3 30
sleep 0.5 # the proxy's counters are written within 200 ms
check "... their answers had no ETag ($(injected no_etag) dropped)" test "$(injected no_etag)" -ge 3
same_in_cloud() {
	local k n=0
	for k in $(d_sql "SELECT key FROM imgsync.images WHERE key LIKE '$1/%'"); do
		cmp -s "$D_ROOT/$k" <(s3_cat "$k") || return 1
		n=$((n + 1))
	done
	[ "$n" -gt 0 ]
}
check "... and the mirror holds the rewritten bytes" same_in_cloud noetag-big
images noetag-small 5
check "no ETag: small uploads, checked by the server's Content-MD5, are mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'noetag-small/%' AND 'cloud' = ANY (stores)" 5 30
diag "ETags dropped: $(injected no_etag)"
mode ""

# 3. error answers that are not XML: named as such, retried
mode "garbage_error 1" "only /garbled/"
images garbled 3
check "error answers that are not XML: the uploads fail, saying so" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'garbled/%' AND last_error LIKE '%(HTTP 500 InternalError: its body (% bytes) is not an S3 error document)%'" 3 30
mode ""

# answers to a multipart upload that are not XML (CreateMultipartUpload,
# CompleteMultipartUpload): the upload fails, saying so
mode "garbage_xml 1" "only /gx/"
images gx 1 $((6 * 1024 * 1024))
check "answers to a multipart upload that are not XML: it fails, saying so" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'gx/%' AND last_error LIKE '%MultipartUpload \"gx/000.png\": S3 answered with malformed XML%'" 1 30
check "... and it is not recorded as mirrored ($(mirrored gx))" test "$(mirrored gx)" = 0
d_sql "SELECT last_error FROM imgsync.work WHERE key LIKE 'gx/%'" | sed 's/^/# /'
mode ""

# an upload in parts whose parts fail, and the abort of it too: the abort is
# asked for again after a pause (three times in all), then given up, saying so
# (the look before a new upload, HEAD, is let through)
mode "error500 1" "only /ab/" "except POST |HEAD "
images ab 1 $((11 * 1024 * 1024))
# most DELETEs (aborts) of one upload the proxy failed so far
aborts() {
	grep -o 'error500: DELETE [^ ]*ab/000.png?uploadId=[^ ]*' "$PROXY_LOG" | sort | uniq -c |
		sort -rn | awk 'NR == 1 { print $1 }'
}
for _ in $(seq 150); do [ "$(aborts)" = 3 ] && break; sleep 0.2; done
check "a failed abort is asked for again: three times for one upload ($(aborts))" test "$(aborts)" = 3
check "... then given up with a warning" \
	wait_for_log 'could not abort the multipart upload of "ab/000.png"'
sleep 2.5
check "... and not asked a fourth time ($(aborts))" test "$(aborts)" = 3
mode ""
check "with honest answers it is mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key = 'ab/000.png' AND 'cloud' = ANY (stores)" 1 60

# 4. error answers of 50 MB: retried as the server failing, memory small
mode "huge_error 1" "only /huge/"
images huge 4
check "50 MB error answers: the uploads fail as the server failing" \
	wait_sql "SELECT count(*) >= 4 FROM imgsync.work WHERE key LIKE 'huge/%' AND last_error LIKE '%the server is busy or failing (HTTP 500%'" t 60
sleep 3
hwm1=$(hwm_kb)
check "imgsyncd is alive" kill -0 "$D_PID"
diag "huge error bodies sent: $(injected huge_error); VmHWM $hwm0 kB -> $hwm1 kB"
if [ "${IMGSYNC_SANITIZE:-0}" = 1 ] || [ "${IMGSYNC_VALGRIND:-0}" = 1 ]; then
	# ASan and memcheck keep freed blocks aside (a quarantine, a 20 MB free
	# list) to catch their use: 41-43 MB and 27 MB of growth where the
	# plain build's is 4 MB
	skip "memory bound under ASan or valgrind (freed blocks kept aside count in VmHWM: grew by $(((hwm1 - hwm0) / 1024)) MB)"
else
	check "its memory stays small (VmHWM grew by $(((hwm1 - hwm0) / 1024)) MB, under 24 MB)" \
		test $((hwm1 - hwm0)) -lt $((24 * 1024))
fi
mode ""
diag "hostile uploads done at ${SECONDS}s"

# every image of the batches above lands once the server behaves
check "once the answers are honest, every image is mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE NOT 'cloud' = ANY (stores)" 0 60
cat "$D_DIR"/*.manifest >"$D_DIR/all.manifest"
check_bucket "... byte-exact" "$D_BUCKET" "$D_DIR/all.manifest" --exact

# 5. listings that are not XML, and a 50 MB error answer to a listing:
# imgsyncctl verify (which lists the bucket) says so and exits non-zero
# (after two attempts: a 500 is worth trying again)
sed 's/^ *max_attempts = .*/  max_attempts = 2/' "$D_CONF" >"$D_DIR/ctl.conf"
mode "garbage_list 1"
peak "$D_DIR/verify1.out" "$BUILD/imgsyncctl" -c "$D_DIR/ctl.conf" verify local cloud
rc=$?
check "a listing that is not XML: verify fails (exit $rc) without crashing" test "$rc" -ge 1 -a "$rc" -lt 128
check "... and says the answer was not understood: $(tail -1 "$D_DIR/verify1.out")" \
	grep -qiE 'xml|malformed|not well-formed|invalid' "$D_DIR/verify1.out"
mode "huge_error 1" "only list-type="
peak "$D_DIR/verify2.out" "$BUILD/imgsyncctl" -c "$D_DIR/ctl.conf" verify local cloud
rc=$?
check "a 50 MB error answer to a listing: verify fails (exit $rc) without crashing" test "$rc" -ge 1 -a "$rc" -lt 128
check "... naming the server's failure: $(tail -1 "$D_DIR/verify2.out")" grep -q 'HTTP 500' "$D_DIR/verify2.out"
if [ "${IMGSYNC_VALGRIND:-0}" = 1 ]; then
	skip "memory bound under valgrind (its own memory counts in VmHWM: $((PEAK / 1024)) MB)"
else
	check "... with its memory small (VmHWM $((PEAK / 1024)) MB, under 32 MB)" test "$PEAK" -lt $((32 * 1024))
fi
mode ""
"$BUILD/imgsyncctl" -c "$D_CONF" verify local cloud >"$D_DIR/verify3.out" 2>&1
check "with honest answers verify finds no difference: $(tail -1 "$D_DIR/verify3.out")" test $? = 0
diag "listings done at ${SECONDS}s"

# 6. downloads: a wrong ETag, and a flipped byte in an object uploaded in
# parts, then copied in parts to another bucket (its ETag is no MD5 of
# the content); the move S3 -> fs must not finish with wrong bytes
images mp 1 $((11 * 1024 * 1024))
images rr 3 $((33 * 1024 * 1024 + 5))
check "an object of 11 MB is mirrored in parts" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key = 'mp/000.png' AND 'cloud' = ANY (stores)" 1 60
images wr 2 $((17 * 1024 * 1024 + 3))
check "... and three of 33 MB" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'rr/%' AND 'cloud' = ANY (stores)" 3 60
check "... and two of 17 MB" wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'wr/%' AND 'cloud' = ANY (stores)" 2 60
d_stop
d_mirrors
d_sql "UPDATE imgsync.images SET stores = '{cloud}', origin = 'cloud', home_at = now() WHERE key LIKE 'mp/%' OR key LIKE 'etag/%' OR key LIKE 'rr/%' OR key LIKE 'wr/%'" >/dev/null
rm -rf "$D_ROOT/mp" "$D_ROOT/etag" "$D_ROOT/rr" "$D_ROOT/wr"
check "imgsyncd starts again" d_start
"$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud archive --prefix mp/ --wait >/dev/null 2>&1
check "the object is copied in parts to the second bucket" \
	test "$(d_sql "SELECT stores FROM imgsync.images WHERE key = 'mp/000.png'")" = "{archive}"
mode "corrupt_response 1" "only /mp/"
m=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate archive back --prefix mp/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a corrupted download of a multipart object fails, naming the checksum" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key = 'mp/000.png' AND last_error LIKE '%do not match%'" 1 30
check "... and the move has not finished ($(d_sql "SELECT state || ' ' || done FROM imgsync.migration_status WHERE id = $m"))" \
	test "$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = $m")" = 0
mode ""
check "with honest answers the move finishes" \
	wait_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = $m" "done 1 0" 60
mode "wrong_etag 1" "only /etag/"
m2=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud back --prefix etag/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a wrong ETag on downloads: they fail, naming the ETag" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'etag/%' AND last_error LIKE '%do not match the object''s ETag%'" 10 30
check "... and none is moved ($(d_sql "SELECT done FROM imgsync.migration_status WHERE id = ${m2:-0}"))" \
	test "$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = ${m2:-0}")" = 0
mode ""
check "with honest answers that move finishes too" \
	wait_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = ${m2:-0}" "done 10 0" 60
# a download in ranges (8 MB each) whose ranges after the first fail now
# and then: a failed range is asked for again, not the whole object
mode "error503 0.5" "only /rr/" "except =0-"
"$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud back --prefix rr/ --wait >/dev/null 2>&1
m3=$(d_sql "SELECT max(id) FROM imgsync.migrations")
check "a move of objects in ranges through 503s finishes ($(d_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = $m3"))" \
	test "$(d_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = $m3")" = "done 3 0"
n503=$(injected error503)
again=$(grep -c 'asking for that range again' "$D_LOG")
whole=$(d_sql "SELECT count(*) FROM imgsync.attempts WHERE key LIKE 'rr/%' AND NOT ok")
check "failed ranges were asked for again ($again times, ${n503:-0} 503s)" test "$again" -gt 0
check "... so fewer downloads failed whole ($whole) than 503s were answered" \
	test "$whole" -lt "${n503:-0}"
# ranges after the first answered with another size for the object
# (Content-Range's total changed): each is asked for again, then the
# download fails, and nothing is recorded (had the first range lied too,
# the size would be wrong throughout, and the object's CRC-32C or MD5
# catches that)
mode "wrong_range 1" "only /wr/" "except =0-"
m4=$("$BUILD/imgsyncctl" -c "$D_CONF" migrate cloud back --prefix wr/ | sed -n 's/^migration \([0-9]*\) started.*/\1/p')
check "a wrong Content-Range: the downloads fail, saying the answer is not the range asked for" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'wr/%' AND last_error LIKE '%is not that range%'" 2 30
check "... and none is moved ($(injected wrong_range) answers changed)" \
	test "$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = ${m4:-0}")/$(injected wrong_range)" != 0/0 -a \
	"$(d_sql "SELECT done FROM imgsync.migration_status WHERE id = ${m4:-0}")" = 0
mode ""
check "with honest answers that move finishes" \
	wait_sql "SELECT state || ' ' || done || ' ' || failed FROM imgsync.migration_status WHERE id = ${m4:-0}" "done 2 0" 60
diag "moves done at ${SECONDS}s"
bad=$(cd "$D_DIR" && cat mp.manifest etag.manifest rr.manifest wr.manifest | py -c '
import hashlib, sys
bad = 0
for line in sys.stdin:
    h, size, sha = line.split()
    try:
        data = open("back/" + bytes.fromhex(h).decode(), "rb").read()
    except OSError:
        data = b""
    bad += hashlib.sha256(data).hexdigest() != sha
print(bad)')
check "... and the moved images are byte-exact ($bad differ)" test "$bad" = 0

d_stop
check "imgsyncd stops cleanly (exit $D_RC)" test "$D_RC" = 0

# 7. TLS: an https endpoint whose certificate nobody told imgsync to trust
if ! command -v openssl >/dev/null; then
	skip "TLS: openssl not installed"
	done_testing
	exit 0
fi
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$D_DIR/tls.key" -out "$D_DIR/tls.crt" \
	-days 1 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" >/dev/null 2>&1
"${IMGSYNC_TEST_PYTHON:-python3}" - "$D_DIR/tls.crt" "$D_DIR/tls.key" "$D_DIR/tls.port" <<'PY' &
import socket, ssl, sys, threading
crt, key, portfile = sys.argv[1:4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(crt, key)
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(16)
open(portfile + ".tmp", "w").write(str(s.getsockname()[1]))
import os
os.rename(portfile + ".tmp", portfile)
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
        t.recv(65536)
        t.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        t.close()
    except Exception:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
TLS_PID=$!
for _ in $(seq 50); do [ -s "$D_DIR/tls.port" ] && break; sleep 0.1; done
TLS="https://127.0.0.1:$(cat "$D_DIR/tls.port")"
sed -i "s|endpoint = \"$PROXY\"|endpoint = \"$TLS\"|" "$D_CONF"
d_mirrors cloud
check "imgsyncd starts with an https endpoint" d_start
images tls 1
check "an untrusted certificate fails the upload" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE key LIKE 'tls/%' AND last_error IS NOT NULL" 1 30
err=$(d_sql "SELECT last_error FROM imgsync.work WHERE key LIKE 'tls/%'")
diag "$err"
check "the error says plainly that TLS certificate verification failed" \
	grep -q 'TLS certificate verification failed' <<<"$err"
check "... and how to fix it (ca_file)" grep -q 'ca_file' <<<"$err"
d_stop
# with ca_file naming the certificate the handshake passes (and the stub's
# 503 is an honest server error, not a TLS one)
sed -i "s|endpoint = \"$TLS\"|endpoint = \"$TLS\"\n  ca_file = \"$D_DIR/tls.crt\"|" "$D_CONF"
d_sql "SELECT imgsync.put('tls/000.png', 'local', 'image/png')" >/dev/null
check "imgsyncd starts with ca_file set" d_start
check "with ca_file the handshake passes (the stub server answers 503)" \
	wait_for_log 'put "tls/000.png" failed' 30
check "... and no TLS error is reported" test -z "$(grep 'tls/000.png' "$D_LOG" | grep 'TLS')"
d_stop
diag "figures: $(awk '$1 !~ /^(requests|forwarded|connections|upstream_errors)$/ { n += $2 } END { print n + 0 }' "$PROXY_STATS") hostile answers ($(awk '$1 !~ /^(requests|forwarded|connections|upstream_errors)$/ && $2 > 0 { printf "%s%s %s", sep, $2, $1; sep = ", " }' "$PROXY_STATS")), an untrusted certificate, ${SECONDS}s"
done_testing
