#!/usr/bin/env python3
"""mkdata: the benchmark's images, random bytes in a two-level tree.

usage: mkdata.py ROOT PREFIX COUNT SIZE WIDTH MANIFEST
       mkdata.py --check DIR MANIFEST

Image i (0 <= i < COUNT) is PREFIX/NN/IIII.jpg under ROOT, with NN = i % 100
(two digits) and IIII = i zero-padded to WIDTH digits, holding SIZE random
bytes.  bench/run builds the same keys in SQL:
  PREFIX || '/' || lpad((i % 100)::text, 2, '0') || '/' || lpad(i::text, WIDTH, '0') || '.jpg'
MANIFEST gets one line per image, "KEYHEX SIZE SHA256HEX" (the format of
tests/harness/s3oracle.py verify).  Big images are written in 1 MiB pieces.

--check: DIR holds exactly the manifest's files (no other file), each with
its size and SHA-256; prints what differs (at most 5 lines) and exits 1, or
prints "N files, all byte-exact (sha256)".
"""
import hashlib
import os
import sys


def check(root, manifest):
    want = {}
    with open(manifest) as m:
        for line in m:
            hexkey, size, digest = line.split()
            want[bytes.fromhex(hexkey).decode()] = (int(size), digest)
    bad = []
    found = 0
    for d, _, files in os.walk(root):
        for name in files:
            key = os.path.relpath(os.path.join(d, name), root)
            found += 1
            if key not in want:
                bad.append("extra file %s" % key)
                continue
            size, digest = want[key]
            h = hashlib.sha256()
            n = 0
            with open(os.path.join(d, name), "rb") as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
            if n != size or h.hexdigest() != digest:
                bad.append("%s: %d bytes, sha256 %s; expected %d, %s" % (key, n, h.hexdigest(), size, digest))
    if found < len(want):
        bad.append("%d files, expected %d" % (found, len(want)))
    if bad:
        print("; ".join(bad[:5]))
        return 1
    print("%d files, all byte-exact (sha256)" % found)
    return 0


def main():
    if sys.argv[1] == "--check":
        sys.exit(check(sys.argv[2], sys.argv[3]))
    root, prefix, count, size, width, manifest = sys.argv[1:7]
    count, size, width = int(count), int(size), int(width)
    made = set()
    with open(manifest, "w") as m:
        for i in range(count):
            key = "%s/%02d/%0*d.jpg" % (prefix, i % 100, width, i)
            d = os.path.join(root, os.path.dirname(key))
            if d not in made:
                os.makedirs(d, exist_ok=True)
                made.add(d)
            h = hashlib.sha256()
            with open(os.path.join(root, key), "wb") as f:
                left = size
                while left > 0:
                    chunk = os.urandom(min(left, 1 << 20))
                    h.update(chunk)
                    f.write(chunk)
                    left -= len(chunk)
            m.write("%s %d %s\n" % (key.encode().hex(), size, h.hexdigest()))


if __name__ == "__main__":
    main()
