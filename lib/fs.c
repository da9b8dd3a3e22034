/*
 * fs.c - the filesystem store.
 *
 * Containment: the root directory is opened once; every key is resolved
 * relative to that descriptor with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), so neither a key nor a symlink planted under the
 * root can reach outside it.  No symlink under the root is followed, not
 * even one that stays inside: a symlink is not an object (listings skip
 * it too), and whoever can plant one must not choose what imgsync reads,
 * writes or deletes.  Where the kernel lacks openat2 (or
 * IMGSYNC_FS_NO_OPENAT2=1 asks for it, to test the fallback), the path is
 * walked one segment at a time with O_NOFOLLOW, which refuses every
 * symlink the same way.  Either way a refusal says "symlink" and names the
 * key.  Keys are validated with key_validate() first, so "..", empty
 * segments and NUL never reach the kernel.
 *
 * Durability: a put writes an unnamed file (O_TMPFILE) in the target
 * directory, fsyncs it, links it in as NAME when NAME is free (a new image)
 * or else as ".NAME.imgsync-XXXXXXXX" renamed over NAME, and fsyncs the
 * directory, so a crash leaves either the old file or the new one, never a
 * torn one; a put killed midway leaves nothing (an unnamed file goes with
 * its last descriptor).  Where O_TMPFILE is missing (or /proc, to link it;
 * IMGSYNC_FS_NO_TMPFILE=1 asks for it), the temporary file has that name
 * from the start.  Listings skip leftover temporary files.  A put that fails
 * (a full disk, a read error) unlinks its temporary file: nothing
 * half-written stays behind, under the final name or any other.  Under
 * load, small puts make their data and their names durable in groups, with
 * one syncfs each instead of an fsync per file (group_place()).
 *
 * spool() hands out such an unnamed file on the root's filesystem for a
 * download to land in; adopt() then links that very file into place, the
 * same way, instead of copying it: a large object coming from another store
 * is written once.
 *
 * Every operation runs on the worker pool (workq.h); the loop only sees
 * completions.  One exception: open_fd() of a path the kernel resolves
 * from its caches alone (RESOLVE_CACHED) opens on the loop, which cannot
 * wait on the disk that way (open_cached()).  Listing walks directories in
 * the byte order of the keys they hold ("a-b" < "a/b" because '-' < '/'),
 * so pages continue after a token with no state kept between calls.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "key.h"
#include "log.h"

#define FS_TMP_TAG   ".imgsync-"
#define FS_LIST_PAGE 1000
/* Group sync: puts up to this size join one; a syncfs that took longer than
 * FS_GROUP_SLOW_MS (plus a millisecond per FS_GROUP_SLOW_BPMS bytes the
 * group wrote) had other writers' data to write out with it, and puts sync
 * one by one for FS_GROUP_SOLO_MS. */
#define FS_GROUP_MAX_SIZE  (1u << 20)
#define FS_GROUP_SLOW_MS   1000
#define FS_GROUP_SLOW_BPMS 32768
#define FS_GROUP_SOLO_MS   300000
/* A deleted file is held open this long, in case it was written as it
 * went: see "Deleted files in their grace" below. */
#define FS_ASIDE_GRACE_MS 500
#define FS_ASIDE_MAX	  1024 /* descriptors held so at most (and an eighth of RLIMIT_NOFILE) */

/* A file a delete unlinked, held open for FS_ASIDE_GRACE_MS in case it was
 * written as it went (aside_finish()). */
struct fs_aside {
	struct fs_aside *next;
	uint64_t at_ms; /* loop_clock_ms() when unlinked */
	char *key;
	int fd; /* the file, unlinked */
	char tag[STORE_TAG_MAX];
};

struct fs_store {
	struct store base;
	int rootfd;
	bool fsync;
	bool no_openat2; /* decided once at open, read-only afterwards */
	bool no_cached;	 /* no RESOLVE_CACHED here (open_cached; loop thread only) */
	bool tmpfile;	 /* puts write an O_TMPFILE and link it (/proc/self/fd is there) */
	/* set once a spool file could not be linked (EXDEV: a mount inside
	 * the root): spool() hands out no more */
	_Atomic bool no_spool;
	/* jobs submitted and not yet through work(): close waits for them */
	pthread_mutex_t mu;
	pthread_cond_t idle;
	int pending;
	/* Group sync (group_work()): small puts made durable together.  group:
	 * fsync, on a file system whose syncfs(2) makes writes durable.  Under
	 * mu: the puts whose data waits for it, and whether group_job runs. */
	bool group;
	dev_t root_dev;
	struct workq_job group_job;
	struct store_req *staged, **staged_tail;
	bool syncing;
	/* loop_clock_ms(): until then puts sync one by one (a syncfs was slow) */
	_Atomic uint64_t solo_until;
	uint64_t slow_ms;  /* FS_GROUP_SLOW_MS; IMGSYNC_FS_GROUP_SLOW_MS in tests */
	unsigned delay_ms; /* tests (IMGSYNC_FS_GROUP_DELAY_MS): a slow disk's syncfs */
	/* under mu: the files deletes unlinked and hold open, oldest first,
	 * and whether a pool job finishes them (the timer's, while no delete
	 * comes to do it) */
	struct fs_aside *asides, **asides_tail;
	size_t nasides, aside_max;
	bool settling;
	struct loop_timer aside_timer;
};

enum fs_op { FS_PUT, FS_GET, FS_OPEN, FS_STAT, FS_DEL, FS_DEL_IF, FS_LIST };

/*
 * A request owns everything its pool thread touches: a dup of the caller's
 * descriptor and its own output structs, copied to the caller's in
 * req_done() unless cancelled.  So a cancelled request may finish its work
 * after the caller has closed the descriptor and freed its outputs.
 */
struct store_req {
	struct workq_job job;
	/* put: finished when stage() hands the put to the group job, so that
	 * park_done() tells the owner before req_done() can (the pool's
	 * finished jobs reach the loop in order) */
	struct workq_job park_job;
	void (*parked)(void *arg); /* the env's, or NULL */
	struct fs_store *st;
	enum fs_op op;
	char *key;	     /* or the list prefix */
	char *token;	     /* list; del_if: the tag */
	int fd;		     /* our dup of the caller's descriptor, or -1 */
	int opened, *fd_out; /* open_fd: the object, for the caller */
	uint64_t size;
	bool adopt;		    /* put: fd is a spool() file to link, not to copy */
	bool adopted;		    /* put: and it is being linked */
	bool again;		    /* put: it could not be: copy it */
	int wdir, wfd;		    /* put: the key's directory, the file written */
	char wtmp[NAME_MAX + 1];    /* put: the file's temporary name, if it has one */
	struct stat wsb;	    /* put: the file, once written */
	struct store_req *gnext;    /* put: the next in its group (group_work()) */
	bool if_absent;		    /* put: only where the name is free (ERR_EXISTS) */
	char if_tag[STORE_TAG_MAX]; /* put: only over the file with this tag (ERR_EXISTS) */
	struct obj_info info, *info_out;
	struct store_list list, *list_out;
	store_done_fn done;
	void *arg;
	bool ok;
	/* set on the loop thread, read by the pool thread: a cancelled request
	 * not yet started is skipped, and none renames or unlinks anything */
	_Atomic bool cancelled;
	struct err err;
};

/* TMP (TMPSZ bytes): the I-th try at a hidden temporary name beside NAME. */
static void tmp_name(char *tmp, size_t tmpsz, const char *name, int i)
{
	snprintf(tmp, tmpsz, ".%s" FS_TMP_TAG "%08x", name,
		 (unsigned)random() ^ (unsigned)getpid() ^ (unsigned)i);
}

/* A new file under a temporary name beside NAME in DIRFD (named in TMP),
 * for writing; -1 and errno on failure. */
static int open_tmp(int dirfd, const char *name, char *tmp, size_t tmpsz)
{
	int fd = -1;

	for (int i = 0; i < 100 && fd < 0; i++) {
		tmp_name(tmp, tmpsz, name, i);
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
		if (fd < 0 && errno != EEXIST)
			break;
	}
	return fd;
}

/* --- resolution beneath the root --- */

/* RESOLVE: more RESOLVE_* flags (RESOLVE_CACHED), or 0. */
static int fs_openat2(int dirfd, const char *path, int flags, mode_t mode, uint64_t resolve)
{
	struct open_how how = {
	    .flags = (uint64_t)flags | O_CLOEXEC,
	    .mode = mode,
	    .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | resolve,
	};

	return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/* Whether name in dirfd is a symlink (after an open refused it). */
static bool is_symlink_at(int dirfd, const char *name)
{
	struct stat sb;

	return fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode);
}

/* Fallback: one segment at a time, no symlink anywhere.  A symlink met on
 * the way fails with ELOOP, as openat2 with RESOLVE_NO_SYMLINKS does. */
