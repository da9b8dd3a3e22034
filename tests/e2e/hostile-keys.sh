#!/usr/bin/env bash
# Hostile image keys and symlinks against a running imgsyncd that mirrors a
# filesystem store to S3 and to another filesystem store.
#
# Every key is either refused with a message that says what is wrong (the
# application's imgsync.put() raises; a watched table's row commits and the
# refusal becomes an event and a WARNING; a key a store cannot hold ends as
# a dead item naming it), or stored byte-exact under exactly its own name.
# Nothing is ever created, read, changed or deleted outside a store's root:
# the tree around the roots is snapshotted before and after, a sibling
# directory stays empty, and symlinks a hostile application plants under
# either root (to a directory, to a file, relative and absolute) are
# refused with a message naming the key, in both resolution modes
# (openat2 and the O_NOFOLLOW walk), as are a FIFO and a directory planted
# where an image should be.  Names no put() made, planted in both stores
# to forge imgsyncctl verify's lines (a newline, control bytes, invalid
# UTF-8, dot segments), are listed as extras, escaped, one line each.
. "$(dirname "$0")/../harness/e2e.sh"
. tests/harness/daemon.sh
e2e_need_servers
unhex() { py -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$1"; }

d_init hostile || { fail "set-up"; done_testing; exit 1; }
MIRROR="$D_DIR/mirror"   # the fs mirror's root
OUT="$D_DIR/outside"     # what planted symlinks point at
SIB="$D_DIR/sibling"     # must stay empty
SCR="$D_DIR/scratch"     # this test's own files
mkdir -p "$OUT" "$SIB" "$SCR"
d_add_fs mirror "$MIRROR"
d_mirrors cloud mirror

# hex of a key given as a Python string literal's value
hexkey() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
# SQL text for a key given in hex: no quoting of hostile bytes anywhere
sqlkey() { echo "convert_from(decode('$1', 'hex'), 'UTF8')"; }

# The tree around the roots: every path with its type, link target or
# content hash; the roots' insides, logs and our scratch files excluded.
snapshot() {
	py - "$T" "$D_ROOT" "$MIRROR" "$SCR" <<'PY'
import hashlib, os, sys
top, skip = sys.argv[1], set(sys.argv[2:]) | {os.path.join(sys.argv[1], "servers")}
out = []
for d, dirs, files in os.walk(top):
    dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        if n.endswith(".log") or n == "cat.tmp" or p in skip:
            continue
        if os.path.islink(p):
            out.append("L %r -> %r" % (p, os.readlink(p)))
        elif os.path.isdir(p):
            out.append("D %r" % p)
        else:
            out.append("F %r %s" % (p, hashlib.sha256(open(p, "rb").read()).hexdigest()))
for p in ("/etc/passwd", "/etc/hostname"):
    if os.path.exists(p):
        out.append("F %r %s" % (p, hashlib.sha256(open(p, "rb").read()).hexdigest()))
for p in ("/x.jpg", "/b.jpg", "/tmp/x.jpg", "/tmp/x"):
    out.append("%s %s" % (p, os.path.lexists(p)))
print("\n".join(sorted(out)))
PY
}

# --- the keys ---
# Written as files under the root by the "application" (Python: any bytes),
# with a manifest per expected outcome.
py - "$D_ROOT" "$SCR" <<'PY'
import hashlib, os, sys
root, scr = sys.argv[1], sys.argv[2]
stored = [  # valid keys: stored under exactly this name everywhere
    "..x/y.jpg", "...", "x..", ". /sp.jpg", "100%.jpg", "%zz%2/q.jpg",
    "A.jpg", "a.jpg",                      # differ only in case
    "-rf.jpg", "--help", "-", "~root.jpg", # leading dashes, a tilde
    "back\\slash.jpg",                     # a backslash is a plain byte
    "sp ace/ .jpg", "semi;colon|pipe&amp$(x)`y`.jpg", "quote'double\"q.jpg",
    "rtl\u202egpj.exe", "zero\u200bwidth.jpg", "emoji/\U0001f600.png",
    "/".join(["d" * 200] * 4) + "/" + "f" * 220,   # 1024 bytes, the maximum
]
either = [  # traversal once decoded by some other program: refused (by put()
            # or by the daemon, naming the key), or stored under exactly its name
    "%2e%2e/x.jpg", "%2e%2e%2fy.jpg", "..%2f..%2fz.jpg", "%252e%252e/w.jpg", "%2E./v.jpg",
    "back\\slash\\..\\..\\b.jpg", "..\\u.jpg",
]
fs_only_s3 = ["g" * 240]        # a file name too long for the fs mirror's temp copy
dead_source = [                 # the source store itself refuses them
    "h" * 300 + ".jpg",           # longer than a file name can be
    ".x.jpg.imgsync-deadbeef",    # the fs store's temporary-file pattern
]
def content(k):
    return ("content of %r\n" % k).encode() * 3
def write(k):
    p = os.path.join(root, k)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(content(k))
for k in stored + either + fs_only_s3:
    write(k)
def manifest(name, keys):
    with open(os.path.join(scr, name), "w") as m:
        for k in keys:
            c = content(k)
            m.write("%s %d %s\n" % (k.encode().hex(), len(c), hashlib.sha256(c).hexdigest()))
manifest("stored.manifest", stored)
manifest("s3.manifest", stored + fs_only_s3)
manifest("either.manifest", either)
for name, keys in (("stored", stored), ("either", either), ("fs_only_s3", fs_only_s3),
                   ("dead_source", dead_source)):
    with open(os.path.join(scr, name + ".hex"), "w") as f:
        f.write("".join(k.encode().hex() + "\n" for k in keys))
# refused by imgsync.put(): valid UTF-8 that is not a valid key
refused = ["..", ".", "../x.jpg", "a/../../b.jpg", "../../../../../../../../tmp/x",
           "/etc/passwd", "/x.jpg", "./a.jpg", "a/./b.jpg", "a/", "a//b.jpg", "",
           "k" * 1025, "a\nb.jpg", "tab\t.jpg", "del\x7f.jpg", "esc\x1b[31m.jpg",
           "nel\u0085.jpg", "csi\u009b.jpg"]
with open(os.path.join(scr, "refused.hex"), "w") as f:
    f.write("".join(k.encode().hex() + "\n" for k in refused))
PY
# what planted symlinks lead to, in place before the snapshot
for r in openat2 walk; do
	printf 'TOP SECRET %s' "$r" >"$OUT/secret-$r.jpg"
	printf 'VICTIM %s' "$r" >"$OUT/victim-$r.jpg"
	mkdir -p "$OUT/dl-$r" && printf 'KEEP ME %s' "$r" >"$OUT/dl-$r/x.jpg"
done
snapshot >"$SCR/snap.before"

# --- refused by imgsync.put() with a clear message ---
n_ref=0 bad=""
while read -r h; do
	n_ref=$((n_ref + 1))
	out=$(psql -qXtA -d "$D_DB" -c "SELECT imgsync.put($(sqlkey "$h"), 'local')" 2>&1)
	case "$out" in
	*"imgsync.put: invalid image key"*"HINT:"*"control characters"*) ;;
	*) bad="$bad $h:[$out]" ;;
	esac
