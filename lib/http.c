/*
 * http.c - curl multi on our epoll loop (socket and timer callbacks).
 *
 * curl tells us which sockets to watch (socket_cb) and when to call it back
 * (timer_cb); we tell curl what happened with curl_multi_socket_action and
 * then collect finished transfers.  Per-socket state is a loop_io that we
 * allocate and hang on the socket with curl_multi_assign.
 */
#include "http.h"

#include <stdlib.h>

#define HTTP_POOL_MAX 256

struct http_xfer {
	http_done_fn done;
	void *arg;
};

struct http {
	struct loop *loop;
	CURLM *multi;
	struct loop_timer timer;
	int running;
	CURL *pool[HTTP_POOL_MAX];
	int npool;
};

struct sock {
	struct loop_io io;
	struct http *h;
};

static void check_done(struct http *h)
{
	CURLMsg *m;
	int left;

	while ((m = curl_multi_info_read(h->multi, &left)) != NULL) {
		struct http_xfer *x = NULL;
		CURL *easy = m->easy_handle;
		CURLcode rc = m->data.result;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
		curl_multi_remove_handle(h->multi, easy);
		h->running--;
		if (x) {
			http_done_fn done = x->done;
			void *arg = x->arg;

			free(x);
			curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
			done(arg, rc);
		}
	}
}

static void on_socket_event(void *arg, int fd, uint32_t events)
{
	struct sock *s = arg;
	struct http *h = s->h;
	int flags = 0, still;

	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(h->multi, fd, flags, &still);
	check_done(h);
}

static void on_timer(void *arg)
{
	struct http *h = arg;
	int still;

	curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &still);
	check_done(h);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http *h = userp;
	struct sock *s = socketp;
	uint32_t ev = 0;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (s) {
			loop_io_del(h->loop, &s->io);
			curl_multi_assign(h->multi, fd, NULL);
			free(s);
		}
		return 0;
	}
	if (s == NULL) {
		s = calloc(1, sizeof(*s));
		if (s == NULL)
			return -1;
		s->h = h;
		loop_io_init(&s->io, fd, on_socket_event, s);
		curl_multi_assign(h->multi, fd, s);
	}
	if (what & CURL_POLL_IN)
		ev |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev |= EPOLLOUT;
	if (!loop_io_set(h->loop, &s->io, ev, NULL))
		return -1;
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct http *h = userp;

	(void)multi;
	if (timeout_ms < 0)
		loop_timer_cancel(h->loop, &h->timer);
	else
		loop_timer_set(h->loop, &h->timer, (uint64_t)timeout_ms);
	return 0;
}

bool http_new(struct loop *l, struct http **out, struct err *e)
{
	static bool global_done;
	struct http *h;

	if (!global_done) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return err_set(e, ERR_IO, "libcurl failed to initialise");
		global_done = true;
	}
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	h->loop = l;
	h->multi = curl_multi_init();
	if (h->multi == NULL) {
		free(h);
		return err_set(e, ERR_NOMEM, "curl_multi_init failed");
	}
	loop_timer_init(&h->timer, on_timer, h);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
	/* Cached connections: enough for every transfer in flight. */
	curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, 1024L);
	*out = h;
	return true;
}

void http_free(struct http *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < h->npool; i++)
		curl_easy_cleanup(h->pool[i]);
	curl_multi_cleanup(h->multi);
	loop_timer_cancel(h->loop, &h->timer);
	free(h);
}

CURL *http_easy_get(struct http *h)
{
	if (h->npool > 0)
		return h->pool[--h->npool];
	return curl_easy_init();
}

void http_easy_put(struct http *h, CURL *easy)
{
	if (easy == NULL)
		return;
	if (h->npool == HTTP_POOL_MAX) {
		curl_easy_cleanup(easy);
		return;
	}
	curl_easy_reset(easy);
	h->pool[h->npool++] = easy;
}

bool http_start(struct http *h, CURL *easy, http_done_fn done, void *arg, struct err *e)
{
	struct http_xfer *x = malloc(sizeof(*x));
	CURLMcode mc;

	if (x == NULL)
		return err_set(e, ERR_NOMEM, "out of memory");
	x->done = done;
	x->arg = arg;
	curl_easy_setopt(easy, CURLOPT_PRIVATE, x);
	mc = curl_multi_add_handle(h->multi, easy);
	if (mc != CURLM_OK) {
		free(x);
		curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
		return err_set(e, ERR_IO, "curl_multi_add_handle: %s", curl_multi_strerror(mc));
	}
	h->running++;
	return true;
}

void http_cancel(struct http *h, CURL *easy)
{
	struct http_xfer *x = NULL;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
	if (x == NULL)
		return;
	curl_multi_remove_handle(h->multi, easy);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, NULL);
	h->running--;
	free(x);
}

int http_running(const struct http *h)
{
	return h->running;
}
