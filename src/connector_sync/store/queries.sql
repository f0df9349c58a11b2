-- Every statement the PostgreSQL store runs, by name (store/postgres.py loads this file
-- once). Parameters are psycopg's %(name)s. Every "now" is coalesce(%(now)s, now()):
-- the database's clock, unless a test injected one. Due predicates repeat the partial
-- index's own text (constants.DUE_INDEX_PREDICATE_PG) with literals, not parameters, so
-- the planner proves ix_connectors_due applies even in a generic plan; tests/store
-- checks each due query's plan with EXPLAIN.

-- name: now --
SELECT coalesce(%(now)s, now());

-- name: add_connector --
INSERT INTO connectors (tenant, name, type, config, status, auto_sync, sync_interval,
                        schedule, timezone, sync_timeout, keep, max_consecutive_failures,
                        next_sync_at, created_at, updated_at)
VALUES (%(tenant)s, %(name)s, %(type)s, %(config)s, 'ACTIVE', %(auto_sync)s,
        %(sync_interval)s, %(schedule)s, %(timezone)s, %(sync_timeout)s, %(keep)s,
        %(max_consecutive_failures)s, coalesce(%(next_sync_at)s, %(now)s, now()),
        coalesce(%(now)s, now()), coalesce(%(now)s, now()))
ON CONFLICT (tenant, name) DO NOTHING
RETURNING id;

-- name: find_connector_by_id --
SELECT id, tenant, name, type, status, auto_sync, sync_interval, schedule, timezone, sync_timeout,
       keep, last_sync_at, last_sync_status, last_sync_error, next_sync_at, consecutive_failures,
       max_consecutive_failures, lease_owner, lease_expires_at, created_at, updated_at, config, state
FROM connectors
WHERE id = %(id)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s);

-- name: find_connectors_by_name --
SELECT id, tenant, name, type, status, auto_sync, sync_interval, schedule, timezone, sync_timeout,
       keep, last_sync_at, last_sync_status, last_sync_error, next_sync_at, consecutive_failures,
       max_consecutive_failures, lease_owner, lease_expires_at, created_at, updated_at, config, state
FROM connectors
WHERE name = %(name)s AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY tenant;

-- name: list_connectors --
-- `list`: by tenant and name, a walk of uq_connectors_tenant_name that stops at the limit.
-- Also run on a server-side cursor for `list --all --json` (every row, streamed).
SELECT id, tenant, name, type, status, auto_sync, sync_interval, schedule, timezone, sync_timeout,
       keep, last_sync_at, last_sync_status, last_sync_error, next_sync_at, consecutive_failures,
       max_consecutive_failures, lease_owner, lease_expires_at, created_at, updated_at
FROM connectors
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(include_inactive)s OR status <> 'INACTIVE' OR %(status)s::text = 'INACTIVE')
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (NOT %(due)s
       OR (auto_sync AND status = 'ACTIVE' AND next_sync_at <= coalesce(%(now)s, now())))
ORDER BY tenant, name
LIMIT %(limit)s;

-- name: count_connectors --
-- How many rows list_connectors has in all (what a page of it leaves out).
SELECT count(*) FROM connectors
WHERE (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(include_inactive)s OR status <> 'INACTIVE' OR %(status)s::text = 'INACTIVE')
  AND (%(type)s::text IS NULL OR type = %(type)s)
  AND (NOT %(due)s
       OR (auto_sync AND status = 'ACTIVE' AND next_sync_at <= coalesce(%(now)s, now())));

-- name: connector_names --
-- Shell completion. left() rather than LIKE: the prefix may hold LIKE's wildcards.
SELECT DISTINCT name FROM connectors
WHERE left(name, length(%(prefix)s)) = %(prefix)s
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY name
LIMIT %(limit)s;

-- name: due_connectors --
-- What operators and schedulers poll most: an index range scan of ix_connectors_due.
SELECT id, tenant, name, type, status, auto_sync, sync_interval, schedule, timezone, sync_timeout,
       keep, last_sync_at, last_sync_status, last_sync_error, next_sync_at, consecutive_failures,
       max_consecutive_failures, lease_owner, lease_expires_at, created_at, updated_at
FROM connectors
WHERE auto_sync AND status = 'ACTIVE' AND next_sync_at <= coalesce(%(now)s, now())
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY next_sync_at, id
LIMIT %(limit)s;

-- name: run_has_work --
-- Before a run imports anything heavy: the schema revision, and whether it would recover
-- an expired lease or claim a due connector (each an index probe that stops at the first
-- row). store/probe.py asks it; a run with nothing to do ends there.
SELECT (SELECT version_num FROM alembic_version LIMIT 1),
       EXISTS (SELECT 1 FROM connectors
               WHERE auto_sync AND status = 'ACTIVE' AND next_sync_at <= now()
                 AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s))
       OR EXISTS (SELECT 1 FROM connectors
                  WHERE status = 'SYNCING' AND lease_expires_at < now()
                    AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s));

