#!/usr/bin/env bash
# The unit's sandbox (etc/imgsyncd.service) leaves imgsyncd able to do its
# job and nothing more, shown on the real daemon at work rather than on the
# unit file alone (tests/unit/units.sh rates that): imgsyncd runs under
# strace through a day's work in small (start, mirror puts to S3, a
# multipart upload, a remove, a move S3 -> fs with a spooled download,
# SIGHUP, SIGTERM), and every system call it and its threads made, from
# the dynamic loader on, is held against the unit's settings:
# - SystemCallFilter=@system-service ~@privileged @resources, expanded by
#   systemd-analyze itself: a call outside it would fail with EPERM;
# - RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6;
# - MemoryDenyWriteExecute= (no writable and executable mapping, no
#   mprotect to executable), RestrictNamespaces= (no CLONE_NEW*, unshare,
#   setns), NoNewPrivileges (no exec: the daemon runs no program);
# - ProtectSystem=strict with ReadWritePaths= the store roots: every file
#   created, opened for writing, renamed, linked or removed lies under a
#   store root, the spool (TMPDIR) or elsewhere in /tmp or /var/tmp
#   (PrivateTmp=); nowhere else, not even in this test's own tree.
# Work done by that daemon is checked as well, so a check that passed on a
# daemon that did nothing would still fail.  Needs strace and
# systemd-analyze (tests/harness/install-deps); skipped under valgrind or
# the sanitizers, whose own system calls are not the daemon's.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh

if [ "${IMGSYNC_VALGRIND:-0}" = 1 ] || [ "${IMGSYNC_SANITIZE:-0}" = 1 ]; then
	skip "the sandbox's system calls (under valgrind or the sanitizers the calls traced are not the daemon's)"
	done_testing
	exit 0
fi
for tool in strace systemd-analyze; do
	if ! command -v $tool >/dev/null 2>&1; then
		skip "the sandbox's system calls ($tool is not installed: tests/harness/install-deps)"
		done_testing
		exit 0
	fi
done
e2e_need_servers
UNIT=etc/imgsyncd.service

# --- what the unit allows ------------------------------------------------------
# unit_all KEY: every value of KEY in [Service], one per line
unit_all() {
	awk -v k="$1" '/^\[/ { sec = $0 } sec == "[Service]" && index($0, k "=") == 1 {
		print substr($0, length(k) + 2) }' "$UNIT"
}
# expand WORD...: system call names, groups (@name) expanded by systemd-analyze
expand() {
	local w
	for w in "$@"; do
		case $w in
		@*) systemd-analyze syscall-filter "$w" 2>/dev/null |
			awk 'NR > 1 && $1 !~ /^#/ && NF { print $1 }' | while read -r s; do expand "$s"; done ;;
		*) echo "$w" ;;
		esac
	done
}
: >"$T/allow"
: >"$T/deny"
while read -r line; do
	case $line in
	"~"*) expand ${line#\~} >>"$T/deny" ;;
	?*) expand $line >>"$T/allow" ;;
	esac
done < <(unit_all SystemCallFilter)
sort -u "$T/allow" -o "$T/allow"
sort -u "$T/deny" -o "$T/deny"
comm -23 "$T/allow" "$T/deny" >"$T/allowed"
families=$(unit_all RestrictAddressFamilies | tr '\n' ' ')
check "the unit's filter expands to a list of calls ($(wc -l <"$T/allowed") allowed, $(wc -l <"$T/deny") denied)" \
	test "$(wc -l <"$T/allowed")" -gt 200 -a "$(wc -l <"$T/deny")" -gt 20
check "the unit has MemoryDenyWriteExecute, RestrictNamespaces, NoNewPrivileges, ProtectSystem=strict" \
	test "$(unit_all MemoryDenyWriteExecute)/$(unit_all RestrictNamespaces)/$(unit_all NoNewPrivileges)/$(unit_all ProtectSystem)" = yes/yes/yes/strict

# --- imgsyncd at work under strace ---------------------------------------------
d_init sandbox || { fail "set-up"; done_testing; exit 1; }
sed -i '/^store "cloud"/,/^}/ s|^  layout = .*$|&\n  multipart_threshold = 5M\n  part_size = 5M|' "$D_CONF"
d_add_fs spare "$D_DIR/spare"
SPOOL=$T/spool
mkdir -p "$SPOOL"
# the daemon itself, not a wrapper, is what d_start runs and signals:
# strace follows it from a wrapper script that execs it
real=$(cd "$BUILD" && pwd)
mkdir -p "$T/stbuild"
ln -s "$real/imgsyncctl" "$T/stbuild/imgsyncctl"
printf '#!/bin/sh\nexec strace -f -qq -y -s 512 -e signal=none -o "%s" "%s" "$@"\n' \
	"$T/trace" "$real/imgsyncd" >"$T/stbuild/imgsyncd"
