//! Installing and managing the program as a service: the Windows Service Control Manager,
//! systemd, launchd. Each backend derives its stop settings (preshutdown timeout,
//! `TimeoutStopSec`, `ExitTimeOut`) from the drain budget, so the manager never kills the program
//! while it is still flushing.
//!
//! Programs use the one interface, [`ServiceManager`] (from [`native`] or a backend's
//! constructor); the backend modules keep the manager-specific functions it wraps.

mod command;
mod error;
mod file;
pub mod launchd;
mod manager;
pub mod systemd;
pub mod upgrade;
pub mod windows;

use std::path::PathBuf;
use std::time::Duration;

pub use error::ServiceError;
pub use manager::{
    Installed, Launchd, NativeOptions, Outcome, Progress, Scm, ServiceManager, State, Status,
    Systemd, native, native_with,
};

/// What to install: the same description for every service manager.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServiceSpec {
    /// The service's name (`depot`): the SCM service name, the systemd unit name, the launchd
    /// label's last part.
    pub name: String,
    /// A name for people ("depot record store").
    pub display_name: String,
    /// One sentence on what it does.
    pub description: String,
    /// The program to run.
    pub executable: PathBuf,
    /// Its arguments.
    pub arguments: Vec<String>,
    /// The data directory the service must be able to write (granted to the service's account,
    /// `StateDirectory=` under systemd).
    pub data_dir: Option<PathBuf>,
    /// The longest drain the service needs on a managed stop; the manager's stop timeout is set a
    /// little above it.
    pub stop_budget: Duration,
    /// Environment variables to set for the service.
    pub environment: Vec<(String, String)>,
}

impl ServiceSpec {
    /// A spec for `name` running `executable`, with a 30 s stop budget.
    pub fn new(name: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        let name = name.into();
        ServiceSpec {
            display_name: name.clone(),
            description: String::new(),
            name,
            executable: executable.into(),
            arguments: Vec::new(),
            data_dir: None,
            stop_budget: Duration::from_secs(30),
            environment: Vec::new(),
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn display_name(mut self, display_name: impl Into<String>) -> Self {
        self.display_name = display_name.into();
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the arguments.
    #[must_use]
    pub fn arguments<I, S>(mut self, arguments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.arguments = arguments.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the data directory.
    #[must_use]
    pub fn data_dir(mut self, data_dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(data_dir.into());
        self
    }

    /// Sets the stop budget.
    #[must_use]
    pub fn stop_budget(mut self, stop_budget: Duration) -> Self {
        self.stop_budget = stop_budget;
        self
    }

    /// Adds an environment variable.
    #[must_use]
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.push((key.into(), value.into()));
        self
    }

    /// The stop timeout to give the service manager (`TimeoutStopSec`, `ExitTimeOut`,
    /// `terminationGracePeriodSeconds`): the stop budget plus a margin of a tenth of it, at least
    /// 5 s, rounded up to whole seconds. The drain plans for the budget (it keeps its own small
    /// margin inside it); the manager's margin covers what comes after — the report, the
    /// runtime's shutdown, the exit — on a loaded machine.
    pub fn manager_stop_timeout(&self) -> Duration {
        let margin = (self.stop_budget / 10).max(Duration::from_secs(5));
        let total = self.stop_budget.saturating_add(margin);
        let secs = total
            .as_secs()
            .saturating_add(u64::from(total.subsec_nanos() > 0));
        Duration::from_secs(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manager_waits_longer_than_the_drain() {
        let spec = |ms| ServiceSpec::new("x", "/bin/x").stop_budget(Duration::from_millis(ms));
        assert_eq!(spec(30_000).manager_stop_timeout(), Duration::from_secs(35));
        assert_eq!(
            spec(100_000).manager_stop_timeout(),
            Duration::from_secs(110)
        );
        assert_eq!(spec(2_500).manager_stop_timeout(), Duration::from_secs(8));
        assert_eq!(spec(0).manager_stop_timeout(), Duration::from_secs(5));
        let forever = ServiceSpec::new("x", "/bin/x").stop_budget(Duration::MAX);
        assert_eq!(
            forever.manager_stop_timeout(),
            Duration::from_secs(u64::MAX)
        );
    }
}
