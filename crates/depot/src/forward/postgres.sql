CREATE TABLE IF NOT EXISTS depot_schema (
    version    integer     NOT NULL,  -- the layout of the depot tables; depot refuses others
    target_id  text        NOT NULL,  -- random, made with the table: names this database
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS depot_records (
    origin       text        NOT NULL,  -- the depot's origin id (32 hex digits, in its data directory)
    stream       text        NOT NULL,
    seq          bigint      NOT NULL,  -- per origin and stream: 1, 2, 3, … with no gaps
    payload      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL,  -- when the depot received the record
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, stream, seq)
);

CREATE INDEX IF NOT EXISTS depot_records_received_at ON depot_records (received_at);

-- Records whose payload jsonb cannot hold (a "\u0000" in a string, a number beyond numeric's
-- range): kept as the JSON text depot stored, with PostgreSQL's reason. Each record of an origin
-- is in exactly one of depot_records and depot_rejected.
CREATE TABLE IF NOT EXISTS depot_rejected (
    origin       text        NOT NULL,
    stream       text        NOT NULL,
    seq          bigint      NOT NULL,
    payload_text text        NOT NULL,
    error        text        NOT NULL,
    received_at  timestamptz NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (origin, stream, seq)
);
