/*
 * imgsyncd - keeps an application's images where they belong.
 *
 * main() only wires modules together: options, configuration, then the
 * service.  See imgsyncd(8) and SPEC.md.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "generation.h"
#include "host.h"
#include "key.h"
#include "log.h"
#include "pgconn.h"
#include "schema.h"
#include "sql.h"
#include "store.h"
#include "sync.h"

#define START_ATTEMPTS	   5	/* failed connections at start before exit 69 */
#define NOTIFY_PAYLOAD_MAX 4096 /* commands are small JSON documents */

/* Everything the service holds, built in order by service_run(). */
#define STATUS_INTERVAL_MS 2000

struct service {
	const char *path;	/* the configuration file, read again on SIGHUP */
	struct generation *gen; /* the configuration in use and its stores */
	struct store_env env;
	struct pgconn *pg;
	struct sync *sync;
	struct loop_io sigio;
	int sigfd;
	long long daemon;
	bool checked; /* schema version checked on this connection */
	bool ready;   /* READY=1 sent */
	bool done;    /* leave the loop */
	int exit_code;
	int terms;
	char host[256];
	/* the STATUS= line: the database's view, refreshed every few seconds */
	struct loop_timer status_timer;
	bool status_asked;
	char queue[96];		    /* "queue 12 pending, 2 dead" */
	char migration[160];	    /* "migration 3 local->cloud 1200/2000, 350/s, ETA 2 s" */
	char status[320];	    /* the last line sent */
	struct loop_timer watchdog; /* WATCHDOG=1 from the loop, when asked for */
	uint64_t watchdog_ms;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: imgsyncd [-v] [-c FILE] [--check-config]\n"
		"       imgsyncd --version | --help\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -n, --check-config  validate the configuration and exit (0 ok, 78 not)\n"
		"  -v, --verbose       log more detail (repeat for more)\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          print this help and exit\n",
		CONF_DEFAULT_PATH);
}

/* Open every store without touching the network: catches what the parser
 * cannot (an endpoint that is not a URL).  A missing fs root is a state of
 * the machine, not of the file: --check-config warns about it, the service
 * refuses to start on it. */
static bool check_stores(const struct conf *c, bool check_only, struct err *e)
{
	struct store_env env = {0};
	bool ok = true;

	if (!loop_new(&env.loop, e))
		return false;
	if (!http_new(env.loop, &env.http, e)) {
		loop_free(env.loop);
		return false;
	}
	for (size_t i = 0; i < c->nstores && ok; i++) {
		struct store *s;

		if (store_open(&c->stores[i], &env, &s, e)) {
			store_close(s);
			continue;
		}
		if (check_only && e->code == ERR_NOTFOUND) {
			fprintf(stderr,
				"%s:%d: warning: %s; imgsyncd will not start until it does\n",
				c->path, c->stores[i].line, e->msg);
			continue;
		}
		{
			char msg[sizeof(e->msg)];

			snprintf(msg, sizeof(msg), "%s", e->msg);
			err_set(e, ERR_CONFIG, "%s:%d: %s", c->path, c->stores[i].line, msg);
		}
		ok = false;
	}
	http_free(env.http);
	loop_free(env.loop);
	return ok;
}

static void service_exit(struct service *sv, int code)
{
	sv->exit_code = code;
	sv->done = true;
}

static void stopped(void *arg)
{
	struct service *sv = arg;

	log_info("stopped");
	service_exit(sv, sv->exit_code);
}

/* Short live counters for `systemctl status`, sent when they change. */
static void status_line(struct service *sv)
{
	struct sync_stats st;
	char line[sizeof(sv->status)];

	if (!sv->ready)
		return;
	sync_stats(sv->sync, &st);
	snprintf(line, sizeof(line), "%s%s%s; %d in flight, %llu done%s%s",
		 pg_ready(sv->pg) ? "connected" : "reconnecting to PostgreSQL",
		 sv->queue[0] ? "; " : "", sv->queue, st.in_flight,
		 (unsigned long long)st.objects_done, sv->migration[0] ? "; " : "", sv->migration);
	if (strcmp(line, sv->status) == 0)
		return;
	memcpy(sv->status, line, sizeof(line));
	sd_notifyf(0, "STATUS=%s", line);
}

