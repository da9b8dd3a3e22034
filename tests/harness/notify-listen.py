#!/usr/bin/env python3
"""notify-listen.py SOCKET OUT: stand in for systemd's notification socket.

Binds a datagram socket at SOCKET and appends each message imgsyncd sends
(READY=1, STATUS=..., ...) to OUT, one line per assignment, prefixed with
the seconds since start, until killed."""
import os, socket, sys, time

path, out = sys.argv[1], sys.argv[2]
try:
    os.unlink(path)
except FileNotFoundError:
    pass
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
t0 = time.monotonic()
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(65536).decode("utf-8", "replace")
        for line in msg.split("\n"):
            if line:
                f.write("%.3f %s\n" % (time.monotonic() - t0, line))
