//! The PostgreSQL side: one connection, its schema check, and one transaction per batch.
//!
//! # Schema (version 1)
//!
//! ```sql
#![doc = include_str!("postgres.sql")]
//! ```
//!
//! Created if missing, under a transaction-scoped advisory lock so that depots starting together
//! do not race. `depot_schema` has exactly one row; its `target_id` (random, made with the table)
//! names this database, so that a depot pointed at another database starts its cursors over. The
//! oids of `depot_records` and `depot_rejected` name the tables themselves: a table dropped and
//! created again under the same `target_id` starts the cursors over too, and a batch that finds
//! other tables than its connection started with is rolled back before its `COMMIT`.

use std::future::Future;
use std::time::Duration;

use postgres_native_tls::MakeTlsConnector;
use tokio::task::JoinHandle;
use tokio_postgres::{CancelToken, Client, Statement};

use super::error::ForwardError;
use super::target::Target;
use crate::store::OutboxRecord;

/// The schema version this build creates and writes.
pub const PG_SCHEMA_VERSION: i32 = 1;

/// The tables, created if missing.
const SCHEMA: &str = include_str!("postgres.sql");

/// Key of the advisory lock taken while creating or checking the schema ("DPOT" + 1).
const SCHEMA_LOCK: i64 = 0x4450_4f54_0000_0001;

/// Extra time the client gives a statement beyond the server's `statement_timeout`, before it
/// gives up on the connection.
const CLIENT_GRACE: Duration = Duration::from_secs(2);

/// The timeouts in force.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) connect: Duration,
    pub(super) statement: Duration,
}

