#!/usr/bin/env python3
"""s3oracle: an S3 client independent of imgsync, built on botocore alone.

Tests use it to check byte-exactly what imgsync wrote and to seed objects imgsync must read.
Keys are passed hex-encoded (their UTF-8 bytes), so hostile keys survive shells.

usage: s3oracle.py --endpoint URL --region R --access-key AK --secret-key SK
                   [--path-style | --virtual-style] COMMAND ...
  (or IMGSYNC_ORACLE_ENDPOINT, _REGION, _ACCESS_KEY, _SECRET_KEY, _PATH_STYLE=1 in the env)

commands:
  mkbucket NAME                  create (fine if it is already ours)
  rmbucket NAME [--force]        delete; --force first removes every object, version and
                                 in-progress multipart upload (a missing bucket is fine)
  put BUCKET KEYHEX FILE         upload FILE ('-' = stdin)
  get BUCKET KEYHEX FILE         download to FILE ('-' = stdout)
  head BUCKET KEYHEX             print SIZE ETAG CONTENT-TYPE
  rm BUCKET KEYHEX               delete one object
  list BUCKET [PREFIXHEX]        one line per object: KEYHEX SIZE ETAG
  verify BUCKET MANIFEST [--exact [PREFIXHEX]]
                                 MANIFEST lines: KEYHEX SIZE SHA256HEX; prints
                                 "MISMATCH KEYHEX reason" per difference (with --exact also
                                 objects under PREFIXHEX that the manifest lacks), exit 1 if
                                 any, else "verified N objects"
  seed BUCKET MANIFEST DIR       MANIFEST lines: KEYHEX FILE (relative to DIR); uploads each
  uploads BUCKET                 in-progress multipart uploads: KEYHEX UPLOADID

Blank lines and lines starting with '#' in manifests are ignored.
Exit status: 0 ok, 1 verify found differences, 2 usage error, 3 S3 or connection error
(the error code, e.g. SignatureDoesNotMatch, is printed on stderr).
"""

import argparse
import concurrent.futures
import hashlib
import os
import shutil
import sys

try:
    import botocore
    import botocore.config
    import botocore.exceptions
    import botocore.session
except ImportError:  # pragma: no cover
    sys.stderr.write("s3oracle: botocore is not installed for %s\n" % sys.executable)
    sys.exit(2)

CHUNK = 1 << 20


class Usage(Exception):
    pass


def key_from_hex(h):
    try:
        raw = bytes.fromhex(h)
    except ValueError:
        raise Usage("not a hex-encoded key: %r" % h)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Usage("key is not valid UTF-8: %s" % h)


def key_to_hex(k):
    return k.encode("utf-8").hex()


def make_client(a):
    session = botocore.session.get_session()
    # Nothing from ~/.aws may change what this oracle does.
    for var in ("config_file", "credentials_file"):
        try:
            session.set_config_variable(var, os.devnull)
        except Exception:
            pass
    style = "path" if a.path_style else ("virtual" if a.virtual_style else "auto")
    kw = dict(
        s3={"addressing_style": style},
        signature_version="s3v4",
        retries={"max_attempts": 2},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=16,
    )
    try:
        # botocore >= 1.36 adds CRC checksums (and aws-chunked trailers) by default, which
        # radosgw 16 does not handle; older botocore does not know these options.
        cfg = botocore.config.Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            **kw
        )
    except TypeError:
        cfg = botocore.config.Config(**kw)
    return session.create_client(
        "s3",
        endpoint_url=a.endpoint,
        region_name=a.region or "us-east-1",
        aws_access_key_id=a.access_key,
        aws_secret_access_key=a.secret_key,
        config=cfg,
    )


def err_code(e):
    if isinstance(e, botocore.exceptions.ClientError):
        return e.response.get("Error", {}).get("Code", "")
    return ""


def read_manifest(path, ncols):
    out = []
    f = sys.stdin if path == "-" else open(path, "r", encoding="utf-8")
    with f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, ncols - 1)
            if len(parts) != ncols:
                raise Usage("%s:%d: expected %d fields" % (path, lineno, ncols))
            out.append(parts)
    return out


# --- commands -----------------------------------------------------------------------------


