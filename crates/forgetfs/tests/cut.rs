//! forgetfs through a real mount: what a cut keeps and what it drops, SQLite in WAL mode on it
//! (shared-memory index, locks across processes), and bad input. Needs root and /dev/fuse; skips
//! with a message otherwise.
#![cfg(target_os = "linux")]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use forgetfs::{Error, Mount, Options};

struct Fixture {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
}

fn fixture() -> Option<Fixture> {
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    Some(Fixture {
        _dir: dir,
        backing,
        mnt,
    })
}

impl Fixture {
    fn mount(&self) -> Mount {
        self.mount_with(&Options::default())
    }

    fn mount_with(&self, options: &Options) -> Mount {
        Mount::new(&self.backing, &self.mnt, options).expect("mount")
    }

    /// Cuts, unmounts, mounts again.
    fn reboot(&self, mount: Mount) -> (Mount, forgetfs::CutReport) {
        let report = mount.cut();
        assert!(report.failures.is_empty(), "{report}");
        mount.unmount().expect("unmount");
        (self.mount(), report)
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// A file that exists durably, holding `text`.
fn durable_file(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.write_all(text).unwrap();
    f.sync_all().unwrap();
    sync_dir(dir);
    path
}

#[test]
fn a_write_without_fsync_is_gone_after_a_cut_and_one_with_fsync_stays() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    let a = durable_file(&fx.mnt, "a", b"synced");
    let b = durable_file(&fx.mnt, "b", b"synced");
    // a: overwritten and grown, never synced. b: the same, then fsynced.
    for (path, sync) in [(&a, false), (&b, true)] {
        let mut f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all(b"CHANGED and longer").unwrap();
        if sync {
            f.sync_data().unwrap();
        }
    }
    // Writes after b's fsync are gone too.
    OpenOptions::new()
        .append(true)
        .open(&b)
        .unwrap()
        .write_all(b" + unsynced tail")
        .unwrap();
    assert_eq!(fs::read(&a).unwrap(), b"CHANGED and longer");
    let (_mount, report) = fx.reboot(mount);
    assert_eq!(fs::read(&a).unwrap(), b"synced", "{report}");
    assert_eq!(fs::read(&b).unwrap(), b"CHANGED and longer", "{report}");
    assert!(report.writes_undone >= 2, "{report}");
}

#[test]
fn a_truncation_without_fsync_is_undone() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    let a = durable_file(&fx.mnt, "a", &[7u8; 10_000]);
    OpenOptions::new()
        .write(true)
        .open(&a)
        .unwrap()
        .set_len(10)
        .unwrap();
    assert_eq!(fs::metadata(&a).unwrap().len(), 10);
    let (_mount, _) = fx.reboot(mount);
    assert_eq!(fs::read(&a).unwrap(), vec![7u8; 10_000]);
}

#[test]
fn a_created_file_without_a_directory_fsync_disappears_even_if_the_file_was_fsynced() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    fs::create_dir(fx.mnt.join("sub")).unwrap();
    sync_dir(&fx.mnt);
    let kept = fx.mnt.join("sub/kept");
    File::create(&kept).unwrap().sync_all().unwrap();
    sync_dir(&fx.mnt.join("sub"));
    let mut f = File::create(fx.mnt.join("sub/lost")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap(); // the file's data, but not its name
    File::create(fx.mnt.join("sub/also-lost")).unwrap();
    drop(f); // a file still open in this process would leave the old mount busy
    let (_mount, report) = fx.reboot(mount);
    assert!(!fx.mnt.join("sub/lost").exists(), "{report}");
    assert!(!fx.mnt.join("sub/also-lost").exists(), "{report}");
    assert!(kept.exists(), "{report}");
    assert_eq!(report.entries_undone, 2, "{report}");
}

#[test]
fn a_rename_without_a_directory_fsync_is_undone_and_the_replaced_file_comes_back() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    durable_file(&fx.mnt, "target", b"old");
    durable_file(&fx.mnt, "tmp", b"new");
    fs::rename(fx.mnt.join("tmp"), fx.mnt.join("target")).unwrap();
    assert_eq!(fs::read(fx.mnt.join("target")).unwrap(), b"new");
    let (mount, report) = fx.reboot(mount);
    assert_eq!(fs::read(fx.mnt.join("target")).unwrap(), b"old", "{report}");
    assert_eq!(fs::read(fx.mnt.join("tmp")).unwrap(), b"new", "{report}");
    // The same with the directory fsynced: kept.
    fs::rename(fx.mnt.join("tmp"), fx.mnt.join("target")).unwrap();
    sync_dir(&fx.mnt);
    let (_mount, report) = fx.reboot(mount);
    assert_eq!(fs::read(fx.mnt.join("target")).unwrap(), b"new", "{report}");
    assert!(!fx.mnt.join("tmp").exists(), "{report}");
}

#[test]
fn an_unlink_without_a_directory_fsync_is_undone() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    let a = durable_file(&fx.mnt, "a", b"still here");
    let b = durable_file(&fx.mnt, "b", b"gone");
    fs::remove_file(&a).unwrap();
    fs::remove_file(&b).unwrap();
    File::open(&fx.mnt).unwrap(); // no fsync yet
    assert!(!a.exists());
    let names: Vec<_> = fs::read_dir(&fx.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "the graveyard must not show: {names:?}");
    let (_mount, report) = fx.reboot(mount);
    assert_eq!(fs::read(&a).unwrap(), b"still here", "{report}");
    assert_eq!(fs::read(&b).unwrap(), b"gone", "{report}");
}

