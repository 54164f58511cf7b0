//! winddown: one shutdown model for every stop source.
#![warn(missing_docs)]

pub mod commit;

pub use commit::{
    CommitConfig, CommitError, CommitStats, Durability, DrainReport, GroupCommit, Sink, Submit,
    SubmitMany, WhenFull,
};
