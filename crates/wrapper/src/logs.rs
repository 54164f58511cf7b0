//! PROGRAM's stdout and stderr as timestamped lines in `DIR/NAME.log`, rotated by size
//! (`NAME.log.1` is the newest rotated file, `NAME.log.KEEP` the oldest kept).
//!
//! Each pipe is read on a thread of its own until end of file, which comes only once every
//! process holding its write end — PROGRAM and whatever it started — is gone: the drain kills
//! the tree first and then waits for these threads, so nothing PROGRAM wrote while it stopped is
//! lost. Line format: `2026-12-06T23:59:01.123Z stdout <the line>`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::child::Pipe;

/// The log files of one PROGRAM. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Logs {
    inner: Arc<Mutex<Rotator>>,
}

#[derive(Debug)]
struct Rotator {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
    /// The first write error, kept so that it is reported once (and in the report).
    error: Option<String>,
}

impl Logs {
    /// Opens (creates) `dir/name.log` for appending. Fails at once when the directory cannot be
    /// created or written, so that output is never lost later.
    pub(crate) fn open(dir: &Path, name: &str, max_bytes: u64, keep: u32) -> Result<Logs, String> {
        let what = |e: io::Error| {
            format!(
                "the log directory {} (--log-dir) cannot be written: {e}; create it, or give one this user can write",
                dir.display()
            )
        };
        std::fs::create_dir_all(dir).map_err(what)?;
        let path = dir.join(format!("{name}.log"));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(what)?;
        // A read-only mount can let the open through (an existing file) and refuse the write.
        let probe = dir.join(format!(".{name}.log.probe"));
        File::create(&probe).map_err(what)?;
        let _ = std::fs::remove_file(&probe);
        let size = file.metadata().map_err(what)?.len();
        Ok(Logs {
            inner: Arc::new(Mutex::new(Rotator {
                dir: dir.to_owned(),
                name: name.to_owned(),
                max_bytes,
                keep,
                file,
                size,
                error: None,
            })),
        })
    }

    /// The current log file.
    pub(crate) fn path(&self) -> PathBuf {
        let r = self.lock();
        r.dir.join(format!("{}.log", r.name))
    }

    /// The directory the logs (and the stop report) are in.
    pub(crate) fn dir(&self) -> PathBuf {
        self.lock().dir.clone()
    }

    /// Reads `pipe` to its end on a thread of its own, writing each line tagged `stream`.
    /// The thread returns the number of lines written.
    pub(crate) fn capture(&self, pipe: Pipe, stream: &'static str) -> std::thread::JoinHandle<u64> {
        let logs = self.clone();
        std::thread::Builder::new()
            .name(format!("log-{stream}"))
            .spawn(move || logs.pump(pipe, stream))
            .expect("spawning a log thread")
    }

    fn pump(&self, pipe: Pipe, stream: &'static str) -> u64 {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut lines = 0;
        let mut partial: Vec<u8> = Vec::new();
        loop {
            let chunk = match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => chunk,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, stream, "reading PROGRAM's output failed");
                    break;
                }
            };
            // Every complete line of the chunk in one write: one lock and one syscall per chunk.
            let mut batch: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            let mut joined: Option<Vec<u8>> = None;
            for (i, &b) in chunk.iter().enumerate() {
                if b == b'\n' {
                    if partial.is_empty() {
                        batch.push(&chunk[start..i]);
                    } else {
                        partial.extend_from_slice(&chunk[start..i]);
                        joined = Some(std::mem::take(&mut partial));
                    }
                    start = i + 1;
                }
            }
            let consumed = chunk.len();
            let tail = chunk[start..].to_vec();
            let mut all: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
            if let Some(j) = &joined {
                all.push(j);
            }
            all.extend(batch);
            lines += all.len() as u64;
            self.write_lines(stream, &all);
            partial.extend_from_slice(&tail);
            reader.consume(consumed);
        }
        if !partial.is_empty() {
            self.write_lines(stream, &[&partial]);
            lines += 1;
        }
        lines
    }

    /// Writes `lines` (without their newlines), rotating whenever the file would pass its size.
    fn write_lines(&self, stream: &str, lines: &[&[u8]]) {
        if lines.is_empty() {
            return;
        }
        let stamp = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let mut r = self.lock();
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 40).sum());
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let len = (stamp.len() + stream.len() + line.len() + 3) as u64;
            if r.size + out.len() as u64 + len > r.max_bytes && r.size + out.len() as u64 > 0 {
                r.write(&out);
                out.clear();
                r.rotate();
            }
            out.extend_from_slice(stamp.as_bytes());
            out.push(b' ');
            out.extend_from_slice(stream.as_bytes());
            out.push(b' ');
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        r.write(&out);
    }

    /// Makes everything written durable (the drain's last step).
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.lock().file.sync_all()
    }

    /// The first write error, if writing the logs ever failed.
    pub(crate) fn error(&self) -> Option<String> {
        self.lock().error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rotator> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Rotator {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.file.write_all(bytes) {
            Ok(()) => self.size += bytes.len() as u64,
            Err(e) => {
                if self.error.is_none() {
                    tracing::error!(error = %e, "writing PROGRAM's log failed; its output is being lost");
                    self.error = Some(e.to_string());
                }
            }
        }
    }

    fn numbered(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{}.log.{n}", self.name))
    }

    /// `NAME.log` → `NAME.log.1` → … → `NAME.log.KEEP`; the oldest is dropped.
    fn rotate(&mut self) {
        let _ = self.file.sync_all();
        let current = self.dir.join(format!("{}.log", self.name));
        let result = (|| -> io::Result<()> {
            if self.keep == 0 {
                std::fs::remove_file(&current)?;
            } else {
                let _ = std::fs::remove_file(self.numbered(self.keep));
                for n in (1..self.keep).rev() {
                    let from = self.numbered(n);
                    if from.exists() {
                        std::fs::rename(&from, self.numbered(n + 1))?;
                    }
                }
                std::fs::rename(&current, self.numbered(1))?;
            }
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&current)?;
            self.size = 0;
            // The renames are durable once the directory is.
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "rotating PROGRAM's log failed; writing on to the same file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let logs = Logs::open(dir.path(), "p", 1024, 2).unwrap();
        let text: Vec<u8> = (0..200)
            .flat_map(|i| format!("line {i:04}\n").into_bytes())
            .collect();
        let lines = logs.pump(Box::new(std::io::Cursor::new(text)), "stdout");
        assert_eq!(lines, 200);
        let mut seen = Vec::new();
        for name in ["p.log.2", "p.log.1", "p.log"] {
            let body = std::fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(body.len() <= 1024, "{name} is {} bytes", body.len());
            seen.extend(
                body.lines()
                    .map(|l| l.rsplit(' ').next().unwrap().to_owned()),
            );
        }
        assert!(!dir.path().join("p.log.3").exists());
        // The newest lines survive, in order, without a gap.
        let last: u32 = seen.last().unwrap().parse().unwrap();
        assert_eq!(last, 199);
        let first: u32 = seen[0].parse().unwrap();
        let expect: Vec<String> = (first..=199).map(|i| format!("{i:04}")).collect();
        assert_eq!(seen, expect);
    }

    #[cfg(unix)]
    #[test]
    fn an_unwritable_directory_is_named_at_open() {
        let err = Logs::open(Path::new("/proc/self/nonexistent"), "p", 1024, 1).unwrap_err();
        assert!(
            err.contains("--log-dir") && err.contains("/proc/self/nonexistent"),
            "{err}"
        );
    }
}