-- name: enable_connector --
-- A connector a worker holds stays SYNCING; its finish makes it ACTIVE.
UPDATE connectors
SET auto_sync = true, consecutive_failures = 0, next_sync_at = coalesce(%(now)s, now()),
    status = CASE WHEN status = 'SYNCING' THEN 'SYNCING' ELSE 'ACTIVE' END,
    updated_at = coalesce(%(now)s, now())
WHERE id = %(id)s;

-- name: disable_connector --
UPDATE connectors SET auto_sync = false, updated_at = coalesce(%(now)s, now())
WHERE id = %(id)s;

-- name: reset_state --
UPDATE connectors SET state = NULL, updated_at = coalesce(%(now)s, now()) WHERE id = %(id)s;

-- name: claim --
-- One statement: pick connectors (skipping rows other workers have locked), lease them,
-- open a sync and a BUILDING dataset for each. Without %(ids)s: up to %(limit)s due
-- connectors, most overdue first. With %(ids)s: a manual sync of those, due or not,
-- unless a worker holds one now (each CTE's one-time filter skips the other branch).
-- The claim need not wait for its WAL flush: if the server crashes before the flush the
-- claim is lost, the connector is still due, and the worker's finish (durable) finds no
-- lease and records nothing.
WITH due AS MATERIALIZED (
    SELECT id FROM connectors
    WHERE %(ids)s::integer[] IS NULL
      AND auto_sync AND status = 'ACTIVE'
      AND next_sync_at <= coalesce(%(due_before)s, %(now)s, now())
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
    ORDER BY next_sync_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), named AS MATERIALIZED (
    SELECT id FROM connectors
    WHERE id = ANY(%(ids)s::integer[]) AND status NOT IN ('SYNCING', 'INACTIVE')
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE connectors AS c
    SET status = 'SYNCING', lease_owner = %(worker)s, lease_token = gen_random_uuid()::text,
        lease_expires_at = coalesce(%(now)s, now()) + make_interval(secs => %(lease_seconds)s),
        updated_at = coalesce(%(now)s, now())
    WHERE c.id IN (SELECT id FROM due UNION ALL SELECT id FROM named)
    RETURNING c.id, c.tenant, c.name, c.type, c.config, c.state, c.sync_interval,
              c.consecutive_failures, c.max_consecutive_failures, c.sync_timeout,
              c.schedule, c.timezone, c.lease_token, c.next_sync_at
), opened AS (
    INSERT INTO connector_syncs (connector_id, tenant, status, trigger, worker, lease_token,
                                 attempts, started_at)
    SELECT id, tenant, 'IN_PROGRESS',
           CASE WHEN %(ids)s::integer[] IS NULL THEN 'schedule' ELSE 'manual' END,
           %(worker)s, lease_token, 1, coalesce(%(now)s, now())
    FROM claimed
    RETURNING id, connector_id, started_at
), building AS (
    INSERT INTO datasets (connector_id, sync_id, tenant, name, status, created_at)
    SELECT o.connector_id, o.id, cl.tenant, cl.name || '#' || o.id, 'BUILDING', o.started_at
    FROM opened AS o JOIN claimed AS cl ON cl.id = o.connector_id
    RETURNING id, sync_id
)
SELECT cl.id, cl.tenant, cl.name, cl.type, cl.config, cl.state, cl.sync_interval,
       cl.consecutive_failures, cl.max_consecutive_failures, cl.sync_timeout, cl.schedule,
       cl.timezone, cl.lease_token, o.id AS sync_id, b.id AS dataset_id, o.started_at
FROM claimed AS cl
JOIN opened AS o ON o.connector_id = cl.id
JOIN building AS b ON b.sync_id = o.id
CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
ORDER BY cl.next_sync_at, cl.id;

-- name: heartbeat --
-- Extends this worker's leases and, in the same statement, writes the records so far of
-- each held connector's sync: only where the lease is still ours (the sync row carries
-- the token of the claim that opened it).
WITH kept AS (
    UPDATE connectors
    SET lease_expires_at = coalesce(%(now)s, now()) + make_interval(secs => %(lease_seconds)s)
    WHERE id = ANY(%(ids)s) AND lease_token = ANY(%(tokens)s)
    RETURNING id, lease_token
), progressed AS (
    UPDATE connector_syncs AS s
    SET records_fetched = p.records_fetched, records_processed = p.records_processed
    FROM unnest(%(sync_ids)s::integer[], %(fetched)s::bigint[], %(processed)s::bigint[])
         AS p(sync_id, records_fetched, records_processed)
    WHERE s.id = p.sync_id AND s.status = 'IN_PROGRESS'
      AND s.lease_token IN (SELECT lease_token FROM kept)
)
SELECT id, lease_token FROM kept;

