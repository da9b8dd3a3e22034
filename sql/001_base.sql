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
	lease_until timestamptz,
	last_error text,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX work_ready ON imgsync.work (not_before) WHERE state = 'pending';

-- Every attempt, for operators (and for tests that prove no key was worked
-- by two daemons at once).  Trimmed by the daemons to recent history.
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

CREATE FUNCTION imgsync.register_daemon(host text, pid int, version text) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.daemons (host, pid, version, state)
	VALUES (register_daemon.host, register_daemon.pid, register_daemon.version, 'running')
	RETURNING id
$$;

-- Lease up to n ready items.  SKIP LOCKED lets daemons claim side by side;
-- an item whose lease expired (its daemon died) is ready again.
CREATE FUNCTION imgsync.claim(daemon bigint, n int, lease interval)
RETURNS TABLE (key text, op text, gen bigint, attempts int, origin text, mimetype text,
	       attrs jsonb, version bigint, stores text[], deleted boolean,
	       claimed_at timestamptz)
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
		       attempts = w.attempts + 1, updated_at = now()
		  FROM c WHERE w.key = c.key
		RETURNING w.key, w.op, w.gen, w.attempts)
	SELECT u.key, u.op, u.gen, u.attempts, i.origin, i.mimetype, i.attrs, i.version,
	       i.stores, coalesce(i.deleted, true), now()
	  FROM u LEFT JOIN imgsync.images i ON i.key = u.key
$$;

-- Results of finished items, in one round trip: a JSON array of
-- {key, gen, op, ok, error, permanent, delay, version, stores, size,
--  checksum, started_at}.  A result for an item whose lease this daemon no
-- longer holds changes nothing but the attempt log.
CREATE FUNCTION imgsync.complete(daemon bigint, results jsonb, max_attempts int)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	r jsonb;
	w imgsync.work;
	k text;
	g bigint;
BEGIN
	FOR r IN SELECT value FROM jsonb_array_elements(results) LOOP
		k := r ->> 'key';
		g := (r ->> 'gen')::bigint;
		INSERT INTO imgsync.attempts (key, gen, daemon, started_at, ok, error)
		VALUES (k, g, daemon, (r ->> 'started_at')::timestamptz, (r ->> 'ok')::boolean,
			r ->> 'error');
		SELECT * INTO w FROM imgsync.work WHERE work.key = k FOR UPDATE;
		CONTINUE WHEN NOT FOUND OR w.lease_owner IS DISTINCT FROM daemon;
		-- a put records the stores that got a copy, even when others failed
		IF r ->> 'op' = 'put' OR (r ->> 'ok')::boolean THEN
			IF r ->> 'op' = 'put' THEN
				UPDATE imgsync.images i
				   SET stores = ARRAY(SELECT DISTINCT s FROM unnest(i.stores || ARRAY(
						SELECT jsonb_array_elements_text(r -> 'stores'))) s ORDER BY s),
				       size = coalesce((r ->> 'size')::bigint, i.size),
				       checksum = coalesce(r ->> 'checksum', i.checksum),
				       updated_at = now()
				 WHERE i.key = k AND i.version = (r ->> 'version')::bigint
				   AND NOT i.deleted;
			ELSE
				DELETE FROM imgsync.images i
				 WHERE i.key = k AND i.version = (r ->> 'version')::bigint AND i.deleted;
			END IF;
		END IF;
		IF w.gen <> g THEN
			-- written again meanwhile: the new generation starts afresh
			UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL
			 WHERE work.key = k;
		ELSIF (r ->> 'ok')::boolean THEN
			DELETE FROM imgsync.work WHERE work.key = k;
		ELSE
			UPDATE imgsync.work
			   SET lease_owner = NULL, lease_until = NULL, last_error = r ->> 'error',
			       updated_at = now(),
			       state = CASE WHEN coalesce((r ->> 'permanent')::boolean, false)
					      OR w.attempts >= max_attempts
					    THEN 'dead' ELSE 'pending' END,
			       not_before = now() + make_interval(secs => coalesce(
					(r ->> 'delay')::float8, 1))
			 WHERE work.key = k;
		END IF;
	END LOOP;
END
$$;

-- Liveness, counters, and the leases of exactly the keys still in hand;
-- leases this daemon holds on anything else are released.
CREATE FUNCTION imgsync.heartbeat(daemon bigint, keys text[], state text, in_flight int,
				  objects_done bigint, bytes_done bigint, lease interval)
RETURNS void LANGUAGE sql VOLATILE AS $$
	UPDATE imgsync.daemons d
	   SET heartbeat_at = now(), state = heartbeat.state, in_flight = heartbeat.in_flight,
	       objects_done = heartbeat.objects_done, bytes_done = heartbeat.bytes_done
	 WHERE d.id = daemon;
	UPDATE imgsync.work w SET lease_until = now() + lease
	 WHERE w.lease_owner = daemon AND w.key = ANY (keys);
	UPDATE imgsync.work w SET lease_owner = NULL, lease_until = NULL
	 WHERE w.lease_owner = daemon AND NOT (w.key = ANY (keys));
$$;

-- A daemon leaving: its items are free for others at once.
CREATE FUNCTION imgsync.stop_daemon(daemon bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = daemon;
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
	key_column text,
	mimetype_column text,
	url_column text,
	object_type text
);

