//! The actors of the booking path: one [`EventActor`] per event, found through
//! the [`EventRegistry`] and run on the HTTP workers' [`WorkerThreads`], and
//! one [`OrderStore`], on a thread of its own, that commits their changes.

mod directory;
mod event;
mod gate;
mod order_store;
mod readers;
mod registry;
mod status_feed;
mod threads;

pub use event::{
    Book, BookingError, Cancel, Configure, ConfirmHold, EventActor, GetStanding, GetSummary,
    GetWaitingList, Hold, Recorder, ReleaseHold, Reply, WatchStanding,
};
pub use order_store::{
    CheckWritable, Flush, ForgetAnswers, OrderStore, QueueSlot, Recover, Recovered,
};
pub use registry::{EventRegistry, Limits};
pub use status_feed::{StatusFeed, StreamSlot};
pub use threads::WorkerThreads;
