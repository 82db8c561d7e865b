//! The ids and numbers a request carries, validated once at the edge.
//!
//! Each `from_json` returns the `details` text of a 400 answer on failure,
//! naming the field, so every route reports bad input the same way.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, Emoji, Ideographic, WhiteSpace};
use icu_properties::CodePointSetData;
use serde::{Serialize, Serializer};
use serde_json::{Number, Value};

/// Largest integer a JSON client in JavaScript can hold exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
pub const MAX_TOTAL_TICKETS: u64 = 10_000_000;
const MAX_EVENT_ID_LEN: usize = 64;
const MAX_USER_ID_LEN: usize = 256;

/// The one reading of every integer field (`eventId`, `userId`,
/// `totalTickets`): JSON has a single kind of number, and an integral
/// spelling of one (`7`, `7.0`, `7e0`, `0.7e1`) is that integer, as in JSON
/// Schema and in JavaScript. A spelling with a fraction or an exponent is
/// read as an IEEE 754 double, as JavaScript's `JSON.parse` reads it; an
/// integer spelling is read exactly. The value must lie in `min..=max`.
///
/// On failure, the `details` of a 400 naming the rule broken: negative,
/// not whole, too large (with the bound), zero.
fn integer(field: &str, number: &Number, min: u64, max: u64) -> Result<u64, String> {
    let value = match number.as_u64() {
        Some(n) => n,
        // Only a negative integer spelling is an i64 and not a u64.
        None if number.is_i64() => {
            return Err(format!("{field} must not be negative, not {number}"))
        }
        None => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float < 0.0 {
                return Err(format!("{field} must not be negative, not {number}"));
            }
            if float.fract() != 0.0 {
                return Err(format!("{field} must be a whole number, not {number}"));
            }
            if float > max as f64 {
                return Err(too_large(field, max, number));
            }
            float as u64
        }
    };
    if value > max {
        return Err(too_large(field, max, number));
    }
    if value < min {
        return Err(match value {
            0 => format!("{field} must not be zero"),
            _ => format!("{field} must be at least {min}, not {number}"),
        });
    }
    Ok(value)
}

fn too_large(field: &str, max: u64, number: &Number) -> String {
    format!("{field} is too large: at most {max}, not {number}")
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
            Value::Number(number) => integer("eventId", number, 1, MAX_SAFE_INTEGER)
                .map(|n| EventId(n.to_string().into())),
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

/// A user id's canonical text, as the event actors' maps, waiting lists
/// and holds keep it: an id of up to 23 bytes is stored inline, without
/// an allocation; a longer one is shared behind one reference count, so a
/// clone never copies its text. `smol_str`, from
/// rust-analyzer, rather than `Arc<str>`: reading an event of a million
/// users no longer allocates each one's id (figures in docs/performance.md).
pub type UserKey = smol_str::SmolStr;

/// A user id: a string, or a non-negative integer that is the same user as its decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId {
    /// The canonical text form, shared with the event actor's maps.
    key: UserKey,
    /// Given as a JSON number: echoed back as one.
    numeric: bool,
}

impl UserId {
    pub fn from_json(value: &Value) -> Result<Self, String> {
        match value {
            Value::Number(number) => {
                let n = integer("userId", number, 0, MAX_SAFE_INTEGER)?;
                Ok(UserId {
                    key: n.to_string().into(),
                    numeric: true,
                })
            }
            Value::String(text) => Self::parse(text),
            Value::Null => Err("userId must not be null".into()),
            _ => Err(format!(
                "userId must be a string or a non-negative integer, not {}",
                kind_of(value)
            )),
        }
    }

    /// Parses the text form, as in a URL path segment: normalized to NFC
    /// first, then checked (see [`normalize`] and [`check_user_text`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = normalize(text);
        check_user_text(&text)?;
        Ok(UserId {
            key: text.into(),
            numeric: false,
        })
    }

    pub fn key(&self) -> &UserKey {
        &self.key
    }
}

