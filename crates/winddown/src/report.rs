//! The shutdown report: what the drain did, phase by phase, and the exit code that sums it up.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::plan::{Criticality, Stage};
use crate::reason::StopReason;
use crate::shutdown::Escalation;

/// Exit code of a clean stop: every phase finished.
pub const EXIT_CLEAN: i32 = 0;
/// Exit code of a stop that cut something off (a phase overran its budget, or was skipped after a
/// second interrupt). Everything acknowledged is still durable; in-flight work may have been
/// abandoned.
pub const EXIT_CUT_OFF: i32 = 3;
/// Exit code of a stop in which a phase failed (for example a flush that hit a full disk).
pub const EXIT_FAILED: i32 = 4;
/// Exit code of a forced exit (a third interrupt): the drain was abandoned.
pub const EXIT_FORCED: i32 = 5;

/// Why a phase was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CutOffBy {
    /// Its budget ran out.
    Deadline,
    /// A second interrupt hurried the stop.
    Escalation,
    /// A third interrupt forced the exit.
    Force,
}

/// Why a phase did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SkipReason {
    /// A second interrupt, or a "flush now" stop, left no time for best-effort phases.
    Hurry,
    /// A third interrupt forced the exit.
    Force,
}

/// How one phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "outcome"))]
pub enum PhaseOutcome {
    /// It finished within its budget.
    Done,
    /// It was still running when it was cut off.
    CutOff {
        /// What cut it off.
        by: CutOffBy,
    },
    /// It returned an error, or panicked.
    Failed {
        /// The error, as text.
        error: String,
    },
    /// It did not run.
    Skipped {
        /// Why.
        why: SkipReason,
    },
}

impl fmt::Display for PhaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhaseOutcome::Done => f.write_str("done"),
            PhaseOutcome::CutOff {
                by: CutOffBy::Deadline,
            } => f.write_str("cut off (budget spent)"),
            PhaseOutcome::CutOff {
                by: CutOffBy::Escalation,
            } => f.write_str("cut off (second interrupt)"),
            PhaseOutcome::CutOff {
                by: CutOffBy::Force,
            } => f.write_str("cut off (forced exit)"),
            PhaseOutcome::Failed { error } => write!(f, "failed: {error}"),
            PhaseOutcome::Skipped {
                why: SkipReason::Hurry,
            } => f.write_str("skipped (no time)"),
            PhaseOutcome::Skipped {
                why: SkipReason::Force,
            } => f.write_str("skipped (forced exit)"),
        }
    }
}

/// What one phase did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PhaseReport {
    /// The phase's name.
    pub name: String,
    /// Its stage.
    pub stage: Stage,
    /// Whether it could be skipped.
    pub criticality: Criticality,
    /// The budget it was given.
    #[cfg_attr(feature = "serde", serde(rename = "budget_ms", with = "millis"))]
    pub budget: Duration,
    /// How long it ran.
    #[cfg_attr(feature = "serde", serde(rename = "duration_ms", with = "millis"))]
    pub duration: Duration,
    /// How it ended.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub outcome: PhaseOutcome,
    /// What the phase said about its work, if anything.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub detail: Option<String>,
}

/// How the whole stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// Every phase finished.
    Clean,
    /// Something was cut off or skipped; nothing failed.
    CutOff,
    /// A phase failed.
    Failed,
    /// A third interrupt forced the exit.
    Forced,
}

impl Outcome {
    /// Its name in the JSON report: `clean`, `cut_off`, `failed`, `forced`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Clean => "clean",
            Outcome::CutOff => "cut_off",
            Outcome::Failed => "failed",
            Outcome::Forced => "forced",
        }
    }

    /// The process exit code for this outcome ([`EXIT_CLEAN`], [`EXIT_CUT_OFF`], [`EXIT_FAILED`],
    /// [`EXIT_FORCED`]). On Windows it is also the service-specific exit code, so that a non-clean
    /// stop fires the service's recovery actions.
    pub const fn exit_code(self) -> i32 {
        match self {
            Outcome::Clean => EXIT_CLEAN,
            Outcome::CutOff => EXIT_CUT_OFF,
            Outcome::Failed => EXIT_FAILED,
            Outcome::Forced => EXIT_FORCED,
        }
    }
}

