-- Version 2 (added to version 1 by a migration; a new database runs version 1, then this):
-- the forwarding outbox (see `depot::forward`).

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- 'origin_id': this database's id as a forwarding origin; 32 hex digits from SQLite's
-- randomblob() (seeded by the OS), generated once, never changed.
-- 'forward_target_id': the target_id of the PostgreSQL database the cursors below refer to.
INSERT INTO meta (key, value) VALUES ('origin_id', lower(hex(randomblob(16))));

CREATE TABLE forward_cursor (
    stream        TEXT    NOT NULL PRIMARY KEY,  -- streams.name
    delivered_seq INTEGER NOT NULL CHECK (delivered_seq >= 0)  -- records 1..=delivered_seq are in PostgreSQL
) STRICT, WITHOUT ROWID;
