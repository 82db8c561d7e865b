//! The ids and numbers a request carries, validated once at the edge.
//!
//! Each `from_json` returns the `details` text of a 400 answer on failure,
//! naming the field, so every route reports bad input the same way.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Largest integer a JSON client in JavaScript can hold exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
pub const MAX_TOTAL_TICKETS: u64 = 10_000_000;
const MAX_EVENT_ID_LEN: usize = 64;
const MAX_USER_ID_LEN: usize = 256;

/// A JSON number that is a whole number, as JSON Schema and JavaScript see
/// it: `7` and `7.0` both, `7.5` not. `None` for negatives and fractions.
fn whole(number: &serde_json::Number) -> Option<u64> {
    number.as_u64().or_else(|| {
        let float = number.as_f64()?;
        (float >= 0.0 && float.fract() == 0.0 && float <= MAX_SAFE_INTEGER as f64)
            .then_some(float as u64)
    })
}

/// An event id in canonical text form: the integer `7` and the string `"7"` are both `7`.
///
/// ```
/// use event_booking::ids::EventId;
/// use serde_json::json;
///
/// let from_integer = EventId::from_json(&json!(7)).unwrap();
/// assert_eq!(EventId::from_json(&json!("7")).unwrap(), from_integer);
/// // Written back as a number, as the Node.js original did.
/// assert_eq!(serde_json::to_value(&from_integer).unwrap(), json!(7));
/// assert!(EventId::from_json(&json!(1.5)).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Arc<str>);

impl EventId {
    pub fn from_json(value: &Value) -> Result<Self, String> {
        const EXPECTED: &str = "eventId must be a positive integer or a string of 1-64 characters from A-Z a-z 0-9 . _ ~ -";
        match value {
            Value::Number(number) => match whole(number) {
                Some(n) if (1..=MAX_SAFE_INTEGER).contains(&n) => Ok(EventId(n.to_string().into())),
                Some(0) => Err("eventId must be a positive integer, not 0".into()),
                _ if number.is_i64() => {
                    Err("eventId must be a positive integer, not negative".into())
                }
                _ => Err(format!(
                    "eventId must be a whole number from 1 to {MAX_SAFE_INTEGER}, not {number}"
                )),
            },
            Value::String(text) => Self::parse(text),
            Value::Null => Err("eventId must not be null".into()),
            _ => Err(format!("{EXPECTED}, not {}", kind_of(value))),
        }
    }

    /// Parses the text form, as in a URL path segment.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')))
        {
            return Err(format!(
                "eventId may only hold A-Z a-z 0-9 . _ ~ -, not {bad:?}"
            ));
        }
        // Only ASCII is left, so bytes are characters.
        if text.is_empty() || text.len() > MAX_EVENT_ID_LEN {
            return Err(format!(
                "eventId must be 1-{MAX_EVENT_ID_LEN} characters long, not {}",
                text.len()
            ));
        }
        Ok(EventId(text.into()))
    }

    /// Takes text that was validated before it was stored.
    pub(crate) fn stored(text: &str) -> Self {
        EventId(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The integer this id stands for, if it is the canonical text of one.
    fn as_integer(&self) -> Option<u64> {
        let canonical = !self.0.starts_with('0') && self.0.bytes().all(|b| b.is_ascii_digit());
        self.0
            .parse()
            .ok()
            .filter(|&n| canonical && n <= MAX_SAFE_INTEGER)
    }
}

/// Lets maps keyed by `EventId` be searched with a `&str`.
impl Borrow<str> for EventId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Written back as a JSON number when it is one, as the Node.js original did for `7`.
impl Serialize for EventId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_integer() {
            Some(n) => serializer.serialize_u64(n),
            None => serializer.serialize_str(&self.0),
        }
    }
}

/// A user id: a string, or a non-negative integer that is the same user as its decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    /// The canonical text form, shared with the event actor's maps.
    key: Arc<str>,
    /// Given as a JSON number: echoed back as one.
    numeric: bool,
}

impl UserId {
    pub fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::Number(number) => match whole(number) {
                Some(n) if n <= MAX_SAFE_INTEGER => Ok(UserId { key: n.to_string().into(), numeric: true }),
                _ if number.is_i64() => Err("userId must not be negative".into()),
                _ => Err(format!("userId must be a string or a whole number from 0 to {MAX_SAFE_INTEGER}, not {number}")),
            },
            Value::String(text) => Self::parse(text),
            Value::Null => Err("userId must not be null".into()),
            _ => Err(format!("userId must be a string or a non-negative integer, not {}", kind_of(value))),
        }
    }

    /// Parses the text form, as in a URL path segment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let length = text.chars().count();
        if length == 0 || length > MAX_USER_ID_LEN {
            return Err(format!(
                "userId must be 1-{MAX_USER_ID_LEN} characters long, not {length}"
            ));
        }
        if text.chars().any(char::is_control) {
            return Err("userId must not contain control characters".into());
        }
        Ok(UserId {
            key: text.into(),
            numeric: false,
        })
    }

    pub fn key(&self) -> &Arc<str> {
        &self.key
    }
}

