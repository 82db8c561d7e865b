//! Paging of the lists: `?limit=` and `?after=`, read one way for both.

use std::fmt::Write as _;

use serde::Deserialize;
use utoipa::IntoParams;

use crate::booking::PageCursor;
use crate::error::ApiError;

/// Most items on one page.
const MAX_LIMIT: usize = 1000;
/// Items on a page when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `?limit=&after=` of `GET /api/events`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events on the page, 1-1000; 100 if not given.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` of the page before; none for the first page.
    #[param(pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
}

/// `?limit=&after=` of `GET /api/events/{eventId}/waiting-list`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitingListQuery {
    /// Users on the page, 1-1000; 100 if not given.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next` of the page before; none for the first page.
    #[param(pattern = "^[0-9]{1,18}:[0-9]{1,18}:[0-9]{1,18}:([0-9a-f]{2})+$")]
    after: Option<String>,
}

impl EventsQuery {
    pub(super) fn limit(&self) -> Result<usize, ApiError> {
        limit(self.limit.as_deref())
    }

    /// The creation place of the last event of the page before (0: none).
    pub(super) fn after(&self) -> Result<i64, ApiError> {
        match &self.after {
            None => Ok(0),
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|after| *after >= 0)
                .ok_or_else(|| bad_cursor(cursor)),
        }
    }
}

impl WaitingListQuery {
    pub(super) fn limit(&self) -> Result<usize, ApiError> {
        limit(self.limit.as_deref())
    }

    /// The last entry of the page before.
    pub(super) fn after(&self) -> Result<Option<PageCursor>, ApiError> {
        let Some(text) = &self.after else {
            return Ok(None);
        };
        let mut parts = text.splitn(4, ':');
        // At most 18 digits, as the document's pattern says: no sum overflows.
        let mut number = || {
            let digits = parts.next().filter(|digits| digits.len() <= 18)?;
            digits.parse::<u64>().ok()
        };
        let (position, epoch, seq) = (number(), number(), number());
        let user = parts.next().and_then(from_hex);
        match (position, epoch, seq, user) {
            (Some(position), Some(epoch), Some(seq), Some(user)) => Ok(Some(PageCursor {
                position,
                epoch,
                seq,
                user: user.into(),
            })),
            _ => Err(bad_cursor(text)),
        }
    }
}

/// The `next` of a waiting-list page: `position:epoch:seq:user`, opaque to
/// clients, the user's bytes in hexadecimal, so that the cursor goes into a
/// query string as it is, encoded or not.
pub(super) fn waiting_cursor(cursor: &PageCursor) -> String {
    let PageCursor {
        position,
        epoch,
        seq,
        user,
    } = cursor;
    let mut text = format!("{position}:{epoch}:{seq}:");
    for byte in user.bytes() {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// The text whose UTF-8 bytes `hex` spells, two digits a byte (bytes that
/// are not UTF-8 name no user, and the page goes on by position).
fn from_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The page size asked for, or a 400 naming `limit`.
fn limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    text.parse::<usize>()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| {
            ApiError::InvalidInput(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"
            ))
        })
}

/// A 400 for a cursor that is not one this server gave out.
fn bad_cursor(cursor: &str) -> ApiError {
    ApiError::InvalidInput(format!(
        "after must be the next of an earlier page, not {cursor:?}"
    ))
}
