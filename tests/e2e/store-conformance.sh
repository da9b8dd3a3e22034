#!/usr/bin/env bash
# The store conformance suite, for every backend, against real servers:
# fs (openat2 and the O_NOFOLLOW walk), Ceph radosgw (strict SigV4) and moto.
# What imgsync wrote is checked byte-exact by an independent client
# (botocore, or plain file reads for fs), and what that client wrote is
# read back by imgsync.  Server-side copies (from a second bucket of the same
# server into the one under test) are checked the same way.
. "$(dirname "$0")/../harness/e2e.sh"
e2e_need_servers
tool=$BUILD/tests/store_conformance

# --- fs ---
mkdir -p "$T/fsroot"
cat >"$T/fs.conf" <<CONF
store "local" {
  type = "fs"
  root = "$T/fsroot"
}
store "local2" {
  type = "fs"
  root = "$T/fsroot2"
}
CONF
mkdir -p "$T/fsroot2"
run_tap "fs/openat2" "$tool" -c "$T/fs.conf" -s local -p "run1/" -m "$T/fs.manifest" -C local2
IMGSYNC_FS_NO_OPENAT2=1 IMGSYNC_FS_NO_TMPFILE=1 run_tap "fs/nofollow-walk, named temporary files" "$tool" -c "$T/fs.conf" -s local -p "run2/"
verify_fs() {
	py - "$T/fsroot" "$T/fs.manifest" <<'PY'
import hashlib, os, sys
root, manifest = sys.argv[1], sys.argv[2]
n = bad = 0
for line in open(manifest):
    keyhex, size, sha = line.split()
    path = os.path.join(root, bytes.fromhex(keyhex).decode())
    data = open(path, "rb").read()
    n += 1
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != sha:
        bad += 1
        print("# mismatch", path)
print("# verified %d files" % n)
sys.exit(1 if bad or n == 0 else 0)
PY
}
check "fs: every object is byte-exact as a plain file under the root" verify_fs
leftovers=$(find "$T/fsroot" -name '.*.imgsync-*' | wc -l)
check "fs: no temporary file left behind ($leftovers)" test "$leftovers" = 0

