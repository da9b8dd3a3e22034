/*
 * latency - an application writing images at a steady rate, for the sync
 * latency benchmark (bench/run, workload 3).
 *
 *   latency ROOT PREFIX RATE SECONDS SIZE OUT
 *
 * Connects to PostgreSQL with the PG* environment variables.  For image i
 * (0 <= i < RATE * SECONDS), at the fixed instant start + i / RATE, it
 * writes SIZE random bytes (the index in the first 8) to
 * ROOT/PREFIX/NN/IIIIII.jpg, then runs
 *
 *   SELECT imgsync.put('PREFIX/NN/IIIIII.jpg', 'local', 'image/jpeg'),
 *          extract(epoch FROM clock_timestamp())
 *
 * in autocommit: the server's clock read after put() returned, just before
 * the statement's COMMIT, stands for the commit time.  It never comes after
 * the commit (a client-side clock read after the answer would, by however
 * long the client waited for a CPU), so latencies measured from it are never
 * too short.  A put that starts late (the previous one was slow) starts at
 * once; the schedule never slips.  OUT gets one line per image,
 * "KEY<TAB>COMMIT_EPOCH_SECONDS" (microseconds), and stdout one summary line:
 *
 *   puts=N seconds=S rate=R put_ms_p50=A put_ms_p99=B late_ms_max=L
 *
 * (put_ms: the round trip of the put, COMMIT included; late_ms_max: how far
 * behind its schedule the latest put started).
 */
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double ts_s(const struct timespec *ts)
{
	return (double)ts->tv_sec + (double)ts->tv_nsec / 1e9;
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts_s(&ts);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "latency: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: latency ROOT PREFIX RATE SECONDS SIZE OUT\n");
		return 64;
	}
	const char *root = argv[1], *prefix = argv[2];
	double rate = atof(argv[3]), seconds = atof(argv[4]);
	size_t size = strtoul(argv[5], NULL, 10);
	long n = (long)(rate * seconds + 0.5);
	if (rate <= 0 || n <= 0 || size < 8)
		die("bad RATE, SECONDS or SIZE%s", "");

	FILE *out = fopen(argv[6], "w");
	if (out == NULL)
		die("cannot write %s", argv[6]);
	unsigned char *data = malloc(size);
	double *put_ms = calloc((size_t)n, sizeof(double));
	if (data == NULL || put_ms == NULL)
		die("out of memory%s", "");
	srand(3);
	for (size_t i = 0; i < size; i++)
		data[i] = (unsigned char)rand();

	char path[4096], key[1024];
	for (int d = 0; d < 100; d++) {
		snprintf(path, sizeof(path), "%s/%s", root, prefix);
		mkdir(path, 0755);
		snprintf(path, sizeof(path), "%s/%s/%02d", root, prefix, d);
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			die("cannot create %s", path);
	}

	PGconn *pg = PQconnectdb("");
	if (PQstatus(pg) != CONNECTION_OK)
		die("%s", PQerrorMessage(pg));
	PGresult *r = PQprepare(pg, "put",
				"SELECT imgsync.put($1, 'local', 'image/jpeg'), "
				"extract(epoch FROM clock_timestamp())",
				1, NULL);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die("%s", PQerrorMessage(pg));
	PQclear(r);

	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	double t0 = ts_s(&start), late_max = 0;
	for (long i = 0; i < n; i++) {
		double due = (double)i / rate;
		struct timespec at = start;
		long long ns = (long long)(due * 1e9) + start.tv_nsec;
		at.tv_sec += (time_t)(ns / 1000000000);
		at.tv_nsec = (long)(ns % 1000000000);
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR)
			;
		double begin = mono_s();
		if (begin - t0 - due > late_max)
			late_max = begin - t0 - due;

		snprintf(key, sizeof(key), "%s/%02ld/%06ld.jpg", prefix, i % 100, i);
		snprintf(path, sizeof(path), "%s/%s", root, key);
		memcpy(data, &i, sizeof(i));
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) < 0)
			die("cannot write %s", path);

		const char *params[1] = {key};
		r = PQexecPrepared(pg, "put", 1, params, NULL, NULL, 0);
		if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
			die("put failed: %s", PQerrorMessage(pg));
		put_ms[i] = (mono_s() - begin) * 1e3;
		fprintf(out, "%s\t%s\n", key, PQgetvalue(r, 0, 1));
		PQclear(r);
	}
	double el = mono_s() - t0;
	if (fclose(out) != 0)
		die("cannot write %s", argv[6]);
	PQfinish(pg);
	qsort(put_ms, (size_t)n, sizeof(double), cmp_double);
	printf("puts=%ld seconds=%.3f rate=%.1f put_ms_p50=%.2f put_ms_p99=%.2f late_ms_max=%.1f\n",
	       n, el, (double)n / el, put_ms[n / 2], put_ms[(size_t)((double)n * 0.99)],
	       late_max * 1e3);
	free(put_ms);
	free(data);
	return 0;
}
