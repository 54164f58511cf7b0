//! A hand-written SVG chart: throughput and p99 latency against concurrency, for depot durable,
//! depot with durability off, and Redis with `appendfsync always`.

use std::fmt::Write as _;

use crate::report::{Row, Summary};

const W: f64 = 980.0;
const H: f64 = 410.0;
const PANEL_W: f64 = 380.0;
const PANEL_H: f64 = 250.0;
const TOP: f64 = 70.0;
const LEFT: [f64; 2] = [70.0, 560.0];

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    dash: &'a str,
    /// (clients, records/s, p99 ms)
    points: Vec<(usize, f64, f64)>,
}

pub fn chart(summary: &Summary) -> String {
    let pick = |prefix: &str| -> Vec<(usize, f64, f64)> {
        summary
            .sweep
            .iter()
            .filter_map(|&c| {
                summary.rows.iter().find(|r| {
                    r.label.starts_with(prefix)
                        && r.clients == c
                        && r.records_per_request == 1
                        && r.streams == summary.streams
                })
            })
            .map(|r: &Row| (r.clients, r.rps(), r.p99().as_secs_f64() * 1e3))
            .collect()
    };
    let series = [
        Series {
            name: "depot, durable (201 after fdatasync)",
            color: "#1f6feb",
            dash: "",
            points: pick("depot durable,"),
        },
        Series {
            name: "depot, durability=off",
            color: "#8b949e",
            dash: "6,4",
            points: pick("depot durability=off,"),
        },
        Series {
            name: "Redis, appendfsync always",
            color: "#d73a49",
            dash: "",
            points: pick("redis"),
        },
    ];
    let clients = &summary.sweep;
    let max_rps = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let rps_top = nice_ceiling(max_rps);
    let p99s = series.iter().flat_map(|s| s.points.iter().map(|p| p.2));
    let p99_lo = p99s.clone().fold(f64::INFINITY, f64::min).max(0.01);
    let p99_hi = p99s.fold(0.0, f64::max).max(p99_lo * 10.0);
    let (log_lo, log_hi) = (p99_lo.log10().floor(), p99_hi.log10().ceil());

    let x_of = |panel: usize, c: usize| -> f64 {
        let n = clients.len().max(2) - 1;
        let i = clients.iter().position(|&x| x == c).unwrap_or(0);
        LEFT[panel] + PANEL_W * i as f64 / n as f64
    };
    let y_rps = |v: f64| TOP + PANEL_H * (1.0 - v / rps_top);
    let y_p99 = |v: f64| TOP + PANEL_H * (1.0 - (v.log10() - log_lo) / (log_hi - log_lo));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">depot single-record POSTs vs concurrency — {} CPUs, {}, {} mode, median of {}</text>"#,
        W / 2.0,
        summary.machine.cpus,
        escape(summary.machine.fs.split(' ').next().unwrap_or_default()),
        summary.mode,
        summary.repeat
    );
    for (panel, title) in [(0, "records/s"), (1, "p99 latency (ms, log scale)")] {
        let x0 = LEFT[panel];
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{title}</text>"#,
            x0 + PANEL_W / 2.0,
            TOP - 12.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{TOP}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
        );
        for &c in clients {
            let x = x_of(panel, c);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{c}</text>"##,
                TOP + PANEL_H,
                TOP + PANEL_H + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">concurrent clients (keep-alive connections)</text>"#,
            x0 + PANEL_W / 2.0,
            TOP + PANEL_H + 34.0
        );
        if panel == 0 {
            for i in 0..=4 {
                let v = rps_top * i as f64 / 4.0;
                let y = y_rps(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                    x0 + PANEL_W,
                    x0 - 6.0,
                    y + 4.0,
                    if v >= 1000.0 {
                        format!("{}k", trim(v / 1000.0))
                    } else {
                        format!("{v:.0}")
                    }
                );
            }
        } else {
            let mut e = log_lo;
            while e <= log_hi {
                let v = 10f64.powf(e);
                let y = y_p99(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                    x0 + PANEL_W,
                    x0 - 6.0,
                    y + 4.0,
                    trim(v)
                );
                e += 1.0;
            }
            // The 2 ms goal.
            if (log_lo..=log_hi).contains(&2f64.log10()) {
                let y = y_p99(2.0);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#2da44e" stroke-dasharray="2,3"/><text x="{}" y="{}" fill="#2da44e">2 ms goal</text>"##,
                    x0 + PANEL_W,
                    x0 + 4.0,
                    y - 4.0
                );
            }
        }
        for series in &series {
            if series.points.is_empty() {
                continue;
            }
            let coords: Vec<(f64, f64)> = series
                .points
                .iter()
                .map(|&(c, rps, p99)| {
                    (
                        x_of(panel, c),
                        if panel == 0 {
                            y_rps(rps)
                        } else {
                            y_p99(p99.max(p99_lo))
                        },
                    )
                })
                .collect();
            let path: Vec<String> = coords
                .iter()
                .map(|(x, y)| format!("{x:.1},{y:.1}"))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}"/>"#,
                path.join(" "),
                series.color,
                series.dash
            );
            for (x, y) in coords {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{}"/>"#,
                    series.color
                );
            }
        }
    }
    for (i, series) in series.iter().enumerate() {
        let x = 80.0 + 280.0 * i as f64;
        let y = H - 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="2" stroke-dasharray="{}"/><text x="{}" y="{y}">{}</text>"#,
            y - 4.0,
            x + 24.0,
            y - 4.0,
            series.color,
            series.dash,
            x + 30.0,
            escape(series.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * mag >= v {
            return step * mag;
        }
    }
    10.0 * mag
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
