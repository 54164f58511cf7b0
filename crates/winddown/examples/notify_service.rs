//! A service that speaks systemd's notify protocol, through `winddown::run` and nothing else.
//!
//! Under a `Type=notify` unit (`winddown::service::systemd::unit_file` writes one) it sends
//! `STATUS=` lines, `READY=1` when it serves, `STOPPING=1` when `SIGTERM` starts the drain,
//! `EXTEND_TIMEOUT_USEC=` on every progress report of the drain, and `WATCHDOG=1` from its runtime
//! while its worker's heartbeat is fresh. Run in a terminal it is a console program: Ctrl+C drains
//! it.
//!
//!     cargo run -p winddown --example notify_service
//!
//! The `systemd_notify` test runs this very code as a child process against a notify socket of
//! its own, and checks every datagram.
use std::time::Duration;

use winddown::{DrainPlan, HostOptions, Stage};

fn main() {
    std::process::exit(run());
}

/// The whole service; returns the process exit code.
pub(crate) fn run() -> i32 {
    winddown::run(HostOptions::new("notify-service"), |host| async move {
        host.status("warming up");

        // A worker whose loop beats a heartbeat: stuck for 10 s, it stops the watchdog pings.
        let heartbeat = host.heartbeat("worker", Duration::from_secs(10));
        host.shutdown()
            .tasks()
            .spawn("worker", move |stop| async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tick.tick() => heartbeat.beat(),
                    }
                }
            });
        // A request in flight when the stop comes: it needs 0.8 s more.
        host.shutdown()
            .tasks()
            .spawn("request 17", |stop| async move {
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(800)).await;
            });

        let plan = DrainPlan::new()
            .phase(Stage::StopAccepting, "close listener", |_| async {
                Ok::<_, std::io::Error>(())
            })
            .wait_for_tasks()
            // The long phase: 2.5 s, saying how far it got. systemd sees each step in `STATUS=`,
            // with an `EXTEND_TIMEOUT_USEC=` covering what is left of the phase.
            .phase(Stage::Flush, "flush journal", |ctx| async move {
                for tenth in 1..=10 {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    ctx.set_progress(format!("{}% flushed", tenth * 10));
                }
                ctx.set_detail("1000 records flushed");
                Ok::<_, std::io::Error>(())
            });

        host.ready();
        Ok(host.drain(plan).await)
    })
}