-- name: finish --
-- Ends a sync as %(status)s: COMPLETED (dataset READY, state saved, failures forgotten),
-- FAILED (one more failure in a row: ERROR once that reaches max_consecutive_failures;
-- the partial dataset marked FAILED, for Store.discard_failed_dataset to delete in short
-- transactions after this one) or CANCELLED (the run stopped: the connector is given
-- back, its last outcome untouched; the partial dataset deleted). Written only under
-- this worker's lease: the sync and dataset change only if the connector row did.
-- A completed sync's connector is due at %(next_sync_at)s (a cron slot) or
-- %(next_sync_in)s seconds from now, unless its schedule was edited during the sync
-- (the row no longer holds the one claimed): then the edit wins, one new interval from
-- now or the slot the edit set (store.base.next_sync_on_completion says the same).
-- Without %(keep_dataset)s (an incremental sync that found nothing new) the dataset is
-- deleted and the sync links none. The fourth column says whether the connector's
-- retention has anything to remove now (what prune_datasets would choose for it alone: more
-- READY datasets than its keep, or FAILED ones a cut-short removal left), counted from
-- the statement's snapshot, where this sync's dataset is not READY yet: the store runs the
-- prune only then, not after every sync.
WITH released AS (
    UPDATE connectors
    SET status = CASE WHEN %(status)s = 'FAILED'
                       AND consecutive_failures + 1 >= max_consecutive_failures
                      THEN 'ERROR' ELSE 'ACTIVE' END,
        consecutive_failures = CASE %(status)s WHEN 'COMPLETED' THEN 0
                                   WHEN 'FAILED' THEN consecutive_failures + 1
                                   ELSE consecutive_failures END,
        last_sync_status = CASE WHEN %(status)s = 'CANCELLED' THEN last_sync_status
                                ELSE %(status)s END,
        last_sync_error = CASE WHEN %(status)s = 'CANCELLED' THEN last_sync_error
                               ELSE %(error)s END,
        last_sync_at = CASE WHEN %(status)s = 'CANCELLED' THEN last_sync_at
                            ELSE coalesce(%(now)s, now()) END,
        state = CASE WHEN %(status)s = 'COMPLETED' THEN %(state)s ELSE state END,
        next_sync_at = CASE
            WHEN %(status)s <> 'COMPLETED' OR (
                schedule IS NOT DISTINCT FROM %(schedule)s::text
                AND timezone IS NOT DISTINCT FROM %(timezone)s::text
                AND sync_interval = %(sync_interval)s)
            THEN coalesce(%(next_sync_at)s, coalesce(%(now)s, now())
                          + make_interval(secs => %(next_sync_in)s))
            WHEN schedule IS NULL
            THEN coalesce(%(now)s, now()) + make_interval(secs => sync_interval)
            ELSE next_sync_at END,
        updated_at = coalesce(%(now)s, now()),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
    WHERE id = %(connector_id)s AND lease_token = %(lease_token)s
    RETURNING status, consecutive_failures, next_sync_at, keep
), closed AS (
    UPDATE connector_syncs
    SET status = %(status)s, completed_at = coalesce(%(now)s, now()), duration = %(duration)s,
        records_fetched = %(records_fetched)s, records_processed = %(records_processed)s,
        attempts = %(attempts)s, error = %(error)s, error_type = %(error_type)s,
        dataset_id = CASE WHEN %(status)s = 'COMPLETED' AND %(keep_dataset)s
                          THEN %(dataset_id)s END
    WHERE id = %(sync_id)s AND EXISTS (SELECT 1 FROM released)
), ready AS (
    UPDATE datasets
    SET status = 'READY', record_count = %(records_processed)s, schema = %(schema)s,
        completed_at = coalesce(%(now)s, now())
    WHERE %(status)s = 'COMPLETED' AND %(keep_dataset)s AND id = %(dataset_id)s
      AND EXISTS (SELECT 1 FROM released)
), dropped AS (
    DELETE FROM datasets
    WHERE (%(status)s = 'CANCELLED' OR (%(status)s = 'COMPLETED' AND NOT %(keep_dataset)s))
      AND sync_id = %(sync_id)s AND status <> 'READY' AND EXISTS (SELECT 1 FROM released)
), failed AS (
    UPDATE datasets SET status = 'FAILED'
    WHERE %(status)s = 'FAILED' AND sync_id = %(sync_id)s AND status <> 'READY'
      AND EXISTS (SELECT 1 FROM released)
)
SELECT r.status, r.consecutive_failures, r.next_sync_at,
       %(status)s = 'COMPLETED' AND (
           SELECT count(*) FILTER (WHERE d.status = 'FAILED') > 0
                  OR (r.keep > 0 AND count(*) FILTER (WHERE d.status = 'READY')
                                     + %(keep_dataset)s::integer > r.keep)
           FROM datasets AS d WHERE d.connector_id = %(connector_id)s)