impl UserId {
    /// Takes text that was validated before it was stored (or, from before
    /// ids were normalized, kept as it was: see `storage::schema::normalize_stored_users`).
    pub(crate) fn stored(key: UserKey) -> Self {
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
    whole_number_from_json("totalTickets", value, 1, MAX_TOTAL_TICKETS).map(|n| n as u32)
}

/// A whole number from `min` to `max` in the JSON field `field` (`7`, or
/// `7.0`), or the reason it is not one, naming the field.
pub fn whole_number_from_json(
    field: &str,
    value: &Value,
    min: u64,
    max: u64,
) -> Result<u64, String> {
    match value {
        Value::Number(number) => integer(field, number, min, max),
        Value::Null => Err(format!("{field} must not be null")),
        _ => Err(format!(
            "{field} must be a whole number from {min} to {max}, not {}",
            kind_of(value)
        )),
    }
}

/// A user id's text in Unicode Normalization Form C (canonical composition,
/// [UAX #15](https://www.unicode.org/reports/tr15/)): `"ju\u{308}rgen"` and
/// `"j\u{fc}rgen"`, which look the same on every screen, are one user, and so
/// are U+212B ANGSTROM SIGN and U+00C5. Only canonical equivalence: the
/// compatibility forms (`"ｕ１"` and `"u1"`) and case stay distinct. Borrowed
/// when the text is already in NFC, as ASCII always is.
pub(crate) fn normalize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.is_ascii() {
        return text.into();
    }
    ComposingNormalizerBorrowed::new_nfc().normalize(text)
}

/// The rules of a user id's (normalized) text, so that no id can be told
/// apart from another, or from nothing, only by what does not show:
/// 1-256 characters, no control characters, not blank (only White_Space
/// and Default_Ignorable_Code_Point characters, such as U+200B ZERO WIDTH
/// SPACE), no whitespace at either end, and no invisible character but the
/// joiners that emoji and some scripts need (not at either end) and the
/// variation selectors and tags that choose how an emoji or an ideograph is
/// drawn (after one).
/// Properties from the Unicode Character Database, through ICU4X.
fn check_user_text(text: &str) -> Result<(), String> {
    let length = text.chars().count();
    if length == 0 {
        return Err("userId must not be empty".into());
    }
    if length > MAX_USER_ID_LEN {
        return Err(format!(
            "userId must be 1-{MAX_USER_ID_LEN} characters long, not {length}"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("userId must not contain control characters".into());
    }
    const BLANK: &str =
        "userId must not be blank: it holds only whitespace or invisible characters";
    const PADDED: &str = "userId must not begin or end with whitespace";
    if text.is_ascii() {
        // Without control characters, ASCII's only whitespace is the space,
        // and none of it is invisible: the common case needs no look-ups.
        if text.bytes().all(|b| b == b' ') {
            return Err(BLANK.into());
        }
        if text.starts_with(' ') || text.ends_with(' ') {
            return Err(PADDED.into());
        }
        return Ok(());
    }
    let whitespace = CodePointSetData::new::<WhiteSpace>();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    if text
        .chars()
        .all(|c| whitespace.contains(c) || ignorable.contains(c))
    {
        return Err(BLANK.into());
    }
    let (first, last) = (text.chars().next(), text.chars().next_back());
    if first.is_some_and(|c| whitespace.contains(c)) || last.is_some_and(|c| whitespace.contains(c))
    {
        return Err(PADDED.into());
    }
    // Variation selectors and tags pick how the character before them is
    // drawn (an emoji, a glyph of an ideograph, a flag's region); joiners
    // join emoji and the letters of some scripts. Every other invisible
    // character (zero-width spaces, bidi controls, fillers) only hides, so
    // an id holding one could pass for another.
    let selects = |c: char| matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' | '\u{E0020}'..='\u{E007F}');
    let joins = |c: char| {
        matches!(
            c,
            '\u{200C}' | '\u{200D}' | '\u{034F}' | '\u{180B}'..='\u{180F}'
        )
    };
    let invisible = |c: char| ignorable.contains(c);
    if let Some(c) = text
        .chars()
        .find(|&c| invisible(c) && !selects(c) && !joins(c))
    {
        return Err(invisible_error("contain", c));
    }
    if let Some(c) = first.filter(|&c| invisible(c)) {
        return Err(invisible_error("begin with", c));
    }
    // ...and they may end an id only after what they choose the drawing of.
    let base = text.chars().rev().find(|&c| !selects(c));
    let drawn = |base: char| {
        CodePointSetData::new::<Emoji>().contains(base)
            || CodePointSetData::new::<Ideographic>().contains(base)
    };
    match last {
        Some(c) if selects(c) && !base.is_some_and(drawn) => Err(invisible_error("end with", c)),
        Some(c) if !selects(c) && invisible(c) => Err(invisible_error("end with", c)),
        _ => Ok(()),
    }
}

fn invisible_error(rule: &str, c: char) -> String {
    format!(
        "userId must not {rule} an invisible character, not U+{:04X}",
        c as u32
    )
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
        assert_eq!(numeric.key().as_str(), "42");
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
