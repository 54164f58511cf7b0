//! One conformance suite for every [`ServiceManager`]: the same test functions run each backend.
//! systemd and launchd run against stand-in `systemctl` / `launchctl` scripts that record their
//! arguments and answer `show` / `print` from the state that `start` / `stop` left (the real
//! managers do not run here), with definitions written into a temporary directory; the SCM runs
//! for real under Wine (Windows builds only).

use std::path::{Path, PathBuf};
use std::time::Duration;

use winddown::service::{Outcome, ServiceManager, ServiceSpec, State};

/// A backend under test, set up in its own directory.
struct Backend {
    manager: Box<dyn ServiceManager>,
    /// Where its definition (unit file, property list) goes; `None` for the SCM.
    definitions: Option<PathBuf>,
    /// The stand-in's record of its command lines, one a line.
    #[cfg_attr(not(unix), allow(dead_code))]
    argv: Option<PathBuf>,
}

#[cfg(unix)]
impl Backend {
    fn calls(&self) -> String {
        self.argv
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }
}

#[cfg(unix)]
type Factory = fn(root: &Path, definitions: &Path) -> Backend;

/// A stand-in `program` in `root`: a shell script that records its arguments in `root/argv`,
/// then runs `body` with `$D` set to `root`.
#[cfg(unix)]
fn stand_in(root: &Path, program: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(program);
    let text = format!(
        "#!/bin/sh\nD='{}'\nprintf '%s\\n' \"$*\" >> \"$D/argv\"\n{body}",
        root.display()
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// systemd with a stand-in `systemctl`: `start`/`stop` set the state, `show` reports it, and the
/// unit is `loaded` while its file exists.
#[cfg(unix)]
fn systemd(root: &Path, definitions: &Path) -> Backend {
    let fake = stand_in(
        root,
        "systemctl",
        &format!(
            r#"case "$1" in
  start) echo running > "$D/state" ;;
  stop) echo stopped > "$D/state" ;;
  show)
    if [ -e '{defs}'/"$2" ]; then load=loaded; else load=not-found; fi
    if [ "$(cat "$D/state" 2>/dev/null)" = running ]; then
      printf 'LoadState=%s\nActiveState=active\nSubState=running\nMainPID=4242\nResult=success\n' "$load"
    else
      printf 'LoadState=%s\nActiveState=inactive\nSubState=dead\nMainPID=0\nResult=success\n' "$load"
    fi ;;
esac
"#,
            defs = definitions.display()
        ),
    );
    let argv = root.join("argv");
    let mut manager = winddown::service::Systemd::with_systemctl(&fake);
    manager.options = manager.options.unit_dir(definitions);
    Backend {
        manager: Box::new(manager),
        definitions: Some(definitions.to_owned()),
        argv: Some(argv),
    }
}

/// launchd with a stand-in `launchctl`: `bootstrap` loads and runs the job (`RunAtLoad`),
/// `kickstart` runs it, `kill` stops it, `bootout` unloads it; `print` fails for a job not loaded.
#[cfg(unix)]
fn launchd(root: &Path, definitions: &Path) -> Backend {
    let fake = stand_in(
        root,
        "launchctl",
        r#"case "$1" in
  bootstrap|kickstart) echo running > "$D/state" ;;
  kill) echo stopped > "$D/state" ;;
  bootout) rm -f "$D/state" ;;
  print)
    case "$(cat "$D/state" 2>/dev/null)" in
      running) printf '%s = {\n\tstate = running\n\tpid = 4242\n}\n' "$2" ;;
      stopped) printf '%s = {\n\tstate = not running\n}\n' "$2" ;;
      *) echo "Could not find service \"$2\" in domain for system" >&2; exit 113 ;;
    esac ;;
esac
"#,
    );
    let argv = root.join("argv");
    let mut manager = winddown::service::Launchd::with_launchctl(&fake);
    manager.options = manager
        .options
        .plist_dir(definitions)
        .log_dir(root.join("logs"));
    Backend {
        manager: Box::new(manager),
        definitions: Some(definitions.to_owned()),
        argv: Some(argv),
    }
}