FROM released AS r;

-- name: unclaim --
-- A claim this worker will not start after all: the connector given back as it was
-- (still due), the sync it opened and its empty dataset removed.
WITH released AS (
    UPDATE connectors
    SET status = 'ACTIVE', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = coalesce(%(now)s, now())
    WHERE id = %(connector_id)s AND lease_token = %(lease_token)s
    RETURNING id
), dropped AS (
    DELETE FROM datasets WHERE sync_id = %(sync_id)s AND EXISTS (SELECT 1 FROM released)
), unopened AS (
    DELETE FROM connector_syncs WHERE id = %(sync_id)s AND EXISTS (SELECT 1 FROM released)
)
SELECT id FROM released;

-- name: lock_dataset --
-- The dataset a batch of records is written into, locked until the batch commits (the
-- lock the foreign key took per record, before migration 0006): no row, the dataset is
-- gone and the batch is not written; a delete of it waits for the batch, and then its
-- trigger deletes the batch's records too.
SELECT id FROM datasets WHERE id = %(dataset_id)s FOR KEY SHARE;

-- name: discard_records --
DELETE FROM dataset_records WHERE dataset_id = %(dataset_id)s;

-- name: sync_status --
SELECT status FROM connector_syncs WHERE id = %(sync_id)s;

-- name: recover_expired_leases --
-- Each connector whose lease expired: released (ACTIVE and due now, or ERROR when this
-- abandonment was its last allowed failure in a row), its IN_PROGRESS sync FAILED
-- naming the lost worker, that sync's BUILDING dataset deleted.
WITH expired AS MATERIALIZED (
    SELECT id, lease_owner, lease_token, lease_expires_at,
           'abandoned: lease of ' || coalesce(lease_owner, 'None') || ' expired at '
           || to_char(lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
           AS reason
    FROM connectors
    WHERE status = 'SYNCING' AND lease_expires_at < coalesce(%(now)s, now())
      AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
    ORDER BY lease_expires_at
    FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE connectors AS c
    SET status = CASE WHEN c.consecutive_failures + 1 >= c.max_consecutive_failures
                      THEN 'ERROR' ELSE 'ACTIVE' END,
        consecutive_failures = c.consecutive_failures + 1,
        last_sync_at = coalesce(%(now)s, now()), last_sync_status = 'FAILED',
        last_sync_error = e.reason, next_sync_at = coalesce(%(now)s, now()),
        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = coalesce(%(now)s, now())
    FROM expired AS e
    WHERE c.id = e.id AND c.lease_token IS NOT DISTINCT FROM e.lease_token
    RETURNING c.id, c.name, e.lease_owner, e.lease_expires_at, e.reason
), closed AS (
    UPDATE connector_syncs AS s
    SET status = 'FAILED', completed_at = coalesce(%(now)s, now()), error = r.reason,
        error_type = 'LeaseExpired'
    FROM released AS r
    WHERE s.connector_id = r.id AND s.status = 'IN_PROGRESS'
    RETURNING s.id, s.connector_id
), dropped AS (
    DELETE FROM datasets AS d USING closed
    WHERE d.sync_id = closed.id AND d.status <> 'READY'
)
SELECT r.id, r.name, r.lease_owner, r.lease_expires_at,
       coalesce(array_agg(closed.id ORDER BY closed.id)
                FILTER (WHERE closed.id IS NOT NULL), '{}') AS syncs,
       r.reason
FROM released AS r LEFT JOIN closed ON closed.connector_id = r.id
GROUP BY r.id, r.name, r.lease_owner, r.lease_expires_at, r.reason
ORDER BY r.lease_expires_at, r.id;

-- name: connectors_by_status --
SELECT status, count(*) FROM connectors
WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s
GROUP BY status;

-- name: due_count --
SELECT count(*), min(next_sync_at) FROM connectors
WHERE auto_sync AND status = 'ACTIVE' AND next_sync_at <= coalesce(%(now)s, now())
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s);

-- name: syncs_since --
SELECT status, count(*), coalesce(sum(records_processed), 0) FROM connector_syncs
WHERE started_at >= coalesce(%(now)s, now()) - make_interval(secs => %(seconds)s)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
GROUP BY status;

-- name: connectors_in_error --
SELECT id, name, consecutive_failures, last_sync_error FROM connectors
WHERE status = 'ERROR' AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY id;

-- name: expired_leases --
SELECT id, name, lease_owner, lease_expires_at FROM connectors
WHERE status = 'SYNCING' AND lease_expires_at < coalesce(%(now)s, now())
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY id;

-- name: overdue_connectors --
SELECT id, name, next_sync_at FROM connectors
WHERE auto_sync AND status = 'ACTIVE'
  AND next_sync_at <= coalesce(%(now)s, now()) - make_interval(secs => %(seconds)s)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
