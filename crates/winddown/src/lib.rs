//! winddown: one shutdown model for every stop source.
#![warn(missing_docs)]

pub mod commit;