#[cfg(unix)]
const BACKENDS: [(&str, Factory); 2] = [("systemd", systemd), ("launchd", launchd)];

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec::new(name, "/usr/local/bin/conformance-probe")
        .description("winddown service conformance")
        .arguments(["run", "--port", "8080"])
        .stop_budget(Duration::from_secs(20))
}

fn the_only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one definition and no temporary file: {files:?}"
    );
    files.into_iter().next().unwrap()
}

/// Install, reinstall and removal, the same for every backend (the SCM included): what is
/// installed is what `render` shows, written whole with mode 0644, and gone after uninstall.
fn install_update_uninstall(backend: &Backend, name: &str) {
    let m = &backend.manager;
    let spec = spec(name);
    let rendered = m.render(&spec).unwrap();
    assert!(
        rendered.contains("/usr/local/bin/conformance-probe") && rendered.contains("8080"),
        "{}: {rendered}",
        m.manager()
    );
    assert!(!m.is_installed(name));
    assert_eq!(m.status(name).unwrap().state, State::NotInstalled);

    let installed = m.install(&spec).unwrap();
    assert_eq!(installed.outcome, Outcome::Created, "{}", m.manager());
    assert_eq!(installed.name, name);
    if let Some(dir) = &backend.definitions {
        let path = installed.definition.clone().expect("a definition file");
        assert_eq!(the_only_file(dir), path);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rendered);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "{}", path.display());
        }
    } else {
        assert!(installed.definition.is_none());
    }
    assert!(m.is_installed(name));
    assert_ne!(m.status(name).unwrap().state, State::NotInstalled);
    assert_eq!(m.update(&spec).unwrap().outcome, Outcome::Updated);

    let said = m.uninstall(name, &mut |_| {}).unwrap();
    assert!(said.contains("removed"), "{}: {said}", m.manager());
    assert!(!m.is_installed(name));
    assert_eq!(m.status(name).unwrap().state, State::NotInstalled);
    if let Some(dir) = &backend.definitions {
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }
}