static void status_answer(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;

	sv->status_asked = false;
	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		if (res)
			log_debug("reading the status counters failed: %s", error);
		return;
	}
	snprintf(sv->queue, sizeof(sv->queue), "queue %s pending%s%s%s", PQgetvalue(res, 0, 0),
		 atoll(PQgetvalue(res, 0, 1)) ? ", " : "",
		 atoll(PQgetvalue(res, 0, 1)) ? PQgetvalue(res, 0, 1) : "",
		 atoll(PQgetvalue(res, 0, 1)) ? " dead" : "");
	if (PQgetisnull(res, 0, 2))
		sv->migration[0] = '\0';
	else
		snprintf(sv->migration, sizeof(sv->migration), "migration %s",
			 PQgetvalue(res, 0, 2));
	status_line(sv);
}

static void on_status_timer(void *arg)
{
	struct service *sv = arg;

	loop_timer_set(sv->env.loop, &sv->status_timer, STATUS_INTERVAL_MS);
	if (sv->ready && pg_ready(sv->pg) && !sv->status_asked)
		sv->status_asked = pg_query(sv->pg, SQL_STATUS_SUMMARY, 0, NULL, status_answer, sv);
	status_line(sv);
}

static void reaped(void *arg, PGresult *res, const char *error)
{
	(void)arg;
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_warn("could not release a dead daemon's leases: %s; they expire on their own",
			 error);
	else if (res && PQntuples(res) == 1 && atoll(PQgetvalue(res, 0, 0)) > 0)
		log_info("released %s lease(s) of a daemon that ended without stopping",
			 PQgetvalue(res, 0, 0));
}

/* Daemons that ran on this host and did not stop: those certainly gone
 * (killed, crashed) have their leases released now, so a restart after a
 * crash takes their work over at once instead of after the lease time. */
static void peers_listed(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;
	char me[24];

	if (res == NULL)
		return;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_warn("could not list this host's other daemons: %s", error);
		return;
	}
	snprintf(me, sizeof(me), "%lld", sv->daemon);
	for (int i = 0; i < PQntuples(res); i++) {
		const char *p[2] = {PQgetvalue(res, i, 0), me};
		pid_t pid = (pid_t)atoi(PQgetvalue(res, i, 1));

		if (!host_process_gone(PQgetvalue(res, i, 2), pid))
			continue;
		log_notice("daemon %s (pid %d on this host) ended without stopping: releasing "
			   "its leases",
			   p[0], (int)pid);
		if (!pg_query(sv->pg, SQL_REAP_DAEMON, 2, p, reaped, sv))
			log_error("out of memory releasing a dead daemon's leases");
	}
}

static void reap_peers(struct service *sv)
{
	char me[24];
	const char *p[2] = {me, sv->host};

	snprintf(me, sizeof(me), "%lld", sv->daemon);
	if (!pg_query(sv->pg, SQL_HOST_DAEMONS, 2, p, peers_listed, sv))
		log_error("out of memory listing this host's daemons");
}

/* The configured stores' names as a PostgreSQL text[] literal, for
 * imgsync.start_migration() to refuse stores no daemon has. */
static void stores_literal(struct buf *b, const struct conf *c)
{
	buf_putc(b, '{');
	for (size_t i = 0; i < c->nstores; i++) {
		if (i)
			buf_putc(b, ',');
		pg_array_elem(b, c->stores[i].name);
	}
	buf_putc(b, '}');
}

static void stores_told(void *arg, PGresult *res, const char *error)
{
	(void)arg;
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_warn("cannot record this daemon's stores in imgsync.daemons: %s", error);
}

