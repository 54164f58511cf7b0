//! The FUSE side: every request passed through to the backing directory, every change recorded in
//! [`Forgetting`] first, and every request refused with `EIO` once the power is cut.
//!
//! Inode numbers are the backing files' own (the backing root is inode 1), and each is mapped to
//! its current backing path. One lock covers the map, the open files and the undo logs, so that
//! a cut happens between two requests, never inside one.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::forget::{CutReport, Forgetting};

/// How long the kernel may cache names and attributes. Every change goes through this mount, so
/// the caches stay true until a cut, after which the mount is replaced.
const TTL: Duration = Duration::from_secs(1);

/// The graveyard's name in the backing root; hidden from the mount.
pub(crate) const GRAVEYARD: &str = ".forgetfs-graveyard";

#[derive(Debug)]
struct Inner {
    /// The power is off: every request fails.
    cut: bool,
    paths: HashMap<u64, PathBuf>,
    handles: HashMap<u64, Arc<File>>,
    next_fh: u64,
    forgetting: Forgetting,
}

/// The state a [`crate::Mount`] shares with its file system.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Mutex<Inner>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in one request must not stop the cut from working: the data is plain maps.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Cuts the power: undoes every unsynced change; every request from now on fails with `EIO`.
    pub(crate) fn cut(&self, tear: bool) -> CutReport {
        let mut inner = self.lock();
        inner.cut = true;
        inner.forgetting.cut(tear)
    }
}

/// The file system.
#[derive(Debug)]
pub(crate) struct ForgetFs {
    root_ino: u64,
    shared: Shared,
}

impl ForgetFs {
    pub(crate) fn new(root: &Path) -> io::Result<(ForgetFs, Shared)> {
        let root_ino = fs::metadata(root)?.ino();
        let graveyard = root.join(GRAVEYARD);
        crate::forget::empty_dir(&graveyard)?;
        let inner = Inner {
            cut: false,
            paths: HashMap::from([(INodeNo::ROOT.0, root.to_path_buf())]),
            handles: HashMap::new(),
            next_fh: 1,
            forgetting: Forgetting::new(graveyard),
        };
        let shared = Shared(Arc::new(Mutex::new(inner)));
        Ok((
            ForgetFs {
                root_ino,
                shared: shared.clone(),
            },
            shared,
        ))
    }

    fn ino(&self, meta: &fs::Metadata) -> u64 {
        if meta.ino() == self.root_ino {
            INodeNo::ROOT.0
        } else {
            meta.ino()
        }
    }

    fn attr(&self, meta: &fs::Metadata) -> FileAttr {
        let time = |secs: i64, nanos: i64| {
            UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos.clamp(0, 999_999_999) as u32)
        };
        let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
        FileAttr {
            ino: INodeNo(self.ino(meta)),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: time(meta.ctime(), meta.ctime_nsec()),
            kind,
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: meta.blksize() as u32,
            flags: 0,
        }
    }

    /// Takes the lock, refusing every request once the power is cut.
    fn live(&self) -> Result<MutexGuard<'_, Inner>, Errno> {
        let inner = self.shared.lock();
        if inner.cut {
            return Err(Errno::EIO);
        }
        Ok(inner)
    }

    /// The backing path of `name` in directory `parent`; the graveyard does not exist.
    fn child(&self, inner: &Inner, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        if parent == INodeNo::ROOT && name == GRAVEYARD {
            return Err(Errno::ENOENT);
        }
        Ok(path_of(inner, parent)?.join(name))
    }

    /// Looks `path` up and remembers it; its attributes.
    fn remember(&self, inner: &mut Inner, path: PathBuf) -> Result<FileAttr, Errno> {
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        let attr = self.attr(&meta);
        inner.paths.insert(attr.ino.0, path);
        Ok(attr)
    }

    fn open_file(
        &self,
        inner: &mut Inner,
        path: &Path,
        flags: i32,
        create: Option<u32>,
    ) -> io::Result<(u64, Arc<File>)> {
        // Always read-write when possible: the undo log reads what a write overwrites. O_APPEND
        // and O_TRUNC are the kernel's business (it sends offsets and truncations itself).
        let custom = flags
            & !(libc_o::ACCMODE | libc_o::APPEND | libc_o::TRUNC | libc_o::CREAT | libc_o::EXCL);
        let mut options = OpenOptions::new();
        options.read(true).write(true).custom_flags(custom);
        if let Some(mode) = create {
            options.mode(mode);
            if flags & libc_o::EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
        }
        let file = match options.open(path) {
            Ok(file) => file,
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(21) =>
            {
                // EISDIR or a read-only file: open it as asked.
                OpenOptions::new()
                    .read(true)
                    .custom_flags(custom)
                    .open(path)?
            }
            Err(e) => return Err(e),
        };
        let fh = inner.next_fh;
        inner.next_fh += 1;
        let file = Arc::new(file);
        inner.handles.insert(fh, file.clone());
        Ok((fh, file))
    }
}