def cmd_mkbucket(c, a):
    kw = {"Bucket": a.name}
    region = a.region or "us-east-1"
    if region != "us-east-1":
        kw["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        try:
            c.create_bucket(**kw)
        except botocore.exceptions.ClientError as e:
            # radosgw knows zonegroups, not AWS regions: retry without a constraint
            if err_code(e) == "InvalidLocationConstraint" and "CreateBucketConfiguration" in kw:
                del kw["CreateBucketConfiguration"]
                c.create_bucket(**kw)
            else:
                raise
    except botocore.exceptions.ClientError as e:
        if err_code(e) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
        c.head_bucket(Bucket=a.name)  # exists, and it is ours
    return 0


def _empty_bucket(c, b):
    p = c.get_paginator("list_multipart_uploads")
    for page in p.paginate(Bucket=b):
        for u in page.get("Uploads", []):
            c.abort_multipart_upload(Bucket=b, Key=u["Key"], UploadId=u["UploadId"])
    batches = []
    try:
        p = c.get_paginator("list_object_versions")
        for page in p.paginate(Bucket=b):
            objs = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in page.get("Versions", []) + page.get("DeleteMarkers", [])
                if v.get("VersionId")
            ]
            if objs:
                batches.append(objs)
    except botocore.exceptions.ClientError:
        pass
    p = c.get_paginator("list_objects_v2")
    for page in p.paginate(Bucket=b):
        objs = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if objs:
            batches.append(objs)
    for objs in batches:
        for i in range(0, len(objs), 1000):
            chunk = objs[i : i + 1000]
            try:
                r = c.delete_objects(Bucket=b, Delete={"Objects": chunk, "Quiet": True})
                failed = r.get("Errors", [])
            except botocore.exceptions.ClientError:
                failed = chunk
            for o in failed:  # one at a time for what a batch did not take
                kw = {"Bucket": b, "Key": o["Key"]}
                if o.get("VersionId"):
                    kw["VersionId"] = o["VersionId"]
                c.delete_object(**kw)


def cmd_rmbucket(c, a):
    try:
        if a.force:
            _empty_bucket(c, a.name)
        c.delete_bucket(Bucket=a.name)
    except botocore.exceptions.ClientError as e:
        if err_code(e) == "NoSuchBucket" and a.force:
            return 0
        raise
    return 0


def cmd_put(c, a):
    key = key_from_hex(a.keyhex)
    if a.file == "-":
        body = sys.stdin.buffer.read()
        c.put_object(Bucket=a.bucket, Key=key, Body=body)
    else:
        with open(a.file, "rb") as f:
            c.put_object(Bucket=a.bucket, Key=key, Body=f)
    return 0


def cmd_get(c, a):
    key = key_from_hex(a.keyhex)
    r = c.get_object(Bucket=a.bucket, Key=key)
    body = r["Body"]
    if a.file == "-":
        shutil.copyfileobj(body, sys.stdout.buffer, CHUNK)
        sys.stdout.buffer.flush()
    else:
        tmp = a.file + ".s3oracle-part"
        with open(tmp, "wb") as f:
            shutil.copyfileobj(body, f, CHUNK)
        os.replace(tmp, a.file)
    return 0


def cmd_head(c, a):
    r = c.head_object(Bucket=a.bucket, Key=key_from_hex(a.keyhex))
    print(r["ContentLength"], r.get("ETag", "").strip('"'), r.get("ContentType", ""))
    return 0


def cmd_rm(c, a):
    c.delete_object(Bucket=a.bucket, Key=key_from_hex(a.keyhex))
    return 0


def iter_objects(c, bucket, prefix):
    p = c.get_paginator("list_objects_v2")
    kw = {"Bucket": bucket}
    if prefix:
        kw["Prefix"] = prefix
    # botocore asks for EncodingType=url and decodes the keys itself, so keys with
    # characters XML 1.0 cannot carry come back intact.
    for page in p.paginate(**kw):
        for o in page.get("Contents", []):
            yield o


def cmd_list(c, a):
    prefix = key_from_hex(a.prefixhex) if a.prefixhex else ""
    out = sys.stdout
    for o in iter_objects(c, a.bucket, prefix):
        out.write("%s %d %s\n" % (key_to_hex(o["Key"]), o["Size"], o.get("ETag", "").strip('"')))
    return 0


def _verify_one(c, bucket, keyhex, size, sha):
    """One manifest entry against the bucket: None when it matches, else a reason."""
    key = key_from_hex(keyhex)
    try:
        want_size = int(size)
    except ValueError:
        raise Usage("bad size %r for %s" % (size, keyhex))
    try:
        r = c.get_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as e:
        if err_code(e) in ("NoSuchKey", "404"):
            return "missing"
        raise
    h = hashlib.sha256()
    n = 0
    body = r["Body"]
    while True:
        chunk = body.read(CHUNK)
        if not chunk:
            break
        n += len(chunk)
        h.update(chunk)
    if n != want_size:
        return "size %d, expected %d" % (n, want_size)
    if h.hexdigest() != sha.lower():
        return "sha256 %s, expected %s" % (h.hexdigest(), sha.lower())
    return None