static void registered(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;

	if (res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res) {
			log_error("cannot register this daemon in imgsync.daemons: %s", error);
			service_exit(sv, EX_UNAVAILABLE);
		}
		return; /* connection lost: registering again on the next connect */
	}
	sv->daemon = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	sync_set_daemon(sv->sync, sv->daemon);
	log_info("imgsyncd %s running as daemon %lld on %s, %zu store%s, %zu mirror%s",
		 IMGSYNC_VERSION, sv->daemon, sv->host, sv->gen->conf->nstores,
		 sv->gen->conf->nstores == 1 ? "" : "s", sv->gen->conf->nmirrors,
		 sv->gen->conf->nmirrors == 1 ? "" : "s");
	sync_connected(sv->sync);
	sv->ready = true;
	sd_notify(0, "READY=1");
	status_line(sv);
	reap_peers(sv);
}

static void version_checked(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;
	int want = schema_steps[schema_nsteps - 1].version;
	const char *chan;
	char pid[16];
	char ident[HOST_IDENT_MAX];
	struct buf stores = BUF_INIT;
	const char *p[5] = {sv->host, pid, IMGSYNC_VERSION, ident, NULL};
	bool queued;

	if (res == NULL)
		return; /* lost: checked again on the next connect */
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_error("cannot read the imgsync schema version: %s", error);
		service_exit(sv, EX_UNAVAILABLE);
		return;
	}
	if (PQgetisnull(res, 0, 0)) {
		log_error("the database's imgsync schema lists no version: run \"imgsyncctl "
			  "init\"");
		service_exit(sv, EX_CONFIG);
		return;
	}
	if (atoi(PQgetvalue(res, 0, 0)) != want) {
		log_error("the database's imgsync schema is at version %s, this imgsyncd speaks "
			  "version %d: run \"imgsyncctl init\"%s",
			  PQgetvalue(res, 0, 0), want,
			  atoi(PQgetvalue(res, 0, 0)) > want ? " of a newer imgsync" : "");
		service_exit(sv, EX_CONFIG);
		return;
	}
	chan = PQgetisnull(res, 0, 1) ? "" : PQgetvalue(res, 0, 1);
	if (strcmp(chan, sv->gen->conf->db_channel) != 0) {
		log_error("the database notifies channel \"%s\" but the configuration listens on "
			  "\"%s\": run \"imgsyncctl init\" with this configuration",
			  chan, sv->gen->conf->db_channel);
		service_exit(sv, EX_CONFIG);
		return;
	}
	sv->checked = true;
	if (sv->daemon) {
		sync_connected(sv->sync);
		status_line(sv);
		return;
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	host_ident(ident, sizeof(ident));
	stores_literal(&stores, sv->gen->conf);
	p[4] = buf_str(&stores);
	queued = buf_ok(&stores, NULL) && pg_query(sv->pg, SQL_REGISTER, 5, p, registered, sv);
	buf_free(&stores);
	if (!queued)
		service_exit(sv, EX_SOFTWARE);
}

static void schema_exists(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;

	if (res == NULL)
		return; /* lost: checked again on the next connect */
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_error("cannot look for the imgsync schema: %s", error);
		service_exit(sv, EX_UNAVAILABLE);
		return;
	}
	if (PQgetvalue(res, 0, 0)[0] != 't') {
		log_error("the database has no imgsync schema: run \"imgsyncctl init\"");
		service_exit(sv, EX_CONFIG);
		return;
	}
	if (!pg_query(sv->pg, SQL_SCHEMA_VERSION, 0, NULL, version_checked, sv))
		service_exit(sv, EX_SOFTWARE);
}

static void on_pg_state(void *arg, bool up, const char *why)
{
	struct service *sv = arg;

	if (!up) {
		sv->checked = false;
		if (!sv->ready && pg_failures(sv->pg) >= START_ATTEMPTS) {
			log_error("cannot connect to PostgreSQL after %d attempts: %s",
				  START_ATTEMPTS, why);
			service_exit(sv, EX_UNAVAILABLE);
			return;
		}
		if (sv->ready)
			log_warn("lost the PostgreSQL connection: %s; reconnecting", why);
		else
			log_warn("cannot connect to PostgreSQL: %s; trying again", why);
		status_line(sv);
		return;
	}
	if (!pg_query(sv->pg, SQL_SCHEMA_EXISTS, 0, NULL, schema_exists, sv))
		service_exit(sv, EX_SOFTWARE);
}

/* Record, for admins, a command that was refused (its own transaction
 * rolled back with it). */
