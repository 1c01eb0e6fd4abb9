//! Evening out representation differences before records are compared.

use crate::records::{Record, Value};
use crate::vocabulary::Side;

/// Rewrites a record before verify compares it, so that two spellings of
/// one value agree. Any `Fn(Side, &mut Record) + Send + Sync` is one; the
/// [`Normalize`] rules cover the usual differences.
pub trait Normalizer: Send + Sync {
    /// Rewrites `record`, read from `side`, in place.
    fn normalize(&self, side: Side, record: &mut Record);
}

impl<F: Fn(Side, &mut Record) + Send + Sync> Normalizer for F {
    fn normalize(&self, side: Side, record: &mut Record) {
        self(side, record);
    }
}

/// Common normalising rules, applied in the order added, to both sides.
///
/// ```
/// use dualwrite_runtime::migrate::{Normalize, Normalizer};
/// use dualwrite_runtime::records::Record;
/// use dualwrite_runtime::Side;
///
/// let rules = Normalize::new()
///     .timestamp_precision("created_at", 3) // the new store keeps milliseconds
///     .decimal_scale("total", 2)            // "12.5" and 12.50 agree
///     .trim_end("name")                     // CHAR(n) padding
///     .lowercase("status")                  // enum spelled `PAID` and `paid`
///     .ignore("migrated_at");               // a column only one side has
/// let mut old = Record::new(1)
///     .with("created_at", "2024-05-01 10:00:00.123456+00:00")
///     .with("total", "12.5").with("name", "Ada   ").with("status", "PAID");
/// let mut new = Record::new(1)
///     .with("created_at", "2024-05-01T10:00:00.123+00:00")
///     .with("total", 12.5).with("name", "Ada").with("status", "paid")
///     .with("migrated_at", "2024-06-01");
/// rules.normalize(Side::Old, &mut old);
/// rules.normalize(Side::New, &mut new);
/// assert_eq!(old, new);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Normalize {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    TrimEnd(String),
    TrimEndAll,
    Lowercase(String),
    TimestampPrecision(String, usize),
    DecimalScale(String, usize),
    Ignore(String),
}

impl Normalize {
    /// No rules yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Removes trailing spaces from `column`'s text (`CHAR(n)` padding).
    #[must_use]
    pub fn trim_end(self, column: &str) -> Self {
        self.rule(Rule::TrimEnd(column.to_owned()))
    }

    /// Removes trailing spaces from every text column.
    #[must_use]
    pub fn trim_end_all(self) -> Self {
        self.rule(Rule::TrimEndAll)
    }

    /// Lowercases `column`'s text (an enum spelled in another case).
    #[must_use]
    pub fn lowercase(self, column: &str) -> Self {
        self.rule(Rule::Lowercase(column.to_owned()))
    }

    /// Keeps `digits` digits of the fraction of a second in `column`'s
    /// timestamp text (cutting the rest, padding with zeros), and writes the
    /// date and time separated by a space: `2024-05-01T10:00:00.123456Z` and
    /// `2024-05-01 10:00:00.123Z` agree at 3.
    #[must_use]
    pub fn timestamp_precision(self, column: &str, digits: usize) -> Self {
        self.rule(Rule::TimestampPrecision(column.to_owned(), digits))
    }

    /// Writes `column`'s number (text, integer or float) as text with exactly
    /// `scale` decimals (cutting the rest, padding with zeros): `12.5`,
    /// `"12.50"` and `12.500` agree at 2.
    #[must_use]
    pub fn decimal_scale(self, column: &str, scale: usize) -> Self {
        self.rule(Rule::DecimalScale(column.to_owned(), scale))
    }

    /// Leaves `column` out of the comparison (a column only one side has).
    #[must_use]
    pub fn ignore(self, column: &str) -> Self {
        self.rule(Rule::Ignore(column.to_owned()))
    }
}

