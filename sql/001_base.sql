-- imgsync schema, version 1: the catalog, the work queue, daemons, and the
-- application interface (put, remove, url, watch_table).
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

CREATE SCHEMA IF NOT EXISTS imgsync;

CREATE TABLE imgsync.settings (
	name text PRIMARY KEY,
	value text NOT NULL
);
INSERT INTO imgsync.settings (name, value) VALUES ('channel', 'imgsync');

CREATE FUNCTION imgsync.valid_key(k text) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT octet_length(k) BETWEEN 1 AND 1024
	   AND k !~ '[\x01-\x1f\x7f-\x9f]'
	   AND left(k, 1) <> '/'
	   AND right(k, 1) <> '/'
	   AND k !~ '//'
	   AND k !~ '(^|/)\.\.?(/|$)'
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
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE imgsync.work (
	key text PRIMARY KEY,
	op text NOT NULL CHECK (op IN ('put', 'remove')),
	gen bigint NOT NULL DEFAULT 1,           -- grows with every put/remove of the key
	state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
	attempts int NOT NULL DEFAULT 0,
	not_before timestamptz NOT NULL DEFAULT now(), -- backoff
	lease_owner bigint,                      -- imgsync.daemons.id
	lease_token bigint,                      -- names one claim: results and renewals echo it
	lease_until timestamptz,
	last_error text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_ready ON imgsync.work (not_before) WHERE state = 'pending';
CREATE INDEX work_leased ON imgsync.work (lease_owner) WHERE lease_owner IS NOT NULL;
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
	started_at timestamptz NOT NULL DEFAULT now(),
	heartbeat_at timestamptz NOT NULL DEFAULT now(),
	state text NOT NULL DEFAULT 'starting',
	in_flight int NOT NULL DEFAULT 0,
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
LANGUAGE sql VOLATILE AS $$
	SELECT pg_notify((SELECT value FROM imgsync.settings WHERE name = 'channel'), '')
$$;

CREATE FUNCTION imgsync.enqueue(k text, what text) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.work AS w (key, op) VALUES (k, what)
	ON CONFLICT (key) DO UPDATE
	   SET op = EXCLUDED.op, gen = w.gen + 1, state = 'pending', attempts = 0,
	       not_before = now(), last_error = NULL, updated_at = now();
	SELECT imgsync.wake();
$$;

-- The image `key` has been written (or rewritten) to `store`.
CREATE FUNCTION imgsync.put(key text, store text, mimetype text DEFAULT NULL,
			    attrs jsonb DEFAULT NULL) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF key IS NULL OR NOT imgsync.valid_key(key) THEN
		RAISE EXCEPTION 'imgsync.put: invalid image key %', quote_literal(coalesce(key, 'NULL'))
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'keys are 1 to 1024 bytes of text without control characters, '
				     'leading or trailing "/", "//", "." or ".." segments';
	END IF;
	IF store IS NULL OR store = '' THEN
		RAISE EXCEPTION 'imgsync.put: the store holding % must be named', quote_literal(key)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF attrs IS NOT NULL AND jsonb_typeof(attrs) <> 'object' THEN
		RAISE EXCEPTION 'imgsync.put: attrs must be a JSON object, not %', jsonb_typeof(attrs)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	INSERT INTO imgsync.images AS i (key, origin, mimetype, attrs, stores)
	VALUES (put.key, put.store, coalesce(put.mimetype, put.attrs ->> 'mimetype'), put.attrs,
		ARRAY[put.store])
	ON CONFLICT ON CONSTRAINT images_pkey DO UPDATE
	   SET origin = EXCLUDED.origin, mimetype = EXCLUDED.mimetype, attrs = EXCLUDED.attrs,
	       stores = EXCLUDED.stores, size = NULL, checksum = NULL, deleted = false,
	       version = i.version + 1, updated_at = now();
	PERFORM imgsync.enqueue(put.key, 'put');
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
       CASE WHEN stopped_at IS NOT NULL THEN 'stopped'
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

CREATE FUNCTION imgsync.register_daemon(host text, pid int, version text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.daemons (host, pid, version, state)
	VALUES (register_daemon.host, register_daemon.pid, register_daemon.version, 'running')
	RETURNING id
$$;

-- Lease up to n ready items.  SKIP LOCKED lets daemons claim side by side;
-- an item whose lease expired (its daemon died) is ready again.  Each claim
-- gets a fresh token: a result or a renewal for an older claim of the same
-- key (even one of a deleted and re-created row) never matches it.
CREATE FUNCTION imgsync.claim(daemon bigint, n int, lease interval)
RETURNS TABLE (key text, op text, gen bigint, attempts int, token bigint, origin text,
	       mimetype text, attrs jsonb, version bigint, stores text[], deleted boolean,
	       size bigint, changed_at double precision, claimed_at timestamptz)
LANGUAGE sql VOLATILE AS $$
	WITH c AS (
		SELECT w.key FROM imgsync.work w
		 WHERE w.state = 'pending' AND w.not_before <= now()
		   AND (w.lease_until IS NULL OR w.lease_until < now())
		 ORDER BY w.not_before
		 LIMIT n
		 FOR UPDATE SKIP LOCKED),
	u AS (
		UPDATE imgsync.work w
		   SET lease_owner = daemon, lease_until = now() + lease,
		       lease_token = nextval('imgsync.lease_tokens'),
		       attempts = w.attempts + 1, updated_at = now()
		  FROM c WHERE w.key = c.key
		RETURNING w.key, w.op, w.gen, w.attempts, w.lease_token)
	SELECT u.key, u.op, u.gen, u.attempts, u.lease_token, i.origin, i.mimetype, i.attrs,
	       i.version, i.stores, coalesce(i.deleted, true), i.size,
	       extract(epoch FROM i.updated_at), now()
	  FROM u LEFT JOIN imgsync.images i ON i.key = u.key
$$;

-- One result (see complete()).  Returns whether the key is ready again.
CREATE FUNCTION imgsync.complete_one(daemon bigint, r jsonb, max_attempts int)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	w imgsync.work;
	k text := r ->> 'key';
	g bigint := (r ->> 'gen')::bigint;
	ok boolean := (r ->> 'ok')::boolean;
BEGIN
	INSERT INTO imgsync.attempts (key, gen, daemon, started_at, ok, error)
	VALUES (k, g, daemon, (r ->> 'started_at')::timestamptz, ok, r ->> 'error');
	PERFORM 1 FROM imgsync.images i WHERE i.key = k FOR UPDATE;
	SELECT * INTO w FROM imgsync.work WHERE work.key = k FOR UPDATE;
	IF NOT FOUND OR w.lease_token IS DISTINCT FROM (r ->> 'token')::bigint THEN
		RETURN false; -- this claim's lease was lost; its result changes nothing
	END IF;
	-- a put records the stores that got a copy, even when others failed
	IF r ->> 'op' = 'put' THEN
		UPDATE imgsync.images i
		   SET stores = ARRAY(SELECT DISTINCT s FROM unnest(i.stores || ARRAY(
				SELECT jsonb_array_elements_text(r -> 'stores'))) s ORDER BY s),
		       size = coalesce((r ->> 'size')::bigint, i.size),
		       checksum = coalesce(r ->> 'checksum', i.checksum),
		       updated_at = now()
		 WHERE i.key = k AND i.version = (r ->> 'version')::bigint AND NOT i.deleted;
	ELSIF ok THEN
		DELETE FROM imgsync.images i
		 WHERE i.key = k AND i.version = (r ->> 'version')::bigint AND i.deleted;
	END IF;
	IF w.gen <> g THEN
		-- written again meanwhile: the new generation starts afresh
		UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL, lease_token = NULL
		 WHERE work.key = k;
		RETURN true;
	ELSIF ok THEN
		DELETE FROM imgsync.work WHERE work.key = k;
		RETURN false;
	END IF;
	UPDATE imgsync.work
	   SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
	       last_error = r ->> 'error', updated_at = now(),
	       -- a store-wide trouble (unreachable, 5xx) does not spend attempts
	       attempts = CASE WHEN coalesce((r ->> 'counted')::boolean, true)
			       THEN w.attempts ELSE greatest(w.attempts - 1, 0) END,
	       state = CASE WHEN coalesce((r ->> 'permanent')::boolean, false)
			      OR (coalesce((r ->> 'counted')::boolean, true)
				  AND w.attempts >= max_attempts)
			    THEN 'dead' ELSE 'pending' END,
	       not_before = now() + make_interval(secs => coalesce((r ->> 'delay')::float8, 1))
	 WHERE work.key = k;
	RETURN false;
END
$$;

-- Results of finished items, in one round trip: a JSON array of
-- {key, gen, token, op, ok, error, permanent, counted, delay, version,
--  stores, size, checksum, started_at}.  A result for a claim whose lease
-- was lost changes nothing but the attempt log.  One bad result is
-- recorded as an event and skipped; it does not sink the others.
CREATE FUNCTION imgsync.complete(daemon bigint, results jsonb, max_attempts int)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	r jsonb;
	ready boolean := false;
BEGIN
	FOR r IN SELECT value FROM jsonb_array_elements(results) LOOP
		BEGIN
			ready := imgsync.complete_one(daemon, r, max_attempts) OR ready;
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO imgsync.events (daemon, level, message)
			VALUES (daemon, 'error', left(format('result for %s not recorded: %s',
						   r ->> 'key', SQLERRM), 2000));
		END;
	END LOOP;
	IF ready THEN
		PERFORM imgsync.wake();
	END IF;
END
$$;

-- Liveness and counters; renews the leases of the claims named by tokens
-- and returns those it renewed: a claim missing from the answer has lost
-- its lease and must be dropped at once.
CREATE FUNCTION imgsync.heartbeat(daemon bigint, tokens bigint[], state text, in_flight int,
				  objects_done bigint, bytes_done bigint, lease interval)
RETURNS SETOF bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	UPDATE imgsync.daemons d
	   SET heartbeat_at = now(), state = heartbeat.state, in_flight = heartbeat.in_flight,
	       objects_done = heartbeat.objects_done, bytes_done = heartbeat.bytes_done
	 WHERE d.id = daemon;
	DELETE FROM imgsync.attempts WHERE finished_at < now() - interval '7 days';
	RETURN QUERY
	UPDATE imgsync.work w SET lease_until = now() + lease
	 WHERE w.lease_owner = daemon AND w.lease_token = ANY (tokens)
	RETURNING w.lease_token;
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
