//! The threads that read events from the database for their activation: a
//! few, started once and kept. A read blocks (SQLite, or a wait on
//! PostgreSQL), so it cannot run on the threads of event actors; and the
//! event's state is built where it is read, so those threads' allocator
//! arenas hold every active event's state. tokio's blocking pool used up to
//! 64 short-lived threads for it in a benchmark, each leaving an arena
//! behind, fragmented, once it exited (figures in docs/performance.md,
//! "What events as virtual actors cost"). The price: at most this many
//! events are read at once, so a few large ones (a second each for a
//! million orders) hold up the activations queued behind them.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use futures::channel::oneshot;

/// Work for a reader thread.
type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of reader threads sharing one queue.
pub struct ReaderThreads {
    queue: Sender<Job>,
}

impl ReaderThreads {
    /// Starts `count` (at least 1) reader threads.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let (queue, jobs) = channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for number in 0..count.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("event-reader-{number}"))
                .spawn(move || run(&jobs))?;
        }
        Ok(ReaderThreads { queue })
    }

    /// Runs `read` on a reader thread; `None` if it panicked (logged) or
    /// the readers have stopped.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (sent, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = sent.send(read());
        });
        self.queue.send(job).ok()?;
        result.await.ok()
    }
}

/// A reader's loop: the next job, until the queue is gone.
fn run(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            // A read that panics fails its activation (its result is never
            // sent), not the thread.
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    log::error!("reading an event panicked; its activation failed");
                }
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_read_runs_on_a_reader_and_a_panicking_one_fails_alone() {
        let readers = ReaderThreads::start(1).unwrap();
        let name = readers
            .run(|| std::thread::current().name().map(str::to_string))
            .await;
        assert_eq!(name, Some(Some("event-reader-0".to_string())));
        let failed: Option<()> = readers.run(|| panic!("a read that panics")).await;
        assert_eq!(failed, None);
        // The one reader lives on.
        assert_eq!(readers.run(|| 7).await, Some(7));
    }
}
