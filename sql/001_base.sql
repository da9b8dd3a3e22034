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