static int fs_walk(int rootfd, const char *path, int flags, mode_t mode)
{
	char seg[NAME_MAX + 1];
	const char *p = path, *slash;
	int cur = rootfd, next, saved;

	while ((slash = strchr(p, '/')) != NULL) {
		size_t n = (size_t)(slash - p);

		if (n == 0 || n > NAME_MAX) {
			errno = n ? ENAMETOOLONG : EINVAL;
			goto fail;
		}
		memcpy(seg, p, n);
		seg[n] = '\0';
		/* O_PATH | O_NOFOLLOW opens a symlink itself; O_DIRECTORY then
		 * refuses it with ENOTDIR */
		next = openat(cur, seg, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		saved = errno;
		if (next < 0 && saved == ENOTDIR && is_symlink_at(cur, seg))
			saved = ELOOP;
		if (cur != rootfd)
			close(cur);
		if (next < 0) {
			errno = saved;
			return -1;
		}
		cur = next;
		p = slash + 1;
	}
	next = openat(cur, p, flags | O_NOFOLLOW | O_CLOEXEC, mode);
	saved = errno;
	/* O_DIRECTORY | O_NOFOLLOW refuses a symlink with ENOTDIR */
	if (next < 0 && saved == ENOTDIR && is_symlink_at(cur, p))
		saved = ELOOP;
	if (next >= 0 && (flags & O_PATH)) {
		struct stat sb;

		/* O_PATH | O_NOFOLLOW gave the symlink itself */
		if (fstat(next, &sb) == 0 && S_ISLNK(sb.st_mode)) {
			close(next);
			next = -1;
			saved = ELOOP;
		}
	}
	if (cur != rootfd)
		close(cur);
	errno = saved;
	return next;
fail:
	if (cur != rootfd)
		close(cur);
	return -1;
}

static int fs_open(struct fs_store *st, const char *path, int flags, mode_t mode)
{
	if (!st->no_openat2)
		return fs_openat2(st->rootfd, path, flags, mode, 0);
	return fs_walk(st->rootfd, path, flags, mode);
}

static bool fs_check_key(const char *key, struct err *e)
{
	const char *p = key, *s;
	char shown[100];

	if (!key_validate(key, strlen(key), e))
		return false;
	/* escaped and cut: a message must stay valid UTF-8 whatever it quotes */
	key_escape(key, strlen(key), shown, sizeof(shown));
	for (;; p = s + 1) {
		size_t n;

		s = strchr(p, '/');
		n = s ? (size_t)(s - p) : strlen(p);
		if (n > NAME_MAX)
			return err_set(e, ERR_INVALID,
				       "key \"%s\": a path segment of %zu bytes; a file name "
				       "holds at most %d",
				       shown, n, NAME_MAX);
		/* Names of our temporary files are hidden from listings. */
		if (p[0] == '.' && memmem(p, n, FS_TMP_TAG, strlen(FS_TMP_TAG)) != NULL)
			return err_set(
			    e, ERR_INVALID,
			    "key \"%s\": a path segment starting with '.' and containing "
			    "\"%s\" is reserved for temporary files",
			    shown, FS_TMP_TAG);
		if (s == NULL)
			return true;
	}
}

/* Split "a/b/c.jpg" into the directory part and the name. */
static void split_key(const char *key, char *dir, size_t dirsz, const char **name)
{
	const char *slash = strrchr(key, '/');

	if (slash == NULL) {
		snprintf(dir, dirsz, ".");
		*name = key;
	} else {
		snprintf(dir, dirsz, "%.*s", (int)(slash - key), key);
		*name = slash + 1;
	}
}

/* The refusal of a key whose path meets a symlink (ELOOP) or would leave
 * the root (EXDEV: only a symlink can do that to a validated key). */
static bool symlink_refused(struct fs_store *st, const char *key, struct err *e)
{
	return err_set(e, ERR_INVALID,
		       "\"%s\" under %s: refused, its path goes through a symlink (a filesystem "
		       "store follows no symlink under its root, so that nothing outside it is "
		       "read, written or deleted)",
		       key, st->base.cfg->root);
}

/* Why resolving the directory dir of key beneath the root failed. */
static bool resolve_error(struct fs_store *st, int errnum, const char *what, const char *dir,
			  const char *key, struct err *e)
{
	if (errnum == EXDEV || errnum == ELOOP)
		return symlink_refused(st, key, e);
	return err_sys(e, errnum, "%s \"%s\" for \"%s\" under %s", what, dir, key,
		       st->base.cfg->root);
}

/* Open (creating as needed) the directory that holds key. */
static int fs_open_parent(struct fs_store *st, const char *key, bool create, struct err *e)
{
	char dir[KEY_MAX + 1], *p;
	const char *name;
	int fd;

	split_key(key, dir, sizeof(dir), &name);
	fd = fs_open(st, dir, O_DIRECTORY | O_RDONLY, 0);
	if (fd >= 0 || errno != ENOENT || !create) {
		if (fd < 0)
			resolve_error(st, errno, "cannot open directory", dir, key, e);
		return fd;
	}
	/* Create missing directories one level at a time, each beneath root. */
	for (p = dir;; p++) {
		if (*p == '/' || *p == '\0') {
			char saved = *p;
			int parent;
			char *leaf;

			*p = '\0';
			leaf = strrchr(dir, '/');
			leaf = leaf ? leaf + 1 : dir;
			if (leaf == dir)
				parent = fcntl(st->rootfd, F_DUPFD_CLOEXEC, 0);
			else {
				leaf[-1] = '\0';
				parent = fs_open(st, dir, O_DIRECTORY | O_RDONLY, 0);
				leaf[-1] = '/';
			}
			if (parent < 0 || (mkdirat(parent, leaf, 0755) < 0 && errno != EEXIST)) {
				resolve_error(st, errno, "cannot create directory", dir, key, e);
				if (parent >= 0)
					close(parent);
				return -1;
			}
			if (st->fsync)
				(void)fsync(parent);
			close(parent);
			*p = saved;
			if (saved == '\0')
				break;
		}
	}
	fd = fs_open(st, dir, O_DIRECTORY | O_RDONLY, 0);
	if (fd < 0)
		resolve_error(st, errno, "cannot open directory", dir, key, e);
	return fd;
}

/* Copy [0, size) of in to out from offset 0; the kernel copies where it can. */
static bool copy_fd(int in, int out, uint64_t size, uint64_t *copied, struct err *e)
{
	loff_t off_in = 0, off_out = 0;
	char buf[65536];

	*copied = 0;
	while (*copied < size) {
		ssize_t n = copy_file_range(in, &off_in, out, &off_out, size - *copied, 0);

		if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
			      errno == EOPNOTSUPP || errno == EBADF))
			break;
		if (n < 0)
			return err_sys(e, errno, "copy");
		if (n == 0)
			return true; /* the source is shorter than said */
		*copied += (uint64_t)n;
	}
	while (*copied < size) {
		size_t want = size - *copied < sizeof(buf) ? size - *copied : sizeof(buf);
		ssize_t n = pread(in, buf, want, (off_t)*copied), w;

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return err_sys(e, errno, "read");
		if (n == 0)
			return true;
		for (ssize_t done = 0; done < n; done += w) {
			w = pwrite(out, buf + done, (size_t)(n - done),
				   (off_t)(*copied + (uint64_t)done));
			if (w < 0 && errno == EINTR)
				w = 0;
			else if (w < 0)
				return err_sys(e, errno, "write");
		}
		*copied += (uint64_t)n;
	}
	return true;
}

static void info_from_stat(struct obj_info *info, const struct stat *sb)
{
	memset(info, 0, sizeof(*info));
	info->size = (uint64_t)sb->st_size;
	info->mtime = sb->st_mtim.tv_sec;
	info->mtime_ns = (uint32_t)sb->st_mtim.tv_nsec;
	info->mtime_fine = true;
	store_file_tag(sb, info->tag, sizeof(info->tag));
}

/* --- operations (on pool threads) --- */

/* A put that may only create found the name taken: ERR_EXISTS for a file,
 * what the caller can look at; a directory (or anything else) is in the way
 * as for any put. */
static bool exists(struct fs_store *st, struct store_req *r, int dirfd, const char *name,
		   struct err *e)
{
	struct stat sb;

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(sb.st_mode))
		return err_sys(e, EISDIR,
			       "cannot put \"%s\" under %s: a directory has its name (move it "
			       "away, then retry)",
			       r->key, st->base.cfg->root);
	return err_set(e, ERR_EXISTS, "\"%s\" exists under %s already; not replaced", r->key,
		       st->base.cfg->root);
}

/* A put that may only replace the file looked at (if_tag): whether NAME
 * is that file still; ERR_EXISTS when it was written again or removed
 * since.  Looked at just before the rename: a writer slipping in between
 * (microseconds) goes unnoticed. */
static bool still_tagged(struct fs_store *st, struct store_req *r, int dirfd, const char *name,
			 struct err *e)
{
	struct stat sb;
	char tag[sizeof(r->if_tag)];