ORDER BY next_sync_at
LIMIT %(listed)s;

-- name: history --
-- Also the syncs a run recorded (%(ids)s), in any order: the caller orders them.
SELECT s.id, s.connector_id, c.name, s.tenant, s.status, s.trigger, s.worker, s.attempts,
       s.started_at, s.completed_at, s.duration, s.records_fetched, s.records_processed,
       s.dataset_id, s.error, s.error_type,
       CASE WHEN s.status = 'IN_PROGRESS'
            THEN extract(epoch FROM coalesce(%(now)s, now()) - s.started_at)::float8 END
FROM connector_syncs AS s JOIN connectors AS c ON c.id = s.connector_id
WHERE (%(connector_id)s::integer IS NULL OR s.connector_id = %(connector_id)s)
  AND (%(status)s::text IS NULL OR s.status = %(status)s)
  AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
  AND (%(ids)s::integer[] IS NULL OR s.id = ANY(%(ids)s::integer[]))
ORDER BY s.started_at DESC, s.id DESC
LIMIT %(limit)s;

-- name: datasets_of --
SELECT id, sync_id, name, status, record_count, created_at, completed_at FROM datasets
WHERE connector_id = %(connector_id)s
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: edit_connector --
-- Only what `edit` changes: status, lease and outcome are left to the finish statement.
UPDATE connectors
SET name = %(name)s, config = %(config)s, sync_interval = %(sync_interval)s,
    schedule = %(schedule)s, timezone = %(timezone)s, sync_timeout = %(sync_timeout)s,
    max_consecutive_failures = %(max_consecutive_failures)s, keep = %(keep)s,
    next_sync_at = coalesce(%(next_sync_at)s, next_sync_at),
    updated_at = coalesce(%(now)s, now())
WHERE id = %(id)s;

-- name: data_counts --
SELECT (SELECT count(*) FROM connector_syncs WHERE connector_id = %(id)s),
       (SELECT count(*) FROM datasets WHERE connector_id = %(id)s),
       (SELECT coalesce(sum(record_count), 0) FROM datasets WHERE connector_id = %(id)s);

-- name: retire_connector --
-- INACTIVE, unless a worker holds a live lease and the caller did not force it; its
-- failures in a row forgotten (as enable forgets them: nothing runs it, nothing can clear
-- them, and health and metrics would report it failing for ever); the open sync
-- CANCELLED and its BUILDING dataset deleted; with %(remove_data)s every READY dataset
-- FAILED, so readers stop taking them while their records are deleted.
WITH retired AS (
    UPDATE connectors
    SET status = 'INACTIVE', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        consecutive_failures = 0, updated_at = coalesce(%(now)s, now())
    WHERE id = %(id)s
      AND (%(force)s OR status <> 'SYNCING' OR lease_expires_at IS NULL
           OR lease_expires_at <= coalesce(%(now)s, now()))
    RETURNING id
), cancelled AS (
    UPDATE connector_syncs
    SET status = 'CANCELLED', completed_at = coalesce(%(now)s, now()), error = %(reason)s,
        error_type = 'Cancelled'
    WHERE connector_id = %(id)s AND status = 'IN_PROGRESS' AND EXISTS (SELECT 1 FROM retired)
    RETURNING id
), dropped AS (
    DELETE FROM datasets WHERE sync_id IN (SELECT id FROM cancelled) AND status <> 'READY'
), failed AS (
    UPDATE datasets SET status = 'FAILED'
    WHERE connector_id = %(id)s AND %(remove_data)s AND status = 'READY'
      AND EXISTS (SELECT 1 FROM retired)
)
SELECT id FROM retired;

-- name: lease_of --
SELECT name, lease_owner, lease_expires_at FROM connectors WHERE id = %(id)s;

-- name: delete_connector --
DELETE FROM connectors WHERE id = %(id)s;

-- name: list_datasets --
SELECT d.id, d.sync_id, d.name, d.status, d.record_count, d.created_at, d.completed_at,
       d.connector_id, c.name, d.tenant, d.schema
