//! The SCM's raw vocabulary: controls, states, accepted controls, exit codes, statuses, event
//! levels — plain values, apart from the [`ScmService`] logic that decides them.

use super::*;

/// A control the Service Control Manager sends to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScmControl {
    /// `SERVICE_CONTROL_STOP`: `sc stop`, `net stop`, the Services snap-in.
    Stop,
    /// `SERVICE_CONTROL_PRESHUTDOWN`: system shutdown, first round.
    Preshutdown,
    /// `SERVICE_CONTROL_SHUTDOWN`: system shutdown, last round ("flush now").
    Shutdown,
    /// `SERVICE_CONTROL_INTERROGATE`: the SCM asks for the current status.
    Interrogate,
    /// Any other control, by its raw `SERVICE_CONTROL_*` code: not handled.
    Other(u32),
}

impl ScmControl {
    /// The control for a raw `SERVICE_CONTROL_*` code.
    pub const fn from_raw(raw: u32) -> Self {
        match raw {
            1 => ScmControl::Stop,
            4 => ScmControl::Interrogate,
            5 => ScmControl::Shutdown,
            15 => ScmControl::Preshutdown,
            other => ScmControl::Other(other),
        }
    }

    /// The raw `SERVICE_CONTROL_*` code.
    pub const fn to_raw(self) -> u32 {
        match self {
            ScmControl::Stop => 1,
            ScmControl::Interrogate => 4,
            ScmControl::Shutdown => 5,
            ScmControl::Preshutdown => 15,
            ScmControl::Other(raw) => raw,
        }
    }

    /// The stop this control asks for, if it asks for one.
    pub const fn stop_reason(self) -> Option<StopReason> {
        match self {
            ScmControl::Stop => Some(StopReason::ScmStop),
            ScmControl::Preshutdown => Some(StopReason::ScmPreshutdown),
            ScmControl::Shutdown => Some(StopReason::ScmShutdown),
            ScmControl::Interrogate | ScmControl::Other(_) => None,
        }
    }
}

/// What the control handler answers the SCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlResponse {
    /// `NO_ERROR`: the control was taken (the work goes on elsewhere).
    Handled,
    /// `ERROR_CALL_NOT_IMPLEMENTED`: the service does not handle this control.
    NotImplemented,
}

/// The state of a service, as the SCM knows it (`SERVICE_STATUS::dwCurrentState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ServiceState {
    /// `SERVICE_STOPPED`.
    Stopped = 1,
    /// `SERVICE_START_PENDING`.
    StartPending = 2,
    /// `SERVICE_STOP_PENDING`.
    StopPending = 3,
    /// `SERVICE_RUNNING`.
    Running = 4,
    /// `SERVICE_CONTINUE_PENDING`.
    ContinuePending = 5,
    /// `SERVICE_PAUSE_PENDING`.
    PausePending = 6,
    /// `SERVICE_PAUSED`.
    Paused = 7,
}

impl ServiceState {
    /// The state for a raw `SERVICE_*` state value, if it is one.
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => ServiceState::Stopped,
            2 => ServiceState::StartPending,
            3 => ServiceState::StopPending,
            4 => ServiceState::Running,
            5 => ServiceState::ContinuePending,
            6 => ServiceState::PausePending,
            7 => ServiceState::Paused,
            _ => return None,
        })
    }

    /// The raw `SERVICE_*` state value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// Whether the state is a transition, in which the checkpoint must keep growing.
    pub const fn is_pending(self) -> bool {
        matches!(
            self,
            ServiceState::StartPending
                | ServiceState::StopPending
                | ServiceState::ContinuePending
                | ServiceState::PausePending
        )
    }
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceState::Stopped => "STOPPED",
            ServiceState::StartPending => "START_PENDING",
            ServiceState::StopPending => "STOP_PENDING",
            ServiceState::Running => "RUNNING",
            ServiceState::ContinuePending => "CONTINUE_PENDING",
            ServiceState::PausePending => "PAUSE_PENDING",
            ServiceState::Paused => "PAUSED",
        })
    }
}

/// The controls a service accepts (`SERVICE_STATUS::dwControlsAccepted`, `SERVICE_ACCEPT_*` bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Accepts(u32);

impl Accepts {
    /// No control (besides `INTERROGATE`, which every service gets).
    pub const NONE: Accepts = Accepts(0);
    /// `SERVICE_ACCEPT_STOP`.
    pub const STOP: Accepts = Accepts(0x1);
    /// `SERVICE_ACCEPT_SHUTDOWN`.
    pub const SHUTDOWN: Accepts = Accepts(0x4);
    /// `SERVICE_ACCEPT_PRESHUTDOWN`.
    pub const PRESHUTDOWN: Accepts = Accepts(0x100);