static void record_refusal(struct service *sv, const char *what)
{
	char id[24];
	const char *p[3] = {id, "warning", what};

	if (sv->daemon == 0)
		return;
	snprintf(id, sizeof(id), "%lld", sv->daemon);
	if (!pg_query(sv->pg, SQL_EVENT, 3, p, NULL, NULL))
		log_error("out of memory recording an event");
}

static void command_done(void *arg, PGresult *res, const char *error)
{
	struct service *sv = arg;
	char msg[600];

	if (res == NULL)
		return; /* connection lost: the sender sees no result in the status */
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_warn("refused a command: %s", error ? error : "unexpected answer");
		snprintf(msg, sizeof(msg), "refused command: %s", error ? error : "?");
		record_refusal(sv, msg);
		return;
	}
	log_notice("command: %s", PQgetvalue(res, 0, 0));
	sync_wake(sv->sync);
}

static void on_notify(void *arg, const char *channel, const char *payload)
{
	struct service *sv = arg;
	char shown[240], msg[400];
	const char *p[1] = {payload};
	size_t n = strlen(payload);

	if (n == 0) {
		if (sv->checked)
			sync_wake(sv->sync);
		return;
	}
	/* An admin command.  One too big to be one is refused here; the rest
	 * is parsed and checked in SQL (a bound parameter, never SQL text). */
	key_escape(payload, n, shown, sizeof(shown));
	if (n > NOTIFY_PAYLOAD_MAX || !sv->checked) {
		log_warn("refused a notification on channel \"%s\" (%zu bytes%s): \"%s\"", channel,
			 n, n > NOTIFY_PAYLOAD_MAX ? ", oversized" : ", not connected yet", shown);
		snprintf(msg, sizeof(msg), "refused command (%zu bytes%s): %s", n,
			 n > NOTIFY_PAYLOAD_MAX ? ", oversized" : "", shown);
		record_refusal(sv, msg);
		return;
	}
	log_info("command on channel \"%s\": \"%s\"", channel, shown);
	if (!pg_query(sv->pg, SQL_COMMAND, 1, p, command_done, sv))
		log_error("out of memory queueing a command");
}

/* Every item in flight holds a few descriptors (its source or spool file,
 * a connection, a file being written), and up to twice transfer.concurrency
 * items are in hand (sync_put_parked()): 1024 of them would not fit under
 * the soft limit of 1024 systemd and most shells start with.  The loop
 * uses epoll, never select(): raise the soft limit to the hard one, and
 * say so when even that is short (at start, and on a reload, which may
 * change the concurrency). */
static void raise_nofile(int concurrency)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	if (rl.rlim_cur < (rlim_t)concurrency * 8 + 64)
		log_warn("at most %llu open files (RLIMIT_NOFILE) for transfer.concurrency %d: "
			 "raise LimitNOFILE= in the unit, or lower transfer.concurrency",
			 (unsigned long long)rl.rlim_cur, concurrency);
}

