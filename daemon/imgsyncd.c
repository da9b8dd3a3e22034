/*
 * imgsyncd - keeps an application's images where they belong.
 *
 * main() only wires modules together: options, configuration, then the
 * service.  See imgsyncd(8) and SPEC.md.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "conf.h"
#include "log.h"
#include "store.h"

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
	fprintf(stderr,
		"imgsyncd: %s is valid, but this build has no sync service yet; "
		"use --check-config\n",
		path);
	conf_free(conf);
	return EX_UNAVAILABLE;
}