	if (fstatat(dirfd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode)) {
		store_file_tag(&sb, tag, sizeof(tag));
		if (strcmp(tag, r->if_tag) == 0)
			return true;
	}
	return err_set(e, ERR_EXISTS,
		       "\"%s\" under %s changed since it was looked at (written again, or "
		       "removed); not replaced",
		       r->key, st->base.cfg->root);
}

/* Give a complete O_TMPFILE its name.  A new image is linked in place (it
 * appears whole); where a file (or anything else) has the name already, the
 * file is linked to a temporary name in TMP instead, for the caller to
 * rename over it.  Leaves TMP empty when the image is in place. */
static bool link_tmpfile(struct fs_store *st, struct store_req *r, int fd, int dirfd,
			 const char *name, char *tmp, size_t tmpsz, struct err *e)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	/* (one that may only replace the file looked at never takes a free
	 * name: that file is gone, and the rename's look says so) */
	if (r->if_tag[0])
		errno = EEXIST;
	else if (linkat(AT_FDCWD, proc, dirfd, name, AT_SYMLINK_FOLLOW) == 0)
		return true;
	if (errno == EEXIST && r->if_absent) {
		tmp[0] = '\0';
		exists(st, r, dirfd, name, e);
		errno = EEXIST;
		return false;
	}
	if (errno == EEXIST) {
		for (int i = 0; i < 100; i++) {
			tmp_name(tmp, tmpsz, name, i);
			if (linkat(AT_FDCWD, proc, dirfd, tmp, AT_SYMLINK_FOLLOW) == 0)
				return true;
			if (errno != EEXIST)
				break;
		}
	}
	int saved = errno;

	tmp[0] = '\0'; /* nothing of ours has a name */
	err_sys(e, saved, "cannot link \"%s\" into place under %s", r->key, st->base.cfg->root);
	errno = saved; /* for the caller */
	return false;
}

/* Whether a put may link the caller's file itself: an unnamed regular file
 * (spool() made it) of the right size, on the directory's filesystem. */
static bool adoptable(struct store_req *r, int dirfd)
{
	struct stat f, d;

	return r->st->tmpfile && fstat(r->fd, &f) == 0 && fstat(dirfd, &d) == 0 &&
	       S_ISREG(f.st_mode) && f.st_nlink == 0 && (uint64_t)f.st_size == r->size &&
	       f.st_dev == d.st_dev;
}

/* The first half of a put: the data in a file with no name (or a temporary
 * one, r->wtmp) in the key's directory (r->wdir, r->wfd). */
static bool put_write(struct store_req *r)
{
	struct fs_store *st = r->st;
	struct err *e = &r->err;
	const char *name = strrchr(r->key, '/');
	uint64_t copied;
	struct stat sb;
	int fd = -1;

	name = name ? name + 1 : r->key;
	r->wtmp[0] = '\0'; /* the name of a temporary file we created, once we have */
	if (strlen(name) + sizeof(FS_TMP_TAG) + 8 > NAME_MAX)
		return err_set(e, ERR_INVALID,
			       "\"%s\": its file name is %zu bytes, too long for the temporary "
			       "copy a put writes first (at most %zu)",
			       r->key, strlen(name), (size_t)NAME_MAX - sizeof(FS_TMP_TAG) - 8);
	/* A concurrent delete prunes directories it emptied; one we just made
	 * (or found) may vanish before the temporary file is in it: start the
	 * resolution again, a few times. */
	for (int attempt = 0; fd < 0; attempt++) {
		r->wdir = fs_open_parent(st, r->key, true, e);
		if (r->wdir < 0 && e->code == ERR_NOTFOUND && attempt < 8)
			continue;
		if (r->wdir < 0) {
			if (e->code == ERR_NOTFOUND)
				e->code = ERR_TRANSIENT;
			return false;
		}
		/* a spool() file on this directory's filesystem: it is the copy */
		if (r->adopt && adoptable(r, r->wdir)) {
			fd = fcntl(r->fd, F_DUPFD_CLOEXEC, 0);
			if (fd >= 0) {
				r->adopted = true;
				break;
			}
		}
		/* unnamed until complete: nothing to clean up if we die */
		if (st->tmpfile) {
			fd = openat(r->wdir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
			if (fd >= 0)
				break;
			if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
				if (errno == ENOENT && attempt < 8) {
					close(r->wdir);
					r->wdir = -1;
					continue;
				}
				break;
			}
		}
		if (fd < 0)
			fd = open_tmp(r->wdir, name, r->wtmp, sizeof(r->wtmp));
		if (fd < 0) {
			int saved = errno;

			r->wtmp[0] = '\0'; /* not ours: never unlink it */
			errno = saved;
		}
		if (fd < 0 && errno == ENOENT && attempt < 8) {
			close(r->wdir);
			r->wdir = -1;
			continue;
		}
		break;
	}
	if (fd < 0) {
		err_sys(e, errno, "cannot create a temporary file for \"%s\" under %s", r->key,
			st->base.cfg->root);
		if (e->code == ERR_NOTFOUND)
			e->code = ERR_TRANSIENT;
		return false;
	}
	r->wfd = fd;
	/* Taken already: not worth the writing (the link decides, though).  A
	 * symlink or a FIFO planted there is no image of this store, and is
	 * replaced (never followed) as by any put. */
	if (r->if_absent && fstatat(r->wdir, name, &sb, AT_SYMLINK_NOFOLLOW) == 0) {
		if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode))
			return exists(st, r, r->wdir, name, e);
		r->if_absent = false;
	}
	if (r->if_tag[0] && !still_tagged(st, r, r->wdir, name, e))
		return false;
	if (r->adopted)
		copied = r->size; /* adoptable() checked its size */
	else if (!copy_fd(r->fd, fd, r->size, &copied, e)) {
		err_prefix(e, "writing \"%s\" under %s: ", r->key, st->base.cfg->root);
		return false;
	}
	if (copied != r->size)
		return err_set(
		    e, ERR_INTEGRITY,
		    "the source of \"%s\" ended after %llu of %llu bytes (changed while copying?)",
		    r->key, (unsigned long long)copied, (unsigned long long)r->size);
	if (fstat(fd, &r->wsb) < 0)
		return err_sys(e, errno, "fstat");
	return true;
}

/* The second half: the file put_write() wrote gets the key's name.  With
 * SYNC, each step is fsynced as it goes (a new image waits on the disk
 * three times); without, the caller made the data durable before and makes
 * the name durable after (group_work()).  Sets r->again where an adopted
 * file cannot be linked here after all: the put copies instead. */
static bool place(struct store_req *r, bool sync)
{
	struct fs_store *st = r->st;
	struct err *e = &r->err;
	const char *name = strrchr(r->key, '/');
	int fd = r->wfd, dirfd = r->wdir;

	name = name ? name + 1 : r->key;
	if (sync && fsync(fd) < 0)
		return err_sys(e, errno, "fsync of \"%s\" under %s", r->key, st->base.cfg->root);
	if (r->cancelled)
		return err_set(e, ERR_TRANSIENT, "cancelled");
	if (r->wtmp[0] == '\0') {
		if (!link_tmpfile(st, r, fd, dirfd, name, r->wtmp, sizeof(r->wtmp), e)) {
			if (r->adopted && e->code != ERR_EXISTS && errno != ENOSPC &&
			    errno != EDQUOT && errno != EROFS) {
				/* not linkable here after all (EXDEV: a mount under
				 * the root, ENOENT: a file that had a name): copy
				 * it, and, where the mount is the reason, every
				 * later one */
				if (errno == EXDEV)
					st->no_spool = true;
				r->adopt = false;
				r->again = true;
				err_clear(e);
			}
			return false;
		}
		/* The inode's link count changed: a journaling filesystem commits
		 * it with the directory, one without (ext4 without a journal) only
		 * when the inode itself is written. */
		if (sync && fsync(fd) < 0)
			return err_sys(e, errno, "fsync of \"%s\" under %s", r->key,
				       st->base.cfg->root);
	}
	/* (where the writing reports its errors only now: NFS) */
	r->wfd = -1;
	if (close(fd) < 0)
		return err_sys(e, errno, "writing \"%s\" under %s", r->key, st->base.cfg->root);
	if (r->wtmp[0] == '\0')
		goto placed; /* a new image: linked in place whole, no rename needed */
	if (r->cancelled)
		return err_set(e, ERR_TRANSIENT, "cancelled");
	if (r->if_absent) {
		/* never over a file: a rename that refuses to replace; where the
		 * file system has none (NFS), a second name, then the temporary
		 * one goes; where it has no hard links either (vfat), a look
		 * first, which leaves a short window */
		int rc = renameat2(dirfd, r->wtmp, dirfd, name, RENAME_NOREPLACE);

		if (rc < 0 && (errno == EINVAL || errno == ENOSYS)) {
			rc = linkat(dirfd, r->wtmp, dirfd, name, 0);
			if (rc == 0)
				(void)unlinkat(dirfd, r->wtmp, 0);
			else if (errno == EPERM || errno == EOPNOTSUPP || errno == EMLINK) {
				rc =
				    faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0 ? -1 : 0;
				errno = EEXIST;
				if (rc == 0)
					rc = renameat(dirfd, r->wtmp, dirfd, name);
			}
		}
		if (rc < 0) {
			if (errno == EEXIST)
				return exists(st, r, dirfd, name, e);
			return err_sys(e, errno, "cannot rename into place \"%s\" under %s", r->key,
				       st->base.cfg->root);
		}
	} else if (r->if_tag[0] && !still_tagged(st, r, dirfd, name, e)) {
		return false;
	} else if (renameat(dirfd, r->wtmp, dirfd, name) < 0) {
		if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)
			return err_sys(
			    e, errno,
			    "cannot rename into place \"%s\" under %s: a directory has its name "
			    "(move it away, then retry)",
			    r->key, st->base.cfg->root);
		return err_sys(e, errno, "cannot rename into place \"%s\" under %s", r->key,
			       st->base.cfg->root);
	}
	r->wtmp[0] = '\0';
