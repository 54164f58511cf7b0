//! A real fsync failure: the store lives on ext4 on a loop device whose backing file sits on a
//! small tmpfs. When the tmpfs fills, the kernel's writeback to the loop device fails and fsync
//! reports the error (SQLITE_IOERR_FSYNC). The batch must fail with `Io`, the writer must be
//! poisoned (refusing all later batches and a clean close), and once the device has room again the
//! store must reopen and hold the acknowledged batches.
//!
//! One caveat, measured rather than assumed: on this stack (Linux 6.18, ext4 on loop on tmpfs) the
//! *file system* loses part of the last write that fsync acknowledged before the device failed
//! ("failed to convert unwritten extents to written extents -- potential data loss!" in the kernel
//! log). A plain `write`+`fsync` loop in Python shows the same: after remounting, the last
//! acknowledged chunk has zeroed pages. So the test requires every acknowledged batch but the last
//! to survive, and says so loudly when the last one did not; the SIGKILL and disk-full tests hold
//! the store to "every acknowledged record" without exception.
//!
//! Needs root, `losetup` and `mkfs.ext4`; skipped otherwise.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Mount, chain, commit, open, skip};
use depot::store::{AppendRequest, Appended, StoreError, Writer};
use winddown::commit::Sink;

struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &Path) -> Result<LoopDevice, String> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .map_err(|e| format!("cannot run losetup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(LoopDevice(
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        ))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn mkfs(device: &str) -> Result<(), String> {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-N", "64", "-m", "0"])
        .args(["-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0"])
        .arg(device)
        .output()
        .map_err(|e| format!("cannot run mkfs.ext4: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn batch(n: &mut u64) -> Vec<AppendRequest> {
    common::padded_batch(n, &"e".repeat(2000), false)
}

#[test]
fn a_failed_fsync_poisons_the_writer() {
    let base = tempfile::tempdir().unwrap();
    let backing = base.path().join("backing");
    let ext4 = base.path().join("ext4");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&ext4).unwrap();
    let tmpfs = match Mount::tmpfs(&backing, "24m") {
        Ok(mount) => mount,
        Err(why) => return skip("a_failed_fsync_poisons_the_writer…", &why),
    };
    let image = backing.join("disk.img");
    fs::File::create(&image).unwrap().set_len(96 << 20).unwrap(); // sparse: larger than the tmpfs
    let device = match LoopDevice::attach(&image) {
        Ok(device) => device,
        Err(why) => return skip("a_failed_fsync_poisons_the_writer…", &why),
    };
    if let Err(why) = mkfs(&device.0) {
        return skip("a_failed_fsync_poisons_the_writer…", &why);
    }
    // Leave the ext4 room to spare but the tmpfs under it only a few MiB.
    let filler = backing.join("filler");
    let used = fs::metadata(&image)
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .unwrap();
    let filler_bytes = (24u64 << 20).saturating_sub(used).saturating_sub(6 << 20);
    fs::write(&filler, vec![1u8; filler_bytes as usize]).unwrap();

    let ext4_mount = Mount::new(&ext4, &[&device.0, ext4.to_str().unwrap()]).unwrap();
    let data: PathBuf = ext4.join("data");
    fs::create_dir(&data).unwrap();

    let store = open(&data);
    let mut writer = store.writer;
    let mut n = 0;
    let mut acked: Vec<(AppendRequest, Appended)> = Vec::new();
    let err = loop {
        let requests = batch(&mut n);
        match commit(&mut writer, &requests) {
            Ok(acks) => acked.extend(
                requests
                    .into_iter()
                    .zip(acks.into_iter().map(|a| a.unwrap())),
            ),
            Err(err) => break err,
        }
        assert!(n < 200_000, "the backing tmpfs never filled up");
    };
    eprintln!(
        "after {} acknowledged requests: {}",
        acked.len(),
        chain(&err)
    );
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(<Writer as Sink>::poisons(&err));
    assert!(writer.is_poisoned());
    let again = commit(&mut writer, &batch(&mut n)).unwrap_err();
    assert!(matches!(again, StoreError::Poisoned { .. }), "{again:?}");
    assert!(matches!(writer.close(), Err(StoreError::Poisoned { .. })));
    drop(store.readers);

    // Give the block device room again, remount (ext4 replays its journal), and read back.
    drop(ext4_mount);
    fs::remove_file(&filler).unwrap();
    let ext4_mount = Mount::new(&ext4, &[&device.0, ext4.to_str().unwrap()]).unwrap();
    let store = open(&data);
    eprintln!("{}", store.report);
    let intact = |request: &AppendRequest, ack: &Appended| {
        let records = store
            .readers
            .read(&request.stream, ack.first - 1, request.payloads.len())
            .unwrap();
        records
            .iter()
            .map(|r| r.payload.as_str())
            .eq(request.payloads.iter().map(String::as_str))
    };
    assert!(
        acked.len() >= 16,
        "too few batches before the failure to tell anything"
    );
    let (earlier, last) = acked.split_at(acked.len() - 8); // a batch is 8 requests
    for (request, ack) in earlier {
        assert!(
            intact(request, ack),
            "acknowledged records of stream {} {:?} lost",
            request.stream,
            ack
        );
    }
    if !last.iter().all(|(request, ack)| intact(request, ack)) {
        eprintln!(
            "NOTE: the file system lost the last acknowledged batch after the device failed \
             (see this file's docs); all {} earlier requests are intact",
            earlier.len()
        );
    }
    store.writer.close().unwrap();
    drop(ext4_mount);
    drop(device);
    drop(tmpfs);
}
