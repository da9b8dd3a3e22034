/*
 * store.c - backend registry, layout dispatch and the blocking wrappers.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#include "sigv4.h"

static const struct store_ops *const backends[] = {&fs_store_ops, &s3_store_ops};

const struct store_ops *store_ops_find(const char *type)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strcmp(backends[i]->type, type) == 0)
			return backends[i];
	return NULL;
}

bool store_open(const struct store_cfg *cfg, const struct store_env *env, struct store **out,
		struct err *e)
{
	const struct store_ops *ops = store_ops_find(cfg->type);

	if (ops == NULL)
		return err_set(e, ERR_CONFIG, "store \"%s\": unknown type \"%s\"", cfg->name,
			       cfg->type);
	if (!ops->open(cfg, env, out, e)) {
		err_prefix(e, "store \"%s\": ", cfg->name);
		return false;
	}
	(*out)->ops = ops;
	(*out)->cfg = cfg;
	(*out)->env = *env;
	return true;
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

bool store_key(struct store *s, const char *logical_key, const struct image_attrs *attrs,
	       struct buf *out, struct err *e)
{
	return layout_key(s->cfg->layout, s->ops->shape, s->cfg->prefix, logical_key, attrs, out,
			  e);
}

void store_url_append_key(struct buf *out, const char *key)
{
	if (out->len == 0 || out->p[out->len - 1] != '/')
		buf_putc(out, '/');
	sigv4_uri_encode(out, key, strlen(key), true);
}

void store_file_tag(const struct stat *sb, char *out, size_t size)
{
	snprintf(out, size, "%llx:%lld.%09ld:%lld", (unsigned long long)sb->st_ino,
		 (long long)sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec, (long long)sb->st_size);
}

void store_list_free(struct store_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].key);
	free(l->v);
	free(l->next);
	memset(l, 0, sizeof(*l));
}

struct waiter {
	bool done;
	struct err err;
	bool failed;
};

static void wait_done(void *arg, const struct err *e)
{
	struct waiter *w = arg;

	w->done = true;
	if (e) {
		w->failed = true;
		w->err = *e;
	}
}

static bool wait_for(struct store *s, struct store_req *r, struct waiter *w, struct err *e)
{
	if (!loop_run_until(s->env.loop, &w->done, e)) {
		s->ops->cancel(s, r); /* w is on our stack: nobody may call it later */
		return false;
	}
	if (w->failed) {
		if (e)
			*e = w->err;
		return false;
	}
	return true;
}

bool store_put_sync(struct store *s, const char *key, int fd, uint64_t size, struct obj_info *out,
		    struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!s->ops->put(s, key, fd, size, NULL, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_adopt_sync(struct store *s, const char *key, int fd, uint64_t size, struct obj_info *out,
		      struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (s->ops->adopt == NULL)
		return err_set(e, ERR_INVALID, "store \"%s\" adopts no files", s->cfg->name);
	if (!s->ops->adopt(s, key, fd, size, NULL, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_get_sync(struct store *s, const char *key, int fd, struct obj_info *out, struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!s->ops->get(s, key, fd, 0, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_stat_sync(struct store *s, const char *key, struct obj_info *out, struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!s->ops->stat(s, key, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_del_sync(struct store *s, const char *key, struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!s->ops->del(s, key, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_open_fd_sync(struct store *s, const char *key, int *fd, struct obj_info *out,
			struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (s->ops->open_fd == NULL)
		return err_set(e, ERR_INVALID, "store \"%s\" has no local files", s->cfg->name);
	if (!s->ops->open_fd(s, key, fd, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_del_if_sync(struct store *s, const char *key, const char *tag, struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (s->ops->del_if == NULL)
		return err_set(e, ERR_INVALID, "store \"%s\" cannot delete conditionally",
			       s->cfg->name);
	if (!s->ops->del_if(s, key, tag, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_list_sync(struct store *s, const char *prefix, const char *token, struct store_list *out,
		     struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!s->ops->list(s, prefix, token, out, wait_done, &w, &r, e))
		return false;
	return wait_for(s, r, &w, e);
}

bool store_can_copy(struct store *dst, struct store *src)
{
	return dst && src && dst->ops == src->ops && dst->ops->copy && dst->ops->can_copy &&
	       dst->ops->can_copy(dst, src);
}

bool store_copy_sync(struct store *dst, struct store *src, const char *src_key, const char *dst_key,
		     const struct obj_info *src_info, struct obj_info *out, struct err *e)
{
	struct waiter w = {0};
	struct store_req *r;

	if (!store_can_copy(dst, src))
		return err_set(e, ERR_INVALID,
			       "store \"%s\" cannot copy objects of store \"%s\" on the server",
			       dst->cfg->name, src->cfg->name);
	if (!dst->ops->copy(dst, src, src_key, dst_key, src_info, out, wait_done, &w, &r, e))
		return false;
	return wait_for(dst, r, &w, e);
}