def cmd_verify(c, a):
    entries = [(k.lower(), size, sha) for k, size, sha in read_manifest(a.manifest, 3)]
    seen = set(key_from_hex(k) for k, _, _ in entries)
    bad = 0
    # GETs side by side: one at a time, per-request latency dominates
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        results = pool.map(lambda e: _verify_one(c, a.bucket, *e), entries)
        for (keyhex, _, _), why in zip(entries, results):
            if why is not None:
                print("MISMATCH %s %s" % (keyhex, why))
                bad += 1
    if a.exact is not None:
        prefix = key_from_hex(a.exact) if a.exact else ""
        for o in iter_objects(c, a.bucket, prefix):
            if o["Key"] not in seen:
                print("MISMATCH %s unexpected object (%d bytes)" % (key_to_hex(o["Key"]), o["Size"]))
                bad += 1
    if bad:
        return 1
    print("verified %d objects" % len(entries))
    return 0


def cmd_seed(c, a):
    entries = read_manifest(a.manifest, 2)
    for keyhex, fname in entries:
        key = key_from_hex(keyhex)
        with open(os.path.join(a.dir, fname), "rb") as f:
            c.put_object(Bucket=a.bucket, Key=key, Body=f)
    print("seeded %d objects" % len(entries))
    return 0


def cmd_uploads(c, a):
    p = c.get_paginator("list_multipart_uploads")
    for page in p.paginate(Bucket=a.bucket):
        for u in page.get("Uploads", []):
            print("%s %s" % (key_to_hex(u["Key"]), u["UploadId"]))
    return 0


def build_parser():
    env = os.environ.get
    ap = argparse.ArgumentParser(prog="s3oracle.py", description="independent S3 checks")
    ap.add_argument("--endpoint", default=env("IMGSYNC_ORACLE_ENDPOINT"))
    ap.add_argument("--region", default=env("IMGSYNC_ORACLE_REGION", "us-east-1"))
    ap.add_argument("--access-key", default=env("IMGSYNC_ORACLE_ACCESS_KEY"))
    ap.add_argument("--secret-key", default=env("IMGSYNC_ORACLE_SECRET_KEY"))
    g = ap.add_mutually_exclusive_group()
    g.add_argument(
        "--path-style", action="store_true", default=env("IMGSYNC_ORACLE_PATH_STYLE", "") == "1"
    )
    g.add_argument("--virtual-style", action="store_true")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("mkbucket")
    s.add_argument("name")
    s.set_defaults(fn=cmd_mkbucket)
    s = sub.add_parser("rmbucket")
    s.add_argument("name")
    s.add_argument("--force", action="store_true")
    s.set_defaults(fn=cmd_rmbucket)
    for name, fn in (("put", cmd_put), ("get", cmd_get)):
        s = sub.add_parser(name)
        s.add_argument("bucket")
        s.add_argument("keyhex")
        s.add_argument("file")
        s.set_defaults(fn=fn)
    for name, fn in (("head", cmd_head), ("rm", cmd_rm)):
        s = sub.add_parser(name)
        s.add_argument("bucket")
        s.add_argument("keyhex")
        s.set_defaults(fn=fn)
    s = sub.add_parser("list")
    s.add_argument("bucket")
    s.add_argument("prefixhex", nargs="?", default="")
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("verify")
    s.add_argument("bucket")
    s.add_argument("manifest")
    s.add_argument("--exact", nargs="?", const="", default=None, metavar="PREFIXHEX")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("seed")
    s.add_argument("bucket")
    s.add_argument("manifest")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_seed)
    s = sub.add_parser("uploads")
    s.add_argument("bucket")
    s.set_defaults(fn=cmd_uploads)
    return ap


def main(argv=None):
    ap = build_parser()
    a = ap.parse_args(argv)
    for need in ("endpoint", "access_key", "secret_key"):
        if not getattr(a, need):
            ap.error("--%s is required (or IMGSYNC_ORACLE_%s)" % (need.replace("_", "-"), need.upper()))
    try:
        c = make_client(a)
        return a.fn(c, a)
    except Usage as e:
        sys.stderr.write("s3oracle: %s\n" % e)
        return 2
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        sys.stderr.write(
            "s3oracle: %s: %s: %s (HTTP %s)\n"
            % (a.command, err.get("Code", "?"), err.get("Message") or "", status)
        )
        return 3
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        sys.stderr.write("s3oracle: %s: %s: %s\n" % (a.command, type(e).__name__, e))
        return 3


if __name__ == "__main__":
    sys.exit(main())