done <"$SCR/refused.hex"
check "put() refuses $n_ref invalid keys (traversal, absolute, '.', '//', trailing '/', empty, 1025 bytes, C0/C1 controls) naming the problem${bad:+: $bad}" \
	test -z "$bad"
check "... and none of them is in the catalog or the queue" \
	test "$(d_sql "SELECT (SELECT count(*) FROM imgsync.images) + (SELECT count(*) FROM imgsync.work)")" = 0

# bytes that cannot even reach imgsync: the database is UTF-8, and text
# holds no NUL; PostgreSQL refuses the statement itself
unreach=0 bad=""
for lit in "convert_from('\\x610062'::bytea, 'UTF8')" "convert_from('\\xff2e6a7067'::bytea, 'UTF8')" \
	"convert_from('\\x2e2ec0af78'::bytea, 'UTF8')" "convert_from('\\xeda080'::bytea, 'UTF8')" \
	"convert_from('\\xf4908080'::bytea, 'UTF8')" "E'a\\000b'" "U&'\\D800'"; do
	unreach=$((unreach + 1))
	out=$(psql -qXtA -d "$D_DB" -c "SELECT imgsync.put($lit, 'local')" 2>&1)
	case "$out" in
	*"invalid byte sequence"*|*"null character not permitted"*|*"invalid Unicode"*|*"surrogate"*) ;;
	*) bad="$bad $lit:[$out]" ;;
	esac
done
check "NUL, invalid UTF-8, overlong '/', surrogates, > U+10FFFF never reach imgsync: PostgreSQL refuses the text ($unreach forms)${bad:+: $bad}" \
	test -z "$bad"

