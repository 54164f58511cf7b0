//! The single-instance lock across processes, on every platform (under Wine in CI's Windows
//! stage): one process holds it, another reads who holds it. On Windows a lock over the whole
//! file would make that read fail (Windows locks are mandatory), and `depot status`/`stop` would
//! take a running depot for a stopped one (issue #14, item C).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use winddown::{LockError, LockFile};

const CHILD_ENV: &str = "WINDDOWN_LOCK_CHILD";

/// The child's side: takes the lock named by `WINDDOWN_LOCK_CHILD`, says so, and holds it until
/// its standard input closes.
#[test]
#[ignore = "child process of the lock tests"]
fn lock_holder_process() {
    let path = std::env::var(CHILD_ENV).expect("run by the lock tests");
    let lock = LockFile::acquire(&path).unwrap();
    println!("LOCKED {}", std::process::id());
    std::io::stdout().flush().unwrap();
    let _ = std::io::stdin().read_line(&mut String::new());
    lock.release();
}

#[test]
fn another_process_reads_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.lock");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let locked = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("LOCKED "))
        .expect("the child took the lock");
    let pid: u32 = locked.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert_eq!(pid, child.id());

    assert_eq!(LockFile::holder(&path), Some(pid), "holder while locked");
    match LockFile::acquire(&path) {
        Err(LockError::Held { pid: held, .. }) => assert_eq!(held, Some(pid)),
        other => panic!("expected Held by {pid}, got {other:?}"),
    }
    // Asking did not take or break the lock.
    assert_eq!(LockFile::holder(&path), Some(pid), "holder after probing");

    drop(child.stdin.take()); // the child releases the lock and exits
    child.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while LockFile::holder(&path).is_some() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(LockFile::holder(&path), None, "holder after the exit");
    let mine = LockFile::acquire(&path).unwrap();
    assert_eq!(LockFile::holder(&path), Some(std::process::id()));
    mine.release();
}
