//! The unit file's text for a [`ServiceSpec`], and the checks of what goes into it.

use super::*;

/// The unit file for `spec`: the text [`install`] writes, for a `--print` option. Touches nothing.
///
/// Every value is written so that systemd reads back exactly what was given: `ExecStart=` words
/// and `Environment=` assignments are quoted and C-escaped with `%` (and in arguments `$`)
/// doubled, so the program gets exactly its argv and environment; the description is kept on
/// one line (control characters become spaces, the ends are trimmed, `%` is doubled); what a
/// unit file cannot carry is refused rather than changed. The property test in
/// `tests/systemd_unit.rs` checks this against systemd's own parser.
///
/// # Errors
/// [`ServiceError::InvalidSpec`] when something cannot be expressed in a unit file: a name that
/// is not a valid unit name, an executable that is not an absolute path (or holds quotes, a
/// backslash or control characters, which systemd refuses there), a display name ending in a
/// backslash (which would join the next line), an invalid environment variable name or a NUL
/// anywhere, a data directory outside `/var/lib` with [`ServiceUser::Dynamic`] (or, elsewhere,
/// holding a control character or a `.`/`..` component), a user or group name that is not a plain
/// name, a line of 1 MiB or more, or [`STOP_BUDGET_ENV`] in the environment (set
/// [`ServiceSpec::stop_budget`] instead).
pub fn unit_file(spec: &ServiceSpec, options: &SystemdOptions) -> Result<String, ServiceError> {
    check_unit_name(&spec.name, "service name")?;
    check_unit_name(&options.wanted_by, "WantedBy target")?;
    let executable = spec.executable.to_str().ok_or_else(|| {
        invalid(format!(
            "the executable path {:?} is not UTF-8",
            spec.executable
        ))
    })?;
    check_executable(executable)?;
    for arg in &spec.arguments {
        check_no_nul(arg, "an argument")?;
    }
    for (key, value) in &spec.environment {
        check_env(key, value)?;
    }
    for family in &options.address_families {
        let valid = family == "none"
            || family.strip_prefix("AF_").is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            });
        if !valid {
            return Err(invalid(format!("invalid address family {family:?}")));
        }
    }
    let storage = data_storage(spec, &options.user)?;

    let mut u = String::new();
    let title = description(&spec.display_name)?;
    let _ = writeln!(
        u,
        "# {}: {title}. Written by winddown's installer; reinstall to change it, or override",
        unit_name(&spec.name)
    );
    let _ = writeln!(
        u,
        "# settings with a drop-in (`systemctl edit {}`).",
        spec.name
    );
    if !spec.description.is_empty() {
        let _ = writeln!(u, "# {}", comment(&spec.description));
    }
    u.push_str("\n[Unit]\n");
    let _ = writeln!(u, "Description={}", escape_specifiers(&title));
    u.push_str("After=network.target\n");
    u.push_str(
        "# At most StartLimitBurst starts per StartLimitIntervalSec, then systemd gives up.\n",
    );
    let _ = writeln!(
        u,
        "StartLimitIntervalSec={}",
        seconds(options.start_limit_interval)
    );
    let _ = writeln!(u, "StartLimitBurst={}", options.start_limit_burst);

    u.push_str("\n[Service]\n");
    u.push_str("# The program reports READY=1, STATUS=, STOPPING=1 and its drain's progress.\n");
    u.push_str("Type=notify\nNotifyAccess=main\n");
    let mut exec = quote_exec_path(executable);
    for arg in &spec.arguments {
        exec.push(' ');
        exec.push_str(&quote_exec_arg(arg));
    }
    let _ = writeln!(u, "ExecStart={exec}");
    u.push_str("# The drain's budget: TimeoutStopSec is not visible to the program.\n");
    let _ = writeln!(
        u,
        "Environment={}",
        quote_env(STOP_BUDGET_ENV, &spec.stop_budget.as_millis().to_string())
    );
    for (key, value) in &spec.environment {
        let _ = writeln!(u, "Environment={}", quote_env(key, value));
    }

    u.push_str(
        "\n# Stop: SIGTERM to the main process (it drains and stops its own children), then\n\
         # SIGKILL to the whole group once TimeoutStopSec = drain budget + margin has passed.\n",
    );
    u.push_str("KillMode=mixed\n");
    let _ = writeln!(u, "TimeoutStopSec={}", seconds(spec.manager_stop_timeout()));
    if let Some(watchdog) = options.watchdog {
        let _ = writeln!(u, "WatchdogSec={}", seconds(watchdog));
    }
    let _ = writeln!(
        u,
        "# Exit codes {EXIT_CUT_OFF} (drain cut off), {EXIT_FAILED} (failed) and {EXIT_FORCED} \
         (forced) are failures: restarted when\n\
         # the program stopped on its own, shown as failed after `systemctl stop`. They are\n\
         # deliberately not in SuccessExitStatus=."
    );
    u.push_str("Restart=on-failure\n");
    let _ = writeln!(u, "RestartSec={}", seconds(options.restart_delay));

    u.push('\n');
    match &options.user {
        ServiceUser::Dynamic => u.push_str("DynamicUser=yes\n"),
        ServiceUser::Named { user, group } => {
            check_account(user)?;
            let _ = writeln!(u, "User={user}");
            if let Some(group) = group {
                check_account(group)?;
                let _ = writeln!(u, "Group={group}");
            }
        }
    }
    match &storage {
        Storage::None => {}
        Storage::StateDirectory(dir) => {
            let _ = writeln!(u, "StateDirectory={dir}");
            u.push_str("StateDirectoryMode=0700\n");
        }
        Storage::ReadWrite(path) => {
            let _ = writeln!(u, "ReadWritePaths={}", quote_path(path));
        }
    }
    u.push_str("UMask=0077\n");

    u.push_str("\n# Hardening (`systemd-analyze security` rates it).\n");
    for line in [
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectProc=invisible",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
    ] {
        u.push_str(line);
        u.push('\n');
    }
    let _ = writeln!(
        u,
        "RestrictAddressFamilies={}",
        options.address_families.join(" ")
    );

    u.push_str("\n[Install]\n");
    let _ = writeln!(u, "WantedBy={}", options.wanted_by);
    if let Some(line) = u.lines().find(|l| l.len() >= LONG_LINE_MAX) {
        let key = line.split_once('=').map_or(line, |(key, _)| key);
        return Err(invalid(format!(
            "the unit's {key}= line would be {} bytes long; systemd refuses lines of {LONG_LINE_MAX} \
             bytes or more",
            line.len()
        )));
    }
    Ok(u)
}