FROM datasets AS d JOIN connectors AS c ON c.id = d.connector_id
WHERE (%(connector_id)s::integer IS NULL OR d.connector_id = %(connector_id)s)
  AND (%(status)s::text IS NULL OR d.status = %(status)s)
  AND (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
  AND (%(id)s::integer IS NULL OR d.id = %(id)s)
ORDER BY d.created_at DESC, d.id DESC
LIMIT %(limit)s;

-- name: latest_dataset --
SELECT d.id, d.sync_id, d.name, d.status, d.record_count, d.created_at, d.completed_at,
       d.connector_id, c.name, d.tenant, d.schema
FROM datasets AS d JOIN connectors AS c ON c.id = d.connector_id
WHERE d.connector_id = %(connector_id)s AND d.status = 'READY'
ORDER BY d.id DESC
LIMIT 1;

-- name: read_records --
-- Run on a server-side cursor: one snapshot, fetched a chunk at a time.
SELECT data::text FROM dataset_records
WHERE dataset_id = %(dataset_id)s
ORDER BY seq
LIMIT %(limit)s;

-- name: prune_datasets --
-- The datasets a prune removes: READY ones beyond the newest %(keep)s of their connector
-- (NULL: the connector's own keep; 0: no limit) or created before %(older_than)s, never
-- a connector's newest READY one; and FAILED ones, left by a removal that was cut short.
-- Unless %(dry_run)s they are marked FAILED here, in the statement that chose them.
WITH ready AS (
    SELECT d.id, d.connector_id, d.created_at,
           row_number() OVER (PARTITION BY d.connector_id ORDER BY d.id DESC) AS newest
    FROM datasets AS d
    WHERE d.status = 'READY'
      AND (%(connector_id)s::integer IS NULL OR d.connector_id = %(connector_id)s)
      AND (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
), chosen AS (
    SELECT r.id,
           CASE WHEN coalesce(%(keep)s, c.keep) > 0 AND r.newest > coalesce(%(keep)s, c.keep)
                THEN 'keep' ELSE 'age' END AS reason
    FROM ready AS r JOIN connectors AS c ON c.id = r.connector_id
    WHERE r.newest > 1
      AND ((coalesce(%(keep)s, c.keep) > 0 AND r.newest > coalesce(%(keep)s, c.keep))
           OR r.created_at < %(older_than)s::timestamptz)
    UNION ALL
    SELECT d.id, 'unfinished' FROM datasets AS d
    WHERE d.status = 'FAILED'
      AND (%(connector_id)s::integer IS NULL OR d.connector_id = %(connector_id)s)
      AND (%(tenant)s::text IS NULL OR d.tenant = %(tenant)s)
), marked AS (
    UPDATE datasets SET status = 'FAILED'
    WHERE NOT %(dry_run)s AND status = 'READY' AND id IN (SELECT id FROM chosen)
)
SELECT d.id, d.connector_id, c.name, d.tenant, d.name, d.record_count, d.created_at,
       ch.reason
FROM chosen AS ch
JOIN datasets AS d ON d.id = ch.id
JOIN connectors AS c ON c.id = d.connector_id
ORDER BY d.tenant, c.name, d.id;

-- name: max_record_seq --
SELECT coalesce(max(seq), 0) FROM dataset_records WHERE dataset_id = %(dataset_id)s;

-- name: delete_record_range --
WITH gone AS (
    DELETE FROM dataset_records
    WHERE dataset_id = %(dataset_id)s AND seq > %(after)s AND seq <= %(upto)s
    RETURNING 1
)
SELECT count(*) FROM gone;

-- name: delete_datasets --
WITH unlinked AS (
    UPDATE connector_syncs SET dataset_id = NULL WHERE dataset_id = ANY(%(ids)s)
)
DELETE FROM datasets WHERE id = ANY(%(ids)s);

-- name: prune_history --
-- Finished syncs started before %(before)s, by connector; never one whose dataset is
-- kept, nor a connector's latest COMPLETED sync. Deleted unless %(dry_run)s.
WITH picked AS (
    SELECT s.id, s.connector_id FROM connector_syncs AS s
    WHERE s.started_at < %(before)s AND s.status <> 'IN_PROGRESS'
      AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
      AND NOT EXISTS (SELECT 1 FROM datasets AS d WHERE d.sync_id = s.id)
      AND s.id <> coalesce((SELECT max(l.id) FROM connector_syncs AS l
                            WHERE l.connector_id = s.connector_id AND l.status = 'COMPLETED'), 0)
), gone AS (
    DELETE FROM connector_syncs WHERE NOT %(dry_run)s AND id IN (SELECT id FROM picked)
)
SELECT p.connector_id, c.name, c.tenant, count(*)
FROM picked AS p JOIN connectors AS c ON c.id = p.connector_id
GROUP BY p.connector_id, c.name, c.tenant
ORDER BY c.tenant, c.name;

-- -- monitoring: status, health, metrics, alerts -------------------------------------

-- name: running_syncs --
-- The syncs in flight, oldest first, with the records so far (written by the heartbeat)
-- and the connector's typical duration: the median of its last %(typical_of)s COMPLETED
-- syncs (each a short walk down ix_connector_syncs_connector_id_started_at).
SELECT s.id, s.connector_id, c.name, s.tenant, s.worker, s.started_at,
       extract(epoch FROM coalesce(%(now)s, now()) - s.started_at)::float8,
       s.records_fetched, s.records_processed, c.sync_timeout,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY done.duration)
        FROM (SELECT p.duration FROM connector_syncs AS p
              WHERE p.connector_id = s.connector_id AND p.status = 'COMPLETED'
              ORDER BY p.started_at DESC
              LIMIT %(typical_of)s) AS done),
       t.long_sync
FROM connector_syncs AS s
JOIN connectors AS c ON c.id = s.connector_id
LEFT JOIN alert_thresholds AS t ON t.connector_id = s.connector_id
WHERE s.status = 'IN_PROGRESS' AND (%(tenant)s::text IS NULL OR s.tenant = %(tenant)s)
ORDER BY s.started_at, s.id
LIMIT %(limit)s;

-- name: failing_connectors --
-- Failing again and again but not parked in ERROR yet: each connector's own threshold
-- (alerts --failures-warn), else the one health was given.
SELECT c.id, c.name, c.consecutive_failures, c.max_consecutive_failures, c.last_sync_error,
       coalesce(t.failures_warn, %(failures_warn)s) AS threshold
FROM connectors AS c LEFT JOIN alert_thresholds AS t ON t.connector_id = c.id
WHERE c.status <> 'ERROR' AND c.consecutive_failures > 0
  AND c.consecutive_failures >= coalesce(t.failures_warn, %(failures_warn)s)
  AND (%(tenant)s::text IS NULL OR c.tenant = %(tenant)s)
ORDER BY c.consecutive_failures DESC, c.id;

-- name: error_rates --
-- Connectors whose share of FAILED among the syncs that ended (COMPLETED or FAILED)
-- and started in the window is above their threshold, with enough syncs to judge.
SELECT c.id, c.name, w.finished, w.failed,
       coalesce(t.max_error_rate, %(max_error_rate)s) AS threshold
FROM (SELECT connector_id, count(*) AS finished,
             count(*) FILTER (WHERE status = 'FAILED') AS failed
      FROM connector_syncs
      WHERE status IN ('COMPLETED', 'FAILED')
        AND started_at >= coalesce(%(now)s, now()) - make_interval(secs => %(seconds)s)
        AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
        -- Only a connector with a failure in the window can be above a rate (>= 0): the
        -- rest are not grouped at all (100,000 groups spilled to disk).
        AND connector_id IN (
            SELECT connector_id FROM connector_syncs
            WHERE status = 'FAILED'
              AND started_at >= coalesce(%(now)s, now()) - make_interval(secs => %(seconds)s)
              AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s))
      GROUP BY connector_id) AS w