/* SIGHUP: a new generation built aside and swapped in whole, or nothing. */
static void reload(struct service *sv)
{
	struct timespec ts;
	struct conf *next = NULL;
	struct generation *g = NULL;
	struct buf restart = BUF_INIT, changes = BUF_INIT;
	struct err e = {0};

	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)ts.tv_sec * 1000000 + (unsigned long long)ts.tv_nsec / 1000);
	log_notice("SIGHUP: reloading %s", sv->path);
	if (!conf_load(sv->path, &next, &e)) {
		log_error("reload refused, still running on the previous configuration: %s", e.msg);
		goto out;
	}
	gen_compare(sv->gen->conf, next, &restart, &changes);
	if (restart.len) {
		log_error("reload refused, still running on the previous configuration: %s: that "
			  "needs a restart (systemctl restart imgsyncd)",
			  buf_str(&restart));
		conf_free(next);
		goto out;
	}
	for (size_t i = 0; i < next->nwarnings; i++)
		log_warn("%s", next->warnings[i]);
	if (!gen_open(next, &sv->env, &g, &e)) {
		log_error("reload refused, still running on the previous configuration: %s", e.msg);
		goto out;
	}
	if (!sync_reconfigure(sv->sync, g->conf, g->stores, gen_free, g, &e)) {
		log_error("reload failed, still running on the previous configuration: %s", e.msg);
		gen_free(g);
		goto out;
	}
	sv->gen = g;
	raise_nofile(g->conf->concurrency);
	if (sv->daemon && pg_ready(sv->pg)) {
		struct buf stores = BUF_INIT;
		char id[24];
		const char *p[2] = {id, NULL};

		snprintf(id, sizeof(id), "%lld", sv->daemon);
		stores_literal(&stores, g->conf);
		p[1] = buf_str(&stores);
		if (!buf_ok(&stores, NULL) ||
		    !pg_query(sv->pg, SQL_DAEMON_STORES, 2, p, stores_told, NULL))
			log_warn("cannot record this daemon's stores: out of memory");
		buf_free(&stores);
	}
	log_notice("reloaded %s: %zu store%s, %zu mirror%s%s%s", sv->path, sv->gen->conf->nstores,
		   sv->gen->conf->nstores == 1 ? "" : "s", sv->gen->conf->nmirrors,
		   sv->gen->conf->nmirrors == 1 ? "" : "s", changes.len ? "; " : " (no change)",
		   buf_str(&changes));
out:
	buf_free(&restart);
	buf_free(&changes);
	sd_notify(0, "READY=1");
	sv->status[0] = '\0'; /* say it again after RELOADING */
	status_line(sv);
}

static void on_watchdog(void *arg)
{
	struct service *sv = arg;

	sd_notify(0, "WATCHDOG=1");
	loop_timer_set(sv->env.loop, &sv->watchdog, sv->watchdog_ms);
}

static void on_signal(void *arg, int fd, uint32_t events)
{
	struct service *sv = arg;
	struct signalfd_siginfo si;

	(void)events;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			if (++sv->terms > 1) {
				log_notice("second stop signal: exiting at once");
				service_exit(sv, EX_OK);
				return;
			}
			log_info("stopping (signal %d)", (int)si.ssi_signo);
			sd_notify(0, "STOPPING=1");
			sync_stop(sv->sync, (uint64_t)sv->gen->conf->stop_timeout * 1000, stopped,
				  sv);
			break;
		case SIGHUP:
			if (sv->terms == 0)
				reload(sv);
			break;
		default:
			break;
		}
	}
}

static bool signals_init(struct service *sv, struct err *e)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		return err_sys(e, errno, "sigprocmask");
	signal(SIGPIPE, SIG_IGN);
	sv->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sv->sigfd < 0)
		return err_sys(e, errno, "signalfd");
	loop_io_init(&sv->sigio, sv->sigfd, on_signal, sv);
	return loop_io_set(sv->env.loop, &sv->sigio, EPOLLIN, e);
}

/* Threads for the blocking disk work.  A put with fsync = true that syncs
 * alone waits on the disk three times (the data, the link, the directory),
 * and a group sync holds a thread while it waits (lib/fs.c), so threads
 * spend much of a small image asleep: a quarter of the transfers in flight
 * keeps the disk and the CPU busy (bench/README.md, workload 4), within
 * 4..8 (each thread that allocates gets its own malloc arena: 16 of them
 * took the daemon's peak RSS in workload 1 from 25 to 33 MiB).  Fixed at
 * start: a reload's new concurrency keeps the pool. */
static int pool_threads(int concurrency)
{
	int n = concurrency / 4;

	return n < 4 ? 4 : n > 8 ? 8 : n;
}

/* Build the service in dependency order, run it, take it down in reverse.
 * Takes conf over. */
