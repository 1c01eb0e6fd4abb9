//! The Grafana dashboard in `docs/grafana/` charts every metric the runtime
//! documents, and no metric it does not record.

use std::collections::BTreeSet;

use dualwrite_runtime::observe::names;

const DASHBOARD: &str = include_str!("../../docs/grafana/dualwrite.json");

const DOCUMENTED: [&str; 13] = [
    names::CALLS,
    names::CALL_DURATION,
    names::COMPARISONS,
    names::MISMATCHES,
    names::COMPARISONS_DROPPED,
    names::QUEUE_DEPTH,
    names::QUEUE_OLDEST_PENDING,
    names::DEAD_LETTERS,
    names::RECONCILED,
    names::DRIFT,
    names::STAGE,
    names::STAGE_CHANGES,
    names::STAGE_SOURCE_STALE,
];

fn expressions(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (name, inner) in map {
                match (name.as_str(), inner) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => expressions(inner, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| expressions(item, found)),
        _ => {}
    }
}

/// The `dualwrite_*` names an expression uses, without the suffixes
/// Prometheus adds to a histogram's series.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(start) = rest.find("dualwrite_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = name
            .strip_suffix("_bucket")
            .or_else(|| name.strip_suffix("_count"))
            .or_else(|| name.strip_suffix("_sum"))
            .unwrap_or(name);
        names.insert(name.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_charts_every_documented_metric_and_only_those() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let mut found = Vec::new();
    expressions(&dashboard, &mut found);
    let used: BTreeSet<String> = found.iter().flat_map(|expr| metric_names(expr)).collect();
    let documented: BTreeSet<String> = DOCUMENTED.iter().map(|name| (*name).to_owned()).collect();
    let unknown: Vec<_> = used.difference(&documented).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the runtime does not record: {unknown:?}"
    );
    let missing: Vec<_> = documented.difference(&used).collect();
    assert!(
        missing.is_empty(),
        "documented metrics without a panel: {missing:?}"
    );
}

#[test]
fn every_panel_has_a_title_a_description_and_a_distinct_id() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "duplicate id in {panel}"
        );
        assert!(
            !panel["title"].as_str().unwrap_or("").is_empty(),
            "untitled: {panel}"
        );
        if panel["type"] != "row" {
            assert!(
                !panel["description"].as_str().unwrap_or("").is_empty(),
                "{} has no description",
                panel["title"]
            );
            assert!(!panel["targets"].as_array().expect("targets").is_empty());
        }
    }
}
