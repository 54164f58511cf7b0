//! Windows: PROGRAM in a console of its own and in a job object. Every Windows `unsafe` call of
//! the crate is here, each with its `SAFETY` note (the Unix one, `pre_exec`, is in `unix.rs`).
//!
//! - Start: `CREATE_NEW_CONSOLE | CREATE_SUSPENDED`, assigned to a job object with
//!   `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`, then resumed: nothing PROGRAM starts can escape the job,
//!   and when the wrapper's handle closes — its exit, or its crash — Windows kills the tree.
//! - `ctrl-c`: the wrapper detaches from its own console, attaches to PROGRAM's
//!   (`AttachConsole`), ignores Ctrl+C itself (`SetConsoleCtrlHandler(NULL, TRUE)`, kept for the
//!   rest of the run: the event reaches every process on that console, the wrapper included, and
//!   must not count as a second stop), and sends `CTRL_C_EVENT` to group 0 — every process on
//!   PROGRAM's console. Under Wine 8 this is the one path that delivers (also from a service);
//!   a console made with `AllocConsole` and inherited is not.
//! - `ctrl-break`: `CTRL_BREAK_EVENT` to PROGRAM's process group (its pid), on its console. Not
//!   delivered under Wine (error 6); real Windows delivers it only when PROGRAM leads a process
//!   group, so an error here moves on to the next signal of the list.
//! - `close`: `WM_CLOSE` to PROGRAM's top-level windows (`EnumWindows`); an error when it has none.
//! - Kill: `TerminateJobObject`; the count of what was left leaves out the console host that
//!   `CREATE_NEW_CONSOLE` puts in the job.

