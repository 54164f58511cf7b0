//! The whole model in one program: run it, press Ctrl+C (or `kill -TERM <pid>`), read the report.
//! Press Ctrl+C twice to hurry, three times to exit at once.
//!
//!     cargo run -p winddown --example 01_drain_plan
use std::time::Duration;

use winddown::{DrainPlan, HostOptions, LockFile, Stage, TempArea};

fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    let code = winddown::run(HostOptions::new("demo"), |host| async move {
        // Guards: one instance at a time; a temp area swept of what a crash left behind.
        let dir = std::env::temp_dir().join("winddown-demo");
        std::fs::create_dir_all(&dir)?;
        let lock = LockFile::acquire(dir.join("demo.lock"))?;
        let temp = TempArea::open(dir.join("tmp"))?;

        // Tracked tasks see the stop and are waited for, with a bound.
        for n in 0..3 {
            host.shutdown()
                .tasks()
                .spawn(format!("worker {n}"), move |stop| async move {
                    stop.cancelled().await; // finish the current unit of work, then return
                    tokio::time::sleep(Duration::from_millis(300 * n)).await;
                });
        }

        // The drain plan: phases run in stage order, each with its share of the stop's budget.
        let plan = DrainPlan::new()
            .phase(Stage::StopAccepting, "stop intake", |_| async {
                Ok::<_, std::io::Error>(())
            })
            .wait_for_tasks()
            .phase(Stage::Flush, "flush buffers", |ctx| async move {
                ctx.set_progress("writing 3 batches");
                tokio::time::sleep(Duration::from_millis(200)).await;
                ctx.set_detail("3 batches flushed");
                Ok::<_, std::io::Error>(())
            })
            .phase(Stage::Release, "lock and temp area", move |_| async move {
                temp.release()?;
                lock.release();
                Ok::<_, std::io::Error>(())
            });

        host.ready();
        println!(
            "running as PID {}: press Ctrl+C to stop",
            std::process::id()
        );
        let report = host.drain(plan).await;
        println!("{report}");
        Ok(report)
    });
    std::process::exit(code);
}