impl Timeouts {
    fn client(&self) -> Duration {
        self.statement + CLIENT_GRACE
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivered {
    /// Rows inserted.
    pub(super) inserted: u64,
    /// Rows PostgreSQL already held (identical: a re-send after a crash or a lost commit reply).
    pub(super) already_there: u64,
    /// Records whose payload PostgreSQL refused, stored in `depot_rejected` instead.
    pub(super) rejected: u64,
}

/// One open connection, its prepared statements and its background task.
pub(super) struct PgConn {
    client: Client,
    cancel: CancelToken,
    task: JoinHandle<()>,
    insert: Statement,
    differing: Statement,
    /// `depot_schema.target_id` of the database.
    pub(super) target_id: String,
    /// Which tables these are (see [`tables_identity`]): a batch commits only into these.
    pub(super) tables: String,
}

impl PgConn {
    /// Connects, sets the session's timeouts, creates or checks the schema, prepares the
    /// statements.
    ///
    /// # Cancellation safety
    /// Cancel-safe: dropping the future drops the half-open connection, which closes its socket.
    pub(super) async fn connect(
        target: &Target,
        tls: &MakeTlsConnector,
        timeouts: Timeouts,
    ) -> Result<PgConn, ForwardError> {
        let mut config = target.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeouts.connect);
        }
        if config.get_application_name().is_none() {
            config.application_name("depot");
        }
        config.keepalives_idle(Duration::from_secs(30));
        let connecting = within(timeouts.connect, "connecting", config.connect(tls.clone()));
        let (client, connection) = connecting.await?.map_err(|source| ForwardError::Connect {
            target: target.redacted().to_owned(),
            source,
        })?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended with an error");
            }
        });
        PgConn::setup(client, task, timeouts).await
    }

    async fn setup(
        mut client: Client,
        task: JoinHandle<()>,
        timeouts: Timeouts,
    ) -> Result<PgConn, ForwardError> {
        let t = timeouts.client();
        let statement_ms = timeouts.statement.as_millis();
        // The server ends a statement that runs too long, and a session that sits in an open
        // transaction (a depot that vanished mid-batch) — so a transaction is never left open.
        let session = format!(
            "SET statement_timeout = {statement_ms}; \
             SET idle_in_transaction_session_timeout = {}; SET TIME ZONE 'UTC'",
            statement_ms * 2
        );
        within(
            t,
            "setting the session's timeouts",
            client.batch_execute(&session),
        )
        .await?
        .map_err(|e| ForwardError::statement("setting the session's timeouts", e))?;
        let (target_id, tables) = ensure_schema(&mut client, t).await?;
        let insert = within(t, "preparing the insert", client.prepare(INSERT))
            .await?
            .map_err(|e| ForwardError::statement("preparing the insert", e))?;
        let differing = within(t, "preparing the check", client.prepare(DIFFERING))
            .await?
            .map_err(|e| ForwardError::statement("preparing the check", e))?;
        Ok(PgConn {
            cancel: client.cancel_token(),
            client,
            task,
            insert,
            differing,
            target_id,
            tables,
        })
    }

    /// A token to cancel the statement running on this connection, from another task.
    pub(super) fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Inserts `batch` in one transaction; rows already there are skipped after checking that
    /// they hold the same payloads. If PostgreSQL refuses the data itself (SQLSTATE class 22: a
    /// payload `jsonb` cannot hold, like `"\u0000"`), the batch is retried record by record in
    /// one transaction, and each refused record goes to `depot_rejected` with its text and the
    /// error instead — one bad record does not hold up the others.
    ///
    /// # Cancellation safety
    /// Dropping the future before the `COMMIT` was sent rolls the transaction back (tokio-postgres
    /// queues a `ROLLBACK` when a transaction is dropped); dropping it during the `COMMIT` leaves
    /// the outcome unknown until the connection is closed (see [`PgConn::close`]). Either way the
    /// cursor has not moved, so the batch is sent again and deduplicated.
    pub(super) async fn deliver(
        &mut self,
        origin: &str,
        batch: &[OutboxRecord],
        timeouts: Timeouts,
    ) -> Result<Delivered, ForwardError> {
        match self.deliver_batch(origin, batch, timeouts).await {
            Err(ForwardError::Statement {
                during: INSERTING,
                sqlstate: Some(code),
                ..
            }) if code.starts_with("22") => self.deliver_one_by_one(origin, batch, timeouts).await,
            other => other,
        }
    }

    async fn deliver_batch(
        &mut self,
        origin: &str,
        batch: &[OutboxRecord],
        timeouts: Timeouts,
    ) -> Result<Delivered, ForwardError> {
        let t = timeouts.client();
        let tx = within(t, "BEGIN", self.client.transaction())
            .await?
            .map_err(|e| ForwardError::statement("BEGIN", e))?;
        let (inserted, already_there) =
            insert_checked(&tx, &self.insert, &self.differing, origin, batch, t)
                .await?
                .map_err(|e| ForwardError::statement(INSERTING, e))?;
        check_tables(&tx, &self.tables, t).await?;
        within(t, "COMMIT", tx.commit())
            .await?
            .map_err(|e| ForwardError::statement("COMMIT", e))?;
        Ok(Delivered {
            inserted,
            already_there,
            rejected: 0,
        })
    }

    /// The slow path after a data exception: one savepoint per record.
    async fn deliver_one_by_one(
        &mut self,
        origin: &str,
        batch: &[OutboxRecord],
        timeouts: Timeouts,
    ) -> Result<Delivered, ForwardError> {
        let t = timeouts.client();
        let during = "inserting records one by one";
        let mut tx = within(t, "BEGIN", self.client.transaction())
            .await?
            .map_err(|e| ForwardError::statement("BEGIN", e))?;
        let mut delivered = Delivered {
            inserted: 0,
            already_there: 0,
            rejected: 0,
        };
        for record in batch {
            let one = std::slice::from_ref(record);
            let savepoint = within(t, during, tx.savepoint("record"))
                .await?
                .map_err(|e| ForwardError::statement(during, e))?;
            match insert_checked(&savepoint, &self.insert, &self.differing, origin, one, t).await? {
                Ok((inserted, already_there)) => {
                    within(t, during, savepoint.commit())
                        .await?
                        .map_err(|e| ForwardError::statement(during, e))?;
                    delivered.inserted += inserted;
                    delivered.already_there += already_there;
                }
                Err(e) if e.code().is_some_and(|c| c.code().starts_with("22")) => {
                    within(t, during, savepoint.rollback())
                        .await?
                        .map_err(|e| ForwardError::statement(during, e))?;
                    let reason = e.as_db_error().map_or_else(
                        || e.to_string(),
                        |d| format!("{} ({})", d.message(), d.code().code()),
                    );
                    tracing::warn!(stream = %record.stream, seq = record.seq, error = %reason, "PostgreSQL refused a record's payload; it goes to depot_rejected");
                    let seq = i64::try_from(record.seq).unwrap_or(i64::MAX);
                    within(
                        t,
                        during,
                        tx.execute(
                            REJECT,
                            &[
                                &origin,
                                &record.stream,
                                &seq,
                                &record.payload,
                                &reason,
                                &record.received_at.0,
                            ],
                        ),
                    )
                    .await?
                    .map_err(|e| ForwardError::statement(during, e))?;
                    delivered.rejected += 1;
                }
                Err(e) => return Err(ForwardError::statement(during, e)),
            }
        }
        check_tables(&tx, &self.tables, t).await?;
        within(t, "COMMIT", tx.commit())
            .await?
            .map_err(|e| ForwardError::statement("COMMIT", e))?;
        Ok(delivered)
    }

    /// Closes the connection. After a failed or cut-off batch (`rollback`), first makes sure no
    /// transaction is open: sends `ROLLBACK` and waits for the answer, which comes after the
    /// server has processed everything queued before it. Then ends the session (a Terminate
    /// message) and waits for the socket to close. Bounded by `limit` (then the socket is simply
    /// dropped: the server aborts the transaction of a connection that closes).
    pub(super) async fn close(self, rollback: bool, limit: Duration) {
        let PgConn { client, task, .. } = self;
        if rollback && !client.is_closed() {
            match tokio::time::timeout(limit, client.batch_execute("ROLLBACK")).await {
                Ok(Ok(())) => tracing::debug!("PostgreSQL transaction rolled back"),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "ROLLBACK failed; closing the connection")
                }
                Err(_) => tracing::warn!(
                    "PostgreSQL did not answer ROLLBACK in time; dropping the connection"
                ),
            }
        }
        drop(client);
        let abort = task.abort_handle();
        if tokio::time::timeout(limit, task).await.is_err() {
            abort.abort();
        }
    }
}

