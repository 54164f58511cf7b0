//! The hosts' own types, one module each: the console's stop sources ([`console`]), systemd's
//! notify protocol ([`systemd`], Unix) and the Windows Service Control Manager's protocol
//! ([`scm`]).
//!
//! The host-independent surface — [`run`], [`Host`], [`HostOptions`], [`HostKind`],
//! [`HostHooks`], [`Liveness`](crate::Liveness) — is at the crate root.
//!
//! [`run`] picks the host the process was started by — the Windows Service Control Manager,
//! systemd (`$NOTIFY_SOCKET`), or a console — wires that host's stop sources into a
//! [`Shutdown`](crate::Shutdown), and hands the program a [`Host`]. The program sets itself up,
//! calls [`Host::ready`], and then [`Host::drain`]s its plan: the host turns the drain's progress
//! into what its manager expects
//! (SCM checkpoints and wait hints, systemd `EXTEND_TIMEOUT_USEC` and `STATUS=`, log lines).

pub mod console;
pub(crate) mod liveness;
pub(crate) mod program;
pub mod scm;
#[cfg(unix)]
#[cfg_attr(docsrs, doc(cfg(unix)))]
pub mod systemd;
#[cfg(windows)]
mod windows;

pub(crate) use program::*;
