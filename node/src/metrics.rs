//! `GET /metrics`: the node's state in the Prometheus text format.
//!
//! Each family is written with its `# HELP` and `# TYPE` lines; label values are escaped as the
//! format asks.

use std::fmt::Write as _;

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
