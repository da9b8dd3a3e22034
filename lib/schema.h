/*
 * schema.h - the SQL schema, embedded from the files in sql/ at build time.
 *
 * Step N of the schema is sql/NNN_*.sql; imgsync.schema_version lists the
 * steps applied.  SCHEMA_VERSION (the last step) is what this build speaks:
 * imgsyncd refuses a database at another version and names the command
 * that fixes it.
 */
#ifndef IMGSYNC_SCHEMA_H
#define IMGSYNC_SCHEMA_H

struct schema_step {
	int version;
	const char *name;
	const char *sql;
};

extern const struct schema_step schema_steps[];
extern const int schema_nsteps;

#endif