placed:
	if (sync && fsync(dirfd) < 0)
		return err_sys(e, errno, "fsync of the directory of \"%s\"", r->key);
	info_from_stat(&r->info, &r->wsb);
	return true;
}

/* place(), where a directory removed meanwhile (a delete pruning what it
 * emptied, which a put's unnamed file does not stop) fails the link with
 * ENOENT: the put is retried, as a resolution that met it is, not dead for
 * a missing source. */
static bool put_place(struct store_req *r, bool sync)
{
	if (place(r, sync))
		return true;
	if (r->err.code == ERR_NOTFOUND)
		r->err.code = ERR_TRANSIENT;
	return false;
}

/* A put's descriptors closed; a temporary name of a put that failed gone:
 * nothing half-written stays behind. */
static void put_release(struct store_req *r, bool ok)
{
	if (r->wfd >= 0)
		close(r->wfd);
	r->wfd = -1;
	if (!ok && r->wtmp[0] && r->wdir >= 0)
		(void)unlinkat(r->wdir, r->wtmp, 0);
	r->wtmp[0] = '\0';
	if (r->wdir >= 0)
		close(r->wdir);
	r->wdir = -1;
}

/*
 * Group sync.  With fsync = true a new image waits on the disk three times
 * (put_place()), and each wait is a write and a cache flush of its own.
 * Under load, the puts that wrote their data hand it to one job instead
 * (stage()), which makes all of it durable with one syncfs(2) of the file
 * system, names the files, and makes the names durable with a second: two
 * flushes for the group, and the disk sees the writes together.  The
 * order is a single put's: no name before its data is on the disk, no
 * result before its name is.  A put alone in its group syncs alone, as it
 * would without the group.  syncfs also writes what other programs have
 * pending on that file system: one found slow for it (a copy of gigabytes
 * going on) sends the puts back to syncing one by one for a while, so that
 * they do not wait on it.  Only file systems whose syncfs is known to make
 * writes durable group (ext2/3/4, XFS, Btrfs; tmpfs, where neither syncs
 * anything), on kernels whose syncfs reports failed writes (5.8 and
 * later); IMGSYNC_FS_NO_GROUP_SYNC=1 turns it off.
 */
/* A syncfs failed: the puts of LIST that had not failed yet fail with it. */
static void group_failed(struct fs_store *st, struct store_req *list, int error)
{
	for (struct store_req *r = list; r; r = r->gnext)
		if (r->ok)
			r->ok = err_sys(&r->err, error, "syncfs of %s, for \"%s\"",
					st->base.cfg->root, r->key);
}

static void group_place(struct fs_store *st, struct store_req *list)
{
	uint64_t t0 = loop_clock_ms(), took, bytes = 0;
	size_t n = 0;
	bool any = false;

	for (struct store_req *r = list; r; r = r->gnext) {
		n++;
		bytes += r->size;
	}
	if (n == 1) {
		/* alone (the ones staged before a slow syncfs still group: on
		 * this one thread, one by one they would wait longer still) */
		list->ok = put_place(list, true);
		return;
	}
	for (struct store_req *r = list; r; r = r->gnext)
		r->ok = true; /* each wrote its data */
	if (st->delay_ms)
		usleep(st->delay_ms * 1000u);
	if (syncfs(st->rootfd) < 0) {
		group_failed(st, list, errno);
		return;
	}
	for (struct store_req *r = list; r; r = r->gnext)
		any |= r->ok = put_place(r, false);
	if (any && syncfs(st->rootfd) < 0)
		group_failed(st, list, errno);
	took = loop_clock_ms() - t0;
	log_msg(LOG_DEBUG, &(struct log_fields){.store = st->base.cfg->name},
		"store \"%s\": %zu puts made durable together in %llu ms", st->base.cfg->name, n,
		(unsigned long long)took);
	if (took >= st->slow_ms + bytes / FS_GROUP_SLOW_BPMS && loop_clock_ms() >= st->solo_until) {
		st->solo_until = loop_clock_ms() + FS_GROUP_SOLO_MS;
		log_msg(LOG_NOTICE, &(struct log_fields){.store = st->base.cfg->name},
			"store \"%s\": syncing %zu puts together took %.1f s (other programs "
			"had writes pending on the file system of %s): puts sync one by one "
			"for the next %d minutes",
			st->base.cfg->name, n, took / 1000.0, st->base.cfg->root,
			FS_GROUP_SOLO_MS / 60000);
	}
}

/* The group job: groups, as long as puts stage more. */
static void group_work(struct workq_job *job)
{
	struct fs_store *st =
	    (struct fs_store *)((char *)job - offsetof(struct fs_store, group_job));

	for (;;) {
		struct store_req *list;

		pthread_mutex_lock(&st->mu);
		list = st->staged;
		st->staged = NULL;
		st->staged_tail = &st->staged;
		if (list == NULL) {
			st->syncing = false;
			if (--st->pending == 0)
				pthread_cond_broadcast(&st->idle);
			pthread_mutex_unlock(&st->mu);
			/* never delivered: the store may be closed from now on */
			workq_keep();
			return;
		}
		pthread_mutex_unlock(&st->mu);
		group_place(st, list);
		for (struct store_req *r = list, *next; r; r = next) {
			next = r->gnext;
			put_release(r, r->ok);
			workq_finish(st->base.env.wq, &r->job);
		}
	}
}

/* Hands a put that wrote its data to the group job; R is the job's now. */
static void stage(struct store_req *r)
{
	struct fs_store *st = r->st;

	if (r->parked)
		workq_finish(st->base.env.wq, &r->park_job);
	pthread_mutex_lock(&st->mu);
	r->gnext = NULL;
	*st->staged_tail = r;
	st->staged_tail = &r->gnext;
	if (!st->syncing) {
		st->syncing = true;
		st->pending++;
		workq_submit(st->base.env.wq, &st->group_job);
	}
	pthread_mutex_unlock(&st->mu);
}

/* Returns true when the put went to the group job (stage()): the caller
 * must not touch r again.  Otherwise the put is over, r->ok says how. */
static bool do_put(struct store_req *r)
{
	struct fs_store *st = r->st;

	for (;;) {
		bool ok = put_write(r);

		/* (a file on a mount under the root is not on the file system
		 * the syncfs would sync) */
		if (ok && st->group && !r->adopted && r->size <= FS_GROUP_MAX_SIZE &&
		    r->wsb.st_dev == st->root_dev && loop_clock_ms() >= st->solo_until) {
			stage(r);
			return true;
		}
		if (ok)
			ok = put_place(r, st->fsync);
		put_release(r, ok);
		if (!ok && r->again) {
			r->again = r->adopted = false;
			err_clear(&r->err);
			continue;
		}
		r->ok = ok;
		return false;
	}
}

/* The regular file of key opened with flags (O_RDONLY or O_PATH) beneath
 * the root, and its stat: -1 when the open failed (errno says why), -2
 * when it is no regular file.  RESOLVE (RESOLVE_CACHED) needs openat2:
 * callers check no_openat2. */
static int open_regular(struct fs_store *st, const char *key, int flags, uint64_t resolve,
			struct stat *sb)
{
	/* O_NONBLOCK: opening a FIFO planted under the root must not block */
	int oflags = flags | (flags == O_PATH ? 0 : O_NONBLOCK);
	int fd =
	    resolve ? fs_openat2(st->rootfd, key, oflags, 0, resolve) : fs_open(st, key, oflags, 0);

	if (fd < 0)
		return -1;
	if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
		close(fd);
		return -2;
	}
	if (flags != O_PATH)
		(void)fcntl(fd, F_SETFL, flags);
	return fd;
}

static int aside_settle_key(struct fs_store *st, const char *key);

