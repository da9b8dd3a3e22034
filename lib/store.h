/*
 * store.h - the store interface: a const table of operations per backend,
 * looked up by the config's `type`.  The core never asks "is this S3?".
 *
 * Keys given to stores are physical keys (layout_key() made them).
 *
 * Operations are asynchronous.  A start function returns false with *e set
 * if the operation could not start (then done() is never called); otherwise
 * done() is called exactly once, from the loop, never from inside the start
 * call.  The error passed to done() is NULL on success and valid only during
 * the call.  Output structs (info, list) belong to the caller and must stay
 * valid until done(); strings inside a struct store_list belong to it until
 * store_list_free().
 *
 * Data never passes through memory whole: put reads the source with pread
 * from a file descriptor (a local file, or a spool file another store's
 * get filled; where the target offers spool(), a file on its own disk that
 * adopt() links into place); get writes the object with pwrite into a file
 * descriptor.
 *
 * Every backend passes the conformance suite in tests/tools/store_conformance.c.
 */
#ifndef IMGSYNC_STORE_H
#define IMGSYNC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "conf.h"
#include "err.h"
#include "http.h"
#include "layout.h"
#include "loop.h"
#include "workq.h"

/* Shared machinery stores run on; owned by the caller, outlives stores. */
struct store_env {
	struct loop *loop;
	struct http *http;
	struct workq *wq;
	/* Optional: called on the loop, with the done arg of a put() or
	 * adopt(), when what is left of it is a wait it shares with other
	 * puts (fs: its group's syncfs, which more puts joining does not
	 * slow): its owner may start other work meanwhile.  done() still
	 * follows, as always; parked is not called after done() or a
	 * cancel(), nor at all for most puts.  Every put the stores of such
	 * an env get must pass a done arg PARKED understands. */
	void (*parked)(void *arg);
};

/* room for obj_info's tag and if_tag, their NUL included */
#define STORE_TAG_MAX 80

struct obj_info {
	uint64_t size;
	bool has_md5; /* md5 is the MD5 of the whole content */
	unsigned char md5[16];
	/* crc32c is the CRC-32C of the whole content (crc32c.h): S3 objects
	 * imgsync uploaded in parts (x-amz-meta-imgsync-crc32c) */
	bool has_crc32c;
	uint32_t crc32c;
	char etag[72];		/* as the store reports it, without quotes; "" if none */
	int64_t mtime;		/* seconds since the epoch, 0 if unknown */
	uint32_t mtime_ns;	/* and nanoseconds, if mtime_fine */
	bool mtime_fine;	/* else mtime is a whole second (S3's Last-Modified) */
	char content_type[128]; /* "" if unknown; put sends it as Content-Type */
	/* Changes whenever the object is written again (fs: inode, modification
	 * time, size; S3: the ETag and size); "" if the store cannot say.
	 * A move deletes a source copy only while it still has the tag it had
	 * when it was copied. */
	char tag[STORE_TAG_MAX];
	/* put, adopt and copy, in known/src_info: create the object only where
	 * the key holds none, or fail with ERR_EXISTS and leave what is there
	 * (a copy in flight must not replace what the application wrote
	 * meanwhile).  fs: the file is linked in place, never renamed over;
	 * S3: If-None-Match: * (a multipart upload or a server-side copy, which
	 * not every server checks, looks first as well). */
	bool if_absent;
	/* put, adopt and copy, in known/src_info: replace only the object
	 * stat() reported with this tag, or fail with ERR_EXISTS (also where
	 * the key holds nothing now) and leave what is there: a copy that
	 * replaces an earlier version must not land over a newer one written
	 * since it looked.  fs: looked at again just before the rename;
	 * S3: If-Match on a PUT and on CompleteMultipartUpload (a multipart
	 * upload or a server-side copy looks first as well).  "" for none. */
	char if_tag[STORE_TAG_MAX];
};

/* get(): the caller will fsync fd (it becomes an object of a filesystem
 * store, adopt()): the store may start writing back what is in already,
 * so that the fsync at the end has little left to wait for. */