# --- the watched table: a refused key never aborts the application ---
d_sql "CREATE TABLE pictures (id serial PRIMARY KEY, path text NOT NULL)" >/dev/null
d_sql "SELECT imgsync.watch_table('pictures', 'local', key_column => 'path')" >/dev/null
vals=$(while read -r h; do printf "(%s)," "$(sqlkey "$h")"; done <"$SCR/refused.hex")
out=$(psql -qXtA -v ON_ERROR_STOP=1 -d "$D_DB" -c "INSERT INTO pictures (path) VALUES ${vals%,}" 2>&1)
rc=$?
check "an INSERT of $n_ref rows with invalid keys commits (rc $rc)" \
	test "$rc" = 0 -a "$(d_sql "SELECT count(*) FROM pictures")" = "$n_ref"
w=$(printf '%s\n' "$out" | grep -c 'WARNING:  imgsync: put of a row of pictures skipped: imgsync.put: invalid image key')
check "... each refusal is a WARNING to the application ($w)" test "$w" = "$n_ref"
ev=$(d_sql "SELECT count(*) FROM imgsync.events WHERE level = 'warning' AND message LIKE 'put of a row of pictures skipped: imgsync.put: invalid image key%'")
check "... and an event for admins ($ev)" test "$ev" = "$n_ref"
ev=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message ~ '[\\x01-\\x1f]'")
check "... whose messages carry no raw control character ($ev)" test "$ev" = 0
d_sql "DELETE FROM pictures" >/dev/null 2>&1
check "deleting those rows queues nothing" \
	test "$(d_sql "SELECT count(*) FROM imgsync.work")" = 0

# --- valid hostile keys through the running daemon ---
check "imgsyncd starts (mirrors: cloud, mirror)" d_start
vals=$(cat "$SCR/stored.hex" "$SCR/either.hex" "$SCR/fs_only_s3.hex" "$SCR/dead_source.hex" |
	while read -r h; do printf "(%s)," "$(sqlkey "$h")"; done)
d_sql "INSERT INTO pictures (path) VALUES ${vals%,}" >/dev/null 2>"$SCR/insert.err"
n_all=$(cat "$SCR/stored.hex" "$SCR/fs_only_s3.hex" "$SCR/dead_source.hex" | wc -l)
check "the watched table takes all $n_all valid keys" \
	test "$(d_sql "SELECT count(*) FROM imgsync.images")" -ge "$n_all"
check "the daemon settles them (nothing pending)" \
	wait_sql "SELECT count(*) FROM imgsync.work WHERE state <> 'dead'" 0 60
# keys that decode to traversal: each refused with its reason, or stored
: >"$SCR/either.stored"
while read -r h size sha; do
	k=$(unhex "$h")
	ev=$(d_sql "SELECT count(*) FROM imgsync.events WHERE message LIKE '%invalid image key%'
		AND (strpos(message, $(sqlkey "$h")) > 0 OR strpos(message, replace($(sqlkey "$h"), '\\', '\\\\')) > 0)")
	m=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = $(sqlkey "$h") AND state = 'dead'")
	st=$(d_sql "SELECT stores @> '{cloud,mirror}' FROM imgsync.images WHERE key = $(sqlkey "$h")")
	esc=$(printf '%s' "$k" | sed 's/\\/\\\\/g')
	if [ "$ev" -gt 0 ]; then
		pass "\"$k\": refused by put()"
	elif case "$m" in *"invalid key \"$esc\""*"'..'"*) true ;; *) false ;; esac; then
		pass "\"$k\": refused by the daemon with its reason: $m"
	elif [ "$st" = t ]; then
		pass "\"$k\": stored under exactly its name"
		echo "$h $size $sha" >>"$SCR/either.stored"
	else
		fail "\"$k\": refused with a reason, or stored"
		diag "event: $ev; dead: $m; stored: $st"
	fi
done <"$SCR/either.manifest"
cat "$SCR/either.stored" >>"$SCR/s3.manifest"
cat "$SCR/either.stored" >>"$SCR/stored.manifest"
check_bucket "S3 holds every storable key byte-exact under its own name, nothing else" \
	"$D_BUCKET" "$SCR/s3.manifest" --exact