/// The open(2) flags this file needs (libc is not a direct dependency).
mod libc_o {
    pub(super) const ACCMODE: i32 = 0o3;
    pub(super) const CREAT: i32 = 0o100;
    pub(super) const EXCL: i32 = 0o200;
    pub(super) const TRUNC: i32 = 0o1000;
    pub(super) const APPEND: i32 = 0o2000;
}

fn path_of(inner: &Inner, ino: INodeNo) -> Result<PathBuf, Errno> {
    inner.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
}

fn handle(inner: &Inner, fh: FileHandle) -> Result<Arc<File>, Errno> {
    inner.handles.get(&fh.0).cloned().ok_or(Errno::EBADF)
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

/// Points every remembered path under `from` at `to` instead (a directory was renamed).
fn repoint(inner: &mut Inner, from: &Path, to: &Path) {
    for path in inner.paths.values_mut() {
        if let Ok(rest) = path.strip_prefix(from) {
            *path = if rest.as_os_str().is_empty() {
                to.to_path_buf()
            } else {
                to.join(rest)
            };
        }
    }
}

fn to_system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for ForgetFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, self.child(&inner, parent, name));
        let attr = tri!(reply, self.remember(&mut inner, path));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let inner = tri!(reply, self.live());
        let meta = match fh.and_then(|fh| inner.handles.get(&fh.0)) {
            Some(file) => file.metadata(),
            None => fs::symlink_metadata(tri!(reply, path_of(&inner, ino))),
        };
        let meta = tri!(reply, meta.map_err(errno));
        reply.attr(&TTL, &self.attr(&meta));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, path_of(&inner, ino));
        let result = (|| -> io::Result<fs::Metadata> {
            let file = match fh.and_then(|fh| inner.handles.get(&fh.0)) {
                Some(file) => Some(file.clone()),
                None if size.is_some() || atime.is_some() || mtime.is_some() => {
                    Some(Arc::new(OpenOptions::new().write(true).open(&path)?))
                }
                None => None,
            };
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::chown(&path, uid, gid)?;
            }
            if let Some(size) = size {
                // The undo log reads what the truncation drops: a read-write descriptor.
                let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
                inner.forgetting.before_set_len(ino.0, &file, size)?;
                file.set_len(size)?;
            }
            if let Some(file) = &file
                && (atime.is_some() || mtime.is_some())
            {
                let mut times = fs::FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(to_system_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(to_system_time(t));
                }
                file.set_times(times)?;
            }
            fs::symlink_metadata(&path)
        })();
        let meta = tri!(reply, result.map_err(errno));
        reply.attr(&TTL, &self.attr(&meta));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, self.child(&inner, parent, name));
        tri!(reply, fs::create_dir(&path).map_err(errno));
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777));
        owned_by_caller(&path, req);
        inner.forgetting.created(parent.0, path.clone());
        let attr = tri!(reply, self.remember(&mut inner, path));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, true, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut inner = tri!(reply, self.live());
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let from = tri!(reply, self.child(&inner, parent, name));
        let to = tri!(reply, self.child(&inner, newparent, newname));
        let result = (|| -> io::Result<()> {
            let meta = fs::symlink_metadata(&from)?;
            let mut replaced = None;
            match fs::symlink_metadata(&to) {
                Ok(_) if flags.contains(RenameFlags::RENAME_NOREPLACE) => {
                    return Err(io::Error::from_raw_os_error(17)); // EEXIST
                }
                Ok(target) => {
                    if target.is_dir() && fs::read_dir(&to)?.next().is_some() {
                        return Err(io::Error::from_raw_os_error(39)); // ENOTEMPTY
                    }
                    let grave = inner.forgetting.grave();
                    fs::rename(&to, &grave)?;
                    repoint(&mut inner, &to, &grave);
                    replaced = Some(grave);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            if let Err(e) = fs::rename(&from, &to) {
                if let Some(grave) = &replaced {
                    let _ = fs::rename(grave, &to);
                    repoint(&mut inner, grave, &to);
                }
                return Err(e);
            }
            if meta.is_dir() {
                repoint(&mut inner, &from, &to);
            } else {
                inner.paths.insert(self.ino(&meta), to.clone());
            }
            inner.forgetting.renamed(newparent.0, from, to, replaced);
            Ok(())
        })();
        tri!(reply, result.map_err(errno));
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, path_of(&inner, ino));
        let (fh, _) = tri!(
            reply,
            self.open_file(&mut inner, &path, flags.0, None)
                .map_err(errno)
        );
        // Keep the page cache across opens: nothing changes the backing files behind the kernel's
        // back (a cut is followed by a new mount), and SQLite's shared-memory file is mapped by
        // several processes that open it at different times.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let file = {
            let inner = tri!(reply, self.live());
            tri!(reply, handle(&inner, fh))
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return reply.error(errno(e)),
            }
        }
        reply.data(&buf[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut inner = tri!(reply, self.live());
        let file = tri!(reply, handle(&inner, fh));
        tri!(
            reply,
            inner
                .forgetting
                .before_write(ino.0, &file, offset, data.len() as u64)
                .map_err(errno)
        );
        tri!(reply, file.write_all_at(data, offset).map_err(errno));
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The backing file is not fsynced: what counts as durable is what this mount keeps at a
        // cut, and the backing directory's own durability plays no part in that.
        let mut inner = tri!(reply, self.live());
        inner.forgetting.file_synced(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _live = tri!(reply, self.live());
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let inner = tri!(reply, self.live());
        let path = tri!(reply, path_of(&inner, ino));
        let listing = (|| -> io::Result<Vec<(u64, FileType, std::ffi::OsString)>> {
            let mut entries = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            let mut names = Vec::new();
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                if ino == INodeNo::ROOT && entry.file_name() == GRAVEYARD {
                    continue;
                }
                let meta = entry.metadata()?;
                let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
                names.push((self.ino(&meta), kind, entry.file_name()));
            }
            names.sort_by(|a, b| a.2.cmp(&b.2));
            entries.extend(names);
            Ok(entries)
        })();
        let listing = tri!(reply, listing.map_err(errno));
        for (i, (ino, kind, name)) in listing.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut inner = tri!(reply, self.live());
        inner.forgetting.dir_synced(ino.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let inner = tri!(reply, self.live());
        let root = tri!(reply, path_of(&inner, INodeNo::ROOT));
        drop(inner);
        match nix::sys::statvfs::statvfs(&root) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _live = tri!(reply, self.live());
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, self.child(&inner, parent, name));
        let existed = path.exists();
        let opened = self.open_file(&mut inner, &path, flags, Some(mode & !umask & 0o7777));
        let (fh, _) = tri!(reply, opened.map_err(errno));
        if !existed {
            owned_by_caller(&path, req);
            inner.forgetting.created(parent.0, path.clone());
        }
        let attr = tri!(reply, self.remember(&mut inner, path));
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut inner = tri!(reply, self.live());
        let file = tri!(reply, handle(&inner, fh));
        tri!(
            reply,
            inner
                .forgetting
                .before_range_change(ino.0, &file, offset, length)
                .map_err(errno)
        );
        let flags = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
        match nix::fcntl::fallocate(&*file, flags, offset as i64, length as i64) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }
}