#define STORE_GET_DURABLE 1u

struct store_list_entry {
	char *key;
	uint64_t size;
};

struct store_list {
	struct store_list_entry *v;
	size_t n;
	char *next; /* token for the next page; NULL on the last page */
};

struct store;
struct store_req; /* an operation in flight, for store_cancel() */

typedef void (*store_done_fn)(void *arg, const struct err *e);

struct store_ops {
	const char *type;
	enum layout_shape shape; /* which ImageAttach store this resembles */

	bool (*open)(const struct store_cfg *cfg, const struct store_env *env, struct store **out,
		     struct err *e);
	void (*close)(struct store *s);
	/* Optional: whether requests of the store's own still run (an abort
	 * it sends in the background after a cancel), which close() would
	 * pull their memory and configuration from under.  The owner waits
	 * until it says false before it closes the store. */
	bool (*busy)(const struct store *s);

	/* Write [0, size) of fd as key.  known->md5, when has_md5, may save a
	 * hashing pass.  out receives what the store recorded. */
	bool (*put)(struct store *s, const char *key, int fd, uint64_t size,
		    const struct obj_info *known, struct obj_info *out, store_done_fn done,
		    void *arg, struct store_req **req, struct err *e);
	/* Optional: a new unnamed file (O_RDWR) on this store's own disk, or
	 * -1 (use another).  A caller that fills it from another store's get
	 * and passes it to adopt() has the object written once: no copy. */
	int (*spool)(struct store *s);
	/* Optional, with spool(): put() of a file spool() made, which the
	 * caller will not write again; the store may take the file itself
	 * (it then becomes the object) instead of copying it.  The caller
	 * still closes fd. */
	bool (*adopt)(struct store *s, const char *key, int fd, uint64_t size,
		      const struct obj_info *known, struct obj_info *out, store_done_fn done,
		      void *arg, struct store_req **req, struct err *e);
	/* Write the object into fd from offset 0 (fd is a regular file).
	 * FLAGS: STORE_GET_DURABLE, or 0. */
	bool (*get)(struct store *s, const char *key, int fd, unsigned flags, struct obj_info *out,
		    store_done_fn done, void *arg, struct store_req **req, struct err *e);
	/* Optional, for stores of local files: the object itself, opened
	 * read-only, in *fd (the caller closes it once done() succeeded), so
	 * that a copy reads its bytes once, with no spool file in between.
	 * out->tag lets the caller tell whether it was written while read. */
	bool (*open_fd)(struct store *s, const char *key, int *fd, struct obj_info *out,
			store_done_fn done, void *arg, struct store_req **req, struct err *e);
	bool (*stat)(struct store *s, const char *key, struct obj_info *out, store_done_fn done,
		     void *arg, struct store_req **req, struct err *e);
	/* Deleting a missing object succeeds. */
	bool (*del)(struct store *s, const char *key, store_done_fn done, void *arg,
		    struct store_req **req, struct err *e);
	/* Optional: delete the object only if its tag (struct obj_info) is
	 * still tag, as one step that no writer can slip into: ERR_INTEGRITY
	 * and nothing deleted when it differs; success when it is missing.
	 * Without it a caller stats, compares and deletes, which leaves a short
	 * window. */
	bool (*del_if)(struct store *s, const char *key, const char *tag, store_done_fn done,
		       void *arg, struct store_req **req, struct err *e);
	/* One page of keys starting with prefix, in byte order, after token. */
	bool (*list)(struct store *s, const char *prefix, const char *token, struct store_list *out,
		     store_done_fn done, void *arg, struct store_req **req, struct err *e);
	/* Abandon an operation: done() will not be called. */
	void (*cancel)(struct store *s, struct store_req *req);
	/* Where the object can be fetched (public_url when configured). */
	bool (*url)(struct store *s, const char *key, struct buf *out, struct err *e);