static int open_object(struct store_req *r, int flags)
{
	struct stat sb;
	int fd = open_regular(r->st, r->key, flags, 0, &sb), settled;

	/* not there to read: a delete's file in its grace may come back */
	if (fd == -1 && (errno == ENOENT || errno == ENOTDIR) && flags != O_PATH &&
	    (settled = aside_settle_key(r->st, r->key)) != 0) {
		if (settled < 0) {
			err_set(&r->err, ERR_TRANSIENT,
				"\"%s\" under %s was deleted moments ago and may come back (it "
				"was written as it went?): looking again shortly",
				r->key, r->st->base.cfg->root);
			return -1;
		}
		fd = open_regular(r->st, r->key, flags, 0, &sb);
	}
	if (fd == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			err_set(&r->err, ERR_NOTFOUND, "\"%s\" does not exist under %s", r->key,
				r->st->base.cfg->root);
		else if (errno == EXDEV || errno == ELOOP)
			symlink_refused(r->st, r->key, &r->err);
		else
			err_sys(&r->err, errno, "cannot open \"%s\" under %s", r->key,
				r->st->base.cfg->root);
		return -1;
	}
	if (fd == -2) {
		err_set(&r->err, ERR_NOTFOUND, "\"%s\" under %s is not a regular file", r->key,
			r->st->base.cfg->root);
		return -1;
	}
	info_from_stat(&r->info, &sb);
	return fd;
}

static bool do_get(struct store_req *r)
{
	uint64_t copied;
	int fd;
	bool ok;

	fd = open_object(r, O_RDONLY);
	if (fd < 0)
		return false;
	ok = copy_fd(fd, r->fd, r->info.size, &copied, &r->err);
	if (!ok)
		err_prefix(&r->err, "reading \"%s\": ", r->key);
	else if (copied != r->info.size)
		ok = err_set(&r->err, ERR_INTEGRITY, "\"%s\" shrank while being read", r->key);
	else {
		/* written meanwhile (in place, as many applications do): what was
		 * read may mix two versions */
		struct obj_info after;
		struct stat sb;

		if (fstat(fd, &sb) < 0)
			ok = err_sys(&r->err, errno, "fstat \"%s\"", r->key);
		else {
			info_from_stat(&after, &sb);
			if (strcmp(after.tag, r->info.tag) != 0)
				ok = err_set(&r->err, ERR_INTEGRITY,
					     "\"%s\" changed while being read", r->key);
		}
	}
	close(fd);
	return ok;
}

static bool do_open(struct store_req *r)
{
	r->opened = open_object(r, O_RDONLY);
	return r->opened >= 0;
}

static bool do_stat(struct store_req *r)
{
	int fd = open_object(r, O_PATH);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

static void prune_dirs(struct fs_store *st, char *dir);

static bool do_del(struct store_req *r)
{
	struct fs_store *st = r->st;
	char dir[KEY_MAX + 1];
	const char *name;
	int dirfd = fs_open_parent(st, r->key, false, &r->err);

	/* no directory (or a file where one would be): nothing to delete */
	if (dirfd < 0)
		return r->err.code == ERR_NOTFOUND;
	split_key(r->key, dir, sizeof(dir), &name);
	if (r->cancelled) {
		close(dirfd);
		return err_set(&r->err, ERR_TRANSIENT, "cancelled");
	}
	/* a directory is not an object: nothing to delete either */
	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT && errno != EISDIR) {
		err_sys(&r->err, errno, "cannot delete \"%s\" under %s", r->key,
			st->base.cfg->root);
		close(dirfd);
		return false;
	}
	if (st->fsync)
		(void)fsync(dirfd);
	close(dirfd);
	prune_dirs(st, dir);
	return true;
}

/*
 * Deleted files in their grace.  Setting a file aside and checking its tag
 * keeps out a writer that opens the key afterwards, but not one whose open
 * had found the file just before it was set aside and truncates or writes
 * it just after: the kernel looks the name up, then opens and truncates
 * the file it found, and a writer preempted in between (a loaded machine)
 * writes into a file no name leads to any more.  The application's put()
 * of those bytes would then name a file that is gone.  So the delete keeps
 * the file open for FS_ASIDE_GRACE_MS after unlinking it, and if it was
 * written meanwhile, writes what it holds back under its name (unless a
 * newer file has taken it).  Held by a descriptor, not a name, a file in
 * its grace leaves nothing behind when the daemon is killed.  A look at
 * the key's content (open_object(), not a stat) that finds nothing while
 * the key's file is in its grace waits for the outcome instead.
 */

static void aside_finish(struct fs_store *st, struct fs_aside *a);

/* Unlink NAME (checked: its descriptor FD, tag TAG), keeping FD for the
 * grace; false (FD closed, nothing unlinked) when it cannot be held. */
static bool aside_add(struct fs_store *st, const char *key, int dirfd, const char *name, int fd,
		      const char *tag)
{
	struct fs_aside *a = calloc(1, sizeof(*a)), *old = NULL;

	if (a == NULL || (a->key = strdup(key)) == NULL) {
		free(a);
		close(fd);
		return false;
	}
	a->fd = fd;
	a->at_ms = loop_clock_ms();
	snprintf(a->tag, sizeof(a->tag), "%s", tag);
	(void)unlinkat(dirfd, name, 0);
	pthread_mutex_lock(&st->mu);
	*st->asides_tail = a;
	st->asides_tail = &a->next;
	/* a bounded number of descriptors: the oldest goes early */
	if (++st->nasides > st->aside_max) {
		old = st->asides;
		st->asides = old->next;
		st->nasides--;
	}
	pthread_mutex_unlock(&st->mu);
	if (old)
		aside_finish(st, old);
	return true;
}

/* Write back what a file written in its grace holds, under its name. */
static void aside_rescue(struct fs_store *st, struct fs_aside *a, const struct stat *sb)
{
	char dir[KEY_MAX + 1], tmp[NAME_MAX + 1];
	const char *base, *name = st->base.cfg->name;
	struct log_fields lf = {.key = a->key, .store = name};
	struct err e = {0};
	uint64_t copied = 0;
	int dirfd = fs_open_parent(st, a->key, true, &e), out = -1, rc = -1, saved;

	if (dirfd < 0) {
		log_msg(LOG_WARNING, &lf,
			"store \"%s\": \"%s\" was written as it was deleted, by a program that had "
			"opened it just before, and cannot be written back: %s",
			name, a->key, e.msg);
		return;
	}
	split_key(a->key, dir, sizeof(dir), &base);
	out = open_tmp(dirfd, base, tmp, sizeof(tmp));
	/* with the writer's times: the file is what it wrote, when it did */
	if (out >= 0 && copy_fd(a->fd, out, (uint64_t)sb->st_size, &copied, &e) &&
	    futimens(out, (struct timespec[2]){sb->st_atim, sb->st_mtim}) == 0 &&
	    (!st->fsync || fsync(out) == 0)) {
		rc = renameat2(dirfd, tmp, dirfd, base, RENAME_NOREPLACE);
		if (rc < 0 && errno == EINVAL && (rc = linkat(dirfd, tmp, dirfd, base, 0)) == 0)
			(void)unlinkat(dirfd, tmp, 0);
		if (rc == 0 && st->fsync)
			(void)fsync(dirfd);
	}
	saved = rc == 0 ? 0 : errno;
	if (out >= 0) {
		close(out);
		if (rc < 0)
			(void)unlinkat(dirfd, tmp, 0);
	}
	if (rc == 0)
		log_msg(LOG_NOTICE, &lf,
			"store \"%s\": \"%s\" was written as it was deleted, by a program that had "
			"opened it just before: written back (%llu bytes)",
			name, a->key, (unsigned long long)copied);
	else if (saved == EEXIST)
		log_msg(
		    LOG_NOTICE, &lf,
		    "store \"%s\": \"%s\" was written as it was deleted, by a program that had "
		    "opened it just before, and a newer file has its name since: that one stays",
		    name, a->key);
	else
		log_msg(LOG_WARNING, &lf,
			"store \"%s\": \"%s\" was written as it was deleted, by a program that had "
			"opened it just before, and cannot be written back: %s",
			name, a->key, e.msg[0] ? e.msg : strerror(saved));
	close(dirfd);
}

/* The grace of a deleted file is over: let it go, or write it back if it
 * was written meanwhile. */
static void aside_finish(struct fs_store *st, struct fs_aside *a)
{
	struct obj_info now;
	struct stat sb;

	if (fstat(a->fd, &sb) == 0) {
		info_from_stat(&now, &sb);
		if (strcmp(now.tag, a->tag) != 0)
			aside_rescue(st, a, &sb);
	}
	close(a->fd);
	free(a->key);
	free(a);
}

/* Finish the files whose grace is over (ALL: every one). */
static void asides_settle(struct fs_store *st, bool all)
{
	uint64_t now = loop_clock_ms();
	struct fs_aside *due = NULL, **tail = &due;

	pthread_mutex_lock(&st->mu);
	while (st->asides && (all || st->asides->at_ms + FS_ASIDE_GRACE_MS <= now)) {
		*tail = st->asides;
		tail = &st->asides->next;
		st->asides = st->asides->next;
		st->nasides--;
	}
	*tail = NULL;
	if (st->asides == NULL)
		st->asides_tail = &st->asides;
	pthread_mutex_unlock(&st->mu);
	while (due) {
		struct fs_aside *next = due->next;

		aside_finish(st, due);
		due = next;
	}
}