    /// The raw `SERVICE_ACCEPT_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// From raw `SERVICE_ACCEPT_*` bits (unknown bits are kept).
    pub const fn from_bits(bits: u32) -> Self {
        Accepts(bits)
    }

    /// Whether every control of `other` is accepted.
    pub const fn contains(self, other: Accepts) -> bool {
        self.0 & other.0 == other.0
    }

    /// The controls of both.
    pub const fn union(self, other: Accepts) -> Accepts {
        Accepts(self.0 | other.0)
    }

    /// What [`ScmService`] accepts in `state`: nothing while starting (the SCM sends no control to
    /// a starting service anyway); STOP, PRESHUTDOWN and SHUTDOWN while running; PRESHUTDOWN and
    /// SHUTDOWN while stopping, so that a system shutdown during a `sc stop` drain brings the
    /// deadline closer rather than finding the service deaf; nothing once stopped.
    pub const fn in_state(state: ServiceState) -> Accepts {
        match state {
            ServiceState::Running => Accepts(Self::STOP.0 | Self::PRESHUTDOWN.0 | Self::SHUTDOWN.0),
            ServiceState::StopPending => Accepts(Self::PRESHUTDOWN.0 | Self::SHUTDOWN.0),
            _ => Accepts::NONE,
        }
    }
}

impl BitOr for Accepts {
    type Output = Accepts;
    fn bitor(self, rhs: Accepts) -> Accepts {
        self.union(rhs)
    }
}

impl fmt::Debug for Accepts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = Vec::new();
        for (flag, name) in [
            (Accepts::STOP, "STOP"),
            (Accepts::SHUTDOWN, "SHUTDOWN"),
            (Accepts::PRESHUTDOWN, "PRESHUTDOWN"),
        ] {
            if self.contains(flag) {
                names.push(name);
            }
        }
        let rest = self.0 & !(Accepts::STOP.0 | Accepts::SHUTDOWN.0 | Accepts::PRESHUTDOWN.0);
        if rest != 0 {
            return write!(f, "Accepts({}|{rest:#x})", names.join("|"));
        }
        if names.is_empty() {
            names.push("NONE");
        }
        write!(f, "Accepts({})", names.join("|"))
    }
}

/// The exit code a service reports with `SERVICE_STOPPED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceExitCode {
    /// A Win32 error code in `dwWin32ExitCode` (`0`: no error).
    Win32(u32),
    /// A code of the service's own in `dwServiceSpecificExitCode` (with `dwWin32ExitCode` set to
    /// `ERROR_SERVICE_SPECIFIC_ERROR`, 1066).
    ServiceSpecific(u32),
}

impl ServiceExitCode {
    /// No error.
    pub const NO_ERROR: ServiceExitCode = ServiceExitCode::Win32(0);

    /// The service exit code for a process exit code (a [`ShutdownReport::exit_code`]): no error
    /// for [`EXIT_CLEAN`], else the code as service-specific, so that recovery actions configured
    /// for non-crash failures fire.
    pub const fn from_exit_code(code: i32) -> Self {
        if code == EXIT_CLEAN {
            ServiceExitCode::NO_ERROR
        } else {
            ServiceExitCode::ServiceSpecific(code as u32)
        }
    }

    /// Whether this reports an error.
    pub const fn is_error(self) -> bool {
        !matches!(self, ServiceExitCode::Win32(0))
    }
}

impl fmt::Display for ServiceExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceExitCode::Win32(0) => f.write_str("0 (no error)"),
            ServiceExitCode::Win32(1077) => f.write_str("Win32 error 1077 (never started)"),
            ServiceExitCode::Win32(code) => write!(f, "Win32 error {code}"),
            ServiceExitCode::ServiceSpecific(code) => write!(f, "service-specific {code}"),
        }
    }
}

/// One status report to the SCM (`SERVICE_STATUS`, without the service type, which the host sets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceStatus {
    /// The state.
    pub state: ServiceState,
    /// The controls accepted.
    pub accepts: Accepts,
    /// Grows at every report of one pending state; 0 outside pending states.
    pub checkpoint: u32,
    /// How long the SCM should wait for the next report before it takes the service for hung;
    /// zero outside pending states.
    pub wait_hint: Duration,
    /// The exit code (meaningful with `STOPPED`).
    pub exit_code: ServiceExitCode,
}

/// How serious an Event Log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventLevel {
    /// `EVENTLOG_INFORMATION_TYPE`.
    Info,
    /// `EVENTLOG_WARNING_TYPE`.
    Warning,
    /// `EVENTLOG_ERROR_TYPE`.
    Error,
}
