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

#[cfg(unix)]
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// systemd with a stand-in `systemctl`: `start`/`stop` set the state, `show` reports it, and the
/// unit is `loaded` while its file exists.
#[cfg(unix)]
fn systemd(root: &Path, definitions: &Path) -> Backend {
    let fake = root.join("systemctl");
    let argv = root.join("argv");
    script(
        &fake,
        &format!(
            r#"#!/bin/sh
D='{root}'
printf '%s\n' "$*" >> "$D/argv"
case "$1" in
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
            root = root.display(),
            defs = definitions.display()
        ),
    );
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
    let fake = root.join("launchctl");
    let argv = root.join("argv");
    script(
        &fake,
        &format!(
            r#"#!/bin/sh
D='{root}'
printf '%s\n' "$*" >> "$D/argv"
case "$1" in
  bootstrap|kickstart) echo running > "$D/state" ;;
  kill) echo stopped > "$D/state" ;;
  bootout) rm -f "$D/state" ;;
  print)
    case "$(cat "$D/state" 2>/dev/null)" in
      running) printf '%s = {{\n\tstate = running\n\tpid = 4242\n}}\n' "$2" ;;
      stopped) printf '%s = {{\n\tstate = not running\n}}\n' "$2" ;;
      *) echo "Could not find service \"$2\" in domain for system" >&2; exit 113 ;;
    esac ;;
esac
"#,
            root = root.display()
        ),
    );
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

#[cfg(unix)]
/// The whole life of a service through the trait: render, install, reinstall, start, status,
/// stop, uninstall — with the same expectations for every backend.
fn lifecycle(backend: &Backend) {
    let m = &backend.manager;
    let name = "conformance";
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
        // What is installed is what render shows.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rendered);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "{}", path.display());
        }
    }
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
                    "stop conformance.service",
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
