//! The actors of the booking path: one [`EventActor`] per event, found through
//! the [`EventRegistry`], and one [`OrderStore`] that commits their changes.

mod event;
mod order_store;
mod registry;

pub use event::{Book, BookingError, Cancel, Decided, EventActor, GetSummary, GetUserStatus};
pub use order_store::{Flush, OrderStore};
pub use registry::{EventRegistry, InitializeError};
