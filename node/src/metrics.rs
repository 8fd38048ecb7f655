//! `GET /metrics`: the node's state in the Prometheus text format.
//!
//! Each family is written with its `# HELP` and `# TYPE` lines; label values are escaped as the
//! format asks.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Upper bounds (seconds) of the buckets of every duration histogram: 1 ms to 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram of durations with [`DURATION_BUCKETS`], updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when written).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// A Prometheus text exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
    families: std::collections::BTreeSet<&'static str>,
}

/// `gauge` or `counter`.
#[derive(Clone, Copy)]
pub enum Type {
    Gauge,
    Counter,
}

impl Exposition {
    /// One sample of `name`, introducing the family on first use.
    pub fn sample(&mut self, name: &'static str, kind: Type, help: &str, labels: &[(&str, &str)], value: f64) {
        if self.families.insert(name) {
            let kind = match kind {
                Type::Gauge => "gauge",
                Type::Counter => "counter",
            };
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        self.text.push_str(name);
        if !labels.is_empty() {
            let parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.text, "{{{}}}", parts.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    /// A histogram family `name` (`_bucket`, `_sum` and `_count` series).
    pub fn histogram(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], h: &Histogram) {
        if self.families.insert(name) {
            let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} histogram");
        }
        let base: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
        let with = |extra: Option<String>| {
            let mut parts = base.clone();
            parts.extend(extra);
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(&h.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                self.text,
                "{name}_bucket{} {cumulative}",
                with(Some(format!("le=\"{bound}\"")))
            );
        }
        let count = h.count();
        let _ = writeln!(self.text, "{name}_bucket{} {count}", with(Some("le=\"+Inf\"".into())));
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.text, "{name}_sum{} {sum}", with(None));
        let _ = writeln!(self.text, "{name}_count{} {count}", with(None));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut e = Exposition::default();
        e.histogram("tandem_h_seconds", "H.", &[("k", "v")], &h);
        let text = e.finish();
        assert!(
            text.starts_with("# HELP tandem_h_seconds H.\n# TYPE tandem_h_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_h_seconds_bucket{k=\"v\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_h_seconds_bucket{k=\"v\",le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_h_seconds_bucket{k=\"v\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_h_seconds_bucket{k=\"v\",le=\"30\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tandem_h_seconds_bucket{k=\"v\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("tandem_h_seconds_sum{k=\"v\"} 60.0035\n"), "{text}");
        assert!(text.contains("tandem_h_seconds_count{k=\"v\"} 3\n"), "{text}");
    }

    #[test]
    fn families_are_introduced_once_and_labels_escaped() {
        let mut e = Exposition::default();
        e.sample("tandem_x", Type::Gauge, "An x.", &[("source", "a\"b")], 1.0);
        e.sample("tandem_x", Type::Gauge, "An x.", &[("source", "c")], 2.5);
        e.sample("tandem_y_total", Type::Counter, "Ys.", &[], 3.0);
        assert_eq!(
            e.finish(),
            "# HELP tandem_x An x.\n# TYPE tandem_x gauge\ntandem_x{source=\"a\\\"b\"} 1\ntandem_x{source=\"c\"} 2.5\n\
             # HELP tandem_y_total Ys.\n# TYPE tandem_y_total counter\ntandem_y_total 3\n"
        );
    }
}
