#!/bin/sh
# Turn sql/NNN_name.sql into a C table (schema version NNN, name, text), so
# that imgsyncctl applies, and imgsyncd checks, exactly the schema they were
# built with.  Usage: sql/embed.sh sql/*.sql > schema.c
set -eu
echo '/* Generated from the files in sql/ by sql/embed.sh: do not edit. */'
echo '#include "schema.h"'
echo 'const struct schema_step schema_steps[] = {'
for f in "$@"; do
	base=$(basename "$f")
	ver=$(printf '%s' "$base" | sed -n 's/^\([0-9][0-9]*\)_.*\.sql$/\1/p' | sed 's/^0*//')
	[ -n "$ver" ] || { echo "sql/embed.sh: $f is not named NNN_name.sql" >&2; exit 1; }
	printf '\t{%s, "%s",\n' "$ver" "$base"
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/\t "/' -e 's/$/\\n"/' "$f"
	printf '\t},\n'
done
echo '};'
echo 'const int schema_nsteps = sizeof(schema_steps) / sizeof(schema_steps[0]);'