chmod +x "$T/stbuild/imgsyncd"
ctl() { timeout 300 "$real/imgsyncctl" -c "$D_CONF" "$@"; }

py - "$D_ROOT" "$D_DIR/manifest" <<'PY'
import hashlib, os, random, sys
root, manifest = sys.argv[1], sys.argv[2]
random.seed(7)
with open(manifest, "w") as m:
    for i in range(41):
        key = "s/%d/im %d.jpg" % (i % 4, i) if i < 40 else "big/one.jpg"
        data = random.randbytes(random.randint(100, 60000) if i < 40 else 12 * 2**20 + 7)
        os.makedirs(os.path.dirname(os.path.join(root, key)), exist_ok=True)
        open(os.path.join(root, key), "wb").write(data)
        m.write("%s %d %s\n" % (key.encode().hex(), len(data), hashlib.sha256(data).hexdigest()))
PY
d_notify_listen || fail "notify listener"
BUILD=$T/stbuild TMPDIR=$SPOOL d_start || { fail "imgsyncd starts under strace"; done_testing; exit 1; }
tracer=$D_PID
daemon=
for i in $(seq 50); do
	daemon=$(pgrep -P "$tracer" imgsyncd | head -1)
	[ -n "$daemon" ] && break
	sleep 0.1
done
check "imgsyncd runs under strace (pid ${daemon:-none})" test -n "$daemon"
# killed on exit too: a tracer killed alone may leave it running
D_PIDS="$D_PIDS $daemon"
d_sql "SELECT count(imgsync.put(k, 'local', 'image/jpeg')) FROM (
	 SELECT 's/' || (i % 4) || '/im ' || i || '.jpg' AS k FROM generate_series(0, 39) i
	 UNION ALL SELECT 'big/one.jpg') s" >/dev/null
check "41 puts are mirrored to S3, one in parts" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE stores = '{cloud,local}'" 41 120
d_sql "SELECT imgsync.remove('s/0/im 0.jpg')" >/dev/null
check "a remove deletes the image everywhere" \
	wait_sql "SELECT count(*) FROM imgsync.images" 40 60
ctl migrate cloud spare --wait >"$D_DIR/migrate.out" 2>&1
check "a move S3 -> fs completes ($(tail -1 "$D_DIR/migrate.out"))" \
	test "$(d_sql "SELECT state || ' ' || done FROM imgsync.migration_status ORDER BY id DESC LIMIT 1")" = "done 40"
ok=$(py - "$D_DIR/spare" "$D_DIR/manifest" <<'PY'
import hashlib, os, sys
root, n = sys.argv[1], 0
for line in open(sys.argv[2]):
    h, size, want = line.split()
    p = os.path.join(root, bytes.fromhex(h).decode())
    if os.path.exists(p) and hashlib.sha256(open(p, "rb").read()).hexdigest() == want:
        n += 1
print(n)
PY
)
check "the fs store holds the 40 images byte-exact ($ok), the big one downloaded in ranges" test "$ok" = 40
check "the bucket is empty after the move" test -z "$(s3_keys)"
kill -HUP "$daemon"
check "SIGHUP reloads the configuration" wait_for_log "reloaded $D_CONF" 20
# strace exits with the daemon's status
d_stop "$daemon" "$tracer"
check "SIGTERM stops it, exit $D_RC" test "$D_RC" = 0

# --- the trace against the unit --------------------------------------------------
# the test's own tree is under /tmp too: only its store roots and the spool
# count there
roots="$(readlink -f "$D_ROOT") $(readlink -f "$D_DIR/spare") $(readlink -f "$SPOOL")"
py - "$T/trace" "$T/allowed" "$families" "$roots" "$(readlink -f "$T")" >"$T/verdict" <<'PY'
import re, sys
trace, allowed_f, families, roots, tree = sys.argv[1:6]
allowed = set(open(allowed_f).read().split())
families = set(families.split())
roots = [r.rstrip("/") for r in roots.split()]
tmps = ["/tmp", "/var/tmp"]
call_re = re.compile(r"^\d+ +([a-z_][a-z0-9_]*)\((.*)$")
used, bad = {}, {"syscalls": [], "families": [], "mdwe": [], "ns": [], "exec": [], "writes": []}
writes = 0
execs = 0
WRITE_CALLS = {"mkdir", "mkdirat", "rename", "renameat", "renameat2", "unlink", "unlinkat",
               "rmdir", "link", "linkat", "symlink", "symlinkat", "truncate", "chmod",
               "fchmodat", "utimensat", "mknod", "mknodat", "creat"}
