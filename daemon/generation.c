/*
 * generation.c - configurations and their stores, built aside and freed
 * when no longer used (see generation.h).
 */
#include "generation.h"

#include <stdlib.h>
#include <string.h>

bool gen_open(struct conf *conf, const struct store_env *env, struct generation **out,
	      struct err *e)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (g == NULL ||
	    (g->stores = calloc(conf->nstores ? conf->nstores : 1, sizeof(*g->stores))) == NULL) {
		free(g);
		conf_free(conf);
		return err_set(e, ERR_NOMEM, "out of memory");
	}
	g->conf = conf;
	for (; g->opened < conf->nstores; g->opened++)
		if (!store_open(&conf->stores[g->opened], env, &g->stores[g->opened], e)) {
			err_prefix(e, "%s:%d: ", conf->path, conf->stores[g->opened].line);
			gen_free(g);
			return false;
		}
	*out = g;
	return true;
}

void gen_free(void *generation)
{
	struct generation *g = generation;

	if (g == NULL)
		return;
	for (size_t i = 0; i < g->opened; i++)
		store_close(g->stores[i]);
	free(g->stores);
	conf_free(g->conf);
	free(g);
}

static bool has_store(const struct conf *c, const char *name)
{
	return conf_store(c, name) != NULL;
}

static bool same_list(char **a, size_t na, char **b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return true;
}

static void list_stores(struct buf *b, const char *what, const struct conf *in,
			const struct conf *notin)
{
	bool first = true;

	for (size_t i = 0; i < in->nstores; i++) {
		if (has_store(notin, in->stores[i].name))
			continue;
		buf_printf(b, "%s%s%s", first ? (b->len ? "; " : "") : ", ", first ? what : "",
			   in->stores[i].name);
		first = false;
	}
}

void gen_compare(const struct conf *cur, const struct conf *next, struct buf *restart,
		 struct buf *changes)
{
	if (strcmp(cur->db_conninfo, next->db_conninfo) != 0)
		buf_puts(restart, "database.conninfo changed");
	if (strcmp(cur->db_channel, next->db_channel) != 0)
		buf_printf(restart, "%sdatabase.channel changed", restart->len ? ", " : "");
	list_stores(changes, "stores added: ", next, cur);
	list_stores(changes, "stores removed: ", cur, next);
	if (!same_list(cur->mirrors, cur->nmirrors, next->mirrors, next->nmirrors)) {
		buf_printf(changes, "%smirrors now:", changes->len ? "; " : "");
		for (size_t i = 0; i < next->nmirrors; i++)
			buf_printf(changes, " %s", next->mirrors[i]);
		if (next->nmirrors == 0)
			buf_puts(changes, " none");
	}
	if (cur->concurrency != next->concurrency)
		buf_printf(changes, "%sconcurrency %d", changes->len ? "; " : "",
			   next->concurrency);
	if (cur->max_attempts != next->max_attempts)
		buf_printf(changes, "%smax_attempts %d", changes->len ? "; " : "",
			   next->max_attempts);
	if (cur->stop_timeout != next->stop_timeout)
		buf_printf(changes, "%sstop_timeout %d s", changes->len ? "; " : "",
			   next->stop_timeout);
}
