//! The limit on open files, and the connections it leaves room for.
//!
//! Each connection is a file. The usual soft limit of a process, 1,024 (what
//! systemd services and container runtimes give unless told otherwise), would
//! let the server take about a thousand connections: past that, `accept`
//! fails with "Too many open files" while thousands of clients of a ticket
//! release wait unanswered. The hard limit is usually far higher.

/// Files the server holds besides its connections: the database, its WAL and
/// its shared memory for each pooled connection, the listener, an epoll and
/// an eventfd or two for each worker and arbiter thread, stdio. Generous.
const RESERVED: u64 = 128;

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
        let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(was);
        Some(OpenFiles { limit, was })
    }

    /// Connections each of `workers` may hold so that together they stay
    /// within the limit: `configured`, or less. At that many a worker stops
    /// accepting, and new connections wait in the listen backlog (see
    /// [`backlog`](Self::backlog)) until one closes, rather than being
    /// accepted into an error.
    pub fn connections_per_worker(&self, configured: usize, workers: usize) -> usize {
        let room = self.limit.saturating_sub(RESERVED).max(workers as u64);
        configured.min((room / workers as u64) as usize).max(1)
    }

    /// The listen backlog: `wanted`, or less where the limit could not take
    /// that many connections in anyway.
    pub fn backlog(&self, wanted: i32) -> i32 {
        let room = self.limit.saturating_sub(RESERVED).max(1);
        wanted.min(i32::try_from(room).unwrap_or(i32::MAX))
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
        assert_eq!(low.connections_per_worker(25_000, 2), 448);
        assert_eq!(low.backlog(4096), 896);
        let high = OpenFiles {
            limit: 1 << 20,
            was: 1024,
        };
        assert_eq!(high.connections_per_worker(25_000, 2), 25_000);
        assert_eq!(high.backlog(4096), 4096);
        // Never none at all, however low the limit.
        let tiny = OpenFiles { limit: 10, was: 10 };
        assert_eq!(tiny.connections_per_worker(25_000, 4), 1);
        assert_eq!(tiny.backlog(4096), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let raised = OpenFiles::raise().expect("Linux has RLIMIT_NOFILE");
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        assert_eq!((raised.limit, soft), (hard, hard));
        assert!(raised.was <= raised.limit);
    }
}