/// What [`PgConn::deliver`] calls the batch insert (it falls back record by record on a data
/// exception there).
const INSERTING: &str = "inserting a batch";

/// Inserts `records` (`ON CONFLICT DO NOTHING`), then, if some were already there, checks that
/// they hold the same payloads. The outer `Result` is a client-side timeout or a collision; the
/// inner one PostgreSQL's error, for the caller to classify. Returns (inserted, already there).
async fn insert_checked(
    tx: &tokio_postgres::Transaction<'_>,
    insert: &Statement,
    differing: &Statement,
    origin: &str,
    records: &[OutboxRecord],
    t: Duration,
) -> Result<Result<(u64, u64), tokio_postgres::Error>, ForwardError> {
    let streams: Vec<&str> = records.iter().map(|r| r.stream.as_str()).collect();
    let seqs: Vec<i64> = records
        .iter()
        .map(|r| i64::try_from(r.seq).unwrap_or(i64::MAX))
        .collect();
    let payloads: Vec<&str> = records.iter().map(|r| r.payload.as_str()).collect();
    let received: Vec<i64> = records.iter().map(|r| r.received_at.0).collect();
    let inserted = match within(
        t,
        INSERTING,
        tx.execute(insert, &[&origin, &streams, &seqs, &payloads, &received]),
    )
    .await?
    {
        Ok(n) => n,
        Err(e) => return Ok(Err(e)),
    };
    let already_there = records.len() as u64 - inserted;
    if already_there > 0 {
        let row = match within(
            t,
            "checking re-sent records",
            tx.query_opt(differing, &[&origin, &streams, &seqs, &payloads]),
        )
        .await?
        {
            Ok(row) => row,
            Err(e) => return Ok(Err(e)),
        };
        if let Some(row) = row {
            return Err(ForwardError::OriginCollision {
                origin: origin.to_owned(),
                stream: row.get(0),
                seq: row.get(1),
            });
        }
    }
    Ok(Ok((inserted, already_there)))
}

/// Creates the tables if missing and checks the version; returns `depot_schema.target_id` and
/// the tables' identity ([`tables_identity`]).
async fn ensure_schema(client: &mut Client, t: Duration) -> Result<(String, String), ForwardError> {
    let during = "creating or checking the depot tables";
    let fail = |e| ForwardError::statement(during, e);
    let tx = within(t, during, client.transaction())
        .await?
        .map_err(fail)?;
    within(
        t,
        during,
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]),
    )
    .await?
    .map_err(fail)?;
    let row = within(
        t,
        during,
        tx.query_one(
            "SELECT to_regclass('depot_schema') IS NOT NULL, to_regclass('depot_records') IS NOT NULL, \
             to_regclass('depot_rejected') IS NOT NULL",
            &[],
        ),
    )
    .await?
    .map_err(fail)?;
    let (has_schema, has_records, has_rejected): (bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    if has_records && !has_schema {
        return Err(ForwardError::ForeignTable {
            table: "depot_records",
            detail: "there is no depot_schema table beside it".into(),
        });
    }
    if !(has_schema && has_records && has_rejected) {
        within(t, during, tx.batch_execute(SCHEMA))
            .await?
            .map_err(fail)?;
    }
    if !has_schema {
        within(
            t,
            during,
            tx.execute(
                "INSERT INTO depot_schema (version, target_id) \
                 VALUES ($1, md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text))",
                &[&PG_SCHEMA_VERSION],
            ),
        )
        .await?
        .map_err(fail)?;
        tracing::info!(
            version = PG_SCHEMA_VERSION,
            "created the depot tables in PostgreSQL"
        );
    }
    let rows = within(
        t,
        during,
        tx.query("SELECT version, target_id FROM depot_schema", &[]),
    )
    .await?
    .map_err(|e| match e.code() {
        // Columns missing: someone else's depot_schema.
        Some(c) if c.code().starts_with("42") => ForwardError::ForeignTable {
            table: "depot_schema",
            detail: format!(
                "it does not have depot's columns: {}",
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            ),
        },
        _ => fail(e),
    })?;
    let [row] = rows.as_slice() else {
        return Err(ForwardError::ForeignTable {
            table: "depot_schema",
            detail: format!("it has {} rows, depot writes exactly one", rows.len()),
        });
    };
    let version: i32 = row.get(0);
    if version != PG_SCHEMA_VERSION {
        return Err(ForwardError::SchemaVersion {
            found: version,
            known: PG_SCHEMA_VERSION,
        });
    }
    let target_id: String = row.get(1);
    let tables = tables_identity(&tx, t).await?;
    within(t, during, tx.commit()).await?.map_err(fail)?;
    Ok((target_id, tables))
}

