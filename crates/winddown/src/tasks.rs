//! Tracked tasks: named tasks the drain waits for, with a bound, naming the ones that hang.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The program's tracked tasks. Cheap to clone; every clone sees the same set.
///
/// Built on `tokio_util`'s `TaskTracker`, with names kept beside it so that a bounded wait can say
/// which tasks were still running when it gave up.
#[derive(Debug, Clone)]
pub struct Tasks {
    inner: Arc<TasksInner>,
}

#[derive(Debug)]
struct TasksInner {
    tracker: TaskTracker,
    running: Mutex<BTreeMap<u64, String>>,
    next_id: AtomicU64,
    stop: CancellationToken,
}

/// Removes a task's name when the task ends, however it ends (completion, panic, abort).
struct Registration {
    inner: Arc<TasksInner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Tasks {
    pub(crate) fn new(stop: CancellationToken) -> Self {
        Tasks {
            inner: Arc::new(TasksInner {
                tracker: TaskTracker::new(),
                running: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(0),
                stop,
            }),
        }
    }

    /// Spawns a named task on the current runtime. The closure gets a token that is cancelled when
    /// the stop is requested: the task should finish its current unit of work and return.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, task: F) -> JoinHandle<Fut::Output>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, name.into());
        let registration = Registration {
            inner: self.inner.clone(),
            id,
        };
        let fut = task(self.inner.stop.child_token());
        self.inner.tracker.spawn(async move {
            let _registration = registration;
            fut.await
        })
    }

    /// The names of the tasks still running, in the order they were spawned.
    pub fn running(&self) -> Vec<String> {
        let running = self.inner.running.lock().unwrap_or_else(|e| e.into_inner());
        running.values().cloned().collect()
    }

    /// Waits until every tracked task has ended (no bound: the drain runner supplies it).
    pub(crate) async fn wait_all(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    /// Waits until every tracked task has ended or `deadline` passes. Returns the names of the
    /// tasks still running at the deadline (empty when all ended).
    ///
    /// New tasks can still be spawned while it waits; they are waited for too.
    ///
    /// # Cancellation safety
    /// Cancel-safe: it only observes the tasks.
    pub async fn wait_until(&self, deadline: Instant) -> Vec<String> {
        self.inner.tracker.close();
        let _ = tokio::time::timeout_at(deadline, self.inner.tracker.wait()).await;
        self.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bounded_wait_names_the_stragglers() {
        let stop = CancellationToken::new();
        let tasks = Tasks::new(stop.clone());
        tasks.spawn("polite", |stop| async move { stop.cancelled().await });
        tasks.spawn("stuck", |_| std::future::pending::<()>());
        tasks.spawn("quick", |_| async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), vec!["polite", "stuck"]);
        stop.cancel();
        let start = Instant::now();
        let left = tasks.wait_until(start + Duration::from_secs(2)).await;
        assert_eq!(left, vec!["stuck"]);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_panicking_task_is_not_a_straggler() {
        let tasks = Tasks::new(CancellationToken::new());
        let h = tasks.spawn("boom", |_| async { panic!("boom") });
        assert!(h.await.is_err());
        let left = tasks
            .wait_until(Instant::now() + Duration::from_secs(1))
            .await;
        assert!(left.is_empty());
    }
}