/* On a pool thread: the files whose grace is over (aside_job). */
struct aside_job {
	struct workq_job job;
	struct fs_store *st;
};

static void aside_job_work(struct workq_job *job)
{
	struct fs_store *st = ((struct aside_job *)job)->st;

	asides_settle(st, false);
	pthread_mutex_lock(&st->mu);
	st->settling = false;
	if (--st->pending == 0)
		pthread_cond_broadcast(&st->idle);
	pthread_mutex_unlock(&st->mu);
}

static void aside_job_free(struct workq_job *job)
{
	free(job);
}

/* On the loop, while no delete (which finishes them too) comes: the files
 * whose grace is over are finished on the pool, since writing one back
 * waits on the disk. */
static void on_aside_timer(void *arg)
{
	struct fs_store *st = arg;
	struct aside_job *j = NULL;
	bool more;

	pthread_mutex_lock(&st->mu);
	if (st->asides && !st->settling && (j = calloc(1, sizeof(*j))) != NULL) {
		st->settling = true;
		st->pending++; /* fs_close() waits for it */
	}
	more = st->asides != NULL || st->pending > 0;
	pthread_mutex_unlock(&st->mu);
	if (j) {
		j->st = st;
		j->job.work = aside_job_work;
		j->job.done = j->job.discard = aside_job_free;
		workq_submit(st->base.env.wq, &j->job);
	}
	if (more)
		loop_timer_set(st->base.env.loop, &st->aside_timer, FS_ASIDE_GRACE_MS);
}

/* KEY's file set aside by a delete: 0 none; 1 it was, and is final now
 * (look again); -1 it is in its grace. */
static int aside_settle_key(struct fs_store *st, const char *key)
{
	uint64_t now = loop_clock_ms();
	struct fs_aside **pp, *a = NULL;
	int pending = 0;

	pthread_mutex_lock(&st->mu);
	for (pp = &st->asides; *pp; pp = &(*pp)->next)
		if (strcmp((*pp)->key, key) == 0) {
			if ((*pp)->at_ms + FS_ASIDE_GRACE_MS > now) {
				pending = -1;
				break;
			}
			a = *pp;
			*pp = a->next;
			if (st->asides_tail == &a->next)
				st->asides_tail = pp;
			st->nasides--;
			break;
		}
	pthread_mutex_unlock(&st->mu);
	if (a) {
		aside_finish(st, a);
		return 1;
	}
	return pending;
}

/* A delete interrupted (killed) between setting the file aside and
 * unlinking it leaves it hidden under a temporary name: when the delete is
 * retried, unlink what was set aside if it is still the tagged version. */
static void drop_aside(int dirfd, const char *name, const char *tag)
{
	size_t n = strlen(name);
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (d == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		struct obj_info info;
		struct stat sb;

		if (de->d_name[0] != '.' || strncmp(de->d_name + 1, name, n) != 0 ||
		    strncmp(de->d_name + 1 + n, FS_TMP_TAG, strlen(FS_TMP_TAG)) != 0 ||
		    strlen(de->d_name + 1 + n + strlen(FS_TMP_TAG)) != 8)
			continue;
		if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode))
			continue;
		info_from_stat(&info, &sb);
		if (strcmp(info.tag, tag) == 0)
			(void)unlinkat(dirfd, de->d_name, 0);
	}
	closedir(d);
}

/* Set the file aside under a temporary name, compare it with the tag, and
 * only then unlink it.  From the rename on, a writer opening the key makes
 * a new file, which nothing here touches; a file written before the rename
 * shows another tag and is put back (unless a newer one took the name). */
static bool do_del_if(struct store_req *r)
{
	struct fs_store *st = r->st;
	char dir[KEY_MAX + 1], aside[NAME_MAX + 1];
	const char *name;
	struct obj_info now;
	struct stat sb;
	int dirfd = fs_open_parent(st, r->key, false, &r->err), rc = -1, held;

	asides_settle(st, false);
	if (dirfd < 0)
		return r->err.code == ERR_NOTFOUND;
	split_key(r->key, dir, sizeof(dir), &name);
	if (strlen(name) + sizeof(FS_TMP_TAG) + 8 > NAME_MAX) {
		close(dirfd);
		return err_set(&r->err, ERR_INVALID,
			       "\"%s\": file name too long to set it aside before deleting",
			       r->key);
	}
	if (r->cancelled) {
		close(dirfd);
		return err_set(&r->err, ERR_TRANSIENT, "cancelled");
	}
	for (int i = 0; i < 100 && rc < 0; i++) {
		tmp_name(aside, sizeof(aside), name, i);
		rc = renameat2(dirfd, name, dirfd, aside, RENAME_NOREPLACE);
		if (rc < 0 && errno == EINVAL) /* a file system without NOREPLACE */
			rc = renameat(dirfd, name, dirfd, aside);
		if (rc < 0 && errno != EEXIST)
			break;
	}
	if (rc < 0) {
		int saved = errno;

		if (saved == ENOENT)
			drop_aside(dirfd, name, r->token);
		close(dirfd);
		if (saved == ENOENT)
			return true; /* gone already */
		return err_sys(&r->err, saved, "cannot set \"%s\" aside to delete it under %s",
			       r->key, st->base.cfg->root);
	}
	held = openat(dirfd, aside, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (held >= 0 && fstat(held, &sb) == 0 && S_ISREG(sb.st_mode)) {
		info_from_stat(&now, &sb);
		if (strcmp(now.tag, r->token) == 0) {
			/* Unlinked, and held for a grace (aside_add()).  No
			 * directory fsync: a move's source copy that a crash
			 * brings back is an extra file (imgsyncctl verify lists
			 * it), never a lost image, and a flush per image would
			 * bound a move by the disk's flush rate. */
			if (!aside_add(st, r->key, dirfd, aside, held, now.tag))
				(void)unlinkat(dirfd, aside, 0);
			close(dirfd);
			prune_dirs(st, dir);
			return true;
		}
	}
	if (held >= 0)
		close(held);
	rc = renameat2(dirfd, aside, dirfd, name, RENAME_NOREPLACE);
	if (rc < 0 && errno == EINVAL)
		rc = renameat(dirfd, aside, dirfd, name);
	if (rc < 0) /* a newer file has the name: the one set aside is older */
		(void)unlinkat(dirfd, aside, 0);
	close(dirfd);
	return err_set(&r->err, ERR_INTEGRITY,
		       "\"%s\" changed since it was copied (written again?); not deleted", r->key);
}

/* Remove directories a delete left empty, up to the root. */
static void prune_dirs(struct fs_store *st, char *dir)
{
	const char *name;

	/* Off by default: an application that made a directory and is about
	 * to create its file there would fail if it vanished in between. */
	if (!st->base.cfg->prune_empty_dirs)
		return;

	while (strcmp(dir, ".") != 0) {
		char *slash = strrchr(dir, '/');
		int parent;

		if (slash) {
			*slash = '\0';
			parent = fs_open(st, dir, O_DIRECTORY | O_RDONLY, 0);
			name = slash + 1;
		} else {
			parent = fcntl(st->rootfd, F_DUPFD_CLOEXEC, 0);
			name = dir;
		}
		if (parent < 0)
			break;
		if (unlinkat(parent, name, AT_REMOVEDIR) < 0) {
			close(parent);
			break;
		}
		close(parent);
		if (!slash)
			break;
	}
}

/* --- listing --- */

struct lent {
	char *name;
	bool dir;
	uint64_t size;
};

static int lent_cmp(const void *a, const void *b)
{
	const struct lent *x = a, *y = b;
	const unsigned char *p = (const unsigned char *)x->name,
			    *q = (const unsigned char *)y->name;

	/* Compare as the keys they lead to: a directory "d" as "d/". */
	for (;; p++, q++) {
		int c = *p ? *p : (x->dir ? '/' : 0), d = *q ? *q : (y->dir ? '/' : 0);

		if (c != d || c == 0 || c == '/')
			return c != d ? c - d : (*p ? 1 : 0) - (*q ? 1 : 0);
	}
}

static bool list_add(struct store_req *r, const char *key, uint64_t size)
{
	struct store_list *l = &r->list;

	if (l->n % 64 == 0) {
		struct store_list_entry *v = realloc(l->v, (l->n + 64) * sizeof(*v));

		if (v == NULL)
			return err_set(&r->err, ERR_NOMEM, "out of memory listing");
		l->v = v;
	}
	l->v[l->n].key = strdup(key);
	if (l->v[l->n].key == NULL)
		return err_set(&r->err, ERR_NOMEM, "out of memory listing");
	l->v[l->n++].size = size;
	return true;
}

static bool is_tmp_name(const char *name)
{
	return name[0] == '.' && strstr(name, FS_TMP_TAG) != NULL;
}

/* Whether a directory entry, as path "a/b" (file) or "a/b/" (directory),
 * can be or hold a key of this page: under the prefix and after the token. */
static bool list_wanted(const char *path, size_t len, bool dir, const char *prefix,
			const char *token)
{
	size_t plen = strlen(prefix);

	if (strncmp(path, prefix, len < plen ? len : plen) != 0)
		return false;
	if (!dir && len < plen)
		return false;
	if (token == NULL)
		return true;
	/* a directory may hold keys after the token unless all of it sorts
	 * before: its path is then smaller than the token's first len bytes */
	return dir ? strncmp(path, token, len) >= 0 : strcmp(path, token) > 0;
}

/* Walk dirfd (holding keys that start with path) in key order. */
static bool list_dir(struct store_req *r, int dirfd, struct buf *path, bool *full)
{
	const char *prefix = r->key, *token = r->token;
	struct lent *ents = NULL;
	size_t n = 0, cap = 0, base = path->len;
	struct dirent *de;
	bool ok = true;
	DIR *d;
	/* A fresh open file description: a dup would share (and move) the
	 * directory offset of dirfd. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return err_sys(&r->err, errno, "cannot list \"%s\" under %s", buf_str(path),
			       r->st->base.cfg->root);
	}
	while ((de = readdir(d)) != NULL) {
		struct stat sb;
		bool dir;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    is_tmp_name(de->d_name))
			continue;
		/* The type from the directory entry where the file system gives
		 * it; symlinks and specials are not objects. */
		if (de->d_type == DT_DIR || de->d_type == DT_REG)
			dir = de->d_type == DT_DIR;
		else if (de->d_type != DT_UNKNOWN)
			continue;
		else if (fstatat(dirfd, de->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
			 !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)))
			continue;
		else
			dir = S_ISDIR(sb.st_mode);
		/* Filter by name before anything costs a system call. */
		path->len = base;
		buf_puts(path, de->d_name);
		if (dir)
			buf_putc(path, '/');
		if (!buf_ok(path, &r->err)) {
			ok = false;
			goto out;
		}
		if (!list_wanted(buf_str(path), path->len, dir, prefix, token))
			continue;
		if (n == cap) {
			struct lent *v;

			cap = cap ? 2 * cap : 64;
			v = realloc(ents, cap * sizeof(*v));
			if (v == NULL) {
				ok = err_set(&r->err, ERR_NOMEM, "out of memory listing");
				goto out;
			}
			ents = v;
		}
		ents[n].name = strdup(de->d_name);
		if (ents[n].name == NULL) {
			ok = err_set(&r->err, ERR_NOMEM, "out of memory listing");
			goto out;
		}
		ents[n].dir = dir;
		ents[n].size = 0;
		n++;
	}
	if (n > 1) /* ents is NULL in an empty directory */
		qsort(ents, n, sizeof(*ents), lent_cmp);
	for (size_t i = 0; i < n && ok && !*full; i++) {
		path->len = base;
		buf_puts(path, ents[i].name);
		if (ents[i].dir)
			buf_putc(path, '/');
		if (!buf_ok(path, &r->err)) {
			ok = false;
			break;
		}
		if (ents[i].dir) {
			int sub = openat(dirfd, ents[i].name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub < 0)
				continue; /* vanished, or replaced by a symlink */
			ok = list_dir(r, sub, path, full);
			close(sub);
		} else if (path->len >= strlen(prefix)) {
			struct stat sb;

			if (fstatat(dirfd, ents[i].name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(sb.st_mode))
				continue; /* vanished meanwhile */
			ok = list_add(r, buf_str(path), (uint64_t)sb.st_size);
			if (r->list.n == FS_LIST_PAGE)
				*full = true;
		}
	}
out:
	path->len = base;
	if (path->p)
		path->p[base] = '\0';
	for (size_t i = 0; i < n; i++)
		free(ents[i].name);
	free(ents);
	closedir(d);
	return ok;
}

