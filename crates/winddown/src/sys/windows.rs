//! Windows FFI the `windows-service` crate does not cover: the parent process (ToolHelp), the
//! session id, the Event Log, the service registry keys, two `QueryServiceConfig2W` levels,
//! byte-range file locks, and the security descriptors of the service's data directory.
//! Every `unsafe` block of the crate's Windows code is here, each with its `SAFETY` note; handles
//! are owned by RAII types that close them once.

use std::ffi::OsStr;
use std::io;
use std::mem::size_of;
use std::os::windows::ffi::OsStrExt;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::time::Duration;

use windows_service::service::Service;
use windows_sys::Win32::Foundation::{
    ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_NO_MORE_FILES, ERROR_SUCCESS, HANDLE,
    INVALID_HANDLE_VALUE, WIN32_ERROR,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::EventLog::{
    DeregisterEventSource, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE,
    RegisterEventSourceW, ReportEventW,
};
use windows_sys::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_WRITE, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ,
    REG_OPTION_NON_VOLATILE, REG_VALUE_TYPE, RegCloseKey, RegCreateKeyExW, RegDeleteTreeW,
    RegDeleteValueW, RegSetValueExW,
};
use windows_sys::Win32::System::RemoteDesktop::ProcessIdToSessionId;
use windows_sys::Win32::System::Services::{
    QueryServiceConfig2W, SERVICE_CONFIG_DELAYED_AUTO_START_INFO, SERVICE_CONFIG_PRESHUTDOWN_INFO,
    SERVICE_DELAYED_AUTO_START_INFO, SERVICE_PRESHUTDOWN_INFO,
};

use crate::host::scm::EventLevel;

/// `windows_service`'s error as the `io::Error` it mostly wraps (not FFI, but shared by the host
/// and the service manager).
pub(crate) fn io_error(e: windows_service::Error) -> io::Error {
    match e {
        windows_service::Error::Winapi(e) => e,
        other => io::Error::other(other),
    }
}

/// `s` as a NUL-terminated UTF-16 string; an interior NUL is an error, not a truncation.
fn wide(s: impl AsRef<OsStr>) -> io::Result<Vec<u16>> {
    let mut w: Vec<u16> = s.as_ref().encode_wide().collect();
    if w.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?} contains a NUL character", s.as_ref()),
        ));
    }
    w.push(0);
    Ok(w)
}

fn win32(code: WIN32_ERROR) -> io::Result<()> {
    if code == ERROR_SUCCESS {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(code as i32))
    }
}

/// The image name (`services.exe`) of the process that started this one, if it still runs.
/// One ToolHelp snapshot of the process list: about 3 ms, and it works under Wine too.
pub(crate) fn parent_process_image() -> io::Result<Option<String>> {
    // SAFETY: no pointer arguments; the result is checked before use.
    let raw = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if raw == INVALID_HANDLE_VALUE || raw.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a valid snapshot handle that nothing else owns; `OwnedHandle` closes it once.
    let snapshot = unsafe { OwnedHandle::from_raw_handle(raw) };
    let mut processes = Vec::new();
    let mut entry = PROCESSENTRY32W {
        dwSize: size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    // SAFETY: the handle is a live process snapshot and `entry` a PROCESSENTRY32W whose dwSize is
    // set, as Process32FirstW/NextW require; they write only into `entry`.
    let mut more = unsafe { Process32FirstW(snapshot.as_raw_handle(), &mut entry) } != 0;
    while more {
        let len = entry
            .szExeFile
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(entry.szExeFile.len());
        processes.push((
            entry.th32ProcessID,
            entry.th32ParentProcessID,
            String::from_utf16_lossy(&entry.szExeFile[..len]),
        ));
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot.as_raw_handle(), &mut entry) } != 0;
    }
    let end = io::Error::last_os_error();
    if end.raw_os_error() != Some(ERROR_NO_MORE_FILES as i32) && processes.is_empty() {
        return Err(end);
    }
    let me = std::process::id();
    let Some(parent) = processes
        .iter()
        .find(|(pid, _, _)| *pid == me)
        .map(|(_, parent, _)| *parent)
    else {
        return Ok(None);
    };
    Ok(processes
        .into_iter()
        .find(|(pid, _, _)| *pid == parent)
        .map(|(_, _, image)| image))
}