impl From<Arc<str>> for UserId {
    fn from(key: Arc<str>) -> Self {
        UserId {
            key,
            numeric: false,
        }
    }
}

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.key.parse::<u64>() {
            Ok(n) if self.numeric => serializer.serialize_u64(n),
            _ => serializer.serialize_str(&self.key),
        }
    }
}

/// Number of tickets an event is initialized with.
pub fn total_tickets_from_json(value: &Value) -> Result<u32, String> {
    let range = format!("totalTickets must be a whole number from 1 to {MAX_TOTAL_TICKETS}");
    match value {
        Value::Number(number) => match whole(number) {
            Some(n) if (1..=MAX_TOTAL_TICKETS).contains(&n) => Ok(n as u32),
            _ => Err(format!("{range}, not {number}")),
        },
        Value::Null => Err("totalTickets must not be null".into()),
        _ => Err(format!("{range}, not {}", kind_of(value))),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_and_string_event_ids_are_the_same_event() {
        assert_eq!(
            EventId::from_json(&json!(7)),
            EventId::from_json(&json!("7"))
        );
        assert_eq!(
            serde_json::to_value(EventId::parse("7").unwrap()).unwrap(),
            json!(7)
        );
        assert_eq!(
            serde_json::to_value(EventId::parse("007").unwrap()).unwrap(),
            json!("007")
        );
        assert_eq!(
            serde_json::to_value(EventId::parse("gig-1").unwrap()).unwrap(),
            json!("gig-1")
        );
    }

    #[test]
    fn event_ids_outside_the_contract_are_refused() {
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!(1e30),
            json!(true),
            json!([1]),
            json!({}),
            json!(null),
            json!(""),
            json!("a b"),
            json!("x".repeat(65)),
            json!(MAX_SAFE_INTEGER + 1),
        ] {
            let error = EventId::from_json(&bad).unwrap_err();
            assert!(error.contains("eventId"), "{bad}: {error}");
        }
        assert!(EventId::from_json(&json!("A-z_0.9~")).is_ok());
        assert!(EventId::from_json(&json!("x".repeat(64))).is_ok());
        assert!(EventId::parse(&"é".repeat(40)).unwrap_err().contains("'é'"));
    }

    #[test]
    fn user_ids_keep_their_form_on_the_way_back() {
        let numeric = UserId::from_json(&json!(42)).unwrap();
        assert_eq!(numeric.key().as_ref(), "42");
        assert_eq!(serde_json::to_value(&numeric).unwrap(), json!(42));
        assert_eq!(
            serde_json::to_value(UserId::from_json(&json!("42")).unwrap()).unwrap(),
            json!("42")
        );
        assert!(UserId::from_json(&json!(0)).is_ok());
        assert_eq!(
            UserId::from_json(&json!(42.0)),
            UserId::from_json(&json!(42))
        );
        assert_eq!(
            EventId::from_json(&json!(7.0)),
            EventId::from_json(&json!(7))
        );
        assert!(UserId::from_json(&json!("Zoë 🎫")).is_ok());
    }

    #[test]
    fn user_ids_outside_the_contract_are_refused() {
        for bad in [
            json!(-1),
            json!(1.5),
            json!(false),
            json!(null),
            json!(""),
            json!("tab\there"),
            json!("é".repeat(257)),
            json!(["a"]),
        ] {
            let error = UserId::from_json(&bad).unwrap_err();
            assert!(error.contains("userId"), "{bad}: {error}");
        }
        assert!(UserId::from_json(&json!("é".repeat(256))).is_ok());
    }

    #[test]
    fn total_tickets_must_be_in_range() {
        assert_eq!(total_tickets_from_json(&json!(100)), Ok(100));
        assert_eq!(
            total_tickets_from_json(&json!(MAX_TOTAL_TICKETS)),
            Ok(10_000_000)
        );
        for bad in [
            json!(0),
            json!(-5),
            json!(MAX_TOTAL_TICKETS + 1),
            json!(2.5),
            json!("100"),
            json!(null),
            json!(12345678901234567890u64),
        ] {
            assert!(
                total_tickets_from_json(&bad)
                    .unwrap_err()
                    .contains("totalTickets"),
                "{bad}"
            );
        }
    }
}
