-- imgsync schema, version 1: the catalog, the work queue, daemons, the
-- application interface (put, remove, watch_table) and migrations.
--
-- Applied by `imgsyncctl init` inside one transaction, only when
-- imgsync.schema_version does not list it yet.
--
-- Design
-- * imgsync.images is the catalog: one row per logical key, with the store
--   the application wrote it to (origin), the stores that hold a verified
--   copy of the current version, and a version that grows on every rewrite.
-- * imgsync.work holds at most ONE row per key.  put() and remove() upsert
--   it and bump its generation (gen).  A daemon claims a row by leasing it
--   (lease_owner, lease_until) with FOR UPDATE SKIP LOCKED; while the lease
--   lives nobody else touches the key, so work on one key is serialised
--   across daemons.  A daemon finishes a row only if its gen is unchanged;
--   when the application wrote again meanwhile, the row simply becomes
--   pending again and the newer version is copied after the older one
--   landed, never before.
-- * NOTIFY is only a wake-up, with a constant payload so that Postgres folds
--   the notifications of one transaction into one.  The queue is the record.
-- * Functions on the hot path (put, the queue, results) are plpgsql, not
--   sql: PostgreSQL plans the statements of a sql function that it cannot
--   inline at every call, while plpgsql keeps its plans for the session.

CREATE SCHEMA IF NOT EXISTS imgsync;

CREATE TABLE imgsync.settings (
	name text PRIMARY KEY,
	value text NOT NULL
);
INSERT INTO imgsync.settings (name, value) VALUES ('channel', 'imgsync');

