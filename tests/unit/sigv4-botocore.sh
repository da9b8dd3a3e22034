#!/bin/bash
# sigv4-botocore.sh - compare lib/sigv4 with botocore, the reference signer.
#
# For each hostile object key (and a few query-string cases) the request is
# signed twice: by build/tests/sigv4_canon (our code) and by botocore's
# S3SigV4Auth.add_auth() with the clock pinned at 20130524T000000Z and payload
# signing off (UNSIGNED-PAYLOAD).  The full canonical requests and the full
# Authorization headers must be identical.  botocore signs the path exactly
# as it appears in the URL (S3 is never normalised), and its S3 client puts
# keys in the URL quoted with safe '/~': the URL here is built the same way,
# so a difference in our encoder shows up as a difference in the canonical
# request.  Prints TAP.  Run from the repository root.
set -u

tool="${BUILD:-build}/tests/sigv4_canon"

py=""
for cand in python3 /usr/bin/python3; do
	if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import botocore.auth' 2>/dev/null; then
		py="$cand"
		break
	fi
done
if [ -z "$py" ]; then
	echo "1..0 # SKIP botocore not installed"
	exit 0
fi
if [ ! -x "$tool" ]; then
	echo "1..1"
	echo "not ok 1 - $tool is not built (run: make tests)"
	exit 1
fi

exec "$py" - "$tool" <<'PYTHON'
import datetime
import subprocess
import sys
import types
from unittest import mock
from urllib.parse import quote

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

TOOL = sys.argv[1]
ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
WHEN = datetime.datetime(2013, 5, 24, 0, 0, 0)
VHOST = "examplebucket.s3.amazonaws.com"
PHOST = "s3.us-east-1.amazonaws.com"

KEYS = [
    "plain.jpg",
    "a b.jpg",
    "a+b=c.jpg",
    "tilde~name",
    "star*name",
    "percent%20literal",
    "semi;colon,comma",
    "quote'paren(x)!",
    "at@dollar$amp&",
    "colon:hash#",
    "question?mark",
    "brackets[]{}<>|^`\"",
    "unicode/ファイル/é.png",
    "emoji/😀.gif",
    "a//b",
    "a///b/c",
    "back\\slash",
    "dots/../x",
    "dots/./x",
    "..",
    "trailing/",
    "UPPER/lower",
    "-._~0123456789",
    "k" * 1000,
    "ü/" * 300,
]

# (method, host, path, query pairs) - query pairs are raw (name, value).
CASES = []
methods = ["GET", "PUT", "HEAD", "DELETE"]
for i, key in enumerate(KEYS):
    CASES.append((methods[i % 4], VHOST, "/" + key, []))
# path-style addressing, as self-hosted S3 servers use it
for key in ["a b.jpg", "unicode/ファイル/é.png", "a//b"]:
    CASES.append(("GET", PHOST, "/imgsync-bucket/" + key, []))
CASES += [
    ("GET", VHOST, "/", [
        ("list-type", "2"),
        ("prefix", "unicode/ファイル/"),
        ("delimiter", "/"),
        ("continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=+a/b=="),
        ("max-keys", "1000"),
        ("encoding-type", "url"),
    ]),
    ("GET", VHOST, "/", [("lifecycle", "")]),
    ("POST", VHOST, "/big key.bin", [("uploads", "")]),
    ("PUT", VHOST, "/big key.bin", [("uploadId", "VXBsb2FkIElE+/=~*"), ("partNumber", "7")]),
    ("GET", VHOST, "/x", [("versionId", "3/L4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo"),
                          ("response-content-disposition", "attachment; filename=\"a b.jpg\"")]),
    ("GET", VHOST, "/", [("b", "2"), ("a", "z"), ("a", "y"), ("A", "1"), ("~", "tilde"), ("_", "")]),
    ("GET", VHOST, "/", [("ключ", "значение & more=stuff%")]),
]


def botocore_sign(method, host, path, query):
    url = "https://" + host + quote(path, safe="/~")
    req = AWSRequest(method=method, url=url, params=list(query), data=b"")
    req.context["client_config"] = types.SimpleNamespace(
        s3={"payload_signing_enabled": False})
    auth = botocore.auth.S3SigV4Auth(
        Credentials(ACCESS_KEY, SECRET_KEY), "s3", "us-east-1")
    seen = {}
    real = auth.canonical_request

    def record(request):
        seen["canonical"] = real(request)
        return seen["canonical"]

    auth.canonical_request = record
    if hasattr(botocore.auth, "get_current_datetime"):
        clock = mock.patch.object(botocore.auth, "get_current_datetime", return_value=WHEN)
    else:  # botocore < 1.31 (Debian 12 has 1.29) calls datetime.datetime.utcnow()
        class PinnedDatetime(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return WHEN
        clock = mock.patch.object(botocore.auth, "datetime",
                                  types.SimpleNamespace(datetime=PinnedDatetime))
    with clock:
        auth.add_auth(req)
    return seen["canonical"], req.headers["Authorization"]


def ours(method, host, path, query):
    args = [TOOL, method, host, path.encode().hex()]
    args += [n.encode().hex() + "=" + v.encode().hex() for n, v in query]
    out = subprocess.run(args, capture_output=True, check=False)
    if out.returncode != 0:
        return None, None, out.stderr.decode(errors="replace").strip()
    text = out.stdout.decode()
    head, _, canonical = text.partition("canonical-request:\n")
    authz = ""
    for line in head.splitlines():
        if line.startswith("authorization: "):
            authz = line[len("authorization: "):]
    return canonical, authz, ""


def short(s, n=60):
    s = s.encode("unicode_escape").decode()
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


n = 0
failed = 0


def tap(good, name, diag=()):
    global n, failed
    n += 1
    print("%sok %d - %s" % ("" if good else "not ", n, name))
    if not good:
        failed += 1
        for line in diag:
            for part in str(line).splitlines() or [""]:
                print("#   " + part)


for method, host, path, query in CASES:
    label = "%s %s%s%s" % (method, "" if host == VHOST else host + " ",
                           short(path),
                           (" ?" + short("&".join("%s=%s" % q for q in query))) if query else "")
    want_canon, want_auth = botocore_sign(method, host, path, query)
    got_canon, got_auth, err = ours(method, host, path, query)
    if got_canon is None:
        tap(False, label + ": canonical request", ["sigv4_canon failed: " + err])
        tap(False, label + ": Authorization header", ["sigv4_canon failed: " + err])
        continue
    tap(got_canon == want_canon, label + ": canonical request",
        ["ours:", got_canon, "botocore:", want_canon])
    tap(got_auth == want_auth, label + ": Authorization header",
        ["ours:     " + got_auth, "botocore: " + want_auth])

print("1..%d" % n)
sys.exit(1 if failed else 0)
PYTHON
