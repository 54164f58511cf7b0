//! Sinks shared by the group-commit tests and the benchmark (`#[path]`-included there).
//!
//! - [`FileSink`]: a real durable sink, an append-only file fsynced once per batch.
//! - [`ControlledSink`]: a `FileSink` whose every commit waits for the test to say what happens
//!   (pass, fail, panic, …), so tests decide exactly which items share a batch.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tokio_mpsc;
use winddown::commit::Sink;

/// An append-only log of byte records, made durable with one `fdatasync` per batch.
///
/// On-disk format: records back to back, each `len: u32 little-endian` then `len` payload bytes. No
/// header, no checksum: this is a test and benchmark sink, not a recoverable log (a torn tail after
/// a crash would read as a short record).
pub(crate) struct FileSink {
    file: File,
    path: PathBuf,
    next_seq: u64,
    buf: Vec<u8>,
    /// `sync_data` calls made by `commit` and `sync`.
    pub(crate) fsyncs: u64,
}

impl FileSink {
    /// Creates the log file (it must not exist) and fsyncs its directory so the file itself
    /// survives a crash.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)?;
        // Make the new file's directory entry durable. Windows cannot open a directory as a
        // file (and NTFS journals directory entries itself).
        #[cfg(unix)]
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(FileSink {
            file,
            path: path.to_owned(),
            next_seq: 0,
            buf: Vec::new(),
            fsyncs: 0,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Every record in the file at `path`, in order; record `i` was acked with sequence number `i`.
    pub(crate) fn read_all(path: &Path) -> io::Result<Vec<Vec<u8>>> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "torn length"))?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "torn record"));
            }
            records.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        Ok(records)
    }

    fn write_batch(&mut self, batch: &[Vec<u8>]) -> io::Result<Vec<u64>> {
        self.buf.clear();
        for item in batch {
            let len = u32::try_from(item.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf.extend_from_slice(item);
        }
        self.file.write_all(&self.buf)?;
        let first = self.next_seq;
        self.next_seq += batch.len() as u64;
        Ok((first..self.next_seq).collect())
    }
}

impl Sink for FileSink {
    type Item = Vec<u8>;
    type Ack = u64;
    type Error = io::Error;

    fn commit(&mut self, batch: &[Vec<u8>]) -> io::Result<Vec<u64>> {
        let acks = self.write_batch(batch)?;
        self.file.sync_data()?;
        self.fsyncs += 1;
        Ok(acks)
    }

    fn item_bytes(item: &Vec<u8>) -> usize {
        4 + item.len()
    }

    // Any I/O error (a short write, a failed fsync) leaves the file in a state it cannot vouch for.
}

/// What the next commit of a [`ControlledSink`] does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    /// Commit to the file.
    Pass,
    /// Return an error, without touching the file.
    Fail { poisons: bool },
    /// Panic, without touching the file.
    Panic,
    /// Write to the file but return one ack too few.
    DropAnAck,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlledError {
    #[error("injected failure (poisons: {poisons})")]
    Injected { poisons: bool },
    #[error("file sink failed")]
    Io(#[from] io::Error),
}

/// A [`FileSink`] whose commits each wait for a [`Step`] from the test.
pub(crate) struct ControlledSink {
    pub(crate) inner: FileSink,
    steps: std_mpsc::Receiver<Step>,
    entered: tokio_mpsc::UnboundedSender<Vec<Vec<u8>>>,
}

/// The test's side of a [`ControlledSink`].
pub(crate) struct Controller {
    steps: std_mpsc::Sender<Step>,
    entered: tokio_mpsc::UnboundedReceiver<Vec<Vec<u8>>>,
}

impl ControlledSink {
    pub(crate) fn new(inner: FileSink) -> (Self, Controller) {
        let (step_tx, step_rx) = std_mpsc::channel();
        let (entered_tx, entered_rx) = tokio_mpsc::unbounded_channel();
        (
            ControlledSink {
                inner,
                steps: step_rx,
                entered: entered_tx,
            },
            Controller {
                steps: step_tx,
                entered: entered_rx,
            },
        )
    }
}

impl Controller {
    /// Waits until the sink is inside `commit` and returns the batch it was given. The committer
    /// has taken those items off the queue by then.
    pub(crate) async fn next_batch(&mut self) -> Vec<Vec<u8>> {
        tokio::time::timeout(Duration::from_secs(10), self.entered.recv())
            .await
            .expect("the sink was not called within 10 s")
            .expect("the sink is gone")
    }

    /// Lets the commit that is waiting (or the next one) proceed as `step` says. Steps queue up.
    pub(crate) fn step(&self, step: Step) {
        self.steps.send(step).expect("the sink is gone");
    }
}

impl Sink for ControlledSink {
    type Item = Vec<u8>;
    type Ack = u64;
    type Error = ControlledError;

    fn commit(&mut self, batch: &[Vec<u8>]) -> Result<Vec<u64>, ControlledError> {
        let _ = self.entered.send(batch.to_vec());
        // With the controller gone, commits just pass (so that a test's final drain cannot hang).
        match self.steps.recv().unwrap_or(Step::Pass) {
            Step::Pass => Ok(self.inner.commit(batch)?),
            Step::Fail { poisons } => Err(ControlledError::Injected { poisons }),
            Step::Panic => panic!("injected panic in Sink::commit"),
            Step::DropAnAck => {
                let mut acks = self.inner.commit(batch)?;
                acks.pop();
                Ok(acks)
            }
        }
    }

    fn item_bytes(item: &Vec<u8>) -> usize {
        FileSink::item_bytes(item)
    }

    fn poisons(error: &ControlledError) -> bool {
        match error {
            ControlledError::Injected { poisons } => *poisons,
            ControlledError::Io(_) => true,
        }
    }
}

/// A fresh directory on the real disk (not tmpfs): under the target directory of this build.
pub(crate) fn disk_dir(prefix: &str) -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-data");
    std::fs::create_dir_all(&base).expect("create target/test-data");
    let base = base.canonicalize().expect("canonicalize target/test-data");
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .expect("create a temp dir under target/test-data")
}

/// The file system type holding `path` (from `/proc/self/mounts`), where that can be told.
pub(crate) fn file_system_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_device, mount_point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(mount_point)
                .then(|| (mount_point.len(), fs_type.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs_type)| fs_type)
}