/// systemd's longest unit file line (`LONG_LINE_MAX`): a longer one fails the whole unit.
pub(super) const LONG_LINE_MAX: usize = 1024 * 1024;

pub(super) enum Storage {
    None,
    StateDirectory(String),
    ReadWrite(String),
}

/// Where the data directory goes: `StateDirectory=` for a relative path or one under
/// `/var/lib` (systemd creates it, owned by the service's user), `ReadWritePaths=` elsewhere
/// (only with a named user who owns it: a dynamic user owns nothing outside `/var/lib`).
pub(super) fn data_storage(
    spec: &ServiceSpec,
    user: &ServiceUser,
) -> Result<Storage, ServiceError> {
    let Some(dir) = &spec.data_dir else {
        return Ok(Storage::None);
    };
    let dir = dir
        .to_str()
        .ok_or_else(|| invalid(format!("the data directory {dir:?} is not UTF-8")))?;
    let relative = match dir.strip_prefix("/var/lib/") {
        Some(rest) => Some(rest),
        None if !dir.starts_with('/') => Some(dir),
        None => None,
    };
    match relative {
        Some(rel) => {
            let rel = rel.trim_end_matches('/');
            let valid = !rel.is_empty()
                && rel.split('/').all(|part| {
                    !part.is_empty()
                        && part != "."
                        && part != ".."
                        && part
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                });
            if !valid {
                return Err(invalid(format!(
                    "the data directory {dir:?} cannot be a StateDirectory= \
                     (use letters, digits, '.', '_', '-' and '/' below /var/lib)"
                )));
            }
            Ok(Storage::StateDirectory(rel.to_owned()))
        }
        None if *user == ServiceUser::Dynamic => Err(invalid(format!(
            "the data directory {dir:?} is outside /var/lib: a dynamic user (DynamicUser=yes) \
             cannot own it; put it under /var/lib, or run as a named user who owns it"
        ))),
        None => {
            check_path(dir, "the data directory")?;
            Ok(Storage::ReadWrite(dir.to_owned()))
        }
    }
}