-- The logical key and layout attributes of a row of a watched table.
CREATE FUNCTION imgsync.row_image(cfg imgsync.watched, r jsonb, OUT key text, OUT attrs jsonb,
				  OUT mimetype text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF cfg.mapping = 'key' THEN
		key := r ->> cfg.key_column;
		attrs := NULL;
		mimetype := CASE WHEN cfg.mimetype_column IS NOT NULL
			    THEN r ->> cfg.mimetype_column END;
	ELSE
		-- SQLAlchemy-ImageAttach: (object_id, width, height) identify an image
		IF r ->> 'object_id' IS NULL THEN
			key := NULL;
			RETURN;
		END IF;
		key := cfg.object_type || '/' || (r ->> 'object_id') || '/' ||
		       (r ->> 'width') || 'x' || (r ->> 'height');
		mimetype := r ->> 'mimetype';
		attrs := jsonb_build_object('object_type', cfg.object_type,
					    'object_id', r ->> 'object_id',
					    'width', (r ->> 'width')::bigint,
					    'height', (r ->> 'height')::bigint,
					    'mimetype', r ->> 'mimetype');
	END IF;
END
$$;

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
BEGIN
	SELECT * INTO cfg FROM imgsync.watched WHERE tbl = TG_RELID;
	IF NOT FOUND THEN
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
		PERFORM imgsync.remove(okey);
	END IF;
	-- An UPDATE that changes nothing but the URL column (which imgsync
	-- itself maintains) is not a rewrite.
	IF nkey IS NOT NULL AND (TG_OP = 'INSERT' OR okey IS DISTINCT FROM nkey
	   OR (oj - coalesce(cfg.url_column, '')) IS DISTINCT FROM
	      (nj - coalesce(cfg.url_column, ''))) THEN
		PERFORM imgsync.put(nkey, cfg.store, nmime, nattrs);
	END IF;
	RETURN NULL;
END
$$;

-- Attach an existing images table.  Either key_column names the column
-- holding the image's key (the Flask/SQLAlchemy "path"/"link" style), or
-- mapping => 'imageattach' reads SQLAlchemy-ImageAttach's image table
-- columns (object_id, width, height, mimetype; object_type defaults to the
-- table name with '_' turned into '-').  Rows already there are put into
-- the catalog when backfill is true.  Returns the number of rows backfilled.
CREATE FUNCTION imgsync.watch_table(tbl regclass, store text, key_column text DEFAULT NULL,
				    mapping text DEFAULT NULL, mimetype_column text DEFAULT NULL,
				    url_column text DEFAULT NULL, object_type text DEFAULT NULL,
				    backfill boolean DEFAULT true)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	cfg imgsync.watched;
	m text := coalesce(mapping, CASE WHEN key_column IS NOT NULL THEN 'key' END);
	trg text := 'imgsync_watch';
	r jsonb;
	ikey text;
	iattrs jsonb;
	imime text;
	n bigint := 0;
	relname text;
BEGIN
	IF m IS NULL OR m NOT IN ('key', 'imageattach') THEN
		RAISE EXCEPTION 'imgsync.watch_table: give key_column => ''COLUMN'', or mapping => ''imageattach'''
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF m = 'key' AND key_column IS NULL THEN
		RAISE EXCEPTION 'imgsync.watch_table: mapping ''key'' needs key_column'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT c.relname INTO relname FROM pg_class c WHERE c.oid = tbl;
	IF m = 'key' AND NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = tbl
				      AND attname = key_column AND NOT attisdropped) THEN
		RAISE EXCEPTION 'imgsync.watch_table: % has no column %', tbl, key_column
			USING ERRCODE = 'undefined_column';
	END IF;
	IF m = 'imageattach' AND (SELECT count(*) FROM pg_attribute WHERE attrelid = tbl
				  AND NOT attisdropped
				  AND attname IN ('object_id', 'width', 'height', 'mimetype')) < 4 THEN
		RAISE EXCEPTION 'imgsync.watch_table: % lacks ImageAttach''s columns (object_id, width, height, mimetype)', tbl
			USING ERRCODE = 'undefined_column';
	END IF;
	INSERT INTO imgsync.watched AS w (tbl, mapping, store, key_column, mimetype_column,
					  url_column, object_type)
	VALUES (tbl, m, store, key_column, mimetype_column, url_column,
		coalesce(object_type, replace(relname, '_', '-')))
	ON CONFLICT ON CONSTRAINT watched_pkey DO UPDATE
	   SET mapping = EXCLUDED.mapping, store = EXCLUDED.store,
	       key_column = EXCLUDED.key_column, mimetype_column = EXCLUDED.mimetype_column,
	       url_column = EXCLUDED.url_column, object_type = EXCLUDED.object_type;
	IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = tbl AND tgname = trg) THEN
		EXECUTE format('DROP TRIGGER %I ON %s', trg, tbl);
	END IF;
	EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON %s '
		       'FOR EACH ROW EXECUTE FUNCTION imgsync.watch_trigger()', trg, tbl);
	IF backfill THEN
		SELECT * INTO cfg FROM imgsync.watched w WHERE w.tbl = watch_table.tbl;
		FOR r IN EXECUTE format('SELECT to_jsonb(t) FROM %s t', tbl) LOOP
			SELECT i.key, i.attrs, i.mimetype INTO ikey, iattrs, imime
			  FROM imgsync.row_image(cfg, r) i;
			CONTINUE WHEN ikey IS NULL;
			PERFORM imgsync.put(ikey, cfg.store, imime, iattrs);
			n := n + 1;
		END LOOP;
	END IF;
	RETURN n;
END
$$;

CREATE FUNCTION imgsync.unwatch_table(tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	EXECUTE format('DROP TRIGGER IF EXISTS imgsync_watch ON %s', tbl);
	DELETE FROM imgsync.watched w WHERE w.tbl = unwatch_table.tbl;
END
$$;