impl ForgetFs {
    /// unlink / rmdir: the entry goes to the graveyard, so that a cut can bring it back.
    fn remove(&self, parent: INodeNo, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut inner = tri!(reply, self.live());
        let path = tri!(reply, self.child(&inner, parent, name));
        let result = (|| -> io::Result<()> {
            let meta = fs::symlink_metadata(&path)?;
            match (dir, meta.is_dir()) {
                (true, false) => return Err(io::Error::from_raw_os_error(20)), // ENOTDIR
                (false, true) => return Err(io::Error::from_raw_os_error(21)), // EISDIR
                (true, true) if fs::read_dir(&path)?.next().is_some() => {
                    return Err(io::Error::from_raw_os_error(39)); // ENOTEMPTY
                }
                _ => {}
            }
            let grave = inner.forgetting.grave();
            fs::rename(&path, &grave)?;
            repoint(&mut inner, &path, &grave);
            inner.forgetting.removed(parent.0, path, grave);
            Ok(())
        })();
        tri!(reply, result.map_err(errno));
        reply.ok();
    }
}

/// Gives what `req`'s process created to its user and group, as the kernel would: forgetfs runs
/// as root, so the backing file starts out root's (a server running as its own user then refuses
/// its data directory). When forgetfs is not root the chown fails, and the file is its user's.
fn owned_by_caller(path: &Path, req: &Request) {
    if req.uid() != 0 || req.gid() != 0 {
        let _ = std::os::unix::fs::chown(path, Some(req.uid()), Some(req.gid()));
    }
}
