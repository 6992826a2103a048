//! Prometheus metrics (text exposition format 0.0.4). A small registry of
//! our own: counters and histograms updated on the request path, plus
//! gauges computed at scrape time from the store and the BPF maps.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;
/// A metric's name and its rendered label set.
type SeriesKey = (&'static str, String);

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<SeriesKey, (Labels, u64)>>,
    histograms: Mutex<BTreeMap<SeriesKey, (Labels, Histogram)>>,
}

fn label_key(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render_labels(labels: &[(&str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Help text of every metric netd exports, in output order.
const HELP: &[(&str, &str, &str)] = &[
    (
        "furrow_cni_requests_total",
        "counter",
        "CNI requests served, by command and outcome (ok or the CNI error code).",
    ),
    (
        "furrow_cni_request_duration_seconds",
        "histogram",
        "Time netd spent serving a CNI request, by command.",
    ),
    (
        "furrow_reconcile_runs_total",
        "counter",
        "Reconcile passes run, by what triggered them.",
    ),
    (
        "furrow_reconcile_repairs_total",
        "counter",
        "Objects reconcile created, fixed or removed, by kind.",
    ),
    (
        "furrow_dhcp_requests_total",
        "counter",
        "DHCP messages this node's responders received, by pool and type (malformed: refused by the parser).",
    ),
    (
        "furrow_dhcp_replies_total",
        "counter",
        "DHCP replies this node's responders sent, by pool and type.",
    ),
    (
        "furrow_dhcp_refusals_total",
        "counter",
        "DHCP requests not served as asked, by pool and reason (e.g. pool_exhausted).",
    ),
    (
        "furrow_vip_transitions_total",
        "counter",
        "VIPs this node took (to=held) and gave up (to=released).",
    ),
];

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: Labels) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: Labels, n: u64) {
        let mut c = self.counters.lock().expect("metrics poisoned");
        let e = c.entry((name, label_key(&labels))).or_insert((labels, 0));
        e.1 += n;
    }

    pub fn observe(&self, name: &'static str, labels: Labels, seconds: f64) {
        let mut h = self.histograms.lock().expect("metrics poisoned");
        let e = h.entry((name, label_key(&labels))).or_insert_with(|| {
            (
                labels,
                Histogram {
                    counts: vec![0; BUCKETS.len()],
                    ..Default::default()
                },
            )
        });
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                e.1.counts[i] += 1;
            }
        }
        e.1.sum += seconds;
        e.1.count += 1;
    }

    pub fn counter_value(&self, name: &'static str, labels: &Labels) -> u64 {
        let c = self.counters.lock().expect("metrics poisoned");
        c.get(&(name, label_key(labels))).map(|e| e.1).unwrap_or(0)
    }

    /// Renders the registry's own metrics.
    pub fn render(&self, out: &mut String) {
        let counters = self.counters.lock().expect("metrics poisoned");
        let hists = self.histograms.lock().expect("metrics poisoned");
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, _), (labels, v)) in counters.iter() {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", render_labels(labels));
                }
            }
            for ((n, _), (labels, h)) in hists.iter() {
                if n != name {
                    continue;
                }
                for (i, b) in BUCKETS.iter().enumerate() {
                    let mut l = labels.clone();
                    l.push(("le", b.to_string()));
                    let _ = writeln!(out, "{name}_bucket{} {}", render_labels(&l), h.counts[i]);
                }
                let mut l = labels.clone();
                l.push(("le", "+Inf".into()));
                let _ = writeln!(out, "{name}_bucket{} {}", render_labels(&l), h.count);
                let _ = writeln!(out, "{name}_sum{} {}", render_labels(labels), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", render_labels(labels), h.count);
            }
        }
    }
}

/// Appends one gauge or counter family computed at scrape time.
pub fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(Vec<(&str, String)>, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{} {v}", render_labels(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.inc(
            "furrow_cni_requests_total",
            vec![("command", "add".into()), ("outcome", "ok".into())],
        );
        m.inc(
            "furrow_cni_requests_total",
            vec![("command", "add".into()), ("outcome", "ok".into())],
        );
        m.observe(
            "furrow_cni_request_duration_seconds",
            vec![("command", "add".into())],
            0.003,
        );
        let mut s = String::new();
        m.render(&mut s);
        assert!(
            s.contains("furrow_cni_requests_total{command=\"add\",outcome=\"ok\"} 2"),
            "{s}"
        );
        assert!(s.contains(
            "furrow_cni_request_duration_seconds_bucket{command=\"add\",le=\"0.0025\"} 0"
        ));
        assert!(s.contains(
            "furrow_cni_request_duration_seconds_bucket{command=\"add\",le=\"0.005\"} 1"
        ));
        assert!(s.contains("furrow_cni_request_duration_seconds_count{command=\"add\"} 1"));
        assert!(s.contains("# TYPE furrow_cni_request_duration_seconds histogram"));
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(
            render_labels(&[("a", "x\"y\\z\n".into())]),
            "{a=\"x\\\"y\\\\z\\n\"}"
        );
    }
}