static bool do_list(struct store_req *r)
{
	struct buf path = BUF_INIT;
	bool full = false, ok;
	int fd = fcntl(r->st->rootfd, F_DUPFD_CLOEXEC, 0);

	if (fd < 0)
		return err_sys(&r->err, errno, "dup");
	ok = list_dir(r, fd, &path, &full);
	close(fd);
	buf_free(&path);
	if (ok && full && r->list.n) {
		r->list.next = strdup(r->list.v[r->list.n - 1].key);
		if (r->list.next == NULL)
			ok = err_set(&r->err, ERR_NOMEM, "out of memory listing");
	}
	if (!ok)
		store_list_free(&r->list);
	return ok;
}

static void req_work(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)job;
	struct fs_store *st = r->st;

	if (r->cancelled)
		r->ok = err_set(&r->err, ERR_TRANSIENT, "cancelled");
	else
		switch (r->op) {
		case FS_PUT:
			if (do_put(r)) {
				workq_keep(); /* the group job finishes it */
				goto out;
			}
			break;
		case FS_GET:
			r->ok = do_get(r);
			break;
		case FS_OPEN:
			r->ok = do_open(r);
			break;
		case FS_STAT:
			r->ok = do_stat(r);
			break;
		case FS_DEL:
			r->ok = do_del(r);
			break;
		case FS_DEL_IF:
			r->ok = do_del_if(r);
			break;
		case FS_LIST:
			r->ok = do_list(r);
			break;
		}
out:
	pthread_mutex_lock(&st->mu);
	if (--st->pending == 0)
		pthread_cond_broadcast(&st->idle);
	pthread_mutex_unlock(&st->mu);
}

/* On the loop: a put waits for its group's syncfs only (stage()).  Touches
 * nothing of the store, which may be closed by now, as req_done(). */
static void park_done(struct workq_job *job)
{
	struct store_req *r =
	    (struct store_req *)((char *)job - offsetof(struct store_req, park_job));

	if (!r->cancelled)
		r->parked(r->arg);
}

/* On the loop: hand the results over, unless cancelled.  Touches nothing
 * of the store, which may be closed by now. */
static void req_done(struct workq_job *job)
{
	struct store_req *r = (struct store_req *)job;

	if (!r->cancelled) {
		if (r->ok && r->info_out)
			*r->info_out = r->info;
		if (r->ok && r->fd_out) {
			*r->fd_out = r->opened;
			r->opened = -1;
		}
		if (r->ok && r->list_out) {
			*r->list_out = r->list;
			memset(&r->list, 0, sizeof(r->list));
		}
		r->done(r->arg, r->ok ? NULL : &r->err);
	}
	store_list_free(&r->list);
	if (r->fd >= 0)
		close(r->fd);
	if (r->opened >= 0)
		close(r->opened);
	free(r->key);
	free(r->token);
	free(r);
}

static bool req_start(struct fs_store *st, enum fs_op op, const char *key, int fd,
		      store_done_fn done, void *arg, struct store_req **out, struct err *e,
		      struct store_req **rp)
{
	struct store_req *r;

	if (op != FS_LIST && !fs_check_key(key, e)) {
		err_prefix(e, "store \"%s\": ", st->base.cfg->name);
		return false;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL || (r->key = strdup(key)) == NULL) {
		free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	r->fd = -1;
	r->opened = -1;
	r->wdir = r->wfd = -1;
	if (fd >= 0 && (r->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
		free(r->key);
		free(r);
		return err_sys(e, errno, "dup");
	}
	r->job.work = req_work;
	r->job.done = req_done;
	r->st = st;
	r->op = op;
	r->done = done;
	r->arg = arg;
	*out = r;
	*rp = r;
	return true;
}

static void req_submit(struct fs_store *st, struct store_req *r)
{
	pthread_mutex_lock(&st->mu);
	st->pending++;
	pthread_mutex_unlock(&st->mu);
	workq_submit(st->base.env.wq, &r->job);
}

static bool put_start(struct store *s, const char *key, int fd, uint64_t size, bool adopt,
		      const struct obj_info *known, struct obj_info *out, store_done_fn done,
		      void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_PUT, key, fd, done, arg, req, e, &r))
		return false;
	r->size = size;
	r->adopt = adopt;
	r->parked = st->base.env.parked;
	r->park_job.done = park_done;
	r->if_absent = known && known->if_absent;
	if (known)
		memcpy(r->if_tag, known->if_tag, sizeof(r->if_tag));
	r->if_tag[sizeof(r->if_tag) - 1] = '\0';
	r->info_out = out;
	req_submit(st, r);
	return true;
}

static bool fs_put(struct store *s, const char *key, int fd, uint64_t size,
		   const struct obj_info *known, struct obj_info *out, store_done_fn done,
		   void *arg, struct store_req **req, struct err *e)
{
	return put_start(s, key, fd, size, false, known, out, done, arg, req, e);
}

/* An unnamed file in the root, 0644 like a put's own (the umask applies):
 * unreachable by any name until adopt() links it. */
static int fs_spool(struct store *s)
{
	struct fs_store *st = (struct fs_store *)s;

	if (!st->tmpfile || st->no_spool)
		return -1;
	return openat(st->rootfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0644);
}

static bool fs_adopt(struct store *s, const char *key, int fd, uint64_t size,
		     const struct obj_info *known, struct obj_info *out, store_done_fn done,
		     void *arg, struct store_req **req, struct err *e)
{
	return put_start(s, key, fd, size, true, known, out, done, arg, req, e);
}

