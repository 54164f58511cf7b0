//! What operators look at: `/metrics` as a scraper sees it (`promtool check metrics`), the last
//! shutdown as metrics across a real stop and restart (and a kill), and the shipped alerts and
//! dashboard (`docs/prometheus`, `docs/grafana`): `promtool check rules` and `promtool test rules`
//! pass, and every metric they query is one a live depot exports.
//!
//! promtool comes with Debian's `prometheus` package. Without it these tests skip with a message,
//! unless `REQUIRE_PROMTOOL` is set (CI sets it), which makes a missing promtool a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::support::{Options, serial, start_ok};

/// `promtool`, or `None` (with a message) when it is missing and not required.
fn promtool(test: &str) -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("REQUIRE_PROMTOOL").is_none(),
        "{test}: promtool is missing and REQUIRE_PROMTOOL is set (apt-get install prometheus)"
    );
    eprintln!("{test}: skipped: promtool is missing (apt-get install prometheus)");
    None
}

/// Runs promtool with `args`, `stdin` on its input; returns (success, its output).
fn run_promtool(promtool: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(docs_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

async fn scrape(client: &torture::Client) -> String {
    let reply = client
        .send(hyper::Method::GET, "/metrics", &[], "")
        .await
        .expect("GET /metrics");
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// Every sample name in an exposition (`x_bucket`, `x_count`, `x_sum` for a histogram).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// The value of the sample `name` whose labels include `labels`, if there is one. Parsed here:
/// prometheus-parse splits label values at commas, and depot's phase names have some.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

/// A sample's labels, in order.
type Labels = Vec<(String, String)>;

/// `name{k="v",…} value` → (name, labels, value).
fn parse_sample(line: &str) -> Option<(String, Labels, f64)> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let (mut key, mut value, mut in_value) = (String::new(), String::new(), false);
        loop {
            let (i, c) = chars.next()?;
            match (in_value, c) {
                (false, '}') => {
                    rest = &body[i + 1..];
                    break;
                }
                (false, '=' | ',') => {}
                (false, '"') => in_value = true,
                (false, c) => key.push(c),
                (true, '\\') => value.push(chars.next()?.1),
                (true, '"') => {
                    labels.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                    in_value = false;
                }
                (true, c) => value.push(c),
            }
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The series the shipped alerts and dashboard depend on, which must be there from the first
/// scrape with forwarding off.
const FROM_START: &[&str] = &[
    "depot_ready",
    "depot_start_time_seconds",
    "depot_records_stored_total",
    "depot_http_requests_total",
    "depot_http_request_duration_seconds_bucket",
    "depot_commit_queue_depth",
    "depot_commit_poisoned",
    "winddown_commit_failed_commits_total",
    "winddown_commit_latency_seconds_bucket",
    "winddown_commit_batch_items_bucket",
    "depot_data_dir_filesystem_avail_bytes",
    "depot_data_dir_filesystem_size_bytes",
    "depot_store_size_bytes",
    "depot_forward_enabled",
    "depot_forward_state",
    "depot_forward_backlog_records",
    "depot_forward_oldest_age_seconds",
    "depot_forward_delivered_total",
    "depot_last_shutdown_outcome",
    "depot_last_shutdown_timestamp_seconds",
    "depot_last_shutdown_duration_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_every_series_exists_from_start() {
    let Some(promtool) = promtool("metrics_pass_promtool") else {
        return;
    };
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let depot = start_ok(&data, &Options::default()).await;

    // The very first scrape: nothing written yet, forwarding off.
    let first = scrape(&depot.client).await;
    let names = sample_names(&first);
    let missing: Vec<_> = FROM_START.iter().filter(|n| !names.contains(**n)).collect();
    assert!(missing.is_empty(), "missing at start: {missing:?}\n{first}");
    assert_eq!(value(&first, "depot_ready", &[]), Some(1.0), "{first}");
    assert_eq!(
        value(&first, "depot_forward_state", &[("state", "off")]),
        Some(1.0)
    );
    assert_eq!(value(&first, "depot_records_stored_total", &[]), Some(0.0));
    assert!(value(&first, "depot_data_dir_filesystem_avail_bytes", &[]).unwrap() > 0.0);
    let (ok, out) = run_promtool(promtool, &["check", "metrics"], &first);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n{first}"
    );

    // After traffic (every route, a refusal too) the exposition still passes.
    for i in 0..5 {
        let r = depot
            .client
            .send(
                hyper::Method::POST,
                "/v1/streams/m/records",
                &[],
                format!("{i}"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 201);
    }
    for path in [
        "/v1/streams/m/records",
        "/v1/streams",
        "/v1/status",
        "/healthz",
        "/nope",
    ] {
        depot
            .client
            .send(hyper::Method::GET, path, &[], "")
            .await
            .unwrap();
    }
    let later = scrape(&depot.client).await;
    assert_eq!(value(&later, "depot_records_stored_total", &[]), Some(5.0));
    let (ok, out) = run_promtool(promtool, &["check", "metrics"], &later);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics:\n{out}\n{later}"
    );
    depot.stop(Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_shutdown_shows_in_metrics_after_a_stop_and_after_a_kill() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");

    // A new data directory: no last shutdown, every outcome 0.
    let depot = start_ok(&data, &Options::default()).await;
    let text = scrape(&depot.client).await;
    for outcome in ["clean", "cut_off", "failed", "forced", "crashed"] {
        assert_eq!(
            value(
                &text,
                "depot_last_shutdown_outcome",
                &[("outcome", outcome)]
            ),
            Some(0.0),
            "{outcome}\n{text}"
        );
    }
    assert_eq!(
        value(&text, "depot_last_shutdown_timestamp_seconds", &[]),
        Some(0.0)
    );
    let first_start = value(&text, "depot_start_time_seconds", &[]).unwrap();

    // A real stop (SIGTERM, drained), then a restart: the report's figures, as metrics.
    depot.stop(Duration::from_secs(30)).await;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("last-shutdown.json")).unwrap()).unwrap();
    assert_eq!(report["outcome"], "clean");
    let depot = start_ok(&data, &Options::default()).await;
    let text = scrape(&depot.client).await;
    assert_eq!(
        value(
            &text,
            "depot_last_shutdown_outcome",
            &[("outcome", "clean")]
        ),
        Some(1.0),
        "{text}"
    );
    for outcome in ["cut_off", "failed", "forced", "crashed"] {
        assert_eq!(
            value(
                &text,
                "depot_last_shutdown_outcome",
                &[("outcome", outcome)]
            ),
            Some(0.0)
        );
    }
    let ms = |v: &serde_json::Value| v.as_u64().unwrap() as f64 / 1000.0;
    let ended = ms(&report["started_at"]) + ms(&report["duration_ms"]);
    let exported = value(&text, "depot_last_shutdown_timestamp_seconds", &[]).unwrap();
    assert!((exported - ended).abs() < 0.002, "{exported} vs {ended}");
    assert_eq!(
        value(&text, "depot_last_shutdown_duration_seconds", &[]),
        Some(ms(&report["duration_ms"]))
    );
    let phases = report["phases"].as_array().unwrap();
    assert!(phases.len() >= 4, "{report:#}");
    for phase in phases {
        let name = phase["name"].as_str().unwrap();
        assert_eq!(
            value(
                &text,
                "depot_last_shutdown_phase_seconds",
                &[("phase", name)]
            ),
            Some(ms(&phase["duration_ms"])),
            "{name}\n{text}"
        );
        assert_eq!(
            value(
                &text,
                "depot_last_shutdown_phase_budget_seconds",
                &[("phase", name)]
            ),
            Some(ms(&phase["budget_ms"])),
            "{name}"
        );
        assert_eq!(
            value(
                &text,
                "depot_last_shutdown_phase_outcome",
                &[("phase", name), ("outcome", "done")]
            ),
            Some(1.0),
            "{name}"
        );
    }
    let second_start = value(&text, "depot_start_time_seconds", &[]).unwrap();
    assert!(
        second_start > first_start,
        "{second_start} after {first_start}"
    );

    // Killed: no report is written; the next start says the previous run crashed.
    let _ = depot.kill();
    let depot = start_ok(&data, &Options::default()).await;
    let text = scrape(&depot.client).await;
    assert_eq!(
        value(
            &text,
            "depot_last_shutdown_outcome",
            &[("outcome", "crashed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "depot_last_shutdown_outcome",
            &[("outcome", "clean")]
        ),
        Some(0.0)
    );
    depot.stop(Duration::from_secs(30)).await;
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool("alert_rules") else {
        return;
    };
    let (ok, out) = run_promtool(promtool, &["check", "rules", "prometheus/alerts.yml"], "");
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = run_promtool(
        promtool,
        &["test", "rules", "prometheus/alerts.test.yml"],
        "",
    );
    assert!(ok, "promtool test rules:\n{out}");
    eprintln!("{out}");

    // Every alert has a runbook, and its unit tests cover it firing and not firing.
    let rules = std::fs::read_to_string(docs_dir().join("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(docs_dir().join("prometheus/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .split("- alert:")
        .skip(1)
        .map(|block| {
            let name = block.split_whitespace().next().unwrap();
            assert!(block.contains("runbook:"), "alert {name} has no runbook");
            assert!(block.contains("summary:"), "alert {name} has no summary");
            name
        })
        .collect();
    assert!(alerts.len() >= 8, "{alerts:?}");
    for name in alerts {
        let cases = tests.matches(&format!("alertname: {name}\n")).count();
        assert!(
            cases >= 2,
            "alert {name}: {cases} test case(s); want it firing and not firing"
        );
        let firing = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {name}\n")))
            .any(|case| !case.contains("exp_alerts: []"));
        assert!(firing, "alert {name}: no test case expects it to fire");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_and_the_dashboard_query_only_metrics_depot_exports() {
    let _serial = serial().await;
    let mut queries = BTreeMap::new();
    let rules = std::fs::read_to_string(docs_dir().join("prometheus/alerts.yml")).unwrap();
    for line in rules.lines() {
        if let Some(expr) = line.trim().strip_prefix("expr:") {
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && !expr.starts_with(['|', '>']),
                "alerts.yml: keep each expr on one line (this test reads them line by line): {line}"
            );
            queries.insert(expr.trim_matches('\'').to_owned(), "alerts.yml");
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docs_dir().join("grafana/depot.json")).unwrap())
            .expect("docs/grafana/depot.json is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for expr in exprs {
        queries.insert(expr, "depot.json");
    }

    // The last shutdown's phases exist once there was one: stop a depot, then start it again.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    start_ok(&data, &Options::default())
        .await
        .stop(Duration::from_secs(30))
        .await;
    let depot = start_ok(&data, &Options::default()).await;
    let exported = sample_names(&scrape(&depot.client).await);
    // What Prometheus itself adds to every target.
    let synthetic = ["up"];
    let mut unknown = Vec::new();
    for (expr, file) in &queries {
        let names = promql_metric_names(expr);
        assert!(!names.is_empty(), "{file}: no metric in {expr}");
        for name in names {
            if !exported.contains(&name) && !synthetic.contains(&name.as_str()) {
                unknown.push(format!("{file}: {name} (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported by depot:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    depot.stop(Duration::from_secs(30)).await;
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The metric names a PromQL expression selects. A small tokenizer rather than a PromQL parser
/// (no maintained Rust crate parses Grafana's `$__rate_interval` and friends): string literals,
/// label matchers `{…}` and ranges `[…]` are dropped, then every identifier that is not a function
/// (followed by `(`), a keyword, a grouping list (`by (…)`, `on (…)`…), a number or a Grafana
/// variable (`$…`) is a metric name.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    // Strings, matchers and ranges out.
    let mut plain = String::new();
    let mut chars = expr.chars().peekable();
    let mut depth_brace = 0;
    let mut depth_bracket = 0;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
            }
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            '[' => depth_bracket += 1,
            ']' => depth_bracket -= 1,
            _ if depth_brace > 0 || depth_bracket > 0 => {}
            c => plain.push(c),
        }
    }
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let bytes = plain.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'$' || b.is_ascii_digit() || b == b'.' {
            // A variable or a number (with its exponent or unit): skip it whole.
            i += 1;
            while i < bytes.len() && (ident(bytes[i]) || bytes[i] == b'.') {
                i += 1;
            }
        } else if b.is_ascii_alphabetic() || b == b'_' || b == b':' {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let word = &plain[start..i];
            let rest = plain[i..].trim_start();
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) && rest.starts_with('(') {
                // Skip the label list.
                let skip = plain.len() - rest.len();
                i = skip + rest.find(')').map_or(rest.len(), |p| p + 1);
            } else if rest.starts_with('(')
                || KEYWORDS.contains(&lower.as_str())
                || next_word_is_grouping(rest)
            {
                // A function, a keyword, or an aggregation written `sum by (…) (…)`.
            } else {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Whether `rest` starts with `by (` or `without (`.
fn next_word_is_grouping(rest: &str) -> bool {
    ["by", "without"].iter().any(|k| {
        rest.get(..k.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(k))
            && rest[k.len()..].trim_start().starts_with('(')
    })
}

#[test]
fn the_promql_tokenizer_finds_metric_names_only() {
    let names = |e: &str| promql_metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names("sum without (instance) (rate(a_total[5m])) / on (job) group_left count(b)"),
        ["a_total", "b"]
    );
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, route) (rate(depot_http_request_duration_seconds_bucket{route="/v1/streams/:stream/records"}[$__rate_interval])))"#
        ),
        ["depot_http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "depot_forward_backlog_records > 0 and on (instance) increase(depot_forward_delivered_total[15m]) == 0 unless up == 0"
        ),
        [
            "depot_forward_backlog_records",
            "depot_forward_delivered_total",
            "up"
        ]
    );
    assert_eq!(
        names(
            r#"max_over_time(depot_last_shutdown_outcome{outcome=~"cut_off|failed"}[1h] offset 5m) * 1e3"#
        ),
        ["depot_last_shutdown_outcome"]
    );
}