# --- S3 servers ---
s3_suite() { # NAME ENDPOINT AK SK CHECKS_SIGNATURES
	local name=$1 ep=$2 ak=$3 sk=$4 strict=$5 bucket="conformance-$RANDOM$RANDOM"
	local dir="$T/$name" srcbucket
	srcbucket="$bucket-src"
	mkdir -p "$dir/seed"
	for b in "$bucket" "$srcbucket"; do
		if ! oracle "$ep" "$ak" "$sk" mkbucket "$b" >"$dir/mk.log" 2>&1; then
			fail "$name: create bucket $b"
			sed 's/^/# /' "$dir/mk.log"
			return
		fi
	done
	# objects written by the independent client, hostile keys included
	py - "$dir" <<'PY'
import hashlib, os, sys
d = sys.argv[1]
keys = ["seeded/plain.jpg", "seeded/with space+plus=eq.jpg", "seeded/ユニコード/😀.png",
        "seeded/percent%41*star~tilde.gif", "seeded/a//double", "seeded/empty"]
with open(d + "/seed.manifest", "w") as m, open(d + "/seeded.expect", "w") as x:
    for i, k in enumerate(keys):
        data = b"" if k.endswith("empty") else os.urandom(1000 * (i + 1))
        p = "%s/seed/%d" % (d, i)
        open(p, "wb").write(data)
        m.write("%s %s\n" % (k.encode().hex(), p))
        x.write("%s %d %s\n" % (k.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
	oracle "$ep" "$ak" "$sk" seed "$bucket" "$dir/seed.manifest" "$dir/seed" >/dev/null 2>&1 ||
		fail "$name: seed objects with the independent client"
	printf '%s' "$sk" >"$dir/secret"
	chmod 600 "$dir/secret"
	cat >"$dir/s3.conf" <<CONF
store "cloud" {
  type = "s3"
  endpoint = "$ep"
  region = "us-east-1"
  bucket = "$bucket"
  path_style = true
  access_key_id = "$ak"
  secret_access_key_file = "$dir/secret"
  multipart_threshold = 5242880
  part_size = 5242880
  range_size = 8M
}
CONF
	# copies come from a second bucket of the same server, with the same
	# credentials; a store on another endpoint spelling or with another
	# access key must not be copied from on the server
	sed -n '/^store "cloud"/,/^}/p' "$dir/s3.conf" |
		sed -e 's/^store "cloud"/store "source"/' \
			-e "s/bucket = \"$bucket\"/bucket = \"$srcbucket\"/" >>"$dir/s3.conf"
	sed -n '/^store "cloud"/,/^}/p' "$dir/s3.conf" |
		sed -e 's/^store "cloud"/store "otherkey"/' \
			-e 's/access_key_id = ".*"/access_key_id = "OTHERAK123"/' >>"$dir/s3.conf"
	sed -n '/^store "cloud"/,/^}/p' "$dir/s3.conf" |
		sed -e 's/^store "cloud"/store "otherendpoint"/' \
			-e 's|127\.0\.0\.1|localhost|' >>"$dir/s3.conf"
	run_tap "$name" "$tool" -c "$dir/s3.conf" -s cloud -p "run/" -m "$dir/manifest" \
		-S "$dir/seeded.expect" -C source -N otherkey -N otherendpoint
	if oracle "$ep" "$ak" "$sk" verify "$bucket" "$dir/manifest" >"$dir/verify.log" 2>&1; then
		pass "$name: independent client reads every object byte-exact ($(tail -1 "$dir/verify.log"))"
	else
		fail "$name: independent client verification"
		head -20 "$dir/verify.log" | sed 's/^/# /'
	fi
	oracle "$ep" "$ak" "$sk" uploads "$bucket" >"$dir/uploads" 2>&1
	uploads=$(wc -l <"$dir/uploads")
	check "$name: no multipart upload left open ($uploads)" test "$uploads" = 0
	sed 's/^/# open upload: /' "$dir/uploads"
	uploads=$(oracle "$ep" "$ak" "$sk" uploads "$srcbucket" 2>&1 | wc -l)
	check "$name: none in the source bucket either ($uploads)" test "$uploads" = 0
	# what the copies recorded, as the independent client sees it
	for k in run/copy/ct-replaced.jpg:image/webp run/copy/ct-kept.jpg:image/jpeg \
		"run/copy/big+repl.tiff:image/x-tiff" "run/copy/big+kept.tiff:image/tiff"; do
		out=$(oracle "$ep" "$ak" "$sk" head "$bucket" \
			"$(printf '%s' "${k%%:*}" | od -An -tx1 | tr -d ' \n')" 2>&1)
		case "$out" in
		*" ${k##*:}") pass "$name: independent client sees Content-Type ${k##*:} on ${k%%:*}" ;;
		*) fail "$name: Content-Type of ${k%%:*} as the independent client sees it"; diag "$out" ;;
		esac
	done

	# a wrong secret: refused by the server, reported as what to fix
	if [ "$strict" = 0 ]; then
		skip "$name: wrong secret (this server checks no signatures)"
	else
	printf '%s' "wrong$sk" >"$dir/secret"
	out=$("$tool" -c "$dir/s3.conf" -s cloud --probe run/sizes/one 2>&1)
	case "$out" in
	denied*SignatureDoesNotMatch*secret*) pass "$name: wrong secret is refused and explained" ;;
	*) fail "$name: wrong secret is refused and explained"; diag "$out" ;;
	esac
	case "$out" in
	*"wrong$sk"*|*"$sk"*) fail "$name: the secret appears in the message" ;;
	*) pass "$name: the message does not contain the secret" ;;
	esac
	printf '%s' "$sk" >"$dir/secret"

	# an access key id the server does not know
	sed 's/access_key_id = ".*"/access_key_id = "NOSUCHKEY0123"/' "$dir/s3.conf" >"$dir/ak.conf"
	out=$("$tool" -c "$dir/ak.conf" -s cloud --probe run/sizes/one 2>&1)
	case "$out" in
	denied*InvalidAccessKeyId*access_key_id*) pass "$name: unknown access key id explained" ;;
	*) fail "$name: unknown access key id explained"; diag "$out" ;;
	esac

	# another user's valid credentials on this bucket: access denied
	if [ -n "${IMGSYNC_TEST_CEPH_CONF:-}" ] && radosgw-admin -c "$IMGSYNC_TEST_CEPH_CONF" \
		-n client.rgw.test user create --uid other --display-name other \
		--access-key OTHERAK123 --secret OTHERSECRET >/dev/null 2>&1; then
		printf '%s' OTHERSECRET >"$dir/other.secret"
		chmod 600 "$dir/other.secret"
		sed -e 's/access_key_id = ".*"/access_key_id = "OTHERAK123"/' \
			-e "s|$dir/secret|$dir/other.secret|" "$dir/s3.conf" >"$dir/other.conf"
		out=$("$tool" -c "$dir/other.conf" -s cloud --probe run/sizes/one 2>&1)
		case "$out" in
		denied*AccessDenied*policy*) pass "$name: access denied explained" ;;
		*) fail "$name: access denied explained"; diag "$out" ;;
		esac
	else
		skip "$name: access denied (could not create a second radosgw user)"
	fi

	# this host's clock two hours off
	if command -v faketime >/dev/null; then
		out=$(ASAN_OPTIONS=verify_asan_link_order=0 faketime -f -2h \
			"$tool" -c "$dir/s3.conf" -s cloud --probe run/sizes/one 2>&1)
		case "$out" in
		transient*RequestTimeTooSkewed*NTP*) pass "$name: clock skew explained" ;;
		*) fail "$name: clock skew explained"; diag "$out" ;;
		esac
	else
		skip "$name: clock skew (faketime not installed)"
	fi
	fi
	# a missing bucket
	sed "s/bucket = \"$bucket\"/bucket = \"no-such-bucket-$RANDOM\"/" "$dir/s3.conf" >"$dir/nob.conf"
	out=$("$tool" -c "$dir/nob.conf" -s cloud --probe x 2>&1)
	case "$out" in
	not-found*) pass "$name: missing bucket reported as not found: ${out:0:150}" ;;
	*) fail "$name: missing bucket"; diag "$out" ;;
	esac
}