/// Which `depot_records` and `depot_rejected` these are: their oids, `"records/rejected"`. A table
/// dropped and created again under the same `target_id` gets a new oid, so the delivery cursors,
/// which refer to the old one, are not taken for the new one's.
///
/// A simple query, planned afresh each time: a prepared one could keep resolving the names as
/// they were when it was planned.
async fn tables_identity(
    tx: &tokio_postgres::Transaction<'_>,
    t: Duration,
) -> Result<String, ForwardError> {
    let during = "checking which depot tables these are";
    let messages = within(
        t,
        during,
        tx.simple_query(
            "SELECT to_regclass('depot_records')::oid::text || '/' || \
             to_regclass('depot_rejected')::oid::text",
        ),
    )
    .await?
    .map_err(|e| ForwardError::statement(during, e))?;
    let identity = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    // NULL: a table is missing (dropped since) — as different as another table.
    Ok(identity.unwrap_or_default())
}

/// Fails the batch (before its `COMMIT`) if the tables are not the ones this connection
/// started with: the cursors must not move for records that went into a new, empty table. Run
/// after the insert, whose lock keeps `depot_records` from being dropped until the transaction
/// ends.
async fn check_tables(
    tx: &tokio_postgres::Transaction<'_>,
    expected: &str,
    t: Duration,
) -> Result<(), ForwardError> {
    let found = tables_identity(tx, t).await?;
    if found == expected {
        Ok(())
    } else {
        Err(ForwardError::TablesReplaced)
    }
}

/// One multi-row insert per batch: arrays in, `ON CONFLICT DO NOTHING` so that a re-sent record
/// is a no-op. The number of rows it reports is the number inserted.
const INSERT: &str = "\
INSERT INTO depot_records (origin, stream, seq, payload, received_at)
SELECT $1, b.stream, b.seq, b.payload::jsonb,
       timestamptz 'epoch' + b.received_ms * interval '1 millisecond'
FROM unnest($2::text[], $3::int8[], $4::text[], $5::int8[]) AS b(stream, seq, payload, received_ms)
ON CONFLICT (origin, stream, seq) DO NOTHING";

/// A record whose payload `jsonb` refused: kept as text with the reason. `ON CONFLICT DO NOTHING`
/// for a re-send.
const REJECT: &str = "\
INSERT INTO depot_rejected (origin, stream, seq, payload_text, error, received_at)
VALUES ($1, $2, $3, $4, $5, timestamptz 'epoch' + $6::int8 * interval '1 millisecond')
ON CONFLICT (origin, stream, seq) DO NOTHING";

/// The first re-sent record whose stored payload differs (there should be none).
const DIFFERING: &str = "\
SELECT b.stream, b.seq
FROM unnest($2::text[], $3::int8[], $4::text[]) AS b(stream, seq, payload)
JOIN depot_records d ON d.origin = $1 AND d.stream = b.stream AND d.seq = b.seq
WHERE d.payload <> b.payload::jsonb
LIMIT 1";

/// Runs `fut` with a client-side timeout (the server's `statement_timeout` is the first line).
async fn within<T>(
    limit: Duration,
    during: &'static str,
    fut: impl Future<Output = T>,
) -> Result<T, ForwardError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| ForwardError::Timeout {
            during,
            after: limit,
        })
}
