-- Issue 13: per-tenant rate limits that hold across ingest replicas (ingest/leases.py).
--
-- One token bucket per tenant and kind (requests/s, bytes/s) for the whole deployment. Replicas
-- never touch it per request: each holds a lease of tokens (an allowance) in memory, spends it
-- locally, and every few hundred milliseconds exchanges with this table in one call of
-- tokentide_rate_exchange: it gives back what it holds beyond its need (or the debt of a request
-- larger than its allowance) and is granted a top-up from the bucket, never more than the bucket
-- holds. Every token a replica spends was taken from here, so a tenant gets at most its burst,
-- plus the leases held when a window starts, plus its rate times the window, whatever the
-- number of replicas. The bucket refills by the database's clock (one clock for all replicas).
-- Regular tables in either layout, so one file serves both.
--
-- The pipeline's role only (as 0009, 0010): no grant to tenant roles, and row-level security
-- with no policy denies them every row.
CREATE TABLE rate_buckets (
    tenant_id   text             NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    kind        text             NOT NULL CHECK (kind IN ('requests', 'bytes')),
    -- What the bucket held at updated_at; negative while a large request's debt is paid back.
    tokens      double precision NOT NULL,
    -- The rate and burst of the last exchange (the tenant's policy as the replicas read it).
    rate        double precision NOT NULL CHECK (rate > 0),
    burst       double precision NOT NULL CHECK (burst > 0),
    updated_at  timestamptz      NOT NULL,
    PRIMARY KEY (tenant_id, kind)
) WITH (fillfactor = 50);  -- updated several times a second: room for HOT updates
ALTER TABLE rate_buckets ENABLE ROW LEVEL SECURITY;

-- The replicas that exchanged recently: while the database is unreachable each replica limits
-- on its own at rate / (the replicas it last saw), instead of every replica at the full rate.
CREATE TABLE ingest_replicas (
    replica_id  text        PRIMARY KEY,
    seen_at     timestamptz NOT NULL
) WITH (fillfactor = 50);
ALTER TABLE ingest_replicas ENABLE ROW LEVEL SECURITY;

-- One exchange of replica p_replica: for each (tenant, kind) given, first give back
-- p_returned (unused tokens, or a negative debt), then take up to p_wanted. Returns per bucket
-- what was granted and what the bucket holds after, and the replicas seen in the last 10 s.
-- Buckets are locked in one order (tenant, kind) so that concurrent exchanges never deadlock;
-- the function is one statement, hence one transaction, holding the locks for its own duration.
CREATE FUNCTION tokentide_rate_exchange(
    p_replica  text,
    p_tenants  text[],
    p_kinds    text[],
    p_rates    double precision[],
    p_bursts   double precision[],
    p_returned double precision[],
    p_wanted   double precision[]
) RETURNS TABLE (
    bucket_tenant text,
    bucket_kind   text,
    granted       double precision,
    remaining     double precision,
    replicas      integer
) LANGUAGE plpgsql AS $$
DECLARE
    item      record;
    held      double precision;
    last_at   timestamptz;
    at        timestamptz;
    refilled  double precision;
    given     double precision;
    seen      integer;
BEGIN
    INSERT INTO ingest_replicas AS r (replica_id, seen_at)
    VALUES (p_replica, clock_timestamp())
    ON CONFLICT (replica_id) DO UPDATE SET seen_at = EXCLUDED.seen_at;
    DELETE FROM ingest_replicas r WHERE r.seen_at < clock_timestamp() - interval '1 hour';
    SELECT count(*) INTO seen FROM ingest_replicas r WHERE r.seen_at > clock_timestamp() - interval '10 seconds';

    FOR item IN
        SELECT i.tenant_id, i.kind, i.rate, i.burst, i.returned, i.wanted
        FROM unnest(p_tenants, p_kinds, p_rates, p_bursts, p_returned, p_wanted)
            AS i (tenant_id, kind, rate, burst, returned, wanted)
        ORDER BY i.tenant_id, i.kind
    LOOP
        -- A new bucket starts full.
        INSERT INTO rate_buckets AS b (tenant_id, kind, tokens, rate, burst, updated_at)
        VALUES (item.tenant_id, item.kind, item.burst, item.rate, item.burst, clock_timestamp())
        ON CONFLICT (tenant_id, kind) DO NOTHING;
        SELECT b.tokens, b.updated_at INTO held, last_at
        FROM rate_buckets b
        WHERE b.tenant_id = item.tenant_id AND b.kind = item.kind
        FOR UPDATE;
        -- Read the clock once the row is locked, so that updated_at never goes back.
        at := greatest(clock_timestamp(), last_at);
        refilled := least(
            item.burst,
            held + item.rate * extract(epoch FROM at - last_at)::double precision + item.returned
        );
        given := greatest(0, least(item.wanted, refilled));
        UPDATE rate_buckets b
        SET tokens = refilled - given, rate = item.rate, burst = item.burst, updated_at = at
        WHERE b.tenant_id = item.tenant_id AND b.kind = item.kind;
        bucket_tenant := item.tenant_id;
        bucket_kind := item.kind;
        granted := given;
        remaining := refilled - given;
        replicas := seen;
        RETURN NEXT;
    END LOOP;
END
$$;
