//! Running a service manager's command-line tool (`systemctl`, `launchctl`).

use std::ffi::OsStr;
use std::process::Command;

use super::ServiceError;

/// Runs `program` with `args` and returns its standard output, or the failure with its standard
/// error.
pub(crate) fn run(program: &OsStr, args: &[&str]) -> Result<String, ServiceError> {
    let shown = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!(command = %shown, "running");
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| ServiceError::Spawn {
            command: shown.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(ServiceError::Command {
            command: shown,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
