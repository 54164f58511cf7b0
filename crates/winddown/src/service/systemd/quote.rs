//! Quoting for `ExecStart=` and `Environment=` (systemd.syntax(7), systemd.service(5)).

use super::*;

/// Quotes the executable, the first word of `ExecStart=`: `%` is doubled (specifiers) and the
/// word is double-quoted if it holds anything but letters, digits and `/_.,:=+@-`. `$` is left
/// alone: systemd never expands variables in the executable's path (only in the arguments).
///
/// ```
/// use winddown::service::systemd::quote_exec_path;
/// assert_eq!(quote_exec_path("/usr/bin/depot"), "/usr/bin/depot");
/// assert_eq!(quote_exec_path("/opt/my app/50%/$x"), r#""/opt/my app/50%%/$x""#);
/// ```
pub fn quote_exec_path(path: &str) -> String {
    quote(path, Dollar::Keep)
}

/// Quotes one argument of `ExecStart=` so that the program receives exactly `arg`: `%` and `$`
/// are doubled (specifiers, variable expansion), and the word is double-quoted with C escapes
/// (`\"`, `\\`, `\n`, `\xNN`) if it holds anything but letters, digits and `/_.,:=+@-` — which
/// also keeps a lone `;` from separating commands.
///
/// ```
/// use winddown::service::systemd::quote_exec_arg;
/// assert_eq!(quote_exec_arg("--port=8080"), "--port=8080");
/// assert_eq!(quote_exec_arg("a b"), r#""a b""#);
/// assert_eq!(quote_exec_arg("$HOME 100%"), r#""$$HOME 100%%""#);
/// assert_eq!(quote_exec_arg(r#"say "hi"\n"#), r#""say \"hi\"\\n""#);
/// assert_eq!(quote_exec_arg(""), r#""""#);
/// ```
pub fn quote_exec_arg(arg: &str) -> String {
    quote(arg, Dollar::Double)
}

/// Quotes one `KEY=value` assignment of `Environment=`: `%` is doubled, `$` is not (systemd does
/// not expand variables there), and the assignment is double-quoted with C escapes when needed.
///
/// ```
/// use winddown::service::systemd::quote_env;
/// assert_eq!(quote_env("RUST_LOG", "info"), "RUST_LOG=info");
/// assert_eq!(quote_env("GREETING", "50% of $5"), r#""GREETING=50%% of $5""#);
/// ```
pub fn quote_env(key: &str, value: &str) -> String {
    quote(&format!("{key}={value}"), Dollar::Keep)
}

pub(super) fn quote_path(path: &str) -> String {
    quote(path, Dollar::Keep)
}

#[derive(PartialEq)]
pub(super) enum Dollar {
    Keep,
    Double,
}

pub(super) fn quote(word: &str, dollar: Dollar) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.,:=+@-".contains(c));
    if plain {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('"');
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' if dollar == Dollar::Double => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
