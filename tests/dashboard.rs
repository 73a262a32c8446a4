//! docs/grafana-dashboard.json queries only metrics a replica exports, and shows every one of
//! them: a renamed metric breaks this test, not a graph nobody looks at until an outage.

use std::collections::BTreeSet;

use chainrep::core::{Describe, Role, Variant};
use chainrep::runtime::metrics::Metrics;

fn dashboard() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every PromQL expression in the dashboard: panel targets and template variable queries.
fn expressions(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The `chainrep_*` identifiers in a PromQL expression. Label names and functions never start
/// with the prefix, so every identifier that does is a metric (or histogram series) name.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("chainrep_") {
        let preceded_by_ident = rest[..at].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// Series names in a text exposition (`name{labels} value` or `name value` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn scrape_in_process() -> String {
    let metrics = Metrics::new(Variant::Head).expect("metrics registry");
    metrics.render(&Describe {
        session_id: Some(1),
        role: Role::Head,
        holds_state: true,
        last_applied: 0,
        tail_processed: 0,
        sent_len: 0,
        reorder_len: 0,
        pending_len: 0,
        oldest_pending: None,
        lease_valid: true,
        keys: 0,
        store_bytes: 0,
        retained: None,
        parked: false,
        transfer_owed: false,
    })
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has queries: {exprs:?}");
    let exported = exported(&scrape_in_process());
    let mut missing = Vec::new();
    for e in &exprs {
        for name in metric_names(e) {
            if !exported.contains(&name) {
                missing.push(format!("{name} (in {e})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no replica exports:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_exported_metric_is_on_the_dashboard() {
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    // A histogram is on the dashboard if any of its series is.
    let family = |name: &str| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name)
            .to_string()
    };
    let used_families: BTreeSet<String> = used.iter().map(|n| family(n)).collect();
    let unused: Vec<String> = exported(&scrape_in_process())
        .into_iter()
        .map(|n| family(&n))
        .filter(|f| !used_families.contains(f))
        .collect();
    assert!(unused.is_empty(), "exported but not on the dashboard: {unused:?}");
}

#[test]
fn names_are_found_in_promql() {
    let e = r#"histogram_quantile(0.99, sum by (le) (rate(chainrep_client_write_seconds_bucket{instance=~"$i"}[5m]))) / my_chainrep_x"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        ["chainrep_client_write_seconds_bucket"]
    );
}