OPEN_CALLS = {"open", "openat", "openat2"}
WFLAGS = re.compile(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_TMPFILE")
# dirfd<path>, "name"  |  AT_FDCWD, "name"  |  "name" as the first argument
PAIR = re.compile(r'(?:(\d+)<((?:[^>\\]|\\.)*)>|(AT_FDCWD)), "((?:[^"\\]|\\.)*)"')
FIRST = re.compile(r'^"((?:[^"\\]|\\.)*)"')

def unesc(s):
    return bytes(s, "utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")

def within(p, rs):
    return any(p == r or p.startswith(r + "/") for r in rs)

def under(p):
    return within(p, roots) or (within(p, tmps) and not within(p, [tree]))

def paths(name, args):
    out = []
    for m in PAIR.finditer(args):
        d, n = m.group(2), unesc(m.group(4))
        if n.startswith("/"):
            out.append(n)
        elif m.group(3):
            out.append("(relative to the working directory) " + n)
        else:
            d = unesc(d)
            d = d[:-len(" (deleted)")] if d.endswith(" (deleted)") else d
            out.append((d + "/" + n) if n else d)
    if not out:
        m = FIRST.match(args)
        if m:
            n = unesc(m.group(1))
            out.append(n if n.startswith("/") else "(relative to the working directory) " + n)
    return out

for line in open(trace, errors="replace"):
    m = call_re.match(line)
    if not m:
        continue
    name, args = m.groups()
    used[name] = used.get(name, 0) + 1
    if name == "socket":
        fam = args.split(",")[0].strip()
        if fam not in families:
            bad["families"].append(line.strip())
    elif name == "mmap" and re.search(r"PROT_WRITE\|PROT_EXEC|PROT_EXEC\|PROT_WRITE|PROT_READ\|PROT_WRITE\|PROT_EXEC", args):
        bad["mdwe"].append(line.strip())
    elif name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in args:
        bad["mdwe"].append(line.strip())
    elif name in ("unshare", "setns") or (name in ("clone", "clone3") and "CLONE_NEW" in args):
        bad["ns"].append(line.strip())
    elif name in ("execve", "execveat"):
        execs += 1
        if execs > 1:
            bad["exec"].append(line.strip())
    if name in WRITE_CALLS or (name in OPEN_CALLS and WFLAGS.search(args)):
        # tried and failed counts too: under the unit it would fail
        # otherwise (EROFS), and the daemon meant to write there
        for p in paths(name, args):
            writes += 1
            if not under(p):
                bad["writes"].append("%s: %s" % (name, p))
for name in sorted(used):
    if name not in allowed:
        bad["syscalls"].append("%s (%d calls)" % (name, used[name]))
print("used %d %s" % (len(used), " ".join(sorted(used))))
print("counts %d %d %d" % (sum(used.values()), writes, execs))
for k, v in bad.items():
    print("bad %s %d" % (k, len(v)))
    for x in sorted(set(v))[:20]:
        print("  %s" % x)
PY
read -r _ nused list < <(grep '^used ' "$T/verdict")
read -r _ ncalls nwrites nexec < <(grep '^counts ' "$T/verdict")
diag "$ncalls system calls traced, $nused different: $list"
verdict() { # KIND DESCRIPTION
	local n
	n=$(awk -v k="$1" '$1 == "bad" && $2 == k { print $3 }' "$T/verdict")
	if [ "$n" = 0 ]; then
		pass "$2"
	else
		fail "$2: ${n:-no verdict}"
		awk -v k="$1" '$1 == "bad" { on = ($2 == k); next } on' "$T/verdict" | sed 's/^/#  /'
	fi
}
check "the trace holds the daemon's work (${ncalls:-0} calls, ${nwrites:-0} writes)" \
	test "${ncalls:-0}" -gt 3000 -a "${nwrites:-0}" -gt 60
verdict syscalls "every system call is one SystemCallFilter= allows"
verdict families "every socket is of a family RestrictAddressFamilies= allows ($families)"
verdict mdwe "no mapping both writable and executable (MemoryDenyWriteExecute=)"
verdict ns "no namespace made or entered (RestrictNamespaces=)"
verdict exec "no program run (${nexec:-0} exec: the daemon's own)"
verdict writes "every write lies under a store root or the spool (ProtectSystem=strict, ReadWritePaths=, PrivateTmp=)"
done_testing