impl Normalizer for Normalize {
    fn normalize(&self, _side: Side, record: &mut Record) {
        for rule in &self.rules {
            match rule {
                Rule::TrimEnd(column) => {
                    rewrite_text(record, column, |text| text.trim_end().to_owned())
                }
                Rule::TrimEndAll => {
                    for value in record.fields.values_mut() {
                        if let Value::Text(text) = value {
                            text.truncate(text.trim_end().len());
                        }
                    }
                }
                Rule::Lowercase(column) => rewrite_text(record, column, str::to_lowercase),
                Rule::TimestampPrecision(column, digits) => {
                    rewrite_text(record, column, |text| timestamp(text, *digits));
                }
                Rule::DecimalScale(column, scale) => {
                    if let Some(value) = record.fields.get_mut(column) {
                        let text = match value {
                            Value::Text(text) => Some(text.trim().to_owned()),
                            Value::Int(number) => Some(number.to_string()),
                            Value::Float(number) => Some(format!("{number}")),
                            _ => None,
                        };
                        if let Some(text) = text {
                            *value = Value::Text(decimal(&text, *scale));
                        }
                    }
                }
                Rule::Ignore(column) => {
                    record.fields.remove(column);
                }
            }
        }
    }
}

fn rewrite_text(record: &mut Record, column: &str, rewrite: impl Fn(&str) -> String) {
    if let Some(Value::Text(text)) = record.fields.get_mut(column) {
        *text = rewrite(text);
    }
}

fn timestamp(text: &str, digits: usize) -> String {
    let text = text.trim();
    // The separator between date and time, if the text has both.
    let text = match text.get(10..11) {
        Some("T") | Some("t") => format!("{} {}", &text[..10], &text[11..]),
        _ => text.to_owned(),
    };
    let Some(time_at) = text.find(':') else {
        return text;
    };
    let (head, tail) = text.split_at(time_at);
    let Some(dot) = tail.find('.') else {
        // No fraction: add one of zeros, so that `10:00:00` and
        // `10:00:00.000` agree.
        let end = tail
            .char_indices()
            .find(|(index, c)| *index > 0 && !(c.is_ascii_digit() || *c == ':'))
            .map_or(tail.len(), |(index, _)| index);
        if digits == 0 {
            return text;
        }
        return format!(
            "{head}{}.{}{}",
            &tail[..end],
            "0".repeat(digits),
            &tail[end..]
        );
    };
    let fraction_end = tail[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(tail.len(), |offset| dot + 1 + offset);
    let fraction = &tail[dot + 1..fraction_end];
    let mut kept: String = fraction.chars().take(digits).collect();
    while kept.len() < digits {
        kept.push('0');
    }
    let separator = if digits == 0 { "" } else { "." };
    format!(
        "{head}{}{separator}{kept}{}",
        &tail[..dot],
        &tail[fraction_end..]
    )
}

fn decimal(text: &str, scale: usize) -> String {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let mut kept: String = fraction.chars().take(scale).collect();
    while kept.len() < scale {
        kept.push('0');
    }
    let whole = if whole.is_empty() || whole == "-" || whole == "+" {
        format!("{}0", whole.trim_start_matches('+'))
    } else {
        whole.trim_start_matches('+').to_owned()
    };
    if scale == 0 {
        whole
    } else {
        format!("{whole}.{kept}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_agree_at_the_precision_asked_for() {
        assert_eq!(
            timestamp("2024-05-01T10:00:00.123456+00:00", 3),
            "2024-05-01 10:00:00.123+00:00"
        );
        assert_eq!(
            timestamp("2024-05-01 10:00:00Z", 3),
            "2024-05-01 10:00:00.000Z"
        );
        assert_eq!(timestamp("2024-05-01 10:00:00.9", 0), "2024-05-01 10:00:00");
        assert_eq!(timestamp("10:00:00.5", 2), "10:00:00.50");
    }

    #[test]
    fn decimals_agree_at_the_scale_asked_for() {
        assert_eq!(decimal("12.5", 2), "12.50");
        assert_eq!(decimal("12", 2), "12.00");
        assert_eq!(decimal("-.5", 1), "-0.5");
        assert_eq!(decimal("3.14159", 0), "3");
    }
}
