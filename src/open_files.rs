//! The limit on open files, and the connections it leaves room for.
//!
//! Each connection is a file. The usual soft limit of a process, 1,024 (what
//! systemd services and container runtimes give unless told otherwise), would
//! let the server take about a thousand connections: past that, `accept`
//! fails with "Too many open files" while thousands of clients of a ticket
//! release wait unanswered. The hard limit is usually far higher.

/// Files the server holds besides its connections: the database, its WAL and
/// its shared memory for each pooled connection, the listener, stdio...
const RESERVED: u64 = 64;
/// ...and an epoll, an eventfd or two and a timer for each worker. Generous.
const RESERVED_PER_WORKER: u64 = 4;

/// The open-files limit the server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft `RLIMIT_NOFILE` in force: the most files open at once.
    pub limit: u64,
    /// The soft limit the process was started with.
    pub was: u64,
}

impl OpenFiles {
    /// Raises the soft `RLIMIT_NOFILE` to the hard limit, as the Go runtime
    /// does at start-up and nginx's `worker_rlimit_nofile` allows (see
    /// getrlimit(2)); an unprivileged process may do so. Through the
    /// `rlimit` crate. `None` where the platform has no such limit.
    pub fn raise() -> Option<OpenFiles> {
        let (was, _hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
        let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|error| {
            log::warn!("cannot raise the limit on open files above {was}: {error}");
            was
        });
        Some(OpenFiles { limit, was })
    }

    /// Connections each of `workers` may hold so that together they stay
    /// within the limit: `configured`, or less. At that many a worker stops
    /// accepting, and new connections wait in the listen backlog (see
    /// [`backlog`](Self::backlog)) until one closes, rather than being
    /// accepted into an error.
    pub fn connections_per_worker(&self, configured: usize, workers: usize) -> usize {
        let room = self.room(workers).max(workers as u64);
        configured.min((room / workers as u64) as usize).max(1)
    }

    /// The listen backlog: `wanted`, or no more than the connections the
    /// limit lets the server take in at once; the kernel holds the rest
    /// until a connection closes, and then they are served.
    pub fn backlog(&self, wanted: i32, workers: usize) -> i32 {
        let room = self.room(workers).max(1);
        wanted.min(i32::try_from(room).unwrap_or(i32::MAX))
    }

    /// Files left for connections.
    fn room(&self, workers: usize) -> u64 {
        self.limit
            .saturating_sub(RESERVED + RESERVED_PER_WORKER * workers as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_stay_within_the_limit() {
        let low = OpenFiles {
            limit: 1024,
            was: 1024,
        };
        // 1024 - 64 - 2 * 4 files for connections, shared by the workers.
        assert_eq!(low.connections_per_worker(25_000, 2), 476);
        assert_eq!(low.backlog(4096, 2), 952);
        // More workers hold more files of their own.
        assert_eq!(low.connections_per_worker(25_000, 64), 11);
        let high = OpenFiles {
            limit: 1 << 20,
            was: 1024,
        };
        assert_eq!(high.connections_per_worker(25_000, 2), 25_000);
        assert_eq!(high.backlog(4096, 2), 4096);
        // Never none at all, however low the limit.
        let tiny = OpenFiles { limit: 10, was: 10 };
        assert_eq!(tiny.connections_per_worker(25_000, 4), 1);
        assert_eq!(tiny.backlog(4096, 4), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = OpenFiles::raise().expect("Linux has RLIMIT_NOFILE");
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!((raised.limit, soft), (hard, hard));
        assert!(raised.was <= raised.limit);
    }
}
