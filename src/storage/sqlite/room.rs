//! A start on a full disk: waiting for room where only room helps.

use std::path::Path;
use std::time::Duration;

use crate::storage::StorageError;

/// How often a start that found no room on the disk tries again.
const ROOM_RETRY: Duration = Duration::from_secs(1);

/// Where a start looks for room when SQLite finds none.
pub(super) struct Room<'a> {
    /// The database's folder: its file system's free space.
    pub(super) folder: &'a Path,
    /// The configured cap on pages: a full database with a disk that has
    /// room is the cap, which waiting does not lift.
    pub(super) max_page_count: u32,
}

impl Room<'_> {
    /// `open`, tried again every [`ROOM_RETRY`] while the disk has no room
    /// for it, so that a server started on a full disk starts once space is
    /// freed instead of exiting (and a container restarting in a loop). The
    /// port stays closed meanwhile. Opening writes only where it must: a
    /// schema upgrade, or SQLite's shared-memory file (`-shm`, 32 KiB)
    /// where it was deleted, which SQLite needs before it reads the WAL.
    pub(super) fn wait_for<T>(
        &self,
        mut open: impl FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut waiting = false;
        loop {
            match open() {
                Err(StorageError::Sqlite(error)) if self.lacking(&error) => {
                    if !waiting {
                        log::error!(
                            "no room to open the database ({error}); \
                             waiting for space, trying again every {ROOM_RETRY:?}"
                        );
                        waiting = true;
                    }
                    std::thread::sleep(ROOM_RETRY);
                }
                done => {
                    if waiting && done.is_ok() {
                        log::info!("the database is open: there is room again");
                    }
                    return done;
                }
            }
        }
    }

    /// Whether `error` is the disk's lack of room, which freeing space
    /// mends: SQLite's `SQLITE_FULL` (unless the disk has room and the cap
    /// on pages is what was reached), or `SQLITE_IOERR_SHMSIZE` (its
    /// shared memory could not grow) on a disk with under 1 MiB free, as
    /// SQLite reports any failed write of that file so.
    fn lacking(&self, error: &rusqlite::Error) -> bool {
        const MIB: u64 = 1 << 20;
        let Some(error) = error.sqlite_error() else {
            return false;
        };
        let free = rustix::fs::statvfs(self.folder)
            .map_or(0, |fs| fs.f_bavail.saturating_mul(fs.f_frsize));
        if error.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE {
            return free < MIB;
        }
        // With a cap configured, a disk with 64 MiB free is not what filled up.
        error.code == rusqlite::ErrorCode::DiskFull && (self.max_page_count == 0 || free < 64 * MIB)
    }
}