/// What a drain did, logged as one structured event and returned to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ShutdownReport {
    /// The stop that started the drain.
    pub reason: StopReason,
    /// Every trigger, in order (a person's second and third escalate; see [`crate::StopSender`]).
    pub triggers: Vec<StopReason>,
    /// How far the stop escalated.
    pub escalation: Escalation,
    /// The time the stop allowed, from the drain's start to the deadline.
    #[cfg_attr(feature = "serde", serde(rename = "budget_ms", with = "millis"))]
    pub budget: Duration,
    /// When the drain started (wall clock).
    #[cfg_attr(feature = "serde", serde(with = "unix_millis"))]
    pub started_at: SystemTime,
    /// How long the drain took.
    #[cfg_attr(feature = "serde", serde(rename = "duration_ms", with = "millis"))]
    pub duration: Duration,
    /// Each phase, in the order it ran.
    pub phases: Vec<PhaseReport>,
    /// Tracked tasks still running when the wait for in-flight work ended.
    pub stragglers: Vec<String>,
    /// The sum of it.
    pub outcome: Outcome,
    /// The exit code the program chose instead of the outcome's ([`ShutdownReport::with_exit_code`]):
    /// a wrapper hands on the code of the program it ran, so that a service manager's "restart on
    /// failure" sees that program's failure.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub exit_code_override: Option<i32>,
}

impl ShutdownReport {
    /// The process exit code: [`Outcome::exit_code`], unless [`ShutdownReport::with_exit_code`]
    /// set another. On Windows it is also the service-specific exit code.
    pub fn exit_code(&self) -> i32 {
        self.exit_code_override
            .unwrap_or_else(|| self.outcome.exit_code())
    }

    /// The report with `code` as its exit code, whatever the outcome (a wrapper's program's code).
    #[must_use]
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code_override = Some(code);
        self
    }

    /// The report as one line of JSON.
    #[cfg(feature = "serde")]
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as the log's `report` field: one line of JSON with the `serde` feature, the
    /// table of [`Display`](fmt::Display) without.
    pub(crate) fn log_form(&self) -> String {
        #[cfg(feature = "serde")]
        return self.to_json();
        #[cfg(not(feature = "serde"))]
        self.to_string()
    }

    /// The report of the phase named `name`, if it ran.
    pub fn phase(&self, name: &str) -> Option<&PhaseReport> {
        self.phases.iter().find(|p| p.name == name)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shutdown ({}): {:?} in {:.3} s of a {:.1} s budget, exit code {}",
            self.reason,
            self.outcome,
            self.duration.as_secs_f64(),
            self.budget.as_secs_f64(),
            self.exit_code()
        )?;
        for (i, p) in self.phases.iter().enumerate() {
            write!(
                f,
                "  {}. {:<16} {:<28} {:>8.3} s / {:>7.3} s  {}",
                i + 1,
                p.stage.to_string(),
                p.name,
                p.duration.as_secs_f64(),
                p.budget.as_secs_f64(),
                p.outcome
            )?;
            if let Some(d) = &p.detail {
                write!(f, " — {d}")?;
            }
            writeln!(f)?;
        }
        if !self.stragglers.is_empty() {
            writeln!(f, "  still running: {}", self.stragglers.join(", "))?;
        }
        Ok(())
    }
}

/// An error and its sources on one line, joined with `": "` — how a report writes a failed phase's
/// error, and how a poisoned committer names its cause. A source whose text the line already holds
/// is left out: many errors repeat their source's message in their own.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let line = source.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = source.source();
    }
    text
}

/// A duration as whole milliseconds in JSON.
#[cfg(feature = "serde")]
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A wall-clock time as milliseconds since the Unix epoch in JSON.
#[cfg(feature = "serde")]
pub(crate) mod unix_millis {
    use std::time::{Duration, SystemTime};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        s.serialize_u64(ms)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let ms = u64::deserialize(d)?;
        Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn an_error_chain_is_one_line_without_repeating_a_source_the_text_already_holds() {
        let disk = Layer("disk full", None);
        let io = Layer("write failed: disk full", Some(Box::new(disk)));
        let top = Layer("flush failed", Some(Box::new(io)));
        assert_eq!(error_chain(&top), "flush failed: write failed: disk full");
        let plain = Layer(
            "a",
            Some(Box::new(Layer("b", Some(Box::new(Layer("c", None)))))),
        );
        assert_eq!(error_chain(&plain), "a: b: c");
    }
}
