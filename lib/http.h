/*
 * http.h - libcurl's multi interface driven by our loop.
 *
 * One multi handle per process holds the connection pool and DNS cache, so
 * keep-alive connections are shared by every transfer.  Easy handles come
 * from a free list (http_easy_get) and go back to it (http_easy_put): a
 * reset handle keeps no options, but the connections live in the multi
 * handle and survive.
 *
 * http_start() hands an easy handle to the multi; exactly one done() call
 * follows, from the loop, unless http_cancel() comes first.
 */
#ifndef IMGSYNC_HTTP_H
#define IMGSYNC_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>

#include "err.h"
#include "loop.h"

struct http;

typedef void (*http_done_fn)(void *arg, CURLcode rc);

bool http_new(struct loop *l, struct http **out, struct err *e) WUR;
void http_free(struct http *h);

CURL *http_easy_get(struct http *h);
void http_easy_put(struct http *h, CURL *easy);

bool http_start(struct http *h, CURL *easy, http_done_fn done, void *arg, struct err *e) WUR;
void http_cancel(struct http *h, CURL *easy);
/* Transfers in flight. */
int http_running(const struct http *h);

#endif