JOIN connectors AS c ON c.id = w.connector_id
LEFT JOIN alert_thresholds AS t ON t.connector_id = c.id
WHERE w.finished >= %(min_syncs)s AND c.status <> 'INACTIVE' -- deleted: nothing to fix
  AND w.failed > coalesce(t.max_error_rate, %(max_error_rate)s) * w.finished
ORDER BY w.failed::float8 / w.finished DESC, c.id;

-- name: expired_lease_count --
SELECT count(*) FROM connectors
WHERE status = 'SYNCING' AND lease_expires_at < coalesce(%(now)s, now())
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s);

-- name: syncs_in_window --
-- The window's syncs by status and duration bucket. The bucket is how many of the
-- histogram's upper bounds lie below the duration (so a duration equal to a bound counts
-- within it, as Prometheus' `le` means): width_bucket counts the bounds <= its operand,
-- so it is given the negated duration and the negated bounds, ascending; %(buckets)s minus
-- that counts those below. NULL for a sync still running.
SELECT status,
       %(buckets)s - width_bucket(-duration, %(negated_bounds)s::float8[]) AS bucket,
       count(*), coalesce(sum(records_processed), 0), coalesce(sum(duration), 0)
FROM connector_syncs
WHERE started_at >= coalesce(%(now)s, now()) - make_interval(secs => %(seconds)s)
  AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
GROUP BY status, bucket;

-- name: connector_gauges --
-- Each connector's failures in a row and last success, for at most %(limit)s connectors,
-- those most in need of a look first: failing the longest, then the longest without a
-- success. Most connectors are not failing and their latest sync was their last success:
-- the first %(limit)s of those come in that order from ix_connectors_last_success; the
-- rest (failing, never synced, enabled after failures: few) each look their last
-- COMPLETED sync up (one short index walk each). Both parts and the final order compare
-- the times themselves, so the limit cuts one order; they leave as Unix seconds, since
-- 100,000 datetime objects cost more than the query.
SELECT tenant, name, consecutive_failures, extract(epoch FROM last_success_at)::float8 AS last_success
FROM ((SELECT c.id, c.tenant, c.name, c.consecutive_failures,
              CASE WHEN c.last_sync_status = 'COMPLETED' THEN c.last_sync_at
                   ELSE (SELECT s.completed_at FROM connector_syncs AS s
                         WHERE s.connector_id = c.id AND s.status = 'COMPLETED'
                         ORDER BY s.started_at DESC
                         LIMIT 1) END AS last_success_at
       FROM connectors AS c
       WHERE (c.consecutive_failures <> 0 OR c.last_sync_status IS DISTINCT FROM 'COMPLETED'
              OR c.last_sync_at IS NULL)
         AND (%(tenant)s::text IS NULL OR c.tenant = %(tenant)s))
      UNION ALL
      (SELECT c.id, c.tenant, c.name, c.consecutive_failures,
              c.last_sync_at
       FROM connectors AS c
       WHERE c.consecutive_failures = 0 AND c.last_sync_status = 'COMPLETED'
         AND c.last_sync_at IS NOT NULL
         AND (%(tenant)s::text IS NULL OR c.tenant = %(tenant)s)
       ORDER BY c.last_sync_at, c.id
       LIMIT %(limit)s)) AS g