fs_exact() { # ROOT MANIFEST: the tree holds exactly the manifest's files
	py - "$1" "$2" <<'PY'
import hashlib, os, sys
root, manifest = sys.argv[1], sys.argv[2]
want = {}
for line in open(manifest):
    h, size, sha = line.split()
    want[bytes.fromhex(h).decode()] = sha
got = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        if os.path.islink(p) or (not os.path.isdir(p) and not os.path.isfile(p)):
            print("# not a plain file or directory:", p)
            sys.exit(1)
    for n in files:
        p = os.path.join(d, n)
        got[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
bad = 0
for k in sorted(set(want) | set(got)):
    if want.get(k) != got.get(k):
        print("# %r: want %s, got %s" % (k, want.get(k), got.get(k)))
        bad += 1
print("# %d files checked" % len(got))
sys.exit(1 if bad else 0)
PY
}
check "the fs mirror holds exactly the storable keys, byte-exact, no temporary file" \
	fs_exact "$MIRROR" "$SCR/stored.manifest"
printf 'NFC' >"$D_ROOT/$(printf 'caf\303\251.jpg')"
printf 'NFD!' >"$D_ROOT/$(printf 'cafe\314\201.jpg')"
d_sql "SELECT imgsync.put(U&'caf\\00e9.jpg', 'local'), imgsync.put(U&'cafe\\0301.jpg', 'local')" >/dev/null
check "NFC and NFD spellings of 'é' are two images, both mirrored" \
	wait_sql "SELECT count(*) FROM imgsync.images WHERE key LIKE 'caf%' AND stores @> '{cloud,mirror}'" 2
check "... each with its own bytes, in S3 and in the fs mirror" \
	test "$(s3_cat "$(printf 'caf\303\251.jpg')")$(s3_cat "$(printf 'cafe\314\201.jpg')")$(cat "$MIRROR/$(printf 'caf\303\251.jpg')" "$MIRROR/$(printf 'cafe\314\201.jpg')")" = "NFCNFD!NFCNFD!"
check "'A.jpg' and 'a.jpg' keep their own bytes" \
	test "$(s3_cat A.jpg | head -1)/$(head -1 "$MIRROR/a.jpg")" = "content of 'A.jpg'/content of 'a.jpg'"

dead_msg() { # KEYHEX: the dead item's error
	d_sql "SELECT last_error FROM imgsync.work WHERE key = $(sqlkey "$1") AND state = 'dead'"
}
h=$(sed -n 1p "$SCR/dead_source.hex")
m=$(dead_msg "$h")
case "$m" in *'"local"'*"path segment of 304 bytes"*255*) pass "a 300-byte file name is refused by the fs store: $m" ;;
*) fail "a 300-byte file name is refused by the fs store"; diag "$m" ;; esac
h=$(sed -n 2p "$SCR/dead_source.hex")
m=$(dead_msg "$h")
case "$m" in *'"local"'*".x.jpg.imgsync-deadbeef"*"reserved for temporary files"*) pass "a temporary-file name is refused: $m" ;;
*) fail "a temporary-file name is refused"; diag "$m" ;; esac
m=$(dead_msg "$(cat "$SCR/fs_only_s3.hex")")
case "$m" in *'"mirror"'*ggggg*"240 bytes, too long"*) pass "a 240-byte name is refused by the fs mirror only, saying why: ${m:0:100}...${m: -120}" ;;
*) fail "a 240-byte name is refused by the fs mirror only, saying why"; diag "$m" ;; esac
check "... while S3 took it" \
	test "$(d_sql "SELECT stores @> '{cloud}' FROM imgsync.images WHERE key = repeat('g', 240)")" = t
check "dead keys are named in the daemon's log" \
	grep -q 'imgsync-deadbeef" failed for good.*reserved' "$D_LOG"
no_ctl() { LC_ALL=C tr -d '\n\t' <"$1" | LC_ALL=C grep -q '[[:cntrl:]]' && return 1; return 0; }
check "no raw control byte in the daemon's log (no forged log lines)" no_ctl "$D_LOG"