static bool fs_get(struct store *s, const char *key, int fd, unsigned flags, struct obj_info *out,
		   store_done_fn done, void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	(void)flags; /* a copy of a local file is no bottleneck to overlap */
	if (!req_start(st, FS_GET, key, fd, done, arg, req, e, &r))
		return false;
	r->info_out = out;
	req_submit(st, r);
	return true;
}

static bool fs_stat(struct store *s, const char *key, struct obj_info *out, store_done_fn done,
		    void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_STAT, key, -1, done, arg, req, e, &r))
		return false;
	r->info_out = out;
	req_submit(st, r);
	return true;
}

static bool fs_del(struct store *s, const char *key, store_done_fn done, void *arg,
		   struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_DEL, key, -1, done, arg, req, e, &r))
		return false;
	req_submit(st, r);
	return true;
}

static void open_cached_done(void *arg)
{
	req_done(arg);
}

/*
 * An open whose path the kernel can resolve from its caches alone
 * (openat2's RESOLVE_CACHED fails with EAGAIN rather than read a
 * directory from the disk) is done on the loop, and its answer delivered
 * on the next turn: a migration opens thousands of sources a second, most
 * of them in directories just listed or written, and a trip through the
 * pool costs two thread wake-ups each.  Anything else, failures included,
 * goes to the pool, which opens it again and says what went wrong.
 */
static bool open_cached(struct fs_store *st, struct store_req *r)
{
	struct stat sb;
	struct err e = {0};
	int fd;

	if (st->no_openat2 || st->no_cached)
		return false;
	fd = open_regular(st, r->key, O_RDONLY, RESOLVE_CACHED, &sb);
	if (fd < 0) {
		if (fd == -1 && errno == EINVAL) /* a kernel before 5.12 */
			st->no_cached = true;
		return false;
	}
	if (!loop_defer(st->base.env.loop, open_cached_done, r, &e)) {
		close(fd);
		return false;
	}
	info_from_stat(&r->info, &sb);
	r->opened = fd;
	r->ok = true;
	return true;
}

static bool fs_open_fd(struct store *s, const char *key, int *fd, struct obj_info *out,
		       store_done_fn done, void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_OPEN, key, -1, done, arg, req, e, &r))
		return false;
	r->info_out = out;
	r->fd_out = fd;
	if (!open_cached(st, r))
		req_submit(st, r);
	return true;
}

static bool fs_del_if(struct store *s, const char *key, const char *tag, store_done_fn done,
		      void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_DEL_IF, key, -1, done, arg, req, e, &r))
		return false;
	if ((r->token = strdup(tag)) == NULL) {
		free(r->key);
		free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	req_submit(st, r);
	if (st->base.env.loop && !loop_timer_armed(&st->aside_timer))
		loop_timer_set(st->base.env.loop, &st->aside_timer, FS_ASIDE_GRACE_MS + 100);
	return true;
}

static bool fs_list(struct store *s, const char *prefix, const char *token, struct store_list *out,
		    store_done_fn done, void *arg, struct store_req **req, struct err *e)
{
	struct fs_store *st = (struct fs_store *)s;
	struct store_req *r;

	if (!req_start(st, FS_LIST, prefix ? prefix : "", -1, done, arg, req, e, &r))
		return false;
	if (token && (r->token = strdup(token)) == NULL) {
		free(r->key);
		free(r);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	memset(out, 0, sizeof(*out));
	r->list_out = out;
	req_submit(st, r);
	return true;
}

static void fs_cancel(struct store *s, struct store_req *r)
{
	(void)s;
	/* The work may still run, on its own copies; nobody is told. */
	r->cancelled = true;
}

static bool fs_url(struct store *s, const char *key, struct buf *out, struct err *e)
{
	const struct store_cfg *c = s->cfg;

	if (c->public_url && c->public_url[0])
		buf_puts(out, c->public_url);
	else {
		buf_puts(out, "file://");
		buf_puts(out, c->root);
	}
	store_url_append_key(out, key);
	return buf_ok(out, e);
}

/* Before Linux 5.8 syncfs(2) returned 0 when writing back failed, where an
 * fsync says EIO: no group sync there.  (The ext4 driver's syncfs flushes
 * the disk's cache, as its fsync does; it also serves ext2 and ext3.) */
static bool syncfs_reports_errors(void)
{
	struct utsname u;
	int major = 0, minor = 0;

	if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &major, &minor) != 2)
		return false;
	return major > 5 || (major == 5 && minor >= 8);
}

/* A number of milliseconds from the environment (tests), at most MAX;
 * DFLT where NAME is unset or not a number. */
static uint64_t env_ms(const char *name, uint64_t dflt, uint64_t max)
{
	const char *v = getenv(name);
	unsigned long long n;

	if (v == NULL || v[0] < '0' || v[0] > '9')
		return dflt;
	n = strtoull(v, NULL, 10);
	return n > max ? max : n;
}

static bool fs_open_store(const struct store_cfg *cfg, const struct store_env *env,
			  struct store **out, struct err *e)
{
	struct fs_store *st;
	const char *no = getenv("IMGSYNC_FS_NO_OPENAT2");
	struct statfs sfs;
	struct stat rsb;
	struct rlimit rl;
	int fd;

	if (cfg->root == NULL || cfg->root[0] != '/')
		return err_set(e, ERR_CONFIG, "root must be an absolute directory");
	fd = open(cfg->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return err_set(e, ERR_NOTFOUND,
				       "root directory %s does not exist; create it (and check "
				       "that its file system is mounted)",
				       cfg->root);
		return err_sys(e, errno, "cannot open root directory %s", cfg->root);
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		close(fd);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	(void)env;
	st->rootfd = fd;
	st->fsync = cfg->fsync;
	st->no_openat2 = no && strcmp(no, "1") == 0;
	no = getenv("IMGSYNC_FS_NO_TMPFILE");
	st->tmpfile = !(no && strcmp(no, "1") == 0) && access("/proc/self/fd", X_OK) == 0;
	if (!st->no_openat2) {
		/* Kernels before 5.6 lack openat2; seccomp filters that predate it
		 * refuse it with EPERM: walk instead, decided once. */
		int probe = fs_openat2(fd, ".", O_PATH | O_DIRECTORY, 0, 0);

		if (probe >= 0)
			close(probe);
		else
			st->no_openat2 = true;
	}
	pthread_mutex_init(&st->mu, NULL);
	pthread_cond_init(&st->idle, NULL);
	st->asides_tail = &st->asides;
	st->aside_max = FS_ASIDE_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 8 < st->aside_max)
		st->aside_max = rl.rlim_cur / 8 > 16 ? (size_t)(rl.rlim_cur / 8) : 16;
	loop_timer_init(&st->aside_timer, on_aside_timer, st);
	st->staged_tail = &st->staged;
	st->group_job.work = group_work;
	st->slow_ms = env_ms("IMGSYNC_FS_GROUP_SLOW_MS", FS_GROUP_SLOW_MS, 3600000);
	st->delay_ms = (unsigned)env_ms("IMGSYNC_FS_GROUP_DELAY_MS", 0, 1000);
	no = getenv("IMGSYNC_FS_NO_GROUP_SYNC");
	if (cfg->fsync && !(no && strcmp(no, "1") == 0) && syncfs_reports_errors() &&
	    fstatfs(fd, &sfs) == 0 && fstat(fd, &rsb) == 0) {
		st->root_dev = rsb.st_dev;
		switch ((unsigned long)sfs.f_type) {
		case EXT4_SUPER_MAGIC: /* = ext2's and ext3's */
		case XFS_SUPER_MAGIC:
		case BTRFS_SUPER_MAGIC:
		case TMPFS_MAGIC:
			st->group = true;
			break;
		}
	}
	*out = &st->base;
	return true;
}

/* Waits for submitted work to leave the pool threads: none may use rootfd
 * (or its number, reused) after it is closed. */
static void fs_close(struct store *s)
{
	struct fs_store *st = (struct fs_store *)s;

	pthread_mutex_lock(&st->mu);
	while (st->pending > 0)
		pthread_cond_wait(&st->idle, &st->mu);
	pthread_mutex_unlock(&st->mu);
	if (st->base.env.loop)
		loop_timer_cancel(st->base.env.loop, &st->aside_timer);
	asides_settle(st, true);
	pthread_cond_destroy(&st->idle);
	pthread_mutex_destroy(&st->mu);
	close(st->rootfd);
	free(st);
}

const struct store_ops fs_store_ops = {
    .type = "fs",
    .shape = LAYOUT_SHAPE_FS,
    .open = fs_open_store,
    .close = fs_close,
    .put = fs_put,
    .spool = fs_spool,
    .adopt = fs_adopt,
    .get = fs_get,
    .open_fd = fs_open_fd,
    .stat = fs_stat,
    .del = fs_del,
    .del_if = fs_del_if,
    .list = fs_list,
    .cancel = fs_cancel,
    .url = fs_url,
};
