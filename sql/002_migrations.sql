-- imgsync schema, version 2: migrations.
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

ALTER TABLE imgsync.work ADD COLUMN migration bigint
	REFERENCES imgsync.migrations (id) ON DELETE SET NULL;
-- 'copy' or 'delete-source': the step of the migration duty still to do
ALTER TABLE imgsync.work ADD COLUMN step text CHECK (step IN ('copy', 'delete-source'));
ALTER TABLE imgsync.work DROP CONSTRAINT work_op_check;
ALTER TABLE imgsync.work ADD CONSTRAINT work_op_check
	CHECK (op IN ('put', 'remove', 'migrate'));
CREATE INDEX work_migration ON imgsync.work (migration) WHERE migration IS NOT NULL;

-- Where a key stands for a migration: queue its duty (keeping any put or
-- remove already pending for the key: the executor does both).
CREATE FUNCTION imgsync.queue_migration(k text, m bigint) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.work AS w (key, op, migration, step)
	VALUES (k, 'migrate', m, 'copy')
	ON CONFLICT (key) DO UPDATE
	   SET migration = m, step = 'copy', state = 'pending', attempts = 0,
	       not_before = now(), last_error = NULL, updated_at = now()
$$;

CREATE FUNCTION imgsync.start_migration(source text, target text, mode text DEFAULT 'move',
					options jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	id bigint;
	o jsonb := coalesce(options, '{}');
	k text;
BEGIN
	IF source IS NULL OR target IS NULL OR source = '' OR target = '' THEN
		RAISE EXCEPTION 'imgsync.start_migration: name a source and a target store'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF source = target THEN
		RAISE EXCEPTION 'imgsync.start_migration: source and target are both %', source
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF mode IS NULL OR mode NOT IN ('move', 'copy') THEN
		RAISE EXCEPTION 'imgsync.start_migration: mode must be move or copy, not %',
			coalesce(mode, 'NULL') USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF jsonb_typeof(o) <> 'object' THEN
		RAISE EXCEPTION 'imgsync.start_migration: options must be a JSON object'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	FOR k IN SELECT jsonb_object_keys(o) LOOP
		IF k NOT IN ('dry_run', 'prefix', 'verify', 'follow') THEN
			RAISE EXCEPTION 'imgsync.start_migration: unknown option %', k
				USING ERRCODE = 'invalid_parameter_value',
				      HINT = 'options are dry_run, prefix, verify, follow';
		END IF;
		IF k <> 'prefix' AND jsonb_typeof(o -> k) <> 'boolean' THEN
			RAISE EXCEPTION 'imgsync.start_migration: option % must be true or false', k
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
			source, target
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

-- Hand the next keys of running migrations to the queue, at most `win`
-- queued per migration at once; the cursor moves in the same transaction.
-- Finishes migrations with nothing left.  Returns the number queued.
CREATE FUNCTION imgsync.advance_migrations(win int) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	m imgsync.migrations;
	room bigint;
	n bigint := 0;
	last text;
	cnt bigint;
BEGIN
	FOR m IN SELECT * FROM imgsync.migrations
		  WHERE state = 'running' ORDER BY id FOR UPDATE SKIP LOCKED LOOP
		room := win - (SELECT count(*) FROM imgsync.work w WHERE w.migration = m.id);
		IF NOT m.scanned AND room > 0 THEN
			WITH next AS (
				SELECT i.key FROM imgsync.images i
				 WHERE (m.cursor IS NULL OR i.key > m.cursor)
				   AND starts_with(i.key, m.prefix) AND NOT i.deleted
				 ORDER BY i.key
				 LIMIT room),
			q AS (SELECT imgsync.queue_migration(next.key, m.id), next.key FROM next)
			SELECT max(q.key), count(*) INTO last, cnt FROM q;
			n := n + cnt;
			UPDATE imgsync.migrations
			   SET cursor = coalesce(last, cursor), scanned = cnt < room,
			       updated_at = now()
			 WHERE id = m.id;
			m.scanned := cnt < room;
		END IF;
		IF m.scanned AND NOT m.follow
		   AND NOT EXISTS (SELECT 1 FROM imgsync.work w WHERE w.migration = m.id
				   AND w.state = 'pending') THEN
			UPDATE imgsync.migrations
			   SET state = CASE WHEN failed > 0 THEN 'failed' ELSE 'done' END,
			       finished_at = now(), updated_at = now(), objects_per_s = 0,
			       bytes_per_s = 0,
			       last_error = CASE WHEN failed > 0 THEN
				  format('%s image(s) failed: see imgsync.migration_failures', failed)
				  ELSE last_error END
			 WHERE id = m.id;
		END IF;
	END LOOP;
	RETURN n;
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
CREATE FUNCTION imgsync.cancel_migration(id bigint) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
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
SELECT id, source, target, mode, state, total, done, failed, skipped, bytes_done,
       -- while running, the recent rate; once ended, the average of the run
       round((CASE WHEN finished_at IS NULL THEN objects_per_s
		   ELSE done / greatest(extract(epoch FROM finished_at - started_at), 0.001)
	      END)::numeric, 1) AS objects_per_s,
       round((CASE WHEN finished_at IS NULL THEN bytes_per_s
		   ELSE bytes_done / greatest(extract(epoch FROM finished_at - started_at), 0.001)
	      END)::numeric) AS bytes_per_s,
       CASE WHEN state = 'running' AND objects_per_s > 0 AND total > done + failed + skipped
	    THEN make_interval(secs => (total - done - failed - skipped) / objects_per_s)
       END AS eta,
       started_at, updated_at, finished_at, last_error,
       dry_run, prefix, verify, follow
  FROM imgsync.migrations;

CREATE VIEW imgsync.migration_failures AS
SELECT w.migration AS migration, w.key, w.attempts, w.last_error,
       w.updated_at AS last_attempt_at
  FROM imgsync.work w
 WHERE w.migration IS NOT NULL AND w.state = 'dead';

-- ---------------------------------------------------------------------------
-- The queue learns about migration duties.

DROP FUNCTION imgsync.claim(bigint, int, interval);
-- As in version 1, plus the migration duty of each item (a migration that
-- is paused holds its keys back).
CREATE FUNCTION imgsync.claim(daemon bigint, n int, lease interval)
RETURNS TABLE (key text, op text, gen bigint, attempts int, token bigint, origin text,
	       mimetype text, attrs jsonb, version bigint, stores text[], deleted boolean,
	       size bigint, changed_at double precision, claimed_at timestamptz,
	       migration bigint, step text, m_source text, m_target text, m_mode text,
	       m_dry_run boolean, m_verify boolean)
LANGUAGE sql VOLATILE AS $$
	WITH c AS (
		SELECT w.key FROM imgsync.work w
		  LEFT JOIN imgsync.migrations m ON m.id = w.migration
		 WHERE w.state = 'pending' AND w.not_before <= now()
		   AND (w.lease_until IS NULL OR w.lease_until < now())
		   AND (m.id IS NULL OR m.state <> 'paused')
		 ORDER BY w.not_before
		 LIMIT n
		 FOR UPDATE OF w SKIP LOCKED),
	u AS (
		UPDATE imgsync.work w
		   SET lease_owner = daemon, lease_until = now() + lease,
		       lease_token = nextval('imgsync.lease_tokens'),
		       attempts = w.attempts + 1, updated_at = now()
		  FROM c WHERE w.key = c.key
		RETURNING w.key, w.op, w.gen, w.attempts, w.lease_token, w.migration, w.step)
	SELECT u.key, u.op, u.gen, u.attempts, u.lease_token, i.origin, i.mimetype, i.attrs,
	       i.version, i.stores, coalesce(i.deleted, true), i.size,
	       extract(epoch FROM i.updated_at), now(),
	       m.id, u.step, m.source, m.target, m.mode, m.dry_run, m.verify
	  FROM u LEFT JOIN imgsync.images i ON i.key = u.key
	  LEFT JOIN imgsync.migrations m ON m.id = u.migration AND m.state IN ('running', 'pending')
$$;

-- Migration bookkeeping of one result: "mig" is "done", "skipped",
-- "failed" or absent (no migration step was carried out).
CREATE FUNCTION imgsync.migration_result(r jsonb, dead boolean) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	mid bigint := (r ->> 'migration')::bigint;
	what text := r ->> 'mig';
BEGIN
	IF mid IS NULL OR (what IS NULL AND NOT dead) THEN
		RETURN;
	END IF;
	UPDATE imgsync.migrations m
	   SET done = m.done + CASE WHEN what = 'done' THEN 1 ELSE 0 END,
	       skipped = m.skipped + CASE WHEN what = 'skipped' THEN 1 ELSE 0 END,
	       failed = m.failed + CASE WHEN dead THEN 1 ELSE 0 END,
	       bytes_done = m.bytes_done + CASE WHEN what = 'done'
				THEN coalesce((r ->> 'mig_bytes')::bigint, 0) ELSE 0 END,
	       last_error = CASE WHEN dead THEN r ->> 'error' ELSE m.last_error END,
	       updated_at = now()
	 WHERE m.id = mid;
	-- rates over at least two seconds
	UPDATE imgsync.migrations m
	   SET objects_per_s = CASE WHEN m.sample_at IS NULL THEN 0
			       ELSE (m.done - m.sample_done)
				    / extract(epoch FROM now() - m.sample_at) END,
	       bytes_per_s = CASE WHEN m.sample_at IS NULL THEN 0
			     ELSE (m.bytes_done - m.sample_bytes)
				  / extract(epoch FROM now() - m.sample_at) END,
	       sample_at = now(), sample_done = m.done, sample_bytes = m.bytes_done
	 WHERE m.id = mid AND (m.sample_at IS NULL OR m.sample_at < now() - interval '2 seconds');
END
$$;

-- As in version 1, plus: a move's copy step, once committed, becomes its
-- delete-source step (the source copy goes only after the target's is
-- verified and recorded); the catalog's home of a moved image becomes the
-- target; the migration's counters move.
CREATE OR REPLACE FUNCTION imgsync.complete_one(daemon bigint, r jsonb, max_attempts int)
RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
	w imgsync.work;
	k text := r ->> 'key';
	g bigint := (r ->> 'gen')::bigint;
	ok boolean := (r ->> 'ok')::boolean;
	dead boolean;
	next_step text := r ->> 'next_step';
BEGIN
	INSERT INTO imgsync.attempts (key, gen, daemon, started_at, ok, error)
	VALUES (k, g, daemon, (r ->> 'started_at')::timestamptz, ok, r ->> 'error');
	PERFORM 1 FROM imgsync.images i WHERE i.key = k FOR UPDATE;
	SELECT * INTO w FROM imgsync.work WHERE work.key = k FOR UPDATE;
	IF NOT FOUND OR w.lease_token IS DISTINCT FROM (r ->> 'token')::bigint THEN
		RETURN false; -- this claim's lease was lost; its result changes nothing
	END IF;
	-- the stores that got a copy, even when others failed; a moved image's
	-- home becomes the target; a deleted source copy leaves the list
	IF r ->> 'op' IN ('put', 'migrate') THEN
		UPDATE imgsync.images i
		   SET stores = ARRAY(SELECT DISTINCT s FROM unnest(i.stores || ARRAY(
				SELECT jsonb_array_elements_text(r -> 'stores'))) s
			      WHERE s IS DISTINCT FROM r ->> 'unstore' ORDER BY s),
		       origin = coalesce(r ->> 'home', i.origin),
		       size = coalesce((r ->> 'size')::bigint, i.size),
		       checksum = coalesce(r ->> 'checksum', i.checksum),
		       updated_at = now()
		 WHERE i.key = k AND i.version = (r ->> 'version')::bigint AND NOT i.deleted;
	ELSIF ok THEN
		DELETE FROM imgsync.images i
		 WHERE i.key = k AND i.version = (r ->> 'version')::bigint AND i.deleted;
	END IF;
	IF w.gen <> g THEN
		-- written again meanwhile: the new generation starts afresh (and
		-- keeps its migration duty, from the copy step)
		UPDATE imgsync.work SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
		       step = CASE WHEN migration IS NOT NULL THEN 'copy' END
		 WHERE work.key = k;
		RETURN true;
	END IF;
	IF ok THEN
		PERFORM imgsync.migration_result(r, false);
		IF next_step IS NOT NULL AND w.migration IS NOT NULL THEN
			UPDATE imgsync.work
			   SET op = 'migrate', step = next_step, lease_owner = NULL, lease_until = NULL,
			       lease_token = NULL, attempts = 0, not_before = now(), last_error = NULL,
			       updated_at = now()
			 WHERE work.key = k;
			RETURN true;
		END IF;
		DELETE FROM imgsync.work WHERE work.key = k;
		RETURN false;
	END IF;
	dead := coalesce((r ->> 'permanent')::boolean, false)
		OR (coalesce((r ->> 'counted')::boolean, true) AND w.attempts >= max_attempts);
	UPDATE imgsync.work
	   SET lease_owner = NULL, lease_until = NULL, lease_token = NULL,
	       last_error = r ->> 'error', updated_at = now(),
	       -- a store-wide trouble (unreachable, 5xx) does not spend attempts
	       attempts = CASE WHEN coalesce((r ->> 'counted')::boolean, true)
			       THEN w.attempts ELSE greatest(w.attempts - 1, 0) END,
	       state = CASE WHEN dead THEN 'dead' ELSE 'pending' END,
	       not_before = now() + make_interval(secs => coalesce((r ->> 'delay')::float8, 1))
	 WHERE work.key = k;
	IF dead THEN
		PERFORM imgsync.migration_result(r, true);
	END IF;
	RETURN false;
END
$$;

-- With follow, a put into a migration's source after the cursor passed
-- the key queues the key for that migration too.
CREATE OR REPLACE FUNCTION imgsync.enqueue(k text, what text) RETURNS void
LANGUAGE sql VOLATILE AS $$
	INSERT INTO imgsync.work AS w (key, op) VALUES (k, what)
	ON CONFLICT (key) DO UPDATE
	   SET op = CASE WHEN EXCLUDED.op = 'put' AND w.op = 'migrate' THEN 'put'
			 ELSE EXCLUDED.op END,
	       gen = w.gen + 1, state = 'pending', attempts = 0,
	       not_before = now(), last_error = NULL, updated_at = now(),
	       step = CASE WHEN w.migration IS NOT NULL THEN 'copy' END;
	UPDATE imgsync.work w
	   SET migration = m.id, step = 'copy'
	  FROM imgsync.migrations m, imgsync.images i
	 WHERE what = 'put' AND w.key = k AND w.migration IS NULL AND i.key = k
	   AND m.follow AND m.state IN ('running', 'paused') AND i.origin = m.source
	   AND starts_with(k, m.prefix) AND m.cursor IS NOT NULL AND k <= m.cursor;
	SELECT imgsync.wake();
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
		RAISE EXCEPTION 'not a JSON command: %', SQLERRM
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
				RAISE EXCEPTION 'migrate: unknown field "%"', k
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
	RAISE EXCEPTION 'unknown command "%"; commands are migrate, pause, resume, cancel, retry_failed',
		left(cmd, 40) USING ERRCODE = 'invalid_parameter_value';
END
$$;
