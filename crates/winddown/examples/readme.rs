// The README's "library in one screen", word for word below the attribute (tests/readme.rs checks
// it). Left unformatted: it keeps the README's layout.
#![cfg_attr(rustfmt, rustfmt::skip)]

use winddown::{DrainPlan, HostOptions, Stage};

fn main() {
    let code = winddown::run(HostOptions::new("myservice"), |host| async move {
        // … start serving; spawn tracked tasks with host.shutdown().tasks().spawn(name, …) …
        let plan = DrainPlan::new()
            .phase(Stage::StopAccepting, "close listener", |_| async { Ok::<_, std::io::Error>(()) })
            .wait_for_tasks()
            .phase(Stage::Flush, "flush", |ctx| async move {
                ctx.set_detail("42 records flushed");
                Ok::<_, std::io::Error>(())
            });
        host.ready();                       // READY=1 / SERVICE_RUNNING
        Ok(host.drain(plan).await)          // waits for a stop, drains within its budget
    });
    std::process::exit(code);
}
