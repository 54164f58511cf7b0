//! Writing a service definition (unit file, property list) in one step.

use std::path::{Path, PathBuf};

use super::ServiceError;

/// Writes `text` to `path` through a temporary file and a rename, so that the manager never reads
/// half a file (a unit, a property list); mode 0644, as systemd and launchd expect.
pub(crate) fn write_atomic(path: &Path, text: &str) -> Result<(), ServiceError> {
    let io = |action, source| ServiceError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let mut temp = path.as_os_str().to_owned();
    temp.push(".winddown-tmp");
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, text).map_err(|e| io("write", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| io("set the permissions of", e))?;
    }
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io("write", e)
    })
}