/// A line for `Description=` or a comment: control characters become spaces.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The text of `Description=` (before `%` is doubled). systemd takes that value to the end of
/// the line, without C escapes, strips the whitespace around it, and joins the next line to one
/// that ends in a backslash (`After=network.target` would become part of the description). So:
/// control characters become spaces (a newline would start a new setting), the ends are trimmed,
/// and a trailing backslash — which no escape can keep there — is refused.
fn description(text: &str) -> Result<String, ServiceError> {
    let line = one_line(text);
    let line = line.trim_matches(' ');
    if line.ends_with('\\') {
        return Err(invalid(format!(
            "the display name {text:?} ends with a backslash, which systemd reads as joining the \
             next line of the unit to it; remove the backslash"
        )));
    }
    Ok(line.to_owned())
}

/// A comment line's text: one line, and no trailing backslash (systemd 252 does not join a
/// comment to the next line, but older versions did).
fn comment(text: &str) -> String {
    one_line(text).trim_end_matches([' ', '\\']).to_owned()
}

pub(super) fn escape_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// systemd time spans: whole seconds when exact, milliseconds otherwise; `infinity` beyond what
/// systemd can count (microseconds in a `u64`), which it would refuse as a number.
pub(super) fn seconds(d: Duration) -> String {
    if d.as_micros() >= u128::from(u64::MAX) {
        "infinity".to_owned()
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

pub(super) fn invalid(message: String) -> ServiceError {
    ServiceError::InvalidSpec(message)
}

pub(super) fn check_unit_name(name: &str, what: &str) -> Result<(), ServiceError> {
    let valid = !name.is_empty()
        && name.len() <= 240
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":_.-".contains(c))
        && !name.starts_with('.');
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} {name:?} is not a valid unit name (letters, digits, ':', '_', '.', '-')"
        )))
    }
}

pub(super) fn check_executable(path: &str) -> Result<(), ServiceError> {
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(invalid(format!(
            "the executable {path:?} must be an absolute path to a file"
        )));
    }
    if path.chars().any(|c| c.is_control() || "\"'\\".contains(c)) {
        return Err(invalid(format!(
            "the executable path {path:?} holds a quote, a backslash or a control character, \
             which systemd refuses in an executable's path"
        )));
    }
    Ok(())
}

pub(super) fn check_no_nul(text: &str, what: &str) -> Result<(), ServiceError> {
    if text.contains('\0') {
        Err(invalid(format!("{what} holds a NUL character: {text:?}")))
    } else {
        Ok(())
    }
}

pub(super) fn check_env(key: &str, value: &str) -> Result<(), ServiceError> {
    let mut chars = key.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(format!(
            "{key:?} is not a valid environment variable name"
        )));
    }
    if key == STOP_BUDGET_ENV {
        return Err(invalid(format!(
            "{STOP_BUDGET_ENV} is written from the stop budget; set ServiceSpec::stop_budget instead"
        )));
    }
    check_no_nul(value, "an environment value")
}

/// A user or group name systemd's `User=`/`Group=` accept: a plain name, or a numeric ID.
/// systemd reads an all-digit string only as an ID, and refuses one with a leading zero or
/// one of the two reserved IDs (65535, 4294967295): `00` fails to load the unit.
pub(super) fn check_account(name: &str) -> Result<(), ServiceError> {
    let valid = if !name.is_empty() && name.chars().all(|c| c.is_ascii_digit()) {
        // The canonical decimal form only: no leading zero.
        name.parse::<u32>()
            .is_ok_and(|id| id.to_string() == *name && id != 65535 && id != u32::MAX)
    } else {
        name.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if valid {
        Ok(())
    } else {
        Err(invalid(format!(
            "{name:?} is not a valid user or group name (or numeric ID)"
        )))
    }
}

/// A path for a setting that takes paths (`ReadWritePaths=`): systemd unquotes it but does not
/// C-unescape it (an escaped newline would become the letter `n`), and resolves `.` and `..`
/// itself; neither belongs in a data directory's path.
fn check_path(path: &str, what: &str) -> Result<(), ServiceError> {
    if path.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{what} {path:?} holds a control character, which a unit file cannot carry in a path"
        )));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(invalid(format!(
            "{what} {path:?} holds a `.` or `..` component; give the path without them"
        )));
    }
    Ok(())
}
