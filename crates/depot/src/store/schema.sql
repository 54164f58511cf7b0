CREATE TABLE streams (
    id       INTEGER PRIMARY KEY,   -- internal key, referenced by the tables below
    name     TEXT    NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL CHECK (last_seq >= 0)  -- highest seq = number of records
) STRICT;

CREATE TABLE records (
    id             INTEGER PRIMARY KEY,  -- global append order
    stream_id      INTEGER NOT NULL,     -- streams.id
    seq            INTEGER NOT NULL CHECK (seq >= 1),
    received_at_ms INTEGER NOT NULL,     -- unix time, milliseconds
    payload        TEXT    NOT NULL,     -- the JSON value exactly as posted
    UNIQUE (stream_id, seq)
) STRICT;

CREATE TABLE idempotency_keys (
    stream_id INTEGER NOT NULL,          -- streams.id
    key       TEXT    NOT NULL,
    first_seq INTEGER NOT NULL,          -- the records the original request appended
    last_seq  INTEGER NOT NULL,
    PRIMARY KEY (stream_id, key)
) STRICT, WITHOUT ROWID;