#[test]
fn tear_keeps_the_newest_write_up_to_its_first_4k_boundary() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount_with(&Options::default().tear(true));
    let a = durable_file(&fx.mnt, "a", &[1u8; 16384]);
    let f = OpenOptions::new().write(true).open(&a).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[2u8; 100], 0).unwrap(); // older: undone
    f.write_all_at(&[3u8; 8192], 1000).unwrap(); // newest: bytes 1000..4096 kept
    drop(f);
    let report = mount.cut();
    assert_eq!(report.torn, Some((1000, 4096)), "{report}");
    mount.unmount().unwrap();
    let _mount = fx.mount();
    let bytes = fs::read(&a).unwrap();
    assert_eq!(bytes.len(), 16384);
    assert!(bytes[..1000].iter().all(|&b| b == 1));
    assert!(bytes[1000..4096].iter().all(|&b| b == 3));
    assert!(bytes[4096..].iter().all(|&b| b == 1));
}

#[test]
fn every_request_fails_after_a_cut_until_the_next_mount() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    let a = durable_file(&fx.mnt, "a", b"x");
    let _ = mount.cut();
    let err = fs::read(&a).and_then(|_| fs::write(&a, b"y")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "{err}"); // EIO
    drop(mount); // unmounts
    assert_eq!(fs::read(fx.backing.join("a")).unwrap(), b"x");
}

/// SQLite in WAL mode with synchronous=FULL: committed transactions survive a cut, and a second
/// process sees them while the first holds the database open (the -shm index is a shared
/// mapping of a file on the mount) and is refused the write lock while the first holds it (POSIX
/// locks, kept by the kernel).
#[test]
fn sqlite_wal_commits_survive_a_cut_and_a_second_process_shares_the_index_and_the_locks() {
    let Some(fx) = fixture() else { return };
    let mount = fx.mount();
    let db = fx.mnt.join("t.sqlite3");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t(x INTEGER, pad TEXT);")
        .unwrap();
    for i in 0..200 {
        conn.execute("INSERT INTO t VALUES (?1, printf('%.*c', 500, 'p'))", [i])
            .unwrap();
    }
    // A second connection in this process reads through the same index.
    let reader = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = reader
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 200);
    // Another process: reads the uncheckpointed WAL, then is refused the write lock.
    conn.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (-1, '');")
        .unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sqlite_child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FORGETFS_CHILD_DB", &db)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("child: rows=200 busy=true"), "{text}");
    conn.execute_batch("ROLLBACK;").unwrap();
    // Not committed: gone. Committed: kept.
    conn.execute_batch("BEGIN; INSERT INTO t VALUES (1000, ''); ")
        .unwrap();
    let (_mount, report) = {
        // The power goes while the connections are open (as a killed process leaves them).
        let report = mount.cut();
        // Closed after the cut (as the kernel closes a killed process's files): a file of this
        // process left open on a detached mount would hang the process at exit.
        drop(conn);
        drop(reader);
        mount.unmount().ok();
        (fx.mount(), report)
    };
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 200, "{report}");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The other process of the test above (does nothing unless it is that process).
#[test]
fn sqlite_child_process() {
    let Some(db) = std::env::var_os("FORGETFS_CHILD_DB") else {
        return;
    };
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.busy_timeout(std::time::Duration::ZERO).unwrap();
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let busy = matches!(
        conn.execute_batch("BEGIN IMMEDIATE;"),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy
    );
    println!("child: rows={rows} busy={busy}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    let Some(fx) = fixture() else { return };
    let missing = fx.backing.join("nope");
    let err = Mount::new(&missing, &fx.mnt, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::Backing { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = Mount::new(&fx.backing, &fx.backing.join("x"), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("mount point"), "{err}");
    let _mount = fx.mount();
    let err = Mount::new(&fx.backing, &fx.mnt, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::MountPointInUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}

/// Found running PostgreSQL on forgetfs (ci/powercut-postgres.sh): forgetfs runs as root and
/// created every file and directory as root, so a server running as its own user found its data
/// directory owned by root and refused it. What a process creates must belong to that process's
/// user and group, as on any file system.
#[test]
fn what_another_user_creates_belongs_to_that_user() {
    let Some(fx) = fixture() else { return };
    if Command::new("runuser").arg("--help").output().is_err() {
        eprintln!("skipped: needs runuser (util-linux)");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a nobody user");
    // The temporary directory is private to root; nobody must reach the mount point.
    let top = fx.mnt.parent().unwrap();
    fs::set_permissions(top, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let _mount = fx.mount();
    let home = fx.mnt.join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(nobody.uid.as_raw()), Some(nobody.gid.as_raw())).unwrap();
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "sh",
            "-c",
            "mkdir \"$1/d\" && echo x > \"$1/d/f\"",
            "sh",
        ])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::MetadataExt;
    for path in [
        fx.backing.join("home/d"),
        fx.backing.join("home/d/f"),
        home.join("d/f"),
    ] {
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (nobody.uid.as_raw(), nobody.gid.as_raw()),
            "{} belongs to {}:{}",
            path.display(),
            meta.uid(),
            meta.gid()
        );
    }
}
