//! What every test that runs the depot binary shares (`tests/running` for service.rs and
//! forward.rs, `tests/e2e/support.rs` for the end-to-end suite): the command, with no `DEPOT_*`
//! setting inherited from the test's own environment, and the address of a started depot, read
//! from its run file the way `depot status` reads it.
#![allow(dead_code)] // each test target uses its own part

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;

/// A command for `program` (the depot binary) that inherits no `DEPOT_*` variable and no
/// `NOTIFY_SOCKET` from the test's environment: each test sets what it means to.
pub(crate) fn depot_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.as_encoded_bytes().starts_with(b"DEPOT_") || key == "NOTIFY_SOCKET" {
            command.env_remove(key);
        }
    }
    command
}

/// The address the depot process `pid` announced in `data_dir`'s run file (`depot.running.json`),
/// once it has; a run file another process left behind does not count. A depot listening on
/// every interface is talked to over loopback.
pub(crate) fn running_addr(data_dir: &Path, pid: u32) -> Option<SocketAddr> {
    let run = depot::app::instance(data_dir).run_info()?;
    if run.pid != pid {
        return None;
    }
    let mut addr: SocketAddr = run.listen?.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    Some(addr)
}
