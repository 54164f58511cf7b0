//! winddown: one shutdown model for every stop source.
#![warn(missing_docs)]

pub mod commit;

pub use commit::{
    CommitConfig, CommitError, CommitStats, DrainReport, Durability, GroupCommit, Sink, Submit,
    SubmitMany, WhenFull,
};
