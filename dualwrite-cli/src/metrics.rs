//! The services' compared reads, scraped from their Prometheus endpoints:
//! each instance counts its comparisons in its own memory and exports
//! `dualwrite_comparisons_total` and `dualwrite_mismatches_total`, so the
//! mismatch rate of a migration is the sum over its instances.

use std::time::Duration;

use dualwrite_runtime::observe::names;

use crate::error::CliError;

/// How long one endpoint may take to answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Compared reads and mismatches, summed over every instance scraped (and
/// every namespace, method and outcome).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Comparisons {
    pub(crate) compared: f64,
    pub(crate) mismatched: f64,
}

impl Comparisons {
    /// What was counted since `earlier`: the rate over a window. A counter
    /// that went down means an instance restarted; its counts start again
    /// from zero, so the later figures alone are the window's.
    pub(crate) fn since(self, earlier: Comparisons) -> Comparisons {
        if self.compared < earlier.compared || self.mismatched < earlier.mismatched {
            return self;
        }
        Comparisons {
            compared: self.compared - earlier.compared,
            mismatched: self.mismatched - earlier.mismatched,
        }
    }

    /// Mismatches per compared read; `None` before any comparison.
    pub(crate) fn rate(self) -> Option<f64> {
        (self.compared > 0.0).then(|| self.mismatched / self.compared)
    }
}

/// Scrapes every endpoint and sums their counters.
pub(crate) async fn scrape(endpoints: &[String]) -> Result<Comparisons, CliError> {
    let client = reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .build()
        .map_err(|error| CliError::store(format!("cannot make an HTTP client: {error}")))?;
    let mut total = Comparisons::default();
    for endpoint in endpoints {
        let failed = |what: String| CliError::store(format!("metrics {endpoint}: {what}"));
        let response = client
            .get(endpoint)
            .send()
            .await
            .map_err(|error| failed(format!("cannot scrape: {}", chain(&error))))?;
        if !response.status().is_success() {
            return Err(failed(format!("answered {}", response.status())));
        }
        let body = response
            .text()
            .await
            .map_err(|error| failed(format!("cannot read the answer: {}", chain(&error))))?;
        let counted = parse(&body).map_err(failed)?;
        total.compared += counted.compared;
        total.mismatched += counted.mismatched;
    }
    Ok(total)
}

/// An error with its causes, on one line ("error sending request: ..:
/// Connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The comparison counters of one Prometheus text exposition.
fn parse(body: &str) -> Result<Comparisons, String> {
    let mut counted = Comparisons::default();
    for (number, line) in body.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let slot = match &line[..name_end] {
            name if name == names::COMPARISONS => &mut counted.compared,
            name if name == names::MISMATCHES => &mut counted.mismatched,
            _ => continue,
        };
        // The value follows the labels (whose quoted values may hold
        // spaces and braces), then an optional timestamp.
        let rest = if line[name_end..].starts_with('{') {
            labels_end(&line[name_end..]).map(|end| &line[name_end + end..])
        } else {
            Some(&line[name_end..])
        };
        let value = rest
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse::<f64>().ok())
            .filter(|value| value.is_finite() && *value >= 0.0)
            .ok_or_else(|| {
                format!(
                    "line {} is not a sample of {} with a count: `{line}`",
                    number + 1,
                    &line[..name_end]
                )
            })?;
        *slot += value;
    }
    Ok(counted)
}

/// Where the label set that `text` starts with (`{..}`) ends.
fn labels_end(text: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (index, character) in text.char_indices() {
        match character {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(index + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_both_counters_over_labels_and_skips_the_rest() {
        let body = r#"
# HELP dualwrite_comparisons_total compared reads
# TYPE dualwrite_comparisons_total counter
dualwrite_comparisons_total{namespace="Orders",method="get",outcome="match"} 970
dualwrite_comparisons_total{namespace="Orders",method="get",outcome="mismatch"} 30 1700000000000
dualwrite_mismatches_total{namespace="Orders",method="get",outcome="mismatch"} 30
dualwrite_comparisons_total_other 5
dualwrite_calls_total{side="old"} 12345
dualwrite_comparisons_total{namespace="odd } \" name",method="m",outcome="match"} 0
"#;
        let counted = parse(body).unwrap();
        assert_eq!(
            counted,
            Comparisons {
                compared: 1000.0,
                mismatched: 30.0
            }
        );
        assert_eq!(counted.rate(), Some(0.03));
        assert_eq!(parse("").unwrap().rate(), None);
    }

    #[test]
    fn a_sample_without_a_count_is_named() {
        let error = parse("dualwrite_mismatches_total{outcome=\"x\"} lots").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        assert!(error.contains("dualwrite_mismatches_total"), "{error}");
    }

    #[test]
    fn a_window_is_the_difference_unless_an_instance_restarted() {
        let earlier = Comparisons {
            compared: 100.0,
            mismatched: 2.0,
        };
        let later = Comparisons {
            compared: 300.0,
            mismatched: 3.0,
        };
        assert_eq!(later.since(earlier).rate(), Some(0.005));
        let restarted = Comparisons {
            compared: 50.0,
            mismatched: 1.0,
        };
        assert_eq!(restarted.since(earlier), restarted);
    }
}
