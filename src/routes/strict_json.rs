//! JSON request bodies with exactly one reading.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// The body as JSON, with exactly one reading: an object that names a
/// member twice, at any depth, is refused with the details ``duplicate field `userId` ``.
/// Parsers differ on which duplicate wins ([RFC 8259, section
/// 4](https://www.rfc-editor.org/rfc/rfc8259#section-4) leaves it open), so a
/// proxy, a log or a firewall could otherwise read another request than the
/// one executed. Member names are compared as decoded: `"user\u0049d"` is `userId`.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    let problem = RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let parsed = UniqueMembers(&problem)
        .deserialize(&mut reader)
        .and_then(|value| reader.end().map(|()| value));
    parsed.map_err(|error| {
        ApiError::InvalidInput(match problem.take() {
            Some(Problem::Duplicate(name)) => format!("duplicate field `{name}`"),
            // Beyond what a double holds: serde_json stops before any visitor
            // sees the number, so the rule is read from the text.
            Some(Problem::In(name)) if error.to_string().starts_with("number out of range") => {
                match number_at(bytes, &error) {
                    Some(number) if number.starts_with('-') => {
                        format!("{name} must not be negative, not {number}")
                    }
                    Some(number) => format!("{name} is too large, not {number}"),
                    None => format!("{name} is out of range: {error}"),
                }
            }
            _ => format!("the request body is not valid JSON: {error}"),
        })
    })
}

/// Why [`UniqueMembers`] stopped, beyond what serde_json's error says.
enum Problem {
    /// A member name seen twice in one object.
    Duplicate(String),
    /// The value of this member (the innermost) could not be read.
    In(String),
}

/// Builds a `serde_json::Value` as `serde_json::from_slice` would, except
/// that a member name seen twice in one object stops the parse. What
/// stopped it is written to the cell: serde_json's error would add a
/// position to the text, and does not name the member.
#[derive(Clone, Copy)]
struct UniqueMembers<'a>(&'a RefCell<Option<Problem>>);

impl<'de> DeserializeSeed<'de> for UniqueMembers<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueMembers<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // serde_json refuses what a finite f64 cannot hold, so this is a number.
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(item) = items.next_element_seed(self)? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = members.next_key::<String>()? {
            let value = match members.next_value_seed(self) {
                Ok(value) => value,
                Err(error) => {
                    let mut problem = self.0.borrow_mut();
                    problem.get_or_insert(Problem::In(name));
                    return Err(error);
                }
            };
            match object.entry(name) {
                Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                Entry::Occupied(entry) => {
                    *self.0.borrow_mut() = Some(Problem::Duplicate(entry.key().clone()));
                    return Err(de::Error::custom("duplicate member"));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// The number whose reading stopped the parse with `error`: serde_json
/// reports where it stopped (line and byte column), just past its last digit.
fn number_at(bytes: &[u8], error: &serde_json::Error) -> Option<String> {
    let line_start = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(error.line().checked_sub(1)?)
        .map(<[u8]>::len)
        .sum::<usize>();
    let stop = (line_start + error.column()).min(bytes.len());
    let in_number = |b: &u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let start = bytes[..stop]
        .iter()
        .rposition(|b| !in_number(b))
        .map_or(0, |i| i + 1);
    let end = stop + bytes[stop..].iter().take_while(|b| in_number(b)).count();
    let number = std::str::from_utf8(&bytes[start..end]).ok()?;
    (!number.is_empty()).then(|| number.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(body: &str) -> String {
        match parse_json(body.as_bytes()) {
            Err(ApiError::InvalidInput(details)) => details,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn a_member_named_twice_is_named_whatever_its_depth() {
        assert_eq!(details(r#"{"a": 1, "a": 1}"#), "duplicate field `a`");
        assert_eq!(
            details(r#"{"a": {"b": [{"c": 1, "c": 2}]}}"#),
            "duplicate field `c`"
        );
        assert_eq!(details(r#"{"a": 1, "\u0061": 2}"#), "duplicate field `a`");
        assert!(parse_json(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 1}]}"#).is_ok());
    }

    #[test]
    fn a_number_beyond_any_double_is_named_with_its_sign() {
        assert_eq!(
            details("{\"x\": 1,\n \"eventId\": 1e400}"),
            "eventId is too large, not 1e400"
        );
        assert_eq!(
            details(r#"{"userId": -2.5E+999, "y": 1}"#),
            "userId must not be negative, not -2.5E+999"
        );
        assert!(details("{\"a\": 1e400").contains("a is too large"));
    }

    #[test]
    fn other_faults_are_reported_as_json_errors() {
        assert!(details(r#"{"a": 1} x"#).starts_with("the request body is not valid JSON"));
        assert!(details(r#"{"a": tru}"#).starts_with("the request body is not valid JSON"));
    }
}