#![allow(unsafe_code)]

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::os::windows::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use tokio::sync::watch;
use windows_sys::Win32::Foundation::{HWND, LPARAM};
use windows_sys::Win32::System::Console::{
    AttachConsole, CTRL_BREAK_EVENT, CTRL_C_EVENT, FreeConsole, GenerateConsoleCtrlEvent,
    SetConsoleCtrlHandler,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
    TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_BASIC_PROCESS_ID_LIST, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
    JobObjectBasicProcessIdList, JobObjectExtendedLimitInformation, QueryInformationJobObject,
    SetInformationJobObject, TerminateJobObject,
};
use windows_sys::Win32::System::Threading::{
    CREATE_NEW_CONSOLE, CREATE_SUSPENDED, OpenThread, ResumeThread, THREAD_SUSPEND_RESUME,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{
    EnumWindows, GetWindowThreadProcessId, PostMessageW, WM_CLOSE,
};

use super::{Pipe, Spec};
use crate::cli::StopSignal;

/// The exit code of processes ended by the tree kill.
const KILLED: u32 = 1;

/// The console a process is attached to is process-wide: one switch at a time.
static CONSOLE: Mutex<()> = Mutex::new(());

/// PROGRAM's job object (the tree) and its pid.
#[derive(Debug)]
pub(super) struct Tree {
    job: OwnedHandle,
    pid: u32,
}

pub(super) fn spawn(
    spec: &Spec,
    exit: watch::Sender<Option<i32>>,
) -> io::Result<(u32, Tree, Option<Pipe>, Option<Pipe>)> {
    let job = new_job()?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .creation_flags(CREATE_NEW_CONSOLE | CREATE_SUSPENDED);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    if spec.capture {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    }
    let mut child = command.spawn()?;
    let pid = child.id();
    // SAFETY: both handles are valid and open: the job is owned by `job`, the process by `child`.
    let assigned = unsafe { AssignProcessToJobObject(raw(&job), child.as_raw_handle()) };
    if assigned == 0 {
        let e = io::Error::last_os_error();
        let _ = child.kill();
        return Err(io::Error::other(format!(
            "cannot put PROGRAM into a job object (its tree could escape the stop): {e}"
        )));
    }
    if let Err(e) = resume(pid) {
        let _ = child.kill();
        return Err(e);
    }
    let out = child.stdout.take().map(|p| Box::new(p) as Pipe);
    let err = child.stderr.take().map(|p| Box::new(p) as Pipe);
    std::thread::Builder::new()
        .name("program-wait".into())
        .spawn(move || {
            let code = match child.wait() {
                Ok(status) => status.code().unwrap_or(-1),
                Err(_) => -1,
            };
            exit.send_replace(Some(code));
        })?;
    Ok((pid, Tree { job, pid }, out, err))
}

fn raw(handle: &OwnedHandle) -> RawHandle {
    handle.as_raw_handle()
}

/// A job object that kills its processes when its last handle closes.
fn new_job() -> io::Result<OwnedHandle> {
    // SAFETY: no security attributes and no name are valid arguments; the handle returned is
    // checked before it is owned.
    let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh, valid handle that nothing else owns.
    let job = unsafe { OwnedHandle::from_raw_handle(handle) };
    let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
    limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
    // SAFETY: the pointer and size describe `limits`, which lives across the call.
    let ok = unsafe {
        SetInformationJobObject(
            raw(&job),
            JobObjectExtendedLimitInformation,
            (&raw const limits).cast(),
            size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(job)
}

/// Resumes the threads of the suspended process `pid` (std gives no handle to its main thread).
fn resume(pid: u32) -> io::Result<()> {
    // SAFETY: plain flags; the handle returned is checked, then owned.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snapshot.is_null() || snapshot as isize == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh, valid handle that nothing else owns.
    let snapshot = unsafe { OwnedHandle::from_raw_handle(snapshot) };
    let mut entry = THREADENTRY32 {
        dwSize: size_of::<THREADENTRY32>() as u32,
        ..Default::default()
    };
    let mut resumed = 0;
    // SAFETY: a valid snapshot handle and an entry whose dwSize is set.
    let mut more = unsafe { Thread32First(raw(&snapshot), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: plain arguments; the handle is checked, then owned.
            let thread = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            if !thread.is_null() {
                // SAFETY: a fresh, valid handle that nothing else owns.
                let thread = unsafe { OwnedHandle::from_raw_handle(thread) };
                // SAFETY: a valid thread handle opened with THREAD_SUSPEND_RESUME.
                if unsafe { ResumeThread(raw(&thread)) } != u32::MAX {
                    resumed += 1;
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(raw(&snapshot), &mut entry) } != 0;
    }
    if resumed == 0 {
        return Err(io::Error::other(format!(
            "cannot resume PROGRAM (pid {pid}) after putting it in its job object"
        )));
    }
    Ok(())
}

impl Tree {
    pub(super) fn signal(&self, signal: StopSignal) -> io::Result<()> {
        match signal {
            StopSignal::CtrlC => self.console_event(CTRL_C_EVENT, 0),
            StopSignal::CtrlBreak => self.console_event(CTRL_BREAK_EVENT, self.pid),
            StopSignal::Close => self.close_windows(),
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{other} is a Unix stop signal"),
            )),
        }
    }

    /// Attaches to PROGRAM's console and sends `event` to `group` there.
    fn console_event(&self, event: u32, group: u32) -> io::Result<()> {
        let _one = CONSOLE.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: no arguments; detaching when there is no console fails harmlessly.
        unsafe { FreeConsole() };
        // SAFETY: a plain process id.
        if unsafe { AttachConsole(self.pid) } == 0 {
            return Err(io::Error::other(format!(
                "cannot attach to PROGRAM's console: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: a NULL routine with TRUE sets the process's "ignore Ctrl+C" flag.
        unsafe { SetConsoleCtrlHandler(None, 1) };
        // Stays attached afterwards: detaching at once can lose the event before the console
        // delivers it, and the wrapper has no other console to go back to once it is stopping.
        // SAFETY: plain arguments.
        if unsafe { GenerateConsoleCtrlEvent(event, group) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// `WM_CLOSE` to every top-level window of PROGRAM's process.
    fn close_windows(&self) -> io::Result<()> {
        struct Search {
            pid: u32,
            found: usize,
        }
        unsafe extern "system" fn visit(hwnd: HWND, state: LPARAM) -> i32 {
            // SAFETY: `state` is the `&mut Search` passed to EnumWindows below, alive for the call.
            let search = unsafe { &mut *(state as *mut Search) };
            let mut owner = 0u32;
            // SAFETY: a window handle given by EnumWindows and a valid out pointer.
            unsafe { GetWindowThreadProcessId(hwnd, &mut owner) };
            if owner == search.pid {
                // SAFETY: posting a message to a window handle is valid even if it closes meanwhile.
                if unsafe { PostMessageW(hwnd, WM_CLOSE, 0, 0) } != 0 {
                    search.found += 1;
                }
            }
            1
        }
        let mut search = Search {
            pid: self.pid,
            found: 0,
        };
        // SAFETY: `visit` matches WNDENUMPROC and `search` outlives the synchronous enumeration.
        unsafe { EnumWindows(Some(visit), (&raw mut search) as LPARAM) };
        if search.found == 0 {
            return Err(io::Error::other("PROGRAM has no window to close"));
        }
        Ok(())
    }

    /// Terminates every process in the job; returns how many of PROGRAM's tree were alive. The
    /// console host (`conhost.exe`) of PROGRAM's console is in the job too (it is started for
    /// `CREATE_NEW_CONSOLE`, and lives on while the wrapper stays attached): it is ended with the
    /// job but not counted, or every stop would report a leftover process.
    pub(super) async fn kill(&self) -> usize {
        let (alive, tree) = match self.job_processes() {
            Ok(pids) => {
                let hosts = console_hosts();
                let tree = pids.iter().filter(|pid| !hosts.contains(pid)).count();
                (pids.len(), tree)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the job's processes; killing it anyway");
                (1, 1)
            }
        };
        if alive > 0 {
            // SAFETY: the job handle is valid.
            if unsafe { TerminateJobObject(raw(&self.job), KILLED) } == 0 {
                tracing::warn!(error = %io::Error::last_os_error(), "TerminateJobObject failed");
            }
        }
        tree
    }

    /// The ids of the processes alive in the job.
    fn job_processes(&self) -> io::Result<Vec<u32>> {
        // The list's header is two u32 counts; its ids are ULONG_PTRs: a usize buffer keeps the
        // alignment. 1024 ids is far more than a wrapped program's tree.
        const IDS: usize = 1024;
        let header = size_of::<JOBOBJECT_BASIC_PROCESS_ID_LIST>() / size_of::<usize>() - 1;
        let mut buffer = vec![0usize; header + IDS];
        // SAFETY: the pointer and size describe `buffer`, which is aligned for the list and lives
        // across the call; the job handle is valid.
        let ok = unsafe {
            QueryInformationJobObject(
                raw(&self.job),
                JobObjectBasicProcessIdList,
                buffer.as_mut_ptr().cast(),
                (buffer.len() * size_of::<usize>()) as u32,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the call filled the header; `buffer` is aligned and large enough for it.
        let list = unsafe { &*buffer.as_ptr().cast::<JOBOBJECT_BASIC_PROCESS_ID_LIST>() };
        let listed = (list.NumberOfProcessIdsInList as usize).min(IDS);
        Ok(buffer[header..header + listed]
            .iter()
            .map(|&pid| pid as u32)
            .collect())
    }
}

/// The ids of every `conhost.exe` running (a Toolhelp process snapshot); empty if it fails.
fn console_hosts() -> Vec<u32> {
    // SAFETY: plain flags; the handle returned is checked, then owned.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snapshot.is_null() || snapshot as isize == -1 {
        return Vec::new();
    }
    // SAFETY: a fresh, valid handle that nothing else owns.
    let snapshot = unsafe { OwnedHandle::from_raw_handle(snapshot) };
    let mut entry = PROCESSENTRY32W {
        dwSize: size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    let mut hosts = Vec::new();
    // SAFETY: a valid snapshot handle and an entry whose dwSize is set.
    let mut more = unsafe { Process32FirstW(raw(&snapshot), &mut entry) } != 0;
    while more {
        let len = entry
            .szExeFile
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(entry.szExeFile.len());
        let exe = String::from_utf16_lossy(&entry.szExeFile[..len]);
        if exe.eq_ignore_ascii_case("conhost.exe") {
            hosts.push(entry.th32ProcessID);
        }
        // SAFETY: as for Process32FirstW.
        more = unsafe { Process32NextW(raw(&snapshot), &mut entry) } != 0;
    }
    hosts
}