/// The Terminal Services session of this process (0: the services' session).
pub(crate) fn session_id() -> io::Result<u32> {
    let mut session = 0u32;
    // SAFETY: `session` is a valid u32 the call writes into.
    if unsafe { ProcessIdToSessionId(std::process::id(), &mut session) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(session)
}

/// An Event Log source handle (`RegisterEventSourceW`), deregistered on drop.
#[derive(Debug)]
pub(crate) struct EventSource(HANDLE);

// SAFETY: an event source handle is not tied to the thread that opened it; ReportEventW may be
// called with it from any thread, concurrently (the Event Log serialises the writes).
unsafe impl Send for EventSource {}
// SAFETY: as above: every use through `&self` is a ReportEventW call, which is thread-safe.
unsafe impl Sync for EventSource {}

impl EventSource {
    /// Opens the source `name` on the local machine. Works whether or not the source is registered
    /// (an unregistered source logs to the Application log without a message file).
    pub(crate) fn open(name: &str) -> io::Result<Self> {
        let name = wide(name)?;
        // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; a null server
        // name means the local machine.
        let handle = unsafe { RegisterEventSourceW(ptr::null(), name.as_ptr()) };
        if handle.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(EventSource(handle))
    }

    /// Writes one entry with `message` as its only string. The event id is the level's (1 info,
    /// 2 warning, 3 error): with the message file `install` registers (.NET's
    /// `EventLogMessages.dll`, whose every id reads "%1"), Event Viewer shows the message as is.
    pub(crate) fn report(&self, level: EventLevel, message: &str) -> io::Result<()> {
        let (kind, id) = match level {
            EventLevel::Info => (EVENTLOG_INFORMATION_TYPE, 1),
            EventLevel::Warning => (EVENTLOG_WARNING_TYPE, 2),
            EventLevel::Error => (EVENTLOG_ERROR_TYPE, 3),
        };
        // One insertion string is limited to 31 839 characters; NULs would cut it short.
        let text: String = message
            .chars()
            .map(|c| if c == '\0' { ' ' } else { c })
            .take(30_000)
            .collect();
        let text = wide(text)?;
        let strings = [text.as_ptr()];
        // SAFETY: the handle is a live event source; `strings` holds one pointer to a
        // NUL-terminated UTF-16 string, both outliving the call; no SID and no raw data.
        let ok = unsafe {
            ReportEventW(
                self.0,
                kind,
                0,
                id,
                ptr::null_mut(),
                1,
                0,
                strings.as_ptr(),
                ptr::null(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for EventSource {
    fn drop(&mut self) {
        // SAFETY: the handle came from RegisterEventSourceW and is deregistered only here, once.
        unsafe { DeregisterEventSource(self.0) };
    }
}

/// Reads a fixed-size `SERVICE_CONFIG_*` structure (one without pointers) of `service`.
///
/// # Safety
/// `T` must be the structure `QueryServiceConfig2W` writes for `level`, and contain no pointers.
unsafe fn query_config2<T: Default>(service: &Service, level: u32) -> io::Result<T> {
    let mut info = T::default();
    let mut needed = 0u32;
    // SAFETY: the service handle lives as long as `service`; `info` is a writable `T` of the size
    // passed, which the caller guarantees is what this level writes.
    let ok = unsafe {
        QueryServiceConfig2W(
            service.raw_handle(),
            level,
            (&mut info as *mut T).cast(),
            size_of::<T>() as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(ERROR_INSUFFICIENT_BUFFER as i32) {
            return Err(io::Error::other(format!(
                "QueryServiceConfig2W level {level} wants {needed} bytes, not {}",
                size_of::<T>()
            )));
        }
        return Err(e);
    }
    Ok(info)
}

/// The service's preshutdown timeout (`SERVICE_CONFIG_PRESHUTDOWN_INFO`). Needs
/// `SERVICE_QUERY_CONFIG` access.
pub(crate) fn preshutdown_timeout(service: &Service) -> io::Result<Duration> {
    // SAFETY: SERVICE_PRESHUTDOWN_INFO is what this level writes: one u32, no pointers.
    let info: SERVICE_PRESHUTDOWN_INFO =
        unsafe { query_config2(service, SERVICE_CONFIG_PRESHUTDOWN_INFO)? };
    Ok(Duration::from_millis(u64::from(info.dwPreshutdownTimeout)))
}

/// Whether the automatic start is delayed (`SERVICE_CONFIG_DELAYED_AUTO_START_INFO`).
pub(crate) fn delayed_auto_start(service: &Service) -> io::Result<bool> {
    // SAFETY: SERVICE_DELAYED_AUTO_START_INFO is what this level writes: one BOOL, no pointers.
    let info: SERVICE_DELAYED_AUTO_START_INFO =
        unsafe { query_config2(service, SERVICE_CONFIG_DELAYED_AUTO_START_INFO)? };
    Ok(info.fDelayedAutostart != 0)
}

/// An open registry key, closed on drop.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: the key came from RegCreateKeyExW and is closed only here, once.
        unsafe { RegCloseKey(self.0) };
    }
}

impl Key {
    /// Opens (creating if needed) `HKLM\<path>` for writing.
    fn create(path: &str) -> io::Result<Key> {
        let path = wide(path)?;
        let mut key: HKEY = ptr::null_mut();
        // SAFETY: `path` is NUL-terminated and outlives the call; no class, no security
        // attributes, no disposition wanted; `key` receives the handle.
        win32(unsafe {
            RegCreateKeyExW(
                HKEY_LOCAL_MACHINE,
                path.as_ptr(),
                0,
                ptr::null(),
                REG_OPTION_NON_VOLATILE,
                KEY_WRITE,
                ptr::null(),
                &mut key,
                ptr::null_mut(),
            )
        })?;
        Ok(Key(key))
    }

    fn set(&self, name: &str, kind: REG_VALUE_TYPE, data: &[u8]) -> io::Result<()> {
        let name = wide(name)?;
        // SAFETY: the key is open for writing; `name` is NUL-terminated; `data` is `data.len()`
        // readable bytes in the layout `kind` calls for (the callers build it so).
        win32(unsafe {
            RegSetValueExW(
                self.0,
                name.as_ptr(),
                0,
                kind,
                data.as_ptr(),
                data.len() as u32,
            )
        })
    }

    /// Removes the value `name`; one that is not there is already gone.
    fn delete(&self, name: &str) -> io::Result<()> {
        let name = wide(name)?;
        // SAFETY: the key is open for writing (KEY_WRITE includes KEY_SET_VALUE); `name` is
        // NUL-terminated and outlives the call.
        match unsafe { RegDeleteValueW(self.0, name.as_ptr()) } {
            ERROR_FILE_NOT_FOUND => Ok(()),
            code => win32(code),
        }
    }
}

fn utf16_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_le_bytes()).collect()
}

fn event_source_key(name: &str) -> String {
    format!(r"SYSTEM\CurrentControlSet\Services\EventLog\Application\{name}")
}

/// Registers the Event Log source `name` in the Application log, with `message_file` (a
/// `REG_EXPAND_SZ` path) for its messages.
pub(crate) fn register_event_source(name: &str, message_file: &str) -> io::Result<()> {
    let key = Key::create(&event_source_key(name))?;
    key.set(
        "EventMessageFile",
        REG_EXPAND_SZ,
        &utf16_bytes(&wide(message_file)?),
    )?;
    // Error, warning and information entries.
    key.set("TypesSupported", REG_DWORD, &7u32.to_le_bytes())
}

/// Removes the Event Log source `name`; `false` if it was not registered.
pub(crate) fn unregister_event_source(name: &str) -> io::Result<bool> {
    let path = wide(event_source_key(name))?;
    // SAFETY: `path` is NUL-terminated and outlives the call; HKLM is a predefined key.
    match unsafe { RegDeleteTreeW(HKEY_LOCAL_MACHINE, path.as_ptr()) } {
        ERROR_FILE_NOT_FOUND => Ok(false),
        code => win32(code).map(|()| true),
    }
}

/// Sets the service's environment block (`Environment`, `REG_MULTI_SZ` of `KEY=value`, under the
/// service's key), which the SCM adds to the service process's environment.
pub(crate) fn set_service_environment(name: &str, vars: &[(String, String)]) -> io::Result<()> {
    let key = Key::create(&format!(r"SYSTEM\CurrentControlSet\Services\{name}"))?;
    if vars.is_empty() {
        // An update that carries no variables must not leave the last install's in place.
        return key.delete("Environment");
    }
    let mut block = Vec::new();
    for (k, v) in vars {
        let mut entry = wide(format!("{k}={v}"))?;
        block.append(&mut entry);
    }
    block.push(0);
    key.set("Environment", REG_MULTI_SZ, &utf16_bytes(&block))
}

// --- byte-range locks (guard::LockFile) ------------------------------------------------------

use std::fs::File;

use windows_sys::Win32::Foundation::ERROR_LOCK_VIOLATION;
use windows_sys::Win32::Storage::FileSystem::{
    LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

fn overlapped_at(offset: u64) -> OVERLAPPED {
    let mut o = OVERLAPPED::default();
    o.Anonymous.Anonymous.Offset = offset as u32;
    o.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    o
}

/// Takes an exclusive lock on the byte `offset` of `file` at once, if nobody holds it: `Ok(false)`
/// when another handle does. Windows locks are mandatory for the bytes they cover, so the lock
/// covers one byte past the data, and other handles can still read the file.
pub(crate) fn try_lock_byte(file: &File, offset: u64) -> io::Result<bool> {
    let mut o = overlapped_at(offset);
    // SAFETY: the handle is open for as long as `file` lives; `o` is a valid OVERLAPPED holding
    // the offset, and the handle is synchronous, so LockFileEx is done with it when it returns.
    let ok = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut o,
        )
    };
    if ok != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Releases the lock [`try_lock_byte`] took on the byte `offset`.
pub(crate) fn unlock_byte(file: &File, offset: u64) -> io::Result<()> {
    let mut o = overlapped_at(offset);
    // SAFETY: as in `try_lock_byte`.
    if unsafe { UnlockFileEx(file.as_raw_handle(), 0, 1, 0, &mut o) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --- security descriptors (the data directory of service::windows::install) ------------------

use std::path::Path;

use windows_sys::Win32::Foundation::{ERROR_ALREADY_EXISTS, HLOCAL, LocalFree};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetNamedSecurityInfoW, SDDL_REVISION_1,
    SE_FILE_OBJECT, SetNamedSecurityInfoW,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, GetTokenInformation,
    LookupAccountNameW, OBJECT_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION,
    PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES,
    SID_NAME_USE, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::CreateDirectoryW;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Memory the system allocated with `LocalAlloc` for us (a security descriptor, a string), freed
/// once on drop.
struct Local(*mut core::ffi::c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from an API that documents LocalFree as its release, and
            // is freed only here, once.
            unsafe { LocalFree(self.0 as HLOCAL) };
        }
    }
}

/// A NUL-terminated UTF-16 string the system allocated, as a `String`.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated UTF-16 string.
unsafe fn wide_to_string(p: *const u16) -> String {
    if p.is_null() {
        return String::new();
    }
    let mut len = 0;
    // SAFETY: the caller guarantees a NUL terminator, so every read up to it is in bounds.
    while unsafe { *p.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` units from `p` were just read.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(p, len) })
}

/// `sid` as its string form (`S-1-5-18`).
///
/// # Safety
/// `sid` must point to a valid SID.
unsafe fn sid_string(sid: PSID) -> io::Result<String> {
    let mut text: *mut u16 = ptr::null_mut();
    // SAFETY: the caller guarantees a valid SID; `text` receives a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let text = Local(text.cast());
    // SAFETY: ConvertSidToStringSidW wrote a NUL-terminated string.
    Ok(unsafe { wide_to_string(text.0.cast()) })
}

/// A security descriptor parsed from SDDL, freed on drop.
struct Descriptor(Local);

impl Descriptor {
    fn from_sddl(sddl: &str) -> io::Result<Self> {
        let text = wide(sddl)?;
        let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: `text` is NUL-terminated and outlives the call; `sd` receives a LocalAlloc'd
        // self-relative descriptor (its size is not wanted).
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("SDDL {sddl:?}: {e}")));
        }
        Ok(Descriptor(Local(sd)))
    }

    /// The descriptor's DACL (owned by the descriptor).
    fn dacl(&self) -> io::Result<*mut ACL> {
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = ptr::null_mut();
        // SAFETY: the descriptor is valid while `self` lives; the out-pointers are valid.
        if unsafe { GetSecurityDescriptorDacl(self.0.0, &mut present, &mut dacl, &mut defaulted) }
            == 0
        {
            return Err(io::Error::last_os_error());
        }
        if present == 0 || dacl.is_null() {
            return Err(io::Error::other("the security descriptor has no DACL"));
        }
        Ok(dacl)
    }
}

/// Creates the directory `path` with the security descriptor `sddl` from the start, so that no
/// other account can open it in between (its parent must exist). `Ok(false)`: it exists already,
/// and nothing was changed.
pub(crate) fn create_dir_with_security(path: &Path, sddl: &str) -> io::Result<bool> {
    let sd = Descriptor::from_sddl(sddl)?;
    let name = wide(path)?;
    let attributes = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: sd.0.0,
        bInheritHandle: 0,
    };
    // SAFETY: `name` is NUL-terminated; `attributes` points to a valid descriptor; both outlive
    // the call.
    if unsafe { CreateDirectoryW(name.as_ptr(), &attributes) } != 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(ERROR_ALREADY_EXISTS as i32) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Replaces the DACL of `path` with the one of `sddl`, protected from inheritance (nothing comes
/// from the parent any more); its inheritable entries are propagated to what is below.
pub(crate) fn set_protected_dacl(path: &Path, sddl: &str) -> io::Result<()> {
    let sd = Descriptor::from_sddl(sddl)?;
    let dacl = sd.dacl()?;
    let name = wide(path)?;
    // SAFETY: `name` is NUL-terminated; `dacl` belongs to `sd`, alive for the call; no owner,
    // group or SACL is set.
    win32(unsafe {
        SetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            ptr::null_mut(),
            ptr::null_mut(),
            dacl,
            ptr::null(),
        )
    })
}

/// The owner of `path` and its DACL, as SDDL (`O:BAD:P(A;OICI;FA;;;SY)…`).
pub(crate) fn security_sddl(path: &Path) -> io::Result<String> {
    let name = wide(path)?;
    let info: OBJECT_SECURITY_INFORMATION = OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION;
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; only the descriptor is wanted (LocalAlloc'd, freed below).
    win32(unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            info,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    })?;
    let sd = Local(sd);
    let mut text: *mut u16 = ptr::null_mut();
    // SAFETY: `sd` is the valid descriptor just read; `text` receives a LocalAlloc'd string.
    let ok = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.0,
            SDDL_REVISION_1,
            info,
            &mut text,
            ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let text = Local(text.cast());
    // SAFETY: the conversion wrote a NUL-terminated string.
    Ok(unsafe { wide_to_string(text.0.cast()) })
}

/// The owner of `path`, as a string SID.
pub(crate) fn owner_sid(path: &Path) -> io::Result<String> {
    let name = wide(path)?;
    let mut owner: PSID = ptr::null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: `name` is NUL-terminated; `owner` points into `sd`, which is freed after use.
    win32(unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut sd,
        )
    })?;
    let _sd = Local(sd);
    if owner.is_null() {
        return Err(io::Error::other("no owner"));
    }
    // SAFETY: `owner` points into the live descriptor `_sd`.
    unsafe { sid_string(owner) }
}

/// The account this process runs as, as a string SID.
pub(crate) fn current_user_sid() -> io::Result<String> {
    let mut token: HANDLE = ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle; `token` receives a new handle.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `token` is a new handle that nothing else owns; `OwnedHandle` closes it once.
    let token = unsafe { OwnedHandle::from_raw_handle(token) };
    // TOKEN_USER plus its SID: 8-byte aligned, as TOKEN_USER's pointer needs.
    let mut buffer = vec![0u64; 64];
    let mut needed = 0u32;
    // SAFETY: the token is open for query; the buffer is writable for the size given.
    let ok = unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buffer.as_mut_ptr().cast(),
            (buffer.len() * 8) as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: GetTokenInformation wrote a TOKEN_USER at the start of the (aligned) buffer, whose
    // SID pointer points into the buffer, alive for the conversion.
    unsafe {
        let user = &*(buffer.as_ptr() as *const TOKEN_USER);
        sid_string(user.User.Sid)
    }
}

/// The SID of the account `name` (`DOMAIN\user`, `user`), as a string.
pub(crate) fn account_sid(name: &str) -> io::Result<String> {
    let account = wide(name)?;
    let mut sid = vec![0u64; 9]; // SECURITY_MAX_SID_SIZE (68 bytes), 8-byte aligned
    let mut sid_len = (sid.len() * 8) as u32;
    let mut domain = vec![0u16; 256];
    let mut domain_len = domain.len() as u32;
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: every buffer is writable for the length passed with it; `account` is
    // NUL-terminated; the local machine is asked (null system name).
    let ok = unsafe {
        LookupAccountNameW(
            ptr::null(),
            account.as_ptr(),
            sid.as_mut_ptr().cast(),
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("account {name}: {e}")));
    }
    // SAFETY: LookupAccountNameW wrote a valid SID into `sid`.
    unsafe { sid_string(sid.as_mut_ptr().cast()) }
}
