//! What installing or managing a service can fail with.

use std::io;
use std::path::PathBuf;

/// Why an install, uninstall, start, stop or status request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service manager does not run on this machine (a container, a chroot, a build machine),
    /// so nothing was changed.
    #[error(
        "{manager} is not running on this machine ({detail}), so nothing was changed; \
         use the print option (`--print`) to write the {what} to standard output and install it \
         where {manager} runs"
    )]
    ManagerNotRunning {
        /// The manager ("systemd", "launchd").
        manager: &'static str,
        /// How that was found out.
        detail: String,
        /// What the print option prints ("unit file", "property list").
        what: &'static str,
    },
    /// This backend cannot be applied on this platform (launchd off macOS).
    #[error("{what} is only possible on {platform}; use the print option (`--print`) here")]
    Unsupported {
        /// What was asked.
        what: &'static str,
        /// Where it is possible.
        platform: &'static str,
    },
    /// The spec or the options cannot be expressed for this manager.
    #[error("invalid service definition: {0}")]
    InvalidSpec(String),
    /// The service is not installed (no unit file or property list at the expected path).
    #[error("{name} is not installed ({path} does not exist)")]
    NotInstalled {
        /// The service's name.
        name: String,
        /// Where its definition would be.
        path: PathBuf,
    },
    /// A file could not be written, read or removed.
    #[error("cannot {action} {path}{}", io_hint(source))]
    Io {
        /// What was being done ("write", "remove").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The manager's command-line tool could not be started.
    #[error("cannot run `{command}` (is it installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The manager's command-line tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it wrote to standard error, trimmed.
        stderr: String,
    },
    /// The Windows Service Control Manager refused or failed (its own error, whole).
    #[error(transparent)]
    Scm(#[from] super::windows::ManageError),
}

/// What to do about a file that cannot be written, where the reason says it.
fn io_hint(source: &io::Error) -> &'static str {
    match source.kind() {
        io::ErrorKind::PermissionDenied => " (installing a service needs root or an administrator)",
        io::ErrorKind::ReadOnlyFilesystem => " (it is on a read-only file system)",
        _ => "",
    }
}
