-- hosts: one row per host seen by any source, with its role and environment when a source knows them.
CREATE TABLE IF NOT EXISTS hosts (
    host        VARCHAR     NOT NULL,
    role        VARCHAR,
    environment VARCHAR,
    first_seen  TIMESTAMPTZ,
    last_seen   TIMESTAMPTZ,
    source      VARCHAR,
    updated_at  TIMESTAMPTZ
);