/// The life of a running service through the trait — install, start, status, stop, uninstall —
/// with the same expectations for every backend ([`install_update_uninstall`] checks what is
/// installed).
#[cfg(unix)]
fn lifecycle(backend: &Backend) {
    let m = &backend.manager;
    let name = "conformance";
    let spec = spec(name);
    assert_eq!(
        m.install(&spec).unwrap().outcome,
        Outcome::Created,
        "{}",
        m.manager()
    );
    assert!(m.is_installed(name));

    let again = m.update(&spec).unwrap();
    assert_ne!(again.outcome, Outcome::Created, "{}", m.manager());

    let mut lines = Vec::new();
    let started = m.start(name, &mut |l| lines.push(l.to_owned())).unwrap();
    assert_eq!(started.state, State::Running, "{}: {started}", m.manager());
    assert_eq!(started.pid, Some(4242));
    let status = m.status(name).unwrap();
    assert_eq!(status.state, State::Running);
    assert_eq!(status.exit_code(), 0);

    let stopped = m
        .stop(name, Duration::from_secs(10), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    assert_eq!(stopped.state, State::Stopped, "{}: {stopped}", m.manager());
    assert_eq!(m.status(name).unwrap().exit_code(), 3);

    let said = m
        .uninstall(name, &mut |l| lines.push(l.to_owned()))
        .unwrap();
    assert!(said.contains("removed"), "{said}");
    assert!(!m.is_installed(name));
    assert_eq!(m.status(name).unwrap().state, State::NotInstalled);
    if let Some(dir) = &backend.definitions {
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
    }
    let calls = backend.calls();
    assert!(backend.argv.is_none() || !calls.is_empty());
}

/// Installing over a definition that is a symbolic link replaces the link with a new file (the
/// write goes to a temporary file and is renamed into place) and leaves the link's target alone:
/// the manager never sees half a file, and a stray link cannot redirect the write.
#[cfg(unix)]
fn atomic_write(backend: &Backend) {
    let m = &backend.manager;
    let dir = backend.definitions.as_ref().unwrap();
    // Learn the definition's path, then put a link there.
    let path = m
        .install(&spec("atomic"))
        .unwrap()
        .definition
        .expect("a definition file");
    m.uninstall("atomic", &mut |_| {}).unwrap();
    let target = dir.parent().unwrap().join("elsewhere");
    std::fs::write(&target, "not to be touched\n").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    m.install(&spec("atomic")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&target).unwrap(),
        "not to be touched\n",
        "{} wrote through the link: it writes in place",
        m.manager()
    );
    assert!(
        !std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(the_only_file(dir), path);
}

/// An install into a directory that cannot hold files fails naming the file, with the system's
/// reason in the error's chain, and leaves nothing behind.
#[cfg(unix)]
fn unwritable(backend: &Backend, reason: &str) {
    let m = &backend.manager;
    let err = m.install(&spec("unwritable")).unwrap_err();
    let chain = winddown::error_chain(&err);
    assert!(
        chain.contains("cannot write") && chain.contains("unwritable"),
        "{}: {chain}",
        m.manager()
    );
    assert!(chain.contains(reason), "{}: {chain}", m.manager());
    assert!(!m.is_installed("unwritable"));
}

#[cfg(unix)]
#[test]
fn every_backend_installs_runs_and_removes_a_service_the_same_way() {
    for (name, factory) in BACKENDS {
        let root = tempfile::tempdir().unwrap();
        let defs = root.path().join("definitions");
        std::fs::create_dir(&defs).unwrap();
        let backend = factory(root.path(), &defs);
        install_update_uninstall(&backend, "round-trip");
        lifecycle(&backend);
        let calls = backend.calls();
        match name {
            "systemd" => {
                for call in [
                    "daemon-reload",
                    "enable conformance.service",
                    "start conformance.service",
                    "stop --no-block conformance.service",
                    "disable conformance.service",
                ] {
                    assert!(calls.lines().any(|l| l == call), "{call}: {calls}");
                }
            }
            _ => {
                for call in [
                    "kickstart system/local.conformance",
                    "kill SIGTERM system/local.conformance",
                    "bootout system/local.conformance",
                ] {
                    assert!(calls.lines().any(|l| l == call), "{call}: {calls}");
                }
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn every_backend_writes_its_definition_atomically() {
    for (_, factory) in BACKENDS {
        let root = tempfile::tempdir().unwrap();
        let defs = root.path().join("definitions");
        std::fs::create_dir(&defs).unwrap();
        atomic_write(&factory(root.path(), &defs));
    }
}

#[cfg(unix)]
#[test]
fn a_definition_directory_under_a_file_names_the_reason() {
    for (_, factory) in BACKENDS {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        unwritable(&factory(root.path(), &file.join("dir")), "Not a directory");
    }
}

/// A read-only bind mount over the definition directory (as root, which the tests run as: root
/// may write anywhere else, so only a read-only mount refuses it).
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_definition_directory_names_the_reason() {
    use std::process::Command;
    for (_, factory) in BACKENDS {
        let root = tempfile::tempdir().unwrap();
        let defs = root.path().join("definitions");
        std::fs::create_dir(&defs).unwrap();
        let mount = |args: &[&str]| Command::new("mount").args(args).status().unwrap().success();
        let d = defs.to_str().unwrap();
        assert!(
            mount(&["--bind", d, d]) && mount(&["-o", "remount,bind,ro", d]),
            "cannot mount {d} read-only (the tests run as root)"
        );
        let backend = factory(root.path(), &defs);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            unwritable(&backend, "Read-only file system")
        }));
        assert!(Command::new("umount").arg(d).status().unwrap().success());
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}

/// systemd with a stand-in `systemctl` whose `show` answers, call after call, with the next of
/// `answers` (`ActiveState`, `SubState`, `StatusText`), the last one for ever after.
#[cfg(unix)]
fn systemd_following(root: &Path, answers: &[(&str, &str, &str)]) -> winddown::service::Systemd {
    for (i, (active, sub, text)) in answers.iter().enumerate() {
        std::fs::write(
            root.join(format!("show.{i}")),
            format!(
                "LoadState=loaded\nActiveState={active}\nSubState={sub}\nMainPID=4242\n\
                 StatusText={text}\nResult=success\n"
            ),
        )
        .unwrap();
    }
    let fake = stand_in(
        root,
        "systemctl",
        &format!(
            r#"case "$1" in
  show)
    n=$(cat "$D/n" 2>/dev/null || echo 0)
    if [ -e "$D/show.$n" ]; then echo $((n + 1)) > "$D/n"; else n={last}; fi
    cat "$D/show.$n" ;;
esac
"#,
            last = answers.len() - 1
        ),
    );
    winddown::service::Systemd::with_systemctl(&fake)
}

/// `stop` under systemd asks without blocking (`systemctl stop --no-block`), then passes on
/// each new `STATUS=` line of the drain once, in order, and returns the stopped state.
#[cfg(unix)]
#[test]
fn systemd_stop_follows_the_drain_through_the_units_status_line() {
    let root = tempfile::tempdir().unwrap();
    let budget = "stopping (SIGTERM): 30.0 s budget";
    let flush = "stopping (SIGTERM): phase 2/3 flush \"flush journal\": 40% flushed, 2.1 s left";
    let done = "stopped: clean in 0.84 s (SIGTERM, exit code 0)";
    let m = systemd_following(
        root.path(),
        &[
            ("active", "running", "serving"),
            ("deactivating", "stop-sigterm", budget),
            ("deactivating", "stop-sigterm", budget),
            ("deactivating", "stop-sigterm", flush),
            ("inactive", "dead", done),
        ],
    );
    let mut lines = Vec::new();
    let status = m
        .stop("depot", Duration::from_secs(30), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    assert_eq!(status.state, State::Stopped, "{status}");
    let argv = std::fs::read_to_string(root.path().join("argv")).unwrap();
    assert_eq!(argv.lines().next(), Some("stop --no-block depot.service"));
    assert_eq!(argv.lines().filter(|l| l.starts_with("show")).count(), 5);
    assert!(lines[0].starts_with("stopping depot.service (systemctl stop --no-block)"));
    assert_eq!(
        lines[1..],
        ["serving", budget, flush, done].map(|l| format!("depot.service: {l}")),
    );
}

/// A unit still draining at the timeout: `stop` stops following after about that long, says so
/// with the unit's state, and returns that state (systemd goes on stopping it).
#[cfg(unix)]
#[test]
fn systemd_stop_says_when_the_unit_is_still_stopping_at_the_timeout() {
    let root = tempfile::tempdir().unwrap();
    let m = systemd_following(
        root.path(),
        &[(
            "deactivating",
            "stop-sigterm",
            "stopping (SIGTERM): phase 1/1 flush \"flush\"",
        )],
    );
    let mut lines = Vec::new();
    let t0 = std::time::Instant::now();
    let status = m
        .stop("depot", Duration::from_millis(600), &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(status.state, State::Stopping, "{status}");
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("not stopped after 0.") && last.contains("deactivating (stop-sigterm)"),
        "{lines:?}"
    );
    // The status line is passed on once, not at every poll.
    assert_eq!(lines.iter().filter(|l| l.contains("phase 1/1")).count(), 1);
}

/// The SCM, for real (Wine has one): the shared install, update and uninstall, of a service that
/// is never started (a second install keeps it as it is: only update replaces).
#[cfg(windows)]
#[test]
fn the_scm_installs_reads_and_removes_a_service() {
    let backend = Backend {
        manager: Box::new(winddown::service::Scm::new()),
        definitions: None,
        argv: None,
    };
    let name = "winddown-conformance";
    let _ = backend.manager.uninstall(name, &mut |_| {});
    install_update_uninstall(&backend, name);
    let m = &backend.manager;
    m.install(&spec(name)).unwrap();
    assert_eq!(m.status(name).unwrap().state, State::Stopped);
    assert_eq!(
        m.install(&spec(name)).unwrap().outcome,
        Outcome::AlreadyInstalled
    );
    m.uninstall(name, &mut |_| {}).unwrap();
}