static int service_run(struct conf *conf, const char *path)
{
	struct service sv = {.path = path, .sigfd = -1, .exit_code = EX_OK};
	uint64_t wd_usec = 0;
	struct pgconn_cfg pc = {
	    .conninfo = conf->db_conninfo,
	    .channel = conf->db_channel,
	    .on_state = on_pg_state,
	    .on_notify = on_notify,
	    .arg = &sv,
	};
	struct err e = {0};
	int rc = EX_OK;

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	if (gethostname(sv.host, sizeof(sv.host) - 1) < 0)
		snprintf(sv.host, sizeof(sv.host), "unknown");
	/* signals first: threads created later inherit the blocked mask, so
	 * SIGTERM reaches the signalfd, not a pool thread's default action */
	if (!loop_new(&sv.env.loop, &e) || !signals_init(&sv, &e) ||
	    !http_new(sv.env.loop, &sv.env.http, &e) ||
	    !workq_new(sv.env.loop, pool_threads(conf->concurrency), &sv.env.wq, &e)) {
		log_error("%s", e.msg);
		conf_free(conf);
		rc = EX_OSERR;
		goto out;
	}
	raise_nofile(conf->concurrency);
	sv.env.parked = sync_put_parked;
	if (!gen_open(conf, &sv.env, &sv.gen, &e)) {
		log_error("%s", e.msg);
		rc = e.code == ERR_CONFIG ? EX_CONFIG : EX_UNAVAILABLE;
		goto out;
	}
	if (!pg_new(sv.env.loop, &pc, &sv.pg, &e) ||
	    !sync_new(sv.env.loop, conf, sv.gen->stores, gen_free, sv.gen, sv.pg, &sv.sync, &e)) {
		log_error("%s", e.msg);
		rc = EX_OSERR;
		goto out;
	}
	pg_connect(sv.pg);
	/* under systemd's WatchdogSec=: alive while the loop turns */
	loop_timer_init(&sv.watchdog, on_watchdog, &sv);
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec >= 2000) {
		sv.watchdog_ms = wd_usec / 2000;
		loop_timer_set(sv.env.loop, &sv.watchdog, sv.watchdog_ms);
		log_debug("watchdog: a keep-alive every %llu ms",
			  (unsigned long long)sv.watchdog_ms);
	}
	loop_timer_init(&sv.status_timer, on_status_timer, &sv);
	loop_timer_set(sv.env.loop, &sv.status_timer, STATUS_INTERVAL_MS);
	while (!sv.done)
		if (!loop_run_once(sv.env.loop, 1000, &e)) {
			log_error("%s", e.msg);
			sv.exit_code = EX_OSERR;
			break;
		}
	loop_timer_cancel(sv.env.loop, &sv.status_timer);
	loop_timer_cancel(sv.env.loop, &sv.watchdog);
	rc = sv.exit_code;
out:
	/* the connection first: its queued callbacks still reach the engine */
	pg_free(sv.pg);
	if (sv.sync)
		sync_free(sv.sync); /* frees the generations, the current one last */
	else
		gen_free(sv.gen);
	if (sv.sigfd >= 0) {
		loop_io_del(sv.env.loop, &sv.sigio);
		close(sv.sigfd);
	}
	workq_free(sv.env.wq);
	http_free(sv.env.http);
	loop_free(sv.env.loop);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'n'},
	    {"verbose", no_argument, NULL, 'v'},      {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},	      {NULL, 0, NULL, 0},
	};
	const char *path = CONF_DEFAULT_PATH;
	bool check = false;
	int verbose = 0, ch;
	struct conf *conf = NULL;
	struct err e = {0};

	while ((ch = getopt_long(argc, argv, "c:nvVh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'n':
			check = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'V':
			printf("imgsyncd %s\n", IMGSYNC_VERSION);
			return EX_OK;
		case 'h':
			usage(stdout);
			return EX_OK;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "imgsyncd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return EX_USAGE;
	}
	log_init("imgsyncd", verbose);

	if (!conf_load(path, &conf, &e) || !check_stores(conf, check, &e)) {
		fprintf(stderr, "%s\n", e.msg);
		conf_free(conf);
		return EX_CONFIG;
	}
	for (size_t i = 0; i < conf->nwarnings; i++)
		fprintf(stderr, "imgsyncd: warning: %s\n", conf->warnings[i]);
	if (check) {
		printf("%s: configuration ok (%zu store%s)\n", path, conf->nstores,
		       conf->nstores == 1 ? "" : "s");
		conf_free(conf);
		return EX_OK;
	}
	{
		int rc = service_run(conf, path);

		curl_global_cleanup();
		return rc;
	}
}
