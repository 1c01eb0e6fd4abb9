//! What a record is, to the migration tools: a key and named values.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::op::Key;

/// The key of a record: its primary key's value.
///
/// Keys are ordered integers first (numerically), then text (byte by byte,
/// which is SQLite's `BINARY` collation and PostgreSQL's `COLLATE "C"`).
/// Every [`RecordStore`](super::RecordStore) lists its records in this
/// order, so that two stores can be walked side by side.
///
/// A record's queue key (the key its writes are ordered by) is the key's
/// text, as [`Key::from_display`] makes it: a trait method declared
/// `key = id` with an integer `id` files its writes under the same key as
/// the record with that id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RecordKey {
    /// An integer key.
    Int(i64),
    /// A text key.
    Text(String),
}

impl RecordKey {
    /// The key the reconciliation queue files this record's writes under.
    pub fn queue_key(&self) -> Key {
        Key::from_display(self)
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordKey::Int(value) => fmt::Display::fmt(value, f),
            RecordKey::Text(value) => f.write_str(value),
        }
    }
}

impl From<i64> for RecordKey {
    fn from(value: i64) -> Self {
        RecordKey::Int(value)
    }
}

impl From<&str> for RecordKey {
    fn from(value: &str) -> Self {
        RecordKey::Text(value.to_owned())
    }
}

impl From<String> for RecordKey {
    fn from(value: String) -> Self {
        RecordKey::Text(value)
    }
}

/// One column's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// SQL `NULL`, or an absent optional field.
    Null,
    /// An integer (also booleans, as 0 and 1).
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text (also decimals, timestamps and enums, in whatever spelling the
    /// store gives them; a [normaliser](crate::migrate::Normalize) evens
    /// out spellings that differ between stores).
    Text(String),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(text) => Some(text),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Int(_) | Value::Float(_) => 1,
            Value::Text(_) => 2,
            Value::Bytes(_) => 3,
        }
    }
}

/// Values order like SQLite orders them: `NULL`, numbers, text, bytes.
/// Versions are compared with it ([`PutCondition::IfAbsentOrNewer`](super::PutCondition)).
impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.partial_cmp(b),
            (Value::Int(a), Value::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(*b as f64)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.partial_cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.partial_cmp(b),
            (Value::Null, Value::Null) => Some(Ordering::Equal),
            _ => self.rank().partial_cmp(&other.rank()),
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Text(value)
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Self {
        Value::Bytes(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Self {
        value.map_or(Value::Null, Into::into)
    }
}

/// A record: its key and its other columns by name.
///
/// Two stores' records are compared field by field, so both sides must
/// name the same columns the same way (a per-side query renames them; a
/// [normaliser](crate::migrate::Normalize) evens out representations).
///
/// ```
/// use dualwrite_runtime::records::{Record, Value};
/// let record = Record::new(7).with("email", "ada@example.com").with("cents", 1_500);
/// assert_eq!(record.get("cents"), Some(&Value::Int(1_500)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The primary key.
    pub key: RecordKey,
    /// The other columns.
    pub fields: BTreeMap<String, Value>,
}

impl Record {
    /// A record with no fields yet.
    pub fn new(key: impl Into<RecordKey>) -> Self {
        Record {
            key: key.into(),
            fields: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a field.
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name)
    }

    /// The names of the fields whose values differ between `self` and
    /// `other` (present in one only, or unequal), in name order.
    pub fn differing_fields(&self, other: &Record) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (name, value) in &self.fields {
            if other.fields.get(name) != Some(value) {
                names.push(name.clone());
            }
        }
        for name in other.fields.keys() {
            if !self.fields.contains_key(name) {
                names.push(name.clone());
            }
        }
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_keys_order_numerically_before_text_keys() {
        let mut keys = vec![
            RecordKey::from("b"),
            RecordKey::from(10),
            RecordKey::from("B"),
            RecordKey::from(9),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                RecordKey::from(9),
                RecordKey::from(10),
                RecordKey::from("B"),
                RecordKey::from("b")
            ]
        );
    }

    #[test]
    fn a_record_key_files_under_the_queue_key_a_trait_method_would_use() {
        assert_eq!(RecordKey::from(42).queue_key(), Key::from_display(&42u64));
        assert_eq!(RecordKey::from("ada").queue_key(), Key::from("ada"));
    }

    #[test]
    fn differing_fields_names_changed_missing_and_extra_columns() {
        let a = Record::new(1).with("a", 1).with("b", "x").with("c", 3);
        let b = Record::new(1).with("a", 1).with("b", "y").with("d", 4);
        assert_eq!(a.differing_fields(&b), vec!["b", "c", "d"]);
    }
}