ORDER BY consecutive_failures DESC, last_success_at NULLS FIRST, id
LIMIT %(limit)s;

-- name: open_alert --
-- A problem this health run found: opened, or kept open (its severity and detail as now;
-- reopened if it had cleared but the clearing was not sent yet). A lower severity than
-- announced lowers what counts as announced, so a new escalation is sent again.
INSERT INTO health_alerts (scope, key, problem, level, connector_id, connector_name, detail,
                           opened_at, seen_at)
SELECT %(scope)s, a.key, a.problem, a.level, a.connector_id, a.connector_name, a.detail,
       coalesce(%(now)s, now()), coalesce(%(now)s, now())
FROM unnest(%(keys)s::text[], %(problems)s::text[], %(levels)s::integer[],
            %(connector_ids)s::integer[], %(names)s::text[], %(details)s::text[])
     AS a(key, problem, level, connector_id, connector_name, detail)
ON CONFLICT (scope, key) DO UPDATE
SET problem = excluded.problem, level = excluded.level,
    connector_name = excluded.connector_name, detail = excluded.detail,
    seen_at = excluded.seen_at, resolved_at = NULL,
    notified_level = CASE WHEN health_alerts.notified_level > excluded.level
                          THEN excluded.level ELSE health_alerts.notified_level END;

-- name: resolve_alerts --
UPDATE health_alerts SET resolved_at = coalesce(%(now)s, now())
WHERE scope = %(scope)s AND resolved_at IS NULL AND NOT (key = ANY(%(keys)s::text[]));

-- name: forget_unannounced_alerts --
-- A problem that cleared before anyone was told about it needs no "resolved" either.
DELETE FROM health_alerts
WHERE scope = %(scope)s AND resolved_at IS NOT NULL AND notified_level IS NULL;

-- name: claim_alert_messages --
-- The messages owed under this scope that no other health run is sending: a problem
-- never announced or announced at a lower level, a clearing of an announced problem.
UPDATE health_alerts
SET sending_until = coalesce(%(now)s, now()) + make_interval(secs => %(hold_seconds)s)
WHERE scope = %(scope)s
  AND (sending_until IS NULL OR sending_until < coalesce(%(now)s, now()))
  AND (resolved_at IS NOT NULL OR notified_level IS NULL OR level > notified_level)
RETURNING key, problem, level, connector_id, connector_name, detail, opened_at,
          resolved_at IS NOT NULL AS resolved;

-- name: announced_alerts --
UPDATE health_alerts AS h SET notified_level = m.level, sending_until = NULL
FROM unnest(%(keys)s::text[], %(levels)s::integer[]) AS m(key, level)
WHERE h.scope = %(scope)s AND h.key = m.key;

-- name: forget_resolved_alerts --
DELETE FROM health_alerts
WHERE scope = %(scope)s AND key = ANY(%(keys)s::text[]) AND resolved_at IS NOT NULL;

-- name: release_alerts --
UPDATE health_alerts SET sending_until = NULL
WHERE scope = %(scope)s AND key = ANY(%(keys)s::text[]);

-- name: open_alerts --
SELECT key, problem, level, connector_id, connector_name, detail, opened_at
FROM health_alerts
WHERE scope = %(scope)s AND resolved_at IS NULL
ORDER BY opened_at, key;

-- name: set_alert_thresholds --
INSERT INTO alert_thresholds (connector_id, failures_warn, long_sync, max_error_rate,
                              updated_at)
VALUES (%(connector_id)s, %(failures_warn)s, %(long_sync)s, %(max_error_rate)s,
        coalesce(%(now)s, now()))
ON CONFLICT (connector_id) DO UPDATE
SET failures_warn = excluded.failures_warn, long_sync = excluded.long_sync,
    max_error_rate = excluded.max_error_rate, updated_at = excluded.updated_at;

-- name: alert_thresholds --
SELECT failures_warn, long_sync, max_error_rate FROM alert_thresholds
WHERE connector_id = %(connector_id)s;