	/* Optional (NULL where the backend has no such thing): whether copy()
	 * can make dst objects from src objects without the bytes passing
	 * through this host.  src has the same ops as dst (store_can_copy
	 * checks that first). */
	bool (*can_copy)(struct store *dst, struct store *src);
	/* Optional: copy src_key of src to dst_key of dst on the server, where
	 * can_copy(dst, src).  src_info, when given, is what a stat of the
	 * source returned: its size decides how the copy is made; its etag,
	 * when not "", must still be the source's, or the copy fails with
	 * ERR_INTEGRITY (the source changed: stat it again and retry); its
	 * content_type, when not "", is the copy's Content-Type, otherwise the
	 * source's is kept.  Without src_info the backend asks for it first.
	 * A missing source fails with ERR_NOTFOUND.  out receives what the
	 * store recorded (size, etag, md5 where known).  The request belongs to
	 * dst: cancel it with dst's cancel (an unfinished multipart copy is
	 * aborted; a single copy already sent may still complete on the
	 * server).  src must outlive the request. */
	bool (*copy)(struct store *dst, struct store *src, const char *src_key, const char *dst_key,
		     const struct obj_info *src_info, struct obj_info *out, store_done_fn done,
		     void *arg, struct store_req **req, struct err *e);
};

struct store {
	const struct store_ops *ops;
	const struct store_cfg *cfg; /* borrowed; outlives the store */
	struct store_env env;
};

const struct store_ops *store_ops_find(const char *type);

bool store_open(const struct store_cfg *cfg, const struct store_env *env, struct store **out,
		struct err *e) WUR;
void store_close(struct store *s);

/* Physical key of an image in this store (its layout and prefix). */
bool store_key(struct store *s, const char *logical_key, const struct image_attrs *attrs,
	       struct buf *out, struct err *e) WUR;

void store_list_free(struct store_list *l);

/* The tag of a local file (stores of files, open_fd): inode, modification
 * time and size; not the change time, which setting a file aside to delete
 * it changes. */
struct stat;
void store_file_tag(const struct stat *sb, char *out, size_t size);

/* For backends' url(): append '/' unless out ends with one, then the key,
 * percent-encoded as URLs (and S3 signatures) want it, '/' kept. */
void store_url_append_key(struct buf *out, const char *key);

/* Whether dst can copy objects of src on the server (same backend, same
 * server, credentials that can read src): then store_copy_sync and
 * dst->ops->copy may be used instead of a get from src and a put to dst. */
bool store_can_copy(struct store *dst, struct store *src);

/* Blocking forms for tools and tests: they turn the loop until done.  Not
 * for use from inside a loop callback. */
bool store_put_sync(struct store *s, const char *key, int fd, uint64_t size, struct obj_info *out,
		    struct err *e) WUR;
/* s->ops->adopt, blocking; ERR_INVALID where the store has none. */
bool store_adopt_sync(struct store *s, const char *key, int fd, uint64_t size, struct obj_info *out,
		      struct err *e) WUR;
bool store_get_sync(struct store *s, const char *key, int fd, struct obj_info *out,
		    struct err *e) WUR;
bool store_stat_sync(struct store *s, const char *key, struct obj_info *out, struct err *e) WUR;
bool store_del_sync(struct store *s, const char *key, struct err *e) WUR;
bool store_open_fd_sync(struct store *s, const char *key, int *fd, struct obj_info *out,
			struct err *e) WUR;
bool store_del_if_sync(struct store *s, const char *key, const char *tag, struct err *e) WUR;
bool store_list_sync(struct store *s, const char *prefix, const char *token, struct store_list *out,
		     struct err *e) WUR;
/* dst->ops->copy, blocking; ERR_INVALID when !store_can_copy(dst, src). */
bool store_copy_sync(struct store *dst, struct store *src, const char *src_key, const char *dst_key,
		     const struct obj_info *src_info, struct obj_info *out, struct err *e) WUR;

/* Backends. */
extern const struct store_ops fs_store_ops;
extern const struct store_ops s3_store_ops;

#endif
