//! The embedded SQLite store (being built — see issue 3).
