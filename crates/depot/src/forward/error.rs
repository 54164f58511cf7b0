//! [`ForwardError`]: why a delivery to PostgreSQL did not happen.

use std::time::Duration;

use crate::store::StoreError;

/// Why the forwarder could not deliver. None of these loses a record: undelivered records stay in
/// the local store and the forwarder tries again (after a back-off), except where it is told to
/// stop. The cause, if any, is in `source()` and not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// PostgreSQL could not be reached, refused the connection, or dropped it.
    #[error(
        "cannot reach PostgreSQL at {target}; records stay in the local store until it is back"
    )]
    Connect {
        /// The target, without its password.
        target: String,
        /// The client's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A statement or the connection took longer than its timeout.
    #[error(
        "PostgreSQL did not answer within {after:?} while {during}; the connection was dropped"
    )]
    Timeout {
        /// What depot was doing.
        during: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// PostgreSQL returned an error for a statement.
    #[error("PostgreSQL refused {during}{}", sqlstate.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default())]
    Statement {
        /// What depot was doing.
        during: &'static str,
        /// The SQLSTATE code, if the server sent one.
        sqlstate: Option<String>,
        /// The client's error (with the server's message).
        #[source]
        source: tokio_postgres::Error,
    },
    /// `depot_schema` holds a version this build does not write.
    #[error(
        "PostgreSQL table depot_schema says the depot tables there are version {found}; this \
         depot knows only version {known}, so it does not forward there. Run a depot release \
         that knows version {found}, or point forward_to at another database"
    )]
    SchemaVersion {
        /// The version found.
        found: i32,
        /// The version this build writes.
        known: i32,
    },
    /// The PostgreSQL database has a `depot_records` or `depot_schema` table that depot did not
    /// make.
    #[error(
        "PostgreSQL database has a table {table} that depot did not create ({detail}); depot \
         does not forward there. Rename that table, or point forward_to at another database"
    )]
    ForeignTable {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// PostgreSQL already holds a *different* record under this origin, stream and sequence
    /// number: another depot has the same origin id (a copied data directory).
    #[error(
        "PostgreSQL already holds a different record {stream}#{seq} from origin {origin}: another \
         depot uses this origin id (was its data directory copied?). Forwarding stops until \
         that is resolved; nothing was overwritten"
    )]
    OriginCollision {
        /// This depot's origin id.
        origin: String,
        /// The stream.
        stream: String,
        /// The sequence number.
        seq: i64,
    },
    /// `depot_records` or `depot_rejected` is not the table this connection found at its start:
    /// it was dropped (and maybe created again). The batch was rolled back; the next connection
    /// delivers every record still in the local store to the new table.
    #[error(
        "PostgreSQL table depot_records or depot_rejected was dropped or replaced while depot \
         was delivering; the batch was rolled back, and every record still in the local store \
         will be delivered to the new table"
    )]
    TablesReplaced,
    /// The TLS settings cannot be used (an unreadable `sslrootcert`, …).
    #[error("cannot set up forwarding to PostgreSQL: {0}")]
    Setup(#[source] super::TargetError),
    /// The local store failed.
    #[error("the local store failed while forwarding")]
    Store(#[from] StoreError),
    /// The stop came while a delivery was under way; its transaction was cancelled and rolled
    /// back.
    #[error("stopped while delivering: the transaction was cancelled and rolled back")]
    CutOff,
}

impl ForwardError {
    pub(super) fn statement(during: &'static str, source: tokio_postgres::Error) -> ForwardError {
        ForwardError::Statement {
            during,
            sqlstate: source.code().map(|c| c.code().to_owned()),
            source,
        }
    }

    /// Retrying soon will not help: the schema, the data or the origin id needs a person.
    pub fn needs_attention(&self) -> bool {
        match self {
            ForwardError::SchemaVersion { .. }
            | ForwardError::ForeignTable { .. }
            | ForwardError::OriginCollision { .. } => true,
            // Class 22 (data exception: a payload jsonb refuses, like "\u0000"), 42 (a table
            // altered by hand) and 23 (constraints added by hand) come back on every retry.
            ForwardError::Statement {
                sqlstate: Some(code),
                ..
            } => matches!(&code[..2.min(code.len())], "22" | "23" | "42"),
            _ => false,
        }
    }

    /// PostgreSQL (`statement_timeout`: SQLSTATE 57014) or the client gave up on a statement
    /// that took too long: a smaller batch may succeed where this one did not.
    pub fn is_timeout(&self) -> bool {
        match self {
            ForwardError::Timeout { .. } => true,
            ForwardError::Statement {
                sqlstate: Some(code),
                ..
            } => code == "57014",
            _ => false,
        }
    }

    /// A short name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ForwardError::Connect { .. } => "connect",
            ForwardError::Timeout { .. } => "timeout",
            ForwardError::Statement { .. } => "statement",
            ForwardError::SchemaVersion { .. }
            | ForwardError::ForeignTable { .. }
            | ForwardError::TablesReplaced => "schema",
            ForwardError::OriginCollision { .. } => "origin_collision",
            ForwardError::Store(_) => "store",
            ForwardError::Setup(_) => "setup",
            ForwardError::CutOff => "cut_off",
        }
    }
}