# --- symlinks planted under the roots ---
# ROUND: a name; the daemon of that round is running
symlink_round() {
	local r=$1 m
	ln -s "$OUT" "$D_ROOT/dirlink-$r"                      # a directory, absolute
	ln -s "../outside/secret-$r.jpg" "$D_ROOT/rel-$r.jpg"  # a file, relative
	ln -s "$OUT/secret-$r.jpg" "$D_ROOT/abs-$r.jpg"        # a file, absolute
	mkdir -p "$D_ROOT/sub-$r"
	ln -s ../../outside "$D_ROOT/sub-$r/up"                # a directory, relative
	d_sql "SELECT imgsync.put('dirlink-$r/secret-$r.jpg', 'local'), imgsync.put('rel-$r.jpg', 'local'),
	       imgsync.put('abs-$r.jpg', 'local'), imgsync.put('sub-$r/up/secret-$r.jpg', 'local')" >/dev/null
	check "$r: symlinked sources settle" \
		wait_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead' AND key ~ '^(dirlink|rel|abs|sub)-$r'" 4
	for k in "dirlink-$r/secret-$r.jpg" "rel-$r.jpg" "abs-$r.jpg" "sub-$r/up/secret-$r.jpg"; do
		m=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = '$k'")
		case "$m" in *'"local"'*"\"$k\""*"symlink"*) pass "$r: reading \"$k\" through a symlink is refused: $m" ;;
		*) fail "$r: reading \"$k\" through a symlink is refused"; diag "$m" ;; esac
	done
	# not files: a FIFO (opening it must not block) and a directory
	mkfifo "$D_ROOT/fifo-$r.jpg"
	mkdir "$D_ROOT/dir-$r.jpg"
	d_sql "SELECT imgsync.put('fifo-$r.jpg', 'local'), imgsync.put('dir-$r.jpg', 'local')" >/dev/null
	check "$r: a FIFO and a directory at a key settle (no hang)" \
		wait_sql "SELECT count(*) FROM imgsync.work WHERE state = 'dead' AND key ~ '^(fifo|dir)-$r'" 2
	for k in "fifo-$r.jpg" "dir-$r.jpg"; do
		m=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = '$k'")
		case "$m" in *'"local"'*"\"$k\""*"not a regular file"*) pass "$r: $k is not an image: $m" ;;
		*) fail "$r: $k is not an image"; diag "$m" ;; esac
	done
	check "$r: no secret reached S3" test -z "$(s3_keys | grep -E "^(dirlink|rel|abs|sub|fifo|dir)-$r")"
	check "$r: ... nor the fs mirror" test -z "$(ls "$MIRROR" | grep -E "^(dirlink|rel|abs|sub|fifo|dir)-$r")"

	# writes and deletes through symlinks planted in the fs mirror
	mkdir -p "$D_ROOT/evil-$r" "$D_ROOT/dl-$r"
	printf 'new %s' "$r" >"$D_ROOT/evil-$r/new.jpg"
	printf 'real victim %s' "$r" >"$D_ROOT/victim-$r.jpg"
	printf 'to delete %s' "$r" >"$D_ROOT/dl-$r/x.jpg"
	ln -s "$OUT" "$MIRROR/evil-$r"
	ln -s "$OUT/victim-$r.jpg" "$MIRROR/victim-$r.jpg"
	d_sql "SELECT imgsync.put('evil-$r/new.jpg', 'local'), imgsync.put('victim-$r.jpg', 'local'),
	       imgsync.put('dl-$r/x.jpg', 'local')" >/dev/null
	check "$r: puts settle" \
		wait_sql "SELECT count(*) FROM imgsync.work WHERE state <> 'dead'" 0
	m=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = 'evil-$r/new.jpg'")
	case "$m" in *'"mirror"'*"\"evil-$r/new.jpg\""*"symlink"*) pass "$r: writing through a symlinked directory of the mirror is refused: $m" ;;
	*) fail "$r: writing through a symlinked directory of the mirror is refused"; diag "$m" ;; esac
	check "$r: ... and nothing was written outside" test ! -e "$OUT/new.jpg"
	check "$r: ... while S3 got it" test "$(s3_cat "evil-$r/new.jpg")" = "new $r"
	check "$r: a symlinked file in the mirror is replaced, not written through" \
		test "$(cat "$OUT/victim-$r.jpg")" = "VICTIM $r" -a ! -L "$MIRROR/victim-$r.jpg" -a \
		"$(cat "$MIRROR/victim-$r.jpg")" = "real victim $r"
	check "$r: dl-$r/x.jpg is mirrored" test -f "$MIRROR/dl-$r/x.jpg"
	rm -r "$MIRROR/dl-$r"
	ln -s "$OUT/dl-$r" "$MIRROR/dl-$r"
	d_sql "SELECT imgsync.remove('dl-$r/x.jpg')" >/dev/null
	check "$r: a remove settles" \
		wait_sql "SELECT count(*) FROM imgsync.work WHERE state <> 'dead'" 0
	check "$r: deleting through a symlinked directory of the mirror leaves the outside file" \
		test "$(cat "$OUT/dl-$r/x.jpg")" = "KEEP ME $r"
	m=$(d_sql "SELECT last_error FROM imgsync.work WHERE key = 'dl-$r/x.jpg'")
	case "$m" in *'"mirror"'*"\"dl-$r/x.jpg\""*"symlink"*) pass "$r: ... saying so: $m" ;;
	*) fail "$r: ... saying so"; diag "$m" ;; esac
	check "$r: ... while the real copies are deleted" \
		test ! -e "$D_ROOT/dl-$r/x.jpg" -a -z "$(s3_keys | grep "^dl-$r/")"
}
symlink_round openat2
d_stop
check "the daemon stopped cleanly (exit $D_RC)" test "$D_RC" = 0
export IMGSYNC_FS_NO_OPENAT2=1
check "imgsyncd starts with the O_NOFOLLOW walk" d_start
symlink_round walk
unset IMGSYNC_FS_NO_OPENAT2