if [ "${IMGSYNC_TEST_SKIP_RGW:-0}" = 1 ]; then
	skip "radosgw: IMGSYNC_TEST_SKIP_RGW=1"
else
	s3_suite radosgw "$IMGSYNC_TEST_RGW_ENDPOINT" "$IMGSYNC_TEST_RGW_ACCESS_KEY" \
		"$IMGSYNC_TEST_RGW_SECRET_KEY" 1
fi
if [ -n "${IMGSYNC_TEST_MOTO_ENDPOINT:-}" ]; then
	s3_suite moto "$IMGSYNC_TEST_MOTO_ENDPOINT" testing testing 0
else
	skip "moto: ${IMGSYNC_TEST_MOTO_SKIP:-not available}"
fi

# --- TLS: certificates are verified by default, and a failure says so ---
tls_test() {
	local port pid out
	openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$T/tls.key" -out "$T/tls.crt" \
		>/dev/null 2>&1 || { skip "TLS: openssl cannot make a certificate"; return; }
	for port in $(shuf -i 20000-60000 -n 5); do
		openssl s_server -quiet -accept "$port" -cert "$T/tls.crt" -key "$T/tls.key" -www \
			>/dev/null 2>&1 &
		pid=$!
		sleep 0.5
		kill -0 "$pid" 2>/dev/null && break
	done
	cat >"$T/tls.conf" <<CONF
store "tls" {
  type = "s3"
  endpoint = "https://127.0.0.1:$port"
  bucket = "media"
  path_style = true
  access_key_id = "AK"
  secret_access_key = "SK"
}
CONF
	out=$("$tool" -c "$T/tls.conf" -s tls --probe x.jpg 2>&1)
	case "$out" in
	denied*"TLS certificate of https://127.0.0.1:$port is not trusted"*ca_file*)
		pass "TLS: a self-signed server is refused by default: ${out:0:160}" ;;
	*) fail "TLS: a self-signed server is refused by default"; diag "$out" ;;
	esac
	sed "s|secret_access_key = \"SK\"|&\n  ca_file = \"$T/tls.crt\"|" "$T/tls.conf" >"$T/tls-ca.conf"
	out=$("$tool" -c "$T/tls-ca.conf" -s tls --probe x.jpg 2>&1)
	case "$out" in
	*TLS*) fail "TLS: trusted once ca_file names its certificate"; diag "$out" ;;
	*) pass "TLS: trusted once ca_file names its certificate (then: ${out:0:80})" ;;
	esac
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
if command -v openssl >/dev/null; then tls_test; else skip "TLS: openssl not installed"; fi

# --- addressing: URLs for path-style and virtual-hosted-style (no network) ---
cat >"$T/url.conf" <<CONF
store "path" {
  type = "s3"
  endpoint = "https://s3.example.com:8443"
  bucket = "media"
  path_style = true
  access_key_id = "AK"
  secret_access_key = "SK"
}
store "vhost" {
  type = "s3"
  endpoint = "https://s3.eu-west-1.amazonaws.com"
  region = "eu-west-1"
  bucket = "media"
  prefix = "img/"
  access_key_id = "AK"
  secret_access_key = "SK"
}
store "cdn" {
  type = "s3"
  region = "eu-west-1"
  bucket = "media"
  public_url = "https://cdn.example.com/images"
  access_key_id = "AK"
  secret_access_key = "SK"
}
CONF
u=$("$tool" -c "$T/url.conf" -s path --url "a b/c+d.jpg" 2>&1)
check "path-style URL: $u" test "$u" = "https://s3.example.com:8443/media/a%20b/c%2Bd.jpg"
u=$("$tool" -c "$T/url.conf" -s vhost --url "img/x~y=z.jpg" 2>&1)
check "virtual-hosted URL: $u" test "$u" = "https://media.s3.eu-west-1.amazonaws.com/img/x~y%3Dz.jpg"
u=$("$tool" -c "$T/url.conf" -s cdn --url "ü.png" 2>&1)
check "public_url URL: $u" test "$u" = "https://cdn.example.com/images/%C3%BC.png"
done_testing