-- A key that some decoder along the way (a proxy, a web server, a layout
-- of another tool) could turn into a "." or ".." segment or a control
-- character: percent-encoded (also twice) or with "\" as a separator.
-- lib/key.c refuses the same keys.
CREATE FUNCTION imgsync.decodes_to_dot_segment(k text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
	s text := lower(k);
	prev text;
BEGIN
	LOOP
		prev := s;
		s := replace(replace(replace(replace(s, '%25', '%'), '%2e', '.'), '%2f', '/'), '%5c', '\');
		EXIT WHEN s = prev;
	END LOOP;
	RETURN s ~ '(^|[/\\])\.\.?([/\\]|$)' OR s ~ '%(0[0-9a-f]|1[0-9a-f]|7f)'
	    OR s ~ '%(c0|c1|e0%[89]|f0%8)';
END
$$;

-- A text as it may be shown in a message: quoted, control characters
-- escaped (a key cannot forge a log line), at most 96 characters.
CREATE FUNCTION imgsync.shown(k text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN k IS NULL THEN 'NULL' ELSE
	       '"' || coalesce(string_agg(CASE WHEN c ~ '[\x01-\x1f\x7f-\x9f]'
					       THEN '\x' || lpad(to_hex(ascii(c)), 2, '0')
					       WHEN c IN ('"', '\') THEN '\' || c ELSE c END,
				      '' ORDER BY n), '')
	       || CASE WHEN length(k) > 96 THEN '..."' ELSE '"' END END
	  FROM regexp_split_to_table(left(k, 96), '') WITH ORDINALITY AS t(c, n)
$$;

-- plpgsql: as a sql function, the tables' CHECK would inline (parse) it at
-- every statement that writes a row.
CREATE FUNCTION imgsync.valid_key(k text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
	RETURN octet_length(k) BETWEEN 1 AND 1024
	   AND k !~ '[\x01-\x1f\x7f-\x9f]'
	   AND left(k, 1) <> '/'
	   AND right(k, 1) <> '/'
	   AND k !~ '//'
	   AND k !~ '(^|/)\.\.?(/|$)'
	   AND (strpos(k, '%') = 0 AND strpos(k, '\') = 0 OR NOT imgsync.decodes_to_dot_segment(k));
END
$$;

CREATE TABLE imgsync.images (
	key text PRIMARY KEY CONSTRAINT images_key_valid CHECK (imgsync.valid_key(key)),
	origin text NOT NULL,              -- the store the application wrote it to
	mimetype text,
	attrs jsonb,                        -- layout attributes (object_type, object_id, ...)
	size bigint,
	checksum text,                      -- MD5 (hex) of the content, once known
	version bigint NOT NULL DEFAULT 1,  -- grows on every rewrite
	stores text[] NOT NULL DEFAULT '{}', -- stores holding a verified copy of this version
	deleted boolean NOT NULL DEFAULT false, -- remove() called; the daemon deletes it
	url text,                           -- where it can be fetched now (imgsync.url())
	url_pending boolean NOT NULL DEFAULT false, -- a watched URL column still to update
	-- when the copy in the home store (origin) was written: the
	-- application's last put(), or the move that gave the image its home
	-- (updated_at also moves with imgsync's bookkeeping).  A home copy
	-- written after it has a put() still to come.
	home_at timestamptz NOT NULL DEFAULT now(),
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 85); -- room on the page: a result's update stays HOT

CREATE TABLE imgsync.migrations (
	id bigserial PRIMARY KEY,
	source text NOT NULL,
	target text NOT NULL,
	mode text NOT NULL CHECK (mode IN ('move', 'copy')),
	dry_run boolean NOT NULL DEFAULT false,
	prefix text NOT NULL DEFAULT '',
	verify boolean NOT NULL DEFAULT false,
	follow boolean NOT NULL DEFAULT false,
	state text NOT NULL DEFAULT 'running'
		CHECK (state IN ('pending', 'running', 'paused', 'done', 'failed', 'cancelled')),
	cursor text,                       -- the last key handed to the queue
	scanned boolean NOT NULL DEFAULT false, -- the cursor reached the end
	total bigint NOT NULL DEFAULT 0,
	done bigint NOT NULL DEFAULT 0,
	failed bigint NOT NULL DEFAULT 0,
	skipped bigint NOT NULL DEFAULT 0,
	bytes_done bigint NOT NULL DEFAULT 0,
	-- progress samples for the rates (updated by complete())
	sample_at timestamptz,
	sample_done bigint NOT NULL DEFAULT 0,
	sample_bytes bigint NOT NULL DEFAULT 0,
	objects_per_s double precision NOT NULL DEFAULT 0,
	bytes_per_s double precision NOT NULL DEFAULT 0,
	created_at timestamptz NOT NULL DEFAULT now(),
	started_at timestamptz,
	updated_at timestamptz NOT NULL DEFAULT now(),
	finished_at timestamptz,
	last_error text,
	CHECK (source <> target)
);

CREATE TABLE imgsync.work (
	key text PRIMARY KEY,
	op text NOT NULL CONSTRAINT work_op_check CHECK (op IN ('put', 'remove', 'migrate')),
	gen bigint NOT NULL DEFAULT 1,           -- grows with every put/remove of the key
	state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
	attempts int NOT NULL DEFAULT 0,
	not_before timestamptz NOT NULL DEFAULT now(), -- backoff
	lease_owner bigint,                      -- imgsync.daemons.id
	lease_token bigint,                      -- names one claim: results and renewals echo it
	lease_until timestamptz,
	last_error text,
	migration bigint REFERENCES imgsync.migrations (id) ON DELETE SET NULL,
	-- 'copy' or 'delete-source': the step of the migration duty still to do
	step text CHECK (step IN ('copy', 'delete-source')),
	-- delete-source: the source copy's tag when it was copied (struct
	-- obj_info.tag); a source with another tag was written again: not deleted
	source_tag text,
	-- stores holding a copy of an earlier version that a put to another
	-- store superseded: deleted by the put's item unless the put writes
	-- the new version there (a mirror), or they were written after
	-- stale_until (the last the catalog recorded of the versions
	-- superseded): such a copy is another writer's, newer, and stays
	stale text[],
	stale_until timestamptz,
	-- copies an attempt wrote while the image was written again (a put, a
	-- removal), or that are not the version it read (the source written
	-- again in place while read: torn), which the catalog therefore never
	-- recorded: {store: tag} (struct obj_info.tag).  Deleted by the next
	-- put's or removal's item while they still have that tag, unless the
	-- new version goes there; there, the next copy replaces them.
	strays jsonb,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
-- Every item's row is updated at least twice (its claim, its result or
-- next step) and every daemon's heartbeat renews its leases: with room on
-- the page and no index on the lease columns, each of those updates is
-- HOT (no index entries written, none for VACUUM to clean).  So the leases
-- are found by key (heartbeat() gets the daemon's keys) and, in the rare
-- release of a whole daemon's leases (stop_daemon(), reap_daemon()), by a
-- scan of the queue.
CREATE INDEX images_url_pending ON imgsync.images (key) WHERE url_pending;
CREATE INDEX images_origin ON imgsync.images (origin, key) WHERE NOT deleted;
CREATE INDEX work_migration ON imgsync.work (migration) WHERE migration IS NOT NULL;
CREATE INDEX work_ready ON imgsync.work (not_before) WHERE state = 'pending';
CREATE SEQUENCE imgsync.lease_tokens;

-- Every attempt, for operators (and for tests that prove no key was worked
-- by two daemons at once).  The heartbeat trims it to the last 7 days.
CREATE TABLE imgsync.attempts (
	id bigserial PRIMARY KEY,
	key text NOT NULL,
	gen bigint NOT NULL,
	daemon bigint NOT NULL,
	started_at timestamptz NOT NULL,
	finished_at timestamptz NOT NULL DEFAULT now(),
	ok boolean NOT NULL,
	error text
);
CREATE INDEX attempts_key ON imgsync.attempts (key, started_at);
CREATE INDEX attempts_age ON imgsync.attempts (finished_at);

CREATE TABLE imgsync.daemons (
	id bigserial PRIMARY KEY,
	host text NOT NULL,
	pid int NOT NULL,
	version text NOT NULL,
	instance text,                      -- boot, pid namespace, start time (lib/host.h)
	started_at timestamptz NOT NULL DEFAULT now(),
	heartbeat_at timestamptz NOT NULL DEFAULT now(),
	state text NOT NULL DEFAULT 'starting',
	in_flight int NOT NULL DEFAULT 0,
	stores text[],                      -- the stores its configuration names
	objects_done bigint NOT NULL DEFAULT 0,
	bytes_done bigint NOT NULL DEFAULT 0,
	stopped_at timestamptz
);

-- Things an admin should see that are not about one key (a malformed NOTIFY
-- command, for instance).
CREATE TABLE imgsync.events (
	id bigserial PRIMARY KEY,
	at timestamptz NOT NULL DEFAULT now(),
	daemon bigint,
	level text NOT NULL,
	message text NOT NULL
);

CREATE FUNCTION imgsync.wake() RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	PERFORM pg_notify((SELECT value FROM imgsync.settings WHERE name = 'channel'), '');
END
$$;

-- The image `key` has been written (or rewritten) to `store`.
-- A put to another store than the one holding the image supersedes the
-- copies elsewhere: they are the earlier version, and the put's item
-- deletes them (work.stale) unless the new version is written there.
CREATE FUNCTION imgsync.put(key text, store text, mimetype text DEFAULT NULL,
			    attrs jsonb DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	old text[];	      -- where the image was before: its stores and origin
	old_at timestamptz; -- when the catalog last recorded a copy of it
BEGIN
	IF key IS NULL OR NOT imgsync.valid_key(key) THEN
		RAISE EXCEPTION 'imgsync.put: invalid image key %', imgsync.shown(key)
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'keys are 1 to 1024 bytes of text without control characters, '
				     'leading or trailing "/", "//", "." or ".." segments (also '
				     'percent-encoded or with "\" as a separator)';
	END IF;
	IF store IS NULL OR store = '' THEN
		RAISE EXCEPTION 'imgsync.put: the store holding % must be named', imgsync.shown(key)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF attrs IS NOT NULL AND jsonb_typeof(attrs) <> 'object' THEN
		RAISE EXCEPTION 'imgsync.put: attrs must be a JSON object, not %', jsonb_typeof(attrs)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- a new key is one INSERT; a rewrite locks the row first, to know
	-- where the version it replaces is (a concurrent first put of the
	-- same key makes the INSERT wait, then find the row)
	LOOP
		INSERT INTO imgsync.images (key, origin, mimetype, attrs, stores)
		VALUES (put.key, put.store, coalesce(put.mimetype, put.attrs ->> 'mimetype'),
			put.attrs, ARRAY[put.store])
		ON CONFLICT ON CONSTRAINT images_pkey DO NOTHING;
		EXIT WHEN FOUND;
		SELECT i.stores || i.origin, i.updated_at INTO old, old_at
		  FROM imgsync.images i WHERE i.key = put.key FOR UPDATE;
		CONTINUE WHEN NOT FOUND; -- gone meanwhile (a removal carried out)
		UPDATE imgsync.images i
		   SET origin = put.store, mimetype = coalesce(put.mimetype, put.attrs ->> 'mimetype'),
		       attrs = put.attrs, stores = ARRAY[put.store], size = NULL, checksum = NULL,
		       deleted = false, version = i.version + 1, updated_at = now(), home_at = now()
		 WHERE i.key = put.key;
		EXIT;
	END LOOP;
	PERFORM imgsync.enqueue(put.key, 'put');
	IF old IS NOT NULL AND NOT old <@ ARRAY[put.store] THEN
		UPDATE imgsync.work w
		   SET stale = ARRAY(SELECT DISTINCT s FROM unnest(w.stale || old) s
				      WHERE s <> put.store ORDER BY s),
		       stale_until = greatest(w.stale_until, old_at)
		 WHERE w.key = put.key;
	END IF;
END
$$;

-- The image is gone from the application: delete it everywhere.
CREATE FUNCTION imgsync.remove(key text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	UPDATE imgsync.images AS i SET deleted = true, version = i.version + 1, updated_at = now()
	 WHERE i.key = remove.key;
	IF FOUND THEN
		PERFORM imgsync.enqueue(remove.key, 'remove');
	END IF;
END
$$;

CREATE VIEW imgsync.queue_status AS
SELECT count(*) FILTER (WHERE state = 'pending' AND attempts = 0
			 AND (lease_until IS NULL OR lease_until < now())) AS pending,
       count(*) FILTER (WHERE state = 'pending' AND lease_until >= now()) AS in_flight,
       count(*) FILTER (WHERE state = 'pending' AND attempts > 0
			 AND (lease_until IS NULL OR lease_until < now())) AS retrying,
       count(*) FILTER (WHERE state = 'dead') AS dead,
       now() - min(created_at) FILTER (WHERE state = 'pending') AS oldest_age
  FROM imgsync.work;

CREATE VIEW imgsync.workers AS
SELECT id, host, pid, version, started_at, heartbeat_at,
       CASE WHEN stopped_at IS NOT NULL AND state = 'gone' THEN 'gone'
	    WHEN stopped_at IS NOT NULL THEN 'stopped'
	    WHEN heartbeat_at < now() - interval '1 minute' THEN 'lost'
	    ELSE state END AS state,
       in_flight, objects_done, bytes_done
  FROM imgsync.daemons
 WHERE stopped_at IS NULL OR stopped_at > now() - interval '1 day';

CREATE VIEW imgsync.dead_work AS
SELECT key, op, attempts, last_error, updated_at AS failed_at
  FROM imgsync.work WHERE state = 'dead';

-- Dead items back into the queue (all, or those whose key has a prefix).
CREATE FUNCTION imgsync.retry_dead(key_prefix text DEFAULT '') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE n bigint;
BEGIN
	UPDATE imgsync.work SET state = 'pending', attempts = 0, not_before = now(),
	       updated_at = now()
	 WHERE state = 'dead' AND starts_with(key, key_prefix);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		PERFORM imgsync.wake();
	END IF;
	RETURN n;
END
$$;

-- ---------------------------------------------------------------------------
-- Daemon interface.  imgsyncd calls only these (lib/sql.h), so the queue's
-- rules live here, next to the tables.
--
-- Lock order, everywhere: the images row, then the work row (put() and
-- remove() do it that way; so does complete()).

CREATE FUNCTION imgsync.register_daemon(host text, pid int, version text,
					instance text DEFAULT NULL, stores text[] DEFAULT NULL)
RETURNS bigint LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.daemons (host, pid, version, instance, state, stores)
	VALUES (register_daemon.host, register_daemon.pid, register_daemon.version,
		nullif(register_daemon.instance, ''), 'running', register_daemon.stores)
	RETURNING id
$$;

-- A daemon's stores after a reload.
CREATE FUNCTION imgsync.daemon_stores(daemon bigint, stores text[]) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE imgsync.daemons d SET stores = daemon_stores.stores WHERE d.id = daemon
$$;

-- Daemons on one host that have not stopped, for a successor to check
-- whether they are still alive (only it can tell: lib/host.h).
CREATE FUNCTION imgsync.host_daemons(me bigint, host text)
RETURNS TABLE (id bigint, pid int, instance text)
LANGUAGE sql STABLE AS $$
	SELECT d.id, d.pid, d.instance FROM imgsync.daemons d
	 WHERE d.host = host_daemons.host AND d.id <> me AND d.stopped_at IS NULL
	   AND d.instance IS NOT NULL
$$;

-- A daemon that ended without stopping (killed, crashed), as its successor
-- on the same host found: release its leases now rather than when they
-- expire.  Returns the number of leases released.
CREATE FUNCTION imgsync.reap_daemon(daemon bigint, by bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	n bigint;
	d imgsync.daemons;
BEGIN
	UPDATE imgsync.daemons SET stopped_at = now(), state = 'gone', in_flight = 0
	 WHERE id = daemon AND stopped_at IS NULL RETURNING * INTO d;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
	 WHERE lease_owner = daemon;
	GET DIAGNOSTICS n = ROW_COUNT;
	INSERT INTO imgsync.events (daemon, level, message)
	VALUES (by, 'warning',
		format('daemon %s (pid %s on %s) ended without stopping; %s lease(s) released',
		       d.id, d.pid, d.host, n));
	IF n > 0 THEN
		PERFORM imgsync.wake();
	END IF;
	RETURN n;
END
$$;

-- Results of finished items, in one round trip: a JSON array of
-- {key, gen, token, op, ok, error, permanent, counted, delay, version,
--  stores, size, checksum, started_at}.  A result for a claim whose lease
-- was lost changes nothing but the attempt log.  One bad result is
-- recorded as an event and skipped; it does not sink the others.
--
-- A row the application holds (a put in its open transaction) is never
-- waited for: complete_all() locks with NOWAIT, so this transaction stays
-- short and no deadlock with an application's transaction can arise (and
-- PostgreSQL never aborts the application's side).  A result that met such
-- a lock comes back (the rows returned) for the daemon to send again.
-- imgsyncd's sessions also run with a short lock_timeout, for the rest.
CREATE FUNCTION imgsync.complete(daemon bigint, results jsonb, max_attempts int)
RETURNS SETOF jsonb LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	r jsonb;
	ready boolean := false;
BEGIN
	-- the whole batch at once, as a rule; result by result (each a batch of
	-- one) when it cannot be taken whole
	BEGIN
		IF imgsync.complete_all(daemon, results, max_attempts) THEN
			PERFORM imgsync.wake();
		END IF;
		RETURN;
	EXCEPTION WHEN OTHERS THEN
		NULL;
	END;
	FOR r IN SELECT e.value FROM jsonb_array_elements(results) AS e LOOP
		BEGIN
			ready := imgsync.complete_all(daemon, jsonb_build_array(r), max_attempts) OR ready;
		EXCEPTION WHEN lock_not_available THEN
			RETURN NEXT r;
		WHEN OTHERS THEN
			INSERT INTO imgsync.events (daemon, level, message)
			VALUES (daemon, 'error', left(format('result for %s not recorded: %s',
						   imgsync.shown(r ->> 'key'), SQLERRM), 2000));
		END;
	END LOOP;
	IF ready THEN
		PERFORM imgsync.wake();
	END IF;
END
$$;

-- Liveness and counters; renews the leases of the claims named by tokens
-- (keys: their keys, by which the rows are found) and returns those it
-- still holds, renewed or not: a claim missing from
-- the answer has lost its lease and must be dropped at once.  A row the
-- application holds locked (a put() of the key in its open transaction) is
-- not waited for: it is returned unrenewed, its lease running on.
CREATE FUNCTION imgsync.heartbeat(daemon bigint, keys text[], tokens bigint[], state text,
				  in_flight int, objects_done bigint, bytes_done bigint,
				  lease interval)
RETURNS TABLE (token bigint, renewed boolean) LANGUAGE plpgsql VOLATILE
-- by index, whatever the tables' statistics say (see complete_all()): a
-- heartbeat that read the catalog or the queue whole every 10 s would
-- cost a large installation more than all its work.  A scan with no index
-- to use (imgsync.watched, an application's table in apply_url()) is then
-- costed so high that PostgreSQL would compile it (JIT) at every call:
-- jit = off, as in the queue's functions.
SET enable_seqscan = off SET jit = off AS $$
BEGIN
	-- alive: a daemon a successor took for gone (and whose leases it
	-- released: they come back missing below) is running after all
	UPDATE imgsync.daemons d
	   SET heartbeat_at = now(), state = heartbeat.state, in_flight = heartbeat.in_flight,
	       stopped_at = CASE WHEN heartbeat.state = 'stopping' THEN d.stopped_at END,
	       objects_done = heartbeat.objects_done, bytes_done = heartbeat.bytes_done
	 WHERE d.id = daemon;
	DELETE FROM imgsync.attempts WHERE finished_at < now() - interval '7 days';
	PERFORM imgsync.apply_url(p.key)
	   FROM (SELECT i.key FROM imgsync.images i WHERE i.url_pending LIMIT 100) p;
	RETURN QUERY
	WITH mine AS (
		SELECT w.key FROM imgsync.work w
		 WHERE w.key = ANY (keys) AND w.lease_owner = daemon AND w.lease_token = ANY (tokens)
		   FOR UPDATE SKIP LOCKED),
	r AS (
		UPDATE imgsync.work w SET lease_until = now() + lease
		  FROM mine WHERE w.key = mine.key
		RETURNING w.lease_token)
	SELECT r.lease_token, true FROM r
	UNION ALL
	SELECT w.lease_token, false FROM imgsync.work w
	 WHERE w.key = ANY (keys) AND w.lease_owner = daemon AND w.lease_token = ANY (tokens)
	   AND w.key NOT IN (SELECT mine.key FROM mine);
END
$$;

-- A daemon leaving: its items are free for others at once.
CREATE FUNCTION imgsync.stop_daemon(daemon bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
	 WHERE lease_owner = daemon;
	UPDATE imgsync.daemons SET stopped_at = now(), state = 'stopped', in_flight = 0
	 WHERE id = daemon;
	SELECT imgsync.wake();
$$;

CREATE FUNCTION imgsync.log_event(daemon bigint, level text, message text) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.events (daemon, level, message)
	VALUES (log_event.daemon, log_event.level, left(log_event.message, 2000));
	DELETE FROM imgsync.events WHERE at < now() - interval '30 days';
$$;

-- ---------------------------------------------------------------------------
-- Watching an existing images table.

CREATE TABLE imgsync.watched (
	tbl regclass PRIMARY KEY,
	mapping text NOT NULL CHECK (mapping IN ('key', 'imageattach')),
	store text NOT NULL,
	key_column text,        -- mapping key: the column holding the image's key
	id_column text,         -- mapping imageattach: the column holding object_id
	mimetype_column text,
	url_column text,        -- kept up to date by imgsync: never a rewrite
	rewrite_columns text[], -- if set, only changes to these mean a rewrite
	object_type text
);

-- The logical key and layout attributes of a row of a watched table.  An
-- ImageAttach image is identified by (object_id, width, height, mimetype):
-- a new mimetype is a new physical key, so it is a new image here too.
CREATE FUNCTION imgsync.row_image(cfg imgsync.watched, r jsonb, OUT key text, OUT attrs jsonb,
				  OUT mimetype text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF cfg.mapping = 'key' THEN
		key := r ->> cfg.key_column;
		attrs := NULL;
		mimetype := CASE WHEN cfg.mimetype_column IS NOT NULL
			    THEN r ->> cfg.mimetype_column END;
		RETURN;
	END IF;
	IF r ->> cfg.id_column IS NULL THEN
		key := NULL;
		RETURN;
	END IF;
	key := cfg.object_type || '/' || (r ->> cfg.id_column) || '/' ||
	       (r ->> 'width') || 'x' || (r ->> 'height') || '/' || coalesce(r ->> 'mimetype', '');
	mimetype := r ->> 'mimetype';
	attrs := jsonb_build_object('object_type', cfg.object_type,
				    'object_id', r ->> cfg.id_column,
				    'width', (r ->> 'width')::bigint,
				    'height', (r ->> 'height')::bigint,
				    'mimetype', r ->> 'mimetype');
END
$$;

-- put/remove for a watched row; a key imgsync cannot accept is recorded as
-- an event and a warning, and never aborts the application's transaction.
CREATE FUNCTION imgsync.watched_call(tbl regclass, what text, k text, store text, mt text,
				     a jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF what = 'put' THEN
		PERFORM imgsync.put(k, store, mt, a);
	ELSE
		PERFORM imgsync.remove(k);
	END IF;
EXCEPTION WHEN invalid_parameter_value THEN
	RAISE WARNING 'imgsync: % of a row of % skipped: %', what, tbl, SQLERRM;
	INSERT INTO imgsync.events (level, message)
	VALUES ('warning', left(format('%s of a row of %s skipped: %s', what, tbl, SQLERRM), 2000));
END
$$;

-- The trigger's argument is the watched table: for a partitioned table,
-- TG_RELID names the partition.
CREATE FUNCTION imgsync.watch_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	cfg imgsync.watched;
	oj jsonb;
	nj jsonb;
	okey text;
	nkey text;
	nattrs jsonb;
	nmime text;
	rewrite boolean;
BEGIN
	SELECT * INTO cfg FROM imgsync.watched WHERE tbl = TG_ARGV[0]::oid;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'TRUNCATE' THEN
		FOR oj IN EXECUTE format('SELECT to_jsonb(t) FROM %s t', TG_RELID::regclass) LOOP
			SELECT i.key INTO okey FROM imgsync.row_image(cfg, oj) i;
			IF okey IS NOT NULL THEN
				PERFORM imgsync.watched_call(cfg.tbl, 'remove', okey, NULL, NULL, NULL);
			END IF;
		END LOOP;
		RETURN NULL;
	END IF;
	IF TG_OP <> 'INSERT' THEN
		oj := to_jsonb(OLD);
		SELECT i.key INTO okey FROM imgsync.row_image(cfg, oj) i;
	END IF;
	IF TG_OP <> 'DELETE' THEN
		nj := to_jsonb(NEW);
		SELECT i.key, i.attrs, i.mimetype INTO nkey, nattrs, nmime
		  FROM imgsync.row_image(cfg, nj) i;
	END IF;
	IF okey IS NOT NULL AND okey IS DISTINCT FROM nkey THEN
		PERFORM imgsync.watched_call(cfg.tbl, 'remove', okey, NULL, NULL, NULL);
	END IF;
	IF nkey IS NULL THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'INSERT' OR okey IS DISTINCT FROM nkey THEN
		rewrite := true;
	ELSIF cfg.rewrite_columns IS NOT NULL THEN
		SELECT bool_or(oj -> c IS DISTINCT FROM nj -> c) INTO rewrite
		  FROM unnest(cfg.rewrite_columns) c;
	ELSE
		-- any change but the URL column (which imgsync itself maintains)
		rewrite := (oj - coalesce(cfg.url_column, '')) IS DISTINCT FROM
			   (nj - coalesce(cfg.url_column, ''));
	END IF;
	IF rewrite THEN
		PERFORM imgsync.watched_call(cfg.tbl, 'put', nkey, cfg.store, nmime, nattrs);
	END IF;
	RETURN NULL;
END
$$;

-- The public URL of an image where it lives now: built by a daemon from
-- the store's public_url (or its own address) and the image's key in that
-- store's layout, once a daemon has seen the image; NULL before that and
-- for deleted images.
CREATE FUNCTION imgsync.url(key text) RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT i.url FROM imgsync.images i WHERE i.key = url.key AND NOT i.deleted
$$;

-- Point the URL columns of watched tables at an image's current URL.  Rows
-- the application holds locked are skipped, never waited for: the caller
-- holds the images row, and an application's transaction takes its own row
-- first and the images row next (its trigger), so waiting could deadlock.
-- A skipped image stays url_pending and every heartbeat tries again.
-- Returns true when every row of the image points at its URL.
CREATE FUNCTION imgsync.apply_url(k text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	i imgsync.images;
	cfg imgsync.watched;
	cond text;
	left_over boolean;
	all_done boolean := true;
BEGIN
	SELECT * INTO i FROM imgsync.images WHERE images.key = k;
	IF NOT FOUND OR i.url IS NULL OR i.deleted THEN
		RETURN true;
	END IF;
	FOR cfg IN SELECT * FROM imgsync.watched WHERE url_column IS NOT NULL LOOP
		IF cfg.mapping = 'key' THEN
			cond := format('%I::text = $2', cfg.key_column);
		ELSIF i.attrs ->> 'object_type' IS DISTINCT FROM cfg.object_type THEN
			CONTINUE;
		ELSE
			cond := format('%I::text = $3 ->> ''object_id'' AND width::text = $3 ->> ''width'' '
				       'AND height::text = $3 ->> ''height'' '
				       'AND mimetype IS NOT DISTINCT FROM $3 ->> ''mimetype''',
				       cfg.id_column);
		END IF;
		EXECUTE format('WITH c AS (SELECT ctid FROM %s WHERE %s AND %I IS DISTINCT FROM $1 '
			       'FOR UPDATE SKIP LOCKED) '
			       'UPDATE %s t SET %I = $1 FROM c WHERE t.ctid = c.ctid',
			       cfg.tbl, cond, cfg.url_column, cfg.tbl, cfg.url_column)
			USING i.url, k, i.attrs;
		EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %s AND %I IS DISTINCT FROM $1)',
			       cfg.tbl, cond, cfg.url_column)
			INTO left_over USING i.url, k, i.attrs;
		all_done := all_done AND NOT left_over;
	END LOOP;
	UPDATE imgsync.images SET url_pending = NOT all_done
	 WHERE images.key = k AND url_pending = all_done;
	RETURN all_done;
END
$$;

-- Attach an existing images table.  Either key_column names the column
-- holding the image's key (the Flask/SQLAlchemy "path"/"link" style), or
-- mapping => 'imageattach' reads a SQLAlchemy-ImageAttach image table: the
-- object id from id_column (default: the one primary key column besides
-- width and height, e.g. user_id; or a column named object_id), width,
-- height and mimetype; object_type defaults to the table name with '_'
-- turned into '-'.  An UPDATE is a rewrite when any column but url_column
-- changes, or only when one of rewrite_columns does if given.  Rows already
-- there are put into the catalog when backfill is true.  Returns the number
-- of rows backfilled.
CREATE FUNCTION imgsync.watch_table(tbl regclass, store text, key_column text DEFAULT NULL,
				    mapping text DEFAULT NULL, mimetype_column text DEFAULT NULL,
				    url_column text DEFAULT NULL, object_type text DEFAULT NULL,
				    backfill boolean DEFAULT true, id_column text DEFAULT NULL,
				    rewrite_columns text[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	cfg imgsync.watched;
	m text := coalesce(mapping, CASE WHEN key_column IS NOT NULL THEN 'key' END);
	idc text := id_column;
	r jsonb;
	ikey text;
	iattrs jsonb;
	imime text;
	n bigint := 0;
	relname text;
	c text;
BEGIN
	IF m IS NULL OR m NOT IN ('key', 'imageattach') THEN
		RAISE EXCEPTION 'imgsync.watch_table: give key_column => ''COLUMN'', or mapping => ''imageattach'''
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF m = 'key' AND key_column IS NULL THEN
		RAISE EXCEPTION 'imgsync.watch_table: mapping ''key'' needs key_column'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT cl.relname INTO relname FROM pg_class cl WHERE cl.oid = tbl;
	IF m = 'imageattach' AND idc IS NULL THEN
		SELECT min(a.attname), count(*) INTO idc, n
		  FROM pg_index x JOIN pg_attribute a
		       ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)
		 WHERE x.indrelid = tbl AND x.indisprimary
		   AND a.attname NOT IN ('width', 'height');
		IF n <> 1 THEN
			idc := 'object_id';
		END IF;
		n := 0;
	END IF;
	FOREACH c IN ARRAY array_remove(ARRAY[key_column, idc, mimetype_column, url_column]
					|| CASE WHEN m = 'imageattach'
					   THEN ARRAY['width', 'height', 'mimetype'] END
					|| rewrite_columns, NULL) LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl AND attname = c
			       AND attnum > 0 AND NOT attisdropped) THEN
			RAISE EXCEPTION 'imgsync.watch_table: % has no column %', tbl, c
				USING ERRCODE = 'undefined_column',
				      HINT = CASE WHEN m = 'imageattach'
					     THEN 'name the object id column with id_column => ''user_id''' END;
		END IF;
	END LOOP;
	INSERT INTO imgsync.watched AS w (tbl, mapping, store, key_column, id_column,
					  mimetype_column, url_column, rewrite_columns, object_type)
	VALUES (tbl, m, store, key_column, CASE WHEN m = 'imageattach' THEN idc END,
		mimetype_column, url_column, rewrite_columns,
		coalesce(object_type, replace(relname, '_', '-')))
	ON CONFLICT ON CONSTRAINT watched_pkey DO UPDATE
	   SET mapping = EXCLUDED.mapping, store = EXCLUDED.store,
	       key_column = EXCLUDED.key_column, id_column = EXCLUDED.id_column,
	       mimetype_column = EXCLUDED.mimetype_column, url_column = EXCLUDED.url_column,
	       rewrite_columns = EXCLUDED.rewrite_columns, object_type = EXCLUDED.object_type;
	PERFORM imgsync.unwatch_triggers(tbl);
	EXECUTE format('CREATE TRIGGER imgsync_watch AFTER INSERT OR UPDATE OR DELETE ON %s '
		       'FOR EACH ROW EXECUTE FUNCTION imgsync.watch_trigger(%L)', tbl, tbl::oid);
	EXECUTE format('CREATE TRIGGER imgsync_watch_truncate BEFORE TRUNCATE ON %s '
		       'FOR EACH STATEMENT EXECUTE FUNCTION imgsync.watch_trigger(%L)', tbl, tbl::oid);
	IF backfill THEN
		SELECT * INTO cfg FROM imgsync.watched w WHERE w.tbl = watch_table.tbl;
		FOR r IN EXECUTE format('SELECT to_jsonb(t) FROM %s t', tbl) LOOP
			SELECT i.key, i.attrs, i.mimetype INTO ikey, iattrs, imime
			  FROM imgsync.row_image(cfg, r) i;
			CONTINUE WHEN ikey IS NULL;
			PERFORM imgsync.watched_call(tbl, 'put', ikey, cfg.store, imime, iattrs);
			n := n + 1;
		END LOOP;
	END IF;
	RETURN n;
END
$$;

CREATE FUNCTION imgsync.unwatch_triggers(tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['imgsync_watch', 'imgsync_watch_truncate'] LOOP
		IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = t) THEN
			EXECUTE format('DROP TRIGGER %I ON %s', t, tbl);
		END IF;
	END LOOP;
END
$$;

CREATE FUNCTION imgsync.unwatch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	PERFORM imgsync.unwatch_triggers(tbl);
	DELETE FROM imgsync.watched w WHERE w.tbl = unwatch_table.tbl;
END
$$;

-- ---------------------------------------------------------------------------
-- Migrations.
--
-- A migration moves (or copies) every image under a prefix from one store
-- to another.  It is a cursor over the catalog's keys: a daemon advances
-- it by handing the next keys to the work queue (the same one-row-per-key
-- queue as mirroring, marked with the migration), and the cursor is stored
-- in the same transaction: that is the checkpoint.  A crash loses nothing
-- (the queued rows are durable) and redoes at most the items in flight.
--
-- Per key, a move is two steps: copy to the target and verify, then record
-- the target as the image's home (origin) in the catalog; only after that
-- commit is the work row turned into the second step, deleting the source
-- copy.  A copy stops after the first step.
--
-- With follow, an image the application writes to the source after the
-- cursor passed it is queued for the migration too (in put()), until the
-- migration is ended; that is the zero-downtime recipe: start with follow,
-- switch the application to the target, end the migration (cancel).

-- Where keys stand for a migration: queue its duty (keeping any put or
-- remove already pending for the key: the executor does both).
CREATE FUNCTION imgsync.queue_migration(keys text[], m bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	INSERT INTO imgsync.work AS w (key, op, migration, step)
	SELECT k, 'migrate', m, 'copy' FROM unnest(keys) k
	ON CONFLICT ON CONSTRAINT work_pkey DO UPDATE
	   SET migration = m, step = 'copy', source_tag = NULL, state = 'pending', attempts = 0,
	       not_before = now(), last_error = NULL, updated_at = now();
END
$$;

CREATE FUNCTION imgsync.start_migration(source text, target text, mode text DEFAULT 'move',
					options jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	id bigint;
	o jsonb := coalesce(options, '{}');
	k text;
	known text[];
BEGIN
	IF source IS NULL OR target IS NULL OR source = '' OR target = '' THEN
		RAISE EXCEPTION 'imgsync.start_migration: name a source and a target store'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF source = target THEN
		RAISE EXCEPTION 'imgsync.start_migration: source and target are both %', imgsync.shown(source)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- stores no daemon knows would fail every image: refused here, once
	-- daemons have said which stores they have (running ones, or stopped
	-- within a day)
	SELECT array_agg(DISTINCT s ORDER BY s) INTO known
	  FROM imgsync.daemons d, unnest(d.stores) s
	 WHERE d.stopped_at IS NULL OR d.stopped_at > now() - interval '1 day';
	IF known IS NOT NULL AND NOT (source = ANY (known) AND target = ANY (known)) THEN
		RAISE EXCEPTION 'imgsync.start_migration: no imgsyncd has a store named %',
			imgsync.shown(CASE WHEN source = ANY (known) THEN target ELSE source END)
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'the daemons'' stores: ' || array_to_string(known, ', ');
	END IF;
	IF mode IS NULL OR mode NOT IN ('move', 'copy') THEN
		RAISE EXCEPTION 'imgsync.start_migration: mode must be move or copy, not %',
			imgsync.shown(mode) USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF jsonb_typeof(o) <> 'object' THEN
		RAISE EXCEPTION 'imgsync.start_migration: options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k IN SELECT jsonb_object_keys(o) LOOP
		IF k NOT IN ('dry_run', 'prefix', 'verify', 'follow') THEN
			RAISE EXCEPTION 'imgsync.start_migration: unknown option %', imgsync.shown(k)
				USING ERRCODE = 'invalid_parameter_value',
				      HINT = 'options are dry_run, prefix, verify, follow';
		END IF;
		IF k <> 'prefix' AND jsonb_typeof(o -> k) <> 'boolean' THEN
			RAISE EXCEPTION 'imgsync.start_migration: option % must be true or false',
				imgsync.shown(k)
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;
	IF o ? 'prefix' AND jsonb_typeof(o -> 'prefix') <> 'string' THEN
		RAISE EXCEPTION 'imgsync.start_migration: option prefix must be a string'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF EXISTS (SELECT 1 FROM imgsync.migrations m
		    WHERE m.state IN ('pending', 'running', 'paused')
		      AND (m.source IN (start_migration.source, start_migration.target)
			   OR m.target IN (start_migration.source, start_migration.target))) THEN
		RAISE EXCEPTION 'imgsync.start_migration: a migration involving % or % is under way',
			imgsync.shown(source), imgsync.shown(target)
			USING ERRCODE = 'object_in_use',
			      HINT = 'see imgsync.migration_status; cancel it or wait for it to end';
	END IF;
	INSERT INTO imgsync.migrations AS m (source, target, mode, dry_run, prefix, verify,
					     follow, started_at, total)
	VALUES (start_migration.source, start_migration.target, start_migration.mode,
		coalesce((o ->> 'dry_run')::boolean, false), coalesce(o ->> 'prefix', ''),
		coalesce((o ->> 'verify')::boolean, false),
		coalesce((o ->> 'follow')::boolean, false), now(),
		(SELECT count(*) FROM imgsync.images i
		  WHERE NOT i.deleted AND starts_with(i.key, coalesce(o ->> 'prefix', ''))))
	RETURNING m.id INTO id;
	PERFORM imgsync.wake();
	RETURN id;
END
$$;

-- The images a migration still has to take from its source (a follow
-- migration's sweep; nothing left means it has caught up).  Inlined by the
-- planner: the index on origin serves it.
CREATE FUNCTION imgsync.at_source(m imgsync.migrations) RETURNS SETOF imgsync.images
LANGUAGE sql STABLE AS $$
	SELECT i.* FROM imgsync.images i
	 WHERE i.origin = m.source AND NOT i.deleted AND starts_with(i.key, m.prefix)
	   AND (m.mode = 'move' OR NOT (m.target = ANY (i.stores)))
$$;

-- A migration with nothing left: done, or failed if some images failed.
CREATE FUNCTION imgsync.finish_migration(mid bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE imgsync.migrations
	   SET state = CASE WHEN failed > 0 THEN 'failed' ELSE 'done' END,
	       finished_at = now(), updated_at = now(), objects_per_s = 0, bytes_per_s = 0,
	       last_error = CASE WHEN failed > 0 THEN
			       format('%s image(s) failed: see imgsync.migration_failures', failed)
			    ELSE last_error END
	 WHERE id = mid
$$;

-- A migration that ends (done, failed or cancelled) is announced on the
-- channel "<channel>_migrations" with its id as the payload: imgsyncctl
-- migrate --wait returns as it happens instead of at its next look.
-- (The channel's name cut to fit PostgreSQL's 63 bytes with the suffix.)
CREATE FUNCTION imgsync.migrations_channel() RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT left(value, 52) || '_migrations' FROM imgsync.settings WHERE name = 'channel'
$$;
CREATE FUNCTION imgsync.migration_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify(imgsync.migrations_channel(), NEW.id::text);
	RETURN NULL;
END
$$;
CREATE TRIGGER migration_ended AFTER UPDATE OF state ON imgsync.migrations FOR EACH ROW
	WHEN (NEW.state IN ('done', 'failed', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
	EXECUTE FUNCTION imgsync.migration_ended();

-- Hand the next keys of running migrations to the queue, at most `win`
-- queued per migration at once; the cursor moves in the same transaction.
-- Finishes migrations with nothing left.  Returns the number of migrations
-- still running, so a daemon knows whether to call again.
CREATE FUNCTION imgsync.advance_migrations(win int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	m imgsync.migrations;
	room bigint;
	n bigint := 0;
	last text;
	cnt bigint;
	keys text[];
BEGIN
	FOR m IN SELECT * FROM imgsync.migrations
		  WHERE state = 'running' ORDER BY id FOR UPDATE SKIP LOCKED LOOP
		-- a source copy's delete put off for a put() that may come (see
		-- mig_copied() in daemon/sync.c) takes no room: an application
		-- writing many images that way would stall the scan for as long
		room := win - (SELECT count(*) FROM imgsync.work w WHERE w.migration = m.id
				  AND NOT (w.step = 'delete-source' AND w.not_before > now()));
		IF NOT m.scanned AND room > 0 THEN
			-- keys are never empty: '' starts the index scan at the first
			SELECT array_agg(i.key ORDER BY i.key) INTO keys
			  FROM (SELECT i.key FROM imgsync.images i
				 WHERE i.key > coalesce(m.cursor, '')
				   AND starts_with(i.key, m.prefix) AND NOT i.deleted
				 ORDER BY i.key
				 LIMIT room) i;
			cnt := coalesce(cardinality(keys), 0);
			last := keys[cnt];
			PERFORM imgsync.queue_migration(keys, m.id) WHERE cnt > 0;
			n := n + cnt;
			UPDATE imgsync.migrations
			   SET cursor = coalesce(last, cursor), scanned = cnt < room,
			       updated_at = now()
			 WHERE id = m.id;
			m.scanned := cnt < room;
			room := room - cnt;
		END IF;
		-- follow, once scanned: whatever is (again) in the source and has
		-- no work queued is queued; an index on origin keeps it cheap
		IF m.scanned AND m.follow AND NOT m.dry_run AND room > 0 THEN
			SELECT array_agg(s.key) INTO keys
			  FROM (SELECT i.key FROM imgsync.at_source(m) i
				 WHERE NOT EXISTS (SELECT 1 FROM imgsync.work w WHERE w.key = i.key)
				 ORDER BY i.key LIMIT room) s;
			cnt := coalesce(cardinality(keys), 0);
			PERFORM imgsync.queue_migration(keys, m.id) WHERE cnt > 0;
			n := n + cnt;
		END IF;
		IF m.scanned AND NOT m.follow
		   AND NOT EXISTS (SELECT 1 FROM imgsync.work w WHERE w.migration = m.id
				   AND w.state = 'pending') THEN
			PERFORM imgsync.finish_migration(m.id);
		END IF;
	END LOOP;
	RETURN (SELECT count(*) FROM imgsync.migrations WHERE state = 'running');
END
$$;

CREATE FUNCTION imgsync.migration_state(mid bigint, want text, allowed text[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	cur text;
BEGIN
	SELECT state INTO cur FROM imgsync.migrations WHERE id = mid FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'imgsync: there is no migration %', mid
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT cur = ANY (allowed) THEN
		RAISE EXCEPTION 'imgsync: migration % is %, it cannot become %', mid, cur, want
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE imgsync.migrations
	   SET state = want, updated_at = now(),
	       finished_at = CASE WHEN want IN ('cancelled') THEN now() END
	 WHERE id = mid;
END
$$;

CREATE FUNCTION imgsync.pause_migration(id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	SELECT imgsync.migration_state(id, 'paused', ARRAY['pending', 'running'])
$$;

CREATE FUNCTION imgsync.resume_migration(id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	SELECT imgsync.migration_state(id, 'running', ARRAY['paused']);
	SELECT imgsync.wake();
$$;

-- Stops handing out keys; items in flight finish their step, so every
-- image is in exactly one verified place, or both.  Duties not started
-- are dropped (a put or remove pending for the same key stays).
-- Ending a follow migration that has caught up (scanned to the end, no
-- duty left) is how it finishes: it becomes done, not cancelled.
CREATE FUNCTION imgsync.cancel_migration(id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	m imgsync.migrations;
BEGIN
	SELECT * INTO m FROM imgsync.migrations WHERE migrations.id = cancel_migration.id
	   FOR UPDATE;
	IF FOUND AND m.follow AND m.scanned AND m.state = 'running'
	   AND NOT EXISTS (SELECT 1 FROM imgsync.work w WHERE w.migration = m.id)
	   AND NOT EXISTS (SELECT 1 FROM imgsync.at_source(m)) THEN
		PERFORM imgsync.finish_migration(m.id);
		RETURN;
	END IF;
	PERFORM imgsync.migration_state(id, 'cancelled',
					ARRAY['pending', 'running', 'paused', 'failed']);
	DELETE FROM imgsync.work w
	 WHERE w.migration = cancel_migration.id AND w.op = 'migrate'
	   AND (w.lease_until IS NULL OR w.lease_until < now());
	UPDATE imgsync.work w SET migration = NULL, step = NULL
	 WHERE w.migration = cancel_migration.id
	   AND (w.lease_until IS NULL OR w.lease_until < now());
END
$$;

CREATE FUNCTION imgsync.retry_failed(id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	n bigint;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM imgsync.migrations m WHERE m.id = retry_failed.id) THEN
		RAISE EXCEPTION 'imgsync.retry_failed: there is no migration %', retry_failed.id
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	UPDATE imgsync.work w SET state = 'pending', attempts = 0, not_before = now(),
	       updated_at = now()
	 WHERE w.migration = retry_failed.id AND w.state = 'dead';
	GET DIAGNOSTICS n = ROW_COUNT;
	UPDATE imgsync.migrations m
	   SET failed = greatest(m.failed - n, 0), state = 'running', finished_at = NULL,
	       last_error = NULL, updated_at = now()
	 WHERE m.id = retry_failed.id AND (n > 0 OR m.state = 'failed');
	PERFORM imgsync.wake();
	RETURN n;
END
$$;

CREATE VIEW imgsync.migration_status AS
SELECT id, source, target, mode, state,
       -- follow adds images written after the start
       greatest(total, done + failed + skipped) AS total, done, failed, skipped, bytes_done,
       -- while running, the recent rate; once ended, the average of the run
       round((CASE WHEN finished_at IS NULL THEN r.objects
		   ELSE done / greatest(extract(epoch FROM finished_at - started_at), 0.001)
	      END)::numeric, 1) AS objects_per_s,
       round((CASE WHEN finished_at IS NULL THEN r.bytes
		   ELSE bytes_done / greatest(extract(epoch FROM finished_at - started_at), 0.001)
	      END)::numeric) AS bytes_per_s,
       CASE WHEN state = 'running' AND r.objects > 0 AND total > done + failed + skipped
	    THEN make_interval(secs => (total - done - failed - skipped) / r.objects)
       END AS eta,
       started_at, updated_at, finished_at, last_error,
       dry_run, prefix, verify, follow
  FROM imgsync.migrations m,
       -- a rate not sampled for 10 s is stale: nothing is finishing
       LATERAL (SELECT CASE WHEN m.sample_at > now() - interval '10 seconds'
			    THEN m.objects_per_s ELSE 0 END AS objects,
		       CASE WHEN m.sample_at > now() - interval '10 seconds'
			    THEN m.bytes_per_s ELSE 0 END AS bytes) r;

CREATE VIEW imgsync.migration_failures AS
SELECT w.migration AS migration, w.key, w.attempts, w.last_error,
       w.updated_at AS last_attempt_at
  FROM imgsync.work w
 WHERE w.migration IS NOT NULL AND w.state = 'dead';

-- The queue, with migration duties.

-- Lease up to n ready items.  SKIP LOCKED lets daemons claim side by side;
-- an item whose lease expired (its daemon died) is ready again.  Each claim
-- gets a fresh token: a result or a renewal for an older claim of the same
-- key (even one of a deleted and re-created row) never matches it.  With
-- each item comes its migration duty; a paused migration holds its keys.
-- Planned once per session, by index (see complete_all()).
CREATE FUNCTION imgsync.claim(daemon bigint, n int, lease interval)
RETURNS TABLE (key text, op text, gen bigint, attempts int, token bigint, origin text,
	       mimetype text, attrs jsonb, version bigint, stores text[], deleted boolean,
	       size bigint, changed_at double precision, claimed_at timestamptz,
	       migration bigint, step text, m_source text, m_target text, m_mode text,
	       m_dry_run boolean, m_verify boolean, source_tag text, stale text[],
	       stale_until double precision, strays text)
LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off
SET jit = off AS $$
#variable_conflict use_column
DECLARE
	-- the ready rows, oldest first, fetched and locked one at a time: a
	-- plan made once per session, for a fast start, where a LIMIT n made
	-- PostgreSQL plan the query anew for each claim (a third of its cost)
	ready CURSOR FOR
		SELECT w.key FROM imgsync.work w
		  LEFT JOIN imgsync.migrations m ON m.id = w.migration
		 WHERE w.state = 'pending' AND w.not_before <= now()
		   AND (w.lease_until IS NULL OR w.lease_until < now())
		   AND (m.id IS NULL OR m.state <> 'paused')
		 ORDER BY w.not_before
		 FOR UPDATE OF w SKIP LOCKED;
	ks text[] := '{}';
	-- the claim's time, taken once its rows are locked: the transaction's
	-- start (now()) can precede the commit of the result that freed a row
	-- (exchange() writes results before it claims), and the attempt log
	-- would then show two claims of one key at once
	t timestamptz;
BEGIN
	IF n > 0 THEN
		FOR r IN ready LOOP
			ks := ks || r.key;
			EXIT WHEN cardinality(ks) >= n;
		END LOOP;
	END IF;
	IF cardinality(ks) = 0 THEN
		RETURN;
	END IF;
	t := clock_timestamp();
	RETURN QUERY
	WITH u AS (
		UPDATE imgsync.work w
		   SET lease_owner = daemon, lease_until = t + lease,
		       lease_token = nextval('imgsync.lease_tokens'),
		       attempts = w.attempts + 1, updated_at = now()
		 WHERE w.key = ANY (ks)
		RETURNING w.key, w.op, w.gen, w.attempts, w.lease_token, w.migration, w.step,
			  w.source_tag, w.stale, w.stale_until, w.strays)
	SELECT u.key, u.op, u.gen, u.attempts, u.lease_token, i.origin, i.mimetype, i.attrs,
	       i.version, i.stores, coalesce(i.deleted, true), i.size,
	       -- a remove: when it was removed; otherwise when its home copy was written
	       extract(epoch FROM CASE WHEN i.deleted THEN i.updated_at ELSE i.home_at END)
		   ::double precision, t,
	       m.id, u.step, m.source, m.target, m.mode, m.dry_run, m.verify, u.source_tag,
	       u.stale, extract(epoch FROM u.stale_until)::double precision,
	       -- "store=tag,...": no JSON parsing in C
	       (SELECT string_agg(s.key || '=' || s.value, ',' ORDER BY s.key)
		  FROM jsonb_each_text(u.strays) s)
	  FROM u LEFT JOIN imgsync.images i ON i.key = u.key
	  LEFT JOIN imgsync.migrations m ON m.id = u.migration AND m.state IN ('running', 'pending');
END
$$;

-- A daemon's round trip when it has results to write and room for more
-- work: the results (complete()), the migrations advanced (when adv_win >
-- 0: advance_migrations()) and up to n items claimed (claim()), in one
-- transaction instead of three.  Rows: the claimed items (key set); results
-- to send again (deferred set, as complete() returns them); one row with
-- running set, the answer of advance_migrations().
CREATE FUNCTION imgsync.exchange(daemon bigint, results jsonb, max_attempts int, n int,
				 lease interval, adv_win int)
RETURNS TABLE (key text, op text, gen bigint, attempts int, token bigint, origin text,
	       mimetype text, attrs jsonb, version bigint, stores text[], deleted boolean,
	       size bigint, changed_at double precision, claimed_at timestamptz,
	       migration bigint, step text, m_source text, m_target text, m_mode text,
	       m_dry_run boolean, m_verify boolean, source_tag text, stale text[],
	       stale_until double precision, strays text, deferred jsonb, running bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	d jsonb;
	r bigint;
BEGIN
	IF results IS NOT NULL THEN
		FOR d IN SELECT * FROM imgsync.complete(daemon, results, max_attempts) LOOP
			deferred := d;
			RETURN NEXT;
		END LOOP;
		deferred := NULL;
	END IF;
	IF adv_win > 0 THEN
		r := imgsync.advance_migrations(adv_win);
		running := r;
		RETURN NEXT;
		running := NULL;
	END IF;
	IF n > 0 THEN
		RETURN QUERY SELECT c.*, NULL::jsonb, NULL::bigint FROM imgsync.claim(daemon, n, lease) c;
	END IF;
END
$$;

-- Migration bookkeeping of a batch's results, one update per migration: a
-- result's "mig" is "done", "skipped" or absent (no migration step was
-- carried out); dead results count as failed.
CREATE FUNCTION imgsync.migration_results(rs jsonb[], deads boolean[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM unnest(rs) x WHERE x ? 'migration') THEN
		RETURN;
	END IF;
	WITH t AS (
		SELECT (u.x ->> 'migration')::bigint AS mid, u.x ->> 'mig' AS what, u.d AS dead,
		       coalesce((u.x ->> 'mig_bytes')::bigint, 0) AS bytes, u.x ->> 'error' AS error,
		       u.i
		  FROM unnest(rs, deads) WITH ORDINALITY AS u(x, d, i)
		 WHERE u.x ? 'migration' AND (u.x ? 'mig' OR u.d)),
	a AS (
		SELECT t.mid, count(*) FILTER (WHERE NOT t.dead AND t.what = 'done') AS done,
		       count(*) FILTER (WHERE NOT t.dead AND t.what = 'skipped') AS skipped,
		       count(*) FILTER (WHERE t.dead) AS failed,
		       coalesce(sum(t.bytes) FILTER (WHERE NOT t.dead AND t.what = 'done'), 0) AS bytes,
		       (array_agg(t.error ORDER BY t.i DESC) FILTER (WHERE t.dead))[1] AS last_error
		  FROM t GROUP BY t.mid)
	UPDATE imgsync.migrations m
	   SET done = m.done + a.done, skipped = m.skipped + a.skipped, failed = m.failed + a.failed,
	       bytes_done = m.bytes_done + a.bytes,
	       last_error = coalesce(a.last_error, m.last_error), updated_at = now()
	  FROM a WHERE m.id = a.mid;
	-- rates over at least two seconds
	UPDATE imgsync.migrations m
	   SET objects_per_s = CASE WHEN m.sample_at IS NULL THEN 0
			       ELSE (m.done - m.sample_done)
				    / extract(epoch FROM now() - m.sample_at) END,
	       bytes_per_s = CASE WHEN m.sample_at IS NULL THEN 0
			     ELSE (m.bytes_done - m.sample_bytes)
				  / extract(epoch FROM now() - m.sample_at) END,
	       sample_at = now(), sample_done = m.done, sample_bytes = m.bytes_done
	 WHERE m.id IN (SELECT (x ->> 'migration')::bigint FROM unnest(rs) x WHERE x ? 'migration')
	   AND (m.sample_at IS NULL OR m.sample_at < now() - interval '2 seconds');
END
$$;

-- Results applied as a set: the whole batch in a few statements (complete()
-- hands them here, or one at a time when the batch cannot go whole).
-- Raises lock_not_available when the application holds one of its rows
-- (NOWAIT: see complete()), and an error on a batch it cannot take as a
-- set (a key twice, a malformed result): complete() then goes result by
-- result.  Returns true when a key became ready again.  Its statements
-- are planned once per session (force_generic_plan): each touches the
-- batch's rows by key, and the plans PostgreSQL otherwise made anew for
-- each batch cost more than carrying them out.  Planned once, a plan must
-- also suit the tables as they grow: one made while they were nearly empty
-- (a new installation, a queue drained) scans them whole, and keeps doing
-- so at every batch until an ANALYZE; enable_seqscan = off makes it look
-- rows up by key, which is right at any size.  A table with no index to
-- use (imgsync.watched) is still scanned, at a cost the planner then puts
-- so high that it would compile the statement (JIT) at every call: jit =
-- off.
CREATE FUNCTION imgsync.complete_all(daemon bigint, results jsonb, max_attempts int)
RETURNS boolean LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET jit = off AS $$
DECLARE
	keys text[];
	acts text[];
	moved text[];
	twice boolean; -- a key named twice, or a result with none
	removes boolean; -- a removal's result in the batch
	migrating boolean; -- a result with migration bookkeeping
BEGIN
	-- what the batch holds: the statements that could not touch a row of
	-- it are skipped (each costs its executor's start-up)
	SELECT array_agg(j.key), count(DISTINCT j.key) <> count(*), bool_or(j.op = 'remove'),
	       bool_or(j.migration IS NOT NULL)
	  INTO keys, twice, removes, migrating
	  FROM jsonb_to_recordset(results) AS j(key text, op text, migration bigint);
	IF keys IS NULL THEN
		RETURN false;
	END IF;
	IF twice THEN
		RAISE EXCEPTION 'a batch naming a key twice goes result by result'
			USING ERRCODE = 'cardinality_violation';
	END IF;
	-- NOWAIT: a row the application holds is not waited for (see complete())
	PERFORM 1 FROM imgsync.images i WHERE i.key = ANY (keys) FOR UPDATE NOWAIT;
	PERFORM 1 FROM imgsync.work w WHERE w.key = ANY (keys) FOR UPDATE NOWAIT;

	-- what each result does, decided on the rows as locked: a lost lease
	-- changes nothing but the attempt log; an image written again meanwhile
	-- (generation or version moved on) starts afresh, keeping its
	-- migration duty from the copy step; a migration that took the key over
	-- while the claim was in flight gets its duty done next; a move's copy
	-- becomes its delete-source step (the source copy goes only once the
	-- target's is recorded); a failure is retried, or dead at max_attempts
	-- (store-wide trouble does not count)
	SELECT array_agg(CASE
		WHEN w.key IS NULL OR w.lease_token IS DISTINCT FROM j.token THEN 'lost'
		WHEN w.gen <> j.gen OR coalesce(i.version <> j.version, false) THEN 'restart'
		WHEN j.ok AND w.migration IS NOT NULL AND j.migration IS DISTINCT FROM w.migration
		     AND m.state IN ('pending', 'running', 'paused') THEN 'takeover'
		WHEN j.ok AND j.next_step IS NOT NULL AND w.migration IS NOT NULL THEN 'next'
		WHEN j.ok THEN 'done'
		WHEN coalesce(j.permanent, false)
		     OR (coalesce(j.counted, true) AND w.attempts >= max_attempts) THEN 'dead'
		ELSE 'retry' END ORDER BY a.n)
	  INTO acts
	  FROM unnest(keys) WITH ORDINALITY AS a(key, n)
	  JOIN jsonb_to_recordset(results) AS j(key text, gen bigint, token bigint, ok boolean,
						version bigint, migration bigint, next_step text,
						permanent boolean, counted boolean) ON j.key = a.key
	  LEFT JOIN imgsync.work w ON w.key = a.key
	  LEFT JOIN imgsync.images i ON i.key = a.key
	  LEFT JOIN imgsync.migrations m ON m.id = w.migration;

	-- the catalog: the stores that got a copy (even when others failed), a
	-- moved image's new home, a deleted image gone
	WITH j AS (
		SELECT r.*
		  FROM unnest(keys, acts) AS a(key, act)
		  JOIN jsonb_to_recordset(results) AS r(key text, op text, version bigint, stores text[],
							unstore text, home text, size bigint,
							checksum text, url text) ON r.key = a.key
		 WHERE a.act <> 'lost' AND r.op IN ('put', 'migrate')),
	u AS (
		UPDATE imgsync.images i
		   SET stores = ARRAY(SELECT DISTINCT s FROM unnest(i.stores || j.stores) s
			      WHERE s IS DISTINCT FROM j.unstore ORDER BY s),
		       origin = coalesce(j.home, i.origin),
		       home_at = CASE WHEN j.home IS NOT NULL THEN now() ELSE i.home_at END,
		       size = coalesce(j.size, i.size),
		       checksum = coalesce(j.checksum, i.checksum),
		       url = coalesce(j.url, i.url),
		       updated_at = now()
		  FROM j
		 WHERE i.key = j.key AND i.version = j.version AND NOT i.deleted
		RETURNING i.key, j.home IS NOT NULL AND j.url IS NOT NULL AS moved)
	SELECT array_agg(u.key) FILTER (WHERE u.moved) INTO moved FROM u;
	IF removes THEN
		DELETE FROM imgsync.images i
		 USING unnest(keys, acts) AS a(key, act),
		       jsonb_to_recordset(results) AS r(key text, op text, ok boolean, version bigint)
		 WHERE r.key = a.key AND a.act <> 'lost' AND r.op = 'remove' AND r.ok
		   AND i.key = a.key AND i.version = r.version AND i.deleted;
	END IF;
	-- a move gave images a new home: the application's links follow
	IF moved IS NOT NULL AND EXISTS (SELECT 1 FROM imgsync.watched WHERE url_column IS NOT NULL) THEN
		PERFORM imgsync.apply_url(k) FROM unnest(moved) k;
	END IF;

	-- the queue
	IF 'done' = ANY (acts) THEN
		DELETE FROM imgsync.work w
		 USING unnest(keys, acts) AS a(key, act)
		 WHERE w.key = a.key AND a.act = 'done';
	END IF;
	IF acts && ARRAY['restart', 'takeover', 'next', 'retry', 'dead'] THEN
		UPDATE imgsync.work w
		   SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
		       step = CASE a.act WHEN 'restart' THEN CASE WHEN w.migration IS NOT NULL THEN 'copy' END
					 WHEN 'takeover' THEN 'copy' WHEN 'next' THEN r.next_step
					 ELSE w.step END,
		       -- a restart after the delete step took the source copy (the
		       -- application's put() began meanwhile) keeps its tag: the copy
		       -- step that follows may find the source gone, and the copy in
		       -- the target is then the image (mig_source_moved() in sync.c)
		       source_tag = CASE a.act WHEN 'next' THEN r.src_tag
					       WHEN 'restart' THEN r.deleted_tag WHEN 'takeover' THEN NULL
					       ELSE w.source_tag END,
		       -- the superseded copies are gone once the put's stage succeeded
		       stale = CASE WHEN a.act IN ('takeover', 'next') THEN NULL ELSE w.stale END,
		       stale_until = CASE WHEN a.act IN ('takeover', 'next') THEN NULL
					  ELSE w.stale_until END,
		       -- what an attempt wrote for a version written again meanwhile
		       -- (the catalog looked at for restarts only: not on the hot path),
		       -- and what it wrote that is not the version it copied (torn:
		       -- the source written again while read), which the next
		       -- attempt replaces
		       strays = CASE WHEN a.act IN ('takeover', 'next') THEN NULL
				     WHEN r.torn IS NULL AND (a.act <> 'restart' OR r.wrote IS NULL)
				     THEN w.strays
				     ELSE nullif(coalesce(w.strays, '{}')
					  || CASE WHEN a.act = 'restart' AND r.wrote IS NOT NULL
						       AND (SELECT i.version FROM imgsync.images i
							     WHERE i.key = a.key) IS DISTINCT FROM r.version
						  THEN r.wrote ELSE '{}' END
					  || coalesce(r.torn, '{}'), '{}')
				     END,
		       op = CASE WHEN a.act IN ('takeover', 'next') THEN 'migrate' ELSE w.op END,
		       attempts = CASE WHEN a.act IN ('takeover', 'next') THEN 0
				       WHEN a.act IN ('retry', 'dead') AND NOT coalesce(r.counted, true)
				       THEN greatest(w.attempts - 1, 0)
				       ELSE w.attempts END,
		       -- a next step may come with a wait (a move's source copy
		       -- written moments ago: see mig_copied() in daemon/sync.c);
		       -- one without keeps its place in the queue, ahead of keys not
		       -- yet begun, and the update stays HOT (not_before is indexed)
		       not_before = CASE WHEN a.act = 'takeover' THEN now()
					 WHEN a.act = 'next' AND coalesce(r.delay, 0) > 0
					 THEN now() + make_interval(secs => r.delay)
					 WHEN a.act = 'next' THEN least(w.not_before, now())
					 WHEN a.act IN ('retry', 'dead')
					 THEN now() + make_interval(secs => coalesce(r.delay, 1))
					 ELSE w.not_before END,
		       last_error = CASE WHEN a.act IN ('takeover', 'next') THEN NULL
					 WHEN a.act IN ('retry', 'dead') THEN r.error
					 ELSE w.last_error END,
		       state = CASE a.act WHEN 'dead' THEN 'dead' WHEN 'retry' THEN 'pending' ELSE w.state END,
		       updated_at = CASE WHEN a.act = 'restart' THEN w.updated_at ELSE now() END
		  FROM unnest(keys, acts) AS a(key, act)
		  JOIN jsonb_to_recordset(results) AS r(key text, next_step text, src_tag text, counted boolean,
							delay float8, error text, version bigint,
							wrote jsonb, torn jsonb, deleted_tag text) ON r.key = a.key
		 WHERE w.key = a.key AND a.act IN ('restart', 'takeover', 'next', 'retry', 'dead');
	END IF;

	-- the attempt log and the migrations' counters
	INSERT INTO imgsync.attempts (key, gen, daemon, started_at, ok, error)
	SELECT r.key, r.gen, daemon, r.started_at, r.ok, r.error
	  FROM jsonb_to_recordset(results) AS r(key text, gen bigint, started_at timestamptz,
						ok boolean, error text);
	IF migrating THEN
		PERFORM imgsync.migration_results(
			array_agg(e.x ORDER BY a.n), array_agg(a.act = 'dead' ORDER BY a.n))
		  FROM unnest(keys, acts) WITH ORDINALITY AS a(key, act, n)
		  JOIN jsonb_array_elements(results) AS e(x) ON e.x ->> 'key' = a.key
		 WHERE a.act IN ('takeover', 'next', 'done', 'dead')
		HAVING count(*) > 0;
	END IF;
	RETURN 'restart' = ANY (acts) OR 'takeover' = ANY (acts) OR 'next' = ANY (acts);
END
$$;

-- With follow, a put into a migration's source after the cursor passed
-- the key queues the key for that migration too.
CREATE FUNCTION imgsync.enqueue(k text, what text) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	INSERT INTO imgsync.work AS w (key, op) VALUES (k, what)
	ON CONFLICT ON CONSTRAINT work_pkey DO UPDATE
	   SET op = CASE WHEN EXCLUDED.op = 'put' AND w.op = 'migrate' THEN 'put'
			 ELSE EXCLUDED.op END,
	       gen = w.gen + 1, state = 'pending', attempts = 0,
	       not_before = now(), last_error = NULL, updated_at = now(),
	       step = CASE WHEN w.migration IS NOT NULL THEN 'copy' END, source_tag = NULL;
	-- No lock is taken on the migration here: an application's put never
	-- waits for imgsync.  A key this misses (its put racing an advance
	-- whose scan could not see it yet) is found by the follow sweep in
	-- advance_migrations().
	UPDATE imgsync.work w
	   SET migration = m.id, step = 'copy', source_tag = NULL
	  FROM imgsync.migrations m, imgsync.images i
	 WHERE what = 'put' AND w.key = k AND w.migration IS NULL AND i.key = k
	   AND m.follow AND m.state IN ('running', 'paused') AND i.origin = m.source
	   AND starts_with(k, m.prefix) AND m.cursor IS NOT NULL
	   AND (k <= m.cursor OR m.scanned);
	PERFORM imgsync.wake();
END
$$;

-- The admin commands as a NOTIFY payload, for a psql session with no
-- function call at hand:
--   NOTIFY imgsync, '{"command":"migrate","source":"local","target":"cloud","mode":"move"}'
--   NOTIFY imgsync, '{"command":"pause","id":3}'   (also resume, cancel, retry_failed)
-- A daemon passes the payload here as a bound parameter; what is wrong with
-- it is raised as an error, which the daemon logs and records as an event.
-- Options of migrate may be given in "options" or at the top level.
CREATE FUNCTION imgsync.command(payload text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	j jsonb;
	cmd text;
	mid bigint;
	opts jsonb;
	k text;
BEGIN
	IF octet_length(payload) > 4096 THEN
		RAISE EXCEPTION 'a command is at most 4096 bytes, this one %', octet_length(payload)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	BEGIN
		j := payload::jsonb;
	EXCEPTION WHEN others THEN
		RAISE EXCEPTION 'not a JSON command: %', regexp_replace(SQLERRM, '[\x01-\x1f\x7f-\x9f]', '?', 'g')
			USING ERRCODE = 'invalid_parameter_value';
	END;
	IF jsonb_typeof(j) <> 'object' OR jsonb_typeof(j -> 'command') IS DISTINCT FROM 'string' THEN
		RAISE EXCEPTION 'a command is a JSON object with a "command" string'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	cmd := j ->> 'command';
	IF cmd = 'migrate' THEN
		FOR k IN SELECT jsonb_object_keys(j) LOOP
			IF k NOT IN ('command', 'source', 'target', 'mode', 'options', 'dry_run', 'prefix',
				     'verify', 'follow') THEN
				RAISE EXCEPTION 'migrate: unknown field %', imgsync.shown(k)
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		END LOOP;
		IF jsonb_typeof(j -> 'source') IS DISTINCT FROM 'string'
		   OR jsonb_typeof(j -> 'target') IS DISTINCT FROM 'string'
		   OR (j ? 'mode' AND jsonb_typeof(j -> 'mode') <> 'string') THEN
			RAISE EXCEPTION 'migrate: "source", "target" (and "mode") are strings'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF j ? 'options' AND jsonb_typeof(j -> 'options') <> 'object' THEN
			RAISE EXCEPTION 'migrate: "options" is an object'
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		opts := coalesce(j -> 'options', '{}') ||
			(SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM jsonb_each(j)
			  WHERE key IN ('dry_run', 'prefix', 'verify', 'follow'));
		mid := imgsync.start_migration(j ->> 'source', j ->> 'target',
					       coalesce(j ->> 'mode', 'move'), opts);
		RETURN format('migration %s started: %s from %s to %s', mid,
			      coalesce(j ->> 'mode', 'move'), j ->> 'source', j ->> 'target');
	ELSIF cmd IN ('pause', 'resume', 'cancel', 'retry_failed') THEN
		FOR k IN SELECT jsonb_object_keys(j) LOOP
			IF k NOT IN ('command', 'id') THEN
				RAISE EXCEPTION '%: unknown field %', cmd, imgsync.shown(k)
					USING ERRCODE = 'invalid_parameter_value';
			END IF;
		END LOOP;
		IF jsonb_typeof(j -> 'id') IS DISTINCT FROM 'number' OR (j ->> 'id') !~ '^[0-9]+$' THEN
			RAISE EXCEPTION '%: "id" is the number of a migration', cmd
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		mid := (j ->> 'id')::bigint;
		IF cmd = 'pause' THEN
			PERFORM imgsync.pause_migration(mid);
		ELSIF cmd = 'resume' THEN
			PERFORM imgsync.resume_migration(mid);
		ELSIF cmd = 'cancel' THEN
			PERFORM imgsync.cancel_migration(mid);
		ELSE
			PERFORM imgsync.retry_failed(mid);
		END IF;
		RETURN format('migration %s: %s done', mid, cmd);
	END IF;
	RAISE EXCEPTION 'unknown command %; commands are migrate, pause, resume, cancel, retry_failed',
		imgsync.shown(left(cmd, 40)) USING ERRCODE = 'invalid_parameter_value';
END
$$;