# --- hostile names a store lists (imgsyncctl verify) ---
# objects and files no put() made, named to forge verify's lines or the
# terminal's: listed as extra, shown escaped, one line each
hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
printf 'x' >"$SCR/one"
planted=($'evil\nextra cloud forged.jpg' '../up.jpg' 'a//b.jpg' $'tab\tbell\a.jpg')
for k in "${planted[@]}"; do
	oracle_rgw put "$D_BUCKET" "$(hex "$k")" "$SCR/one" >/dev/null || fail "put a hostile object"
done
printf 'x' >"$MIRROR/"$'nl\nextra mirror forged.jpg'
printf 'x' >"$MIRROR/"$'esc\033[31mred.jpg'
printf 'x' >"$MIRROR/"$'bad\xffutf8.jpg'
for s in cloud mirror; do
	timeout 120 "$BUILD/imgsyncctl" -c "$D_CONF" verify local "$s" >"$SCR/verify-$s.out" 2>"$SCR/verify-$s.err"
	rc=$?
	check "verify local $s with hostile names in $s: differences, no crash (exit $rc)" \
		test "$rc" -gt 0 -a "$rc" -lt 128
	check "... no line forged by a name ($(grep -c "^extra $s forged" "$SCR/verify-$s.out"))" \
		test "$(grep -c "^extra $s forged" "$SCR/verify-$s.out")" = 0
	check "... no control byte in its output" \
		test "$(LC_ALL=C grep -c $'[\x01-\x08\x0b-\x1f\x7f]' "$SCR/verify-$s.out" "$SCR/verify-$s.err" | awk -F: '{ n += $NF } END { print n }')" = 0
done
check "... the names shown escaped (\\x0a, \\xff), as extras" \
	sh -c "grep -qF 'extra cloud \"evil\\x0aextra cloud forged.jpg\"' '$SCR/verify-cloud.out' &&
	       grep -qF 'extra mirror \"nl\\x0aextra mirror forged.jpg\"' '$SCR/verify-mirror.out' &&
	       grep -qF 'extra mirror \"bad\\xffutf8.jpg\"' '$SCR/verify-mirror.out'"
grep -h -e '^extra cloud' -e '^extra mirror' "$SCR"/verify-*.out | head -8 | sed 's/^/# /'
for k in "${planted[@]}"; do
	oracle_rgw rm "$D_BUCKET" "$(hex "$k")" >/dev/null 2>&1
done
rm -f "$MIRROR/"$'nl\nextra mirror forged.jpg' "$MIRROR/"$'esc\033[31mred.jpg' "$MIRROR/"$'bad\xffutf8.jpg'

# --- after all that ---
printf 'after' >"$D_ROOT/after.jpg"
d_sql "INSERT INTO pictures (path) VALUES ('after.jpg')" >/dev/null
check "the daemon still mirrors" \
	wait_sql "SELECT stores @> '{cloud,mirror}' FROM imgsync.images WHERE key = 'after.jpg'" t
check "... and is still running" kill -0 "$D_PID"
d_stop
snapshot >"$SCR/snap.after"
if diff "$SCR/snap.before" "$SCR/snap.after" >"$SCR/snap.diff"; then
	pass "nothing around the roots was created, changed or deleted ($(wc -l <"$SCR/snap.before") paths, /etc/passwd included)"
else
	fail "nothing around the roots was created, changed or deleted"
	sed 's/^/# /' "$SCR/snap.diff" | head -20
fi
check "the sibling directory is still empty" test -z "$(ls -A "$SIB")"
left=$(find "$D_ROOT" "$MIRROR" -name '.*.imgsync-*' ! -name '.x.jpg.imgsync-deadbeef' | wc -l)
check "no temporary file left under either root ($left)" test "$left" = 0
done_testing
