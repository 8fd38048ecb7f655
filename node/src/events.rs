//! The node's event log: role changes, monitor transitions, policy changes, resource actions
//! and operator actions, each with time, node and epoch. Kept in memory (the newest
//! [`EVENT_LOG_CAPACITY`]) and broadcast to live streams; operator actions also go to the
//! replicated audit trail.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

use tandem_client::api::EventInfo;
use tandem_client::utc_time;
use tokio::sync::broadcast;

use crate::unix_ms;

/// Events a node keeps; older ones are dropped first.
pub const EVENT_LOG_CAPACITY: usize = 10_000;
/// Events a live stream may fall behind before it is told it missed some.
pub const EVENT_STREAM_BACKLOG: usize = 1024;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// This node's role changed (active, standby, switching, detached).
    Role,
    /// A health monitor changed state.
    Monitor,
    /// The replicated switch policies changed.
    Policy,
    /// A resource action ran (acquire, release, check), with its output.
    Resource,
    /// An operator asked for something through the API.
    Operator,
    /// The failover controller did something (took over, let go, switched).
    Failover,
    /// Something needs an operator: a failure that policy keeps from being acted on.
    Warning,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Role,
        Kind::Monitor,
        Kind::Policy,
        Kind::Resource,
        Kind::Operator,
        Kind::Failover,
        Kind::Warning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "role",
            Kind::Monitor => "monitor",
            Kind::Policy => "policy",
            Kind::Resource => "resource",
            Kind::Operator => "operator",
            Kind::Failover => "failover",
            Kind::Warning => "warning",
        }
    }

    pub fn parse(s: &str) -> Result<Kind, String> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
            format!("unknown event kind {s:?}; one of: {}", names.join(", "))
        })
    }
}

/// One node's event log.
pub struct EventLog {
    node: String,
    epoch: AtomicU64,
    inner: Mutex<Inner>,
    live: broadcast::Sender<EventInfo>,
}

struct Inner {
    next_seq: u64,
    events: VecDeque<EventInfo>,
}

/// Which events to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub kinds: Vec<Kind>,
    pub node: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &EventInfo) -> bool {
        self.since_ms.is_none_or(|t| e.at_ms >= t)
            && self.until_ms.is_none_or(|t| e.at_ms <= t)
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k.as_str() == e.kind))
            && self.node.as_ref().is_none_or(|n| *n == e.node)
    }
}

impl EventLog {
    pub fn new(node: impl Into<String>) -> Self {
        let (live, _) = broadcast::channel(EVENT_STREAM_BACKLOG);
        Self {
            node: node.into(),
            epoch: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                next_seq: 1,
                events: VecDeque::new(),
            }),
            live,
        }
    }

    /// The activation epoch stamped on the events recorded from now on.
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    /// Record an event; it is also written to the node's log.
    pub fn record(&self, kind: Kind, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind = kind.as_str(), %detail, "event");
        let mut inner = self.inner.lock().expect("event log lock");
        let event = EventInfo {
            seq: inner.next_seq,
            at_ms: unix_ms(),
            node: self.node.clone(),
            epoch: self.epoch.load(Ordering::Relaxed),
            kind: kind.as_str().into(),
            detail,
        };
        inner.next_seq += 1;
        if inner.events.len() == EVENT_LOG_CAPACITY {
            inner.events.pop_front();
        }
        inner.events.push_back(event.clone());
        // Sent under the lock, so streams see events in sequence order.
        let _ = self.live.send(event);
    }

    /// The newest `limit` events that pass `filter`, oldest first.
    pub fn query(&self, filter: &Filter, limit: usize) -> Vec<EventInfo> {
        let inner = self.inner.lock().expect("event log lock");
        let mut out: Vec<EventInfo> = inner
            .events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Events recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EventInfo> {
        self.live.subscribe()
    }
}

/// Header line of [`to_csv`].
pub const CSV_HEADER: &str = "seq,time_utc,at_ms,node,epoch,kind,detail";

/// Events as CSV (RFC 4180 quoting), one line per event after [`CSV_HEADER`].
pub fn to_csv(events: &[EventInfo]) -> String {
    let mut out = String::with_capacity(64 * (events.len() + 1));
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for e in events {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\r\n",
            e.seq,
            utc_time(e.at_ms),
            e.at_ms,
            csv_field(&e.node),
            e.epoch,
            csv_field(&e.kind),
            csv_field(&e.detail)
        ));
    }
    out
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_in_order_and_filters_them() {
        let log = EventLog::new("alpha");
        log.set_epoch(4);
        for i in 0..EVENT_LOG_CAPACITY + 5 {
            let kind = if i % 2 == 0 { Kind::Monitor } else { Kind::Role };
            log.record(kind, format!("event {i}"));
        }
        let all = log.query(&Filter::default(), usize::MAX);
        assert_eq!(all.len(), EVENT_LOG_CAPACITY, "bounded by EVENT_LOG_CAPACITY");
        assert_eq!(all[0].detail, "event 5", "the oldest ones went first");
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert!(all.iter().all(|e| e.node == "alpha" && e.epoch == 4));
        let roles = Filter {
            kinds: vec![Kind::Role],
            ..Filter::default()
        };
        let last = log.query(&roles, 2);
        assert_eq!(last.len(), 2);
        assert!(last.iter().all(|e| e.kind == "role"));
        assert_eq!(
            last[1].detail,
            format!("event {}", EVENT_LOG_CAPACITY + 3),
            "the newest role event"
        );
        let other_node = Filter {
            node: Some("beta".into()),
            ..Filter::default()
        };
        assert!(log.query(&other_node, 10).is_empty());
        let future = Filter {
            since_ms: Some(unix_ms() + 60_000),
            ..Filter::default()
        };
        assert!(log.query(&future, 10).is_empty());
    }

    #[test]
    fn live_streams_get_what_is_recorded_after_they_subscribe() {
        let log = EventLog::new("alpha");
        log.record(Kind::Role, "before");
        let mut rx = log.subscribe();
        log.record(Kind::Policy, "after");
        let got = rx.try_recv().unwrap();
        assert_eq!((got.kind.as_str(), got.detail.as_str()), ("policy", "after"));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn kinds_parse_by_name_and_unknown_ones_are_named() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Ok(k));
        }
        let e = Kind::parse("roles").unwrap_err();
        assert!(e.contains("\"roles\"") && e.contains("monitor"), "{e}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let e = EventInfo {
            seq: 7,
            at_ms: 1_795_132_800_123,
            node: "alpha".into(),
            epoch: 3,
            kind: "resource".into(),
            detail: "acquire of web: exit status 1, \"boom\"\nline 2".into(),
        };
        let csv = to_csv(&[e]);
        let mut lines = csv.split("\r\n");
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next(),
            Some("7,2026-11-20T00:00:00.123Z,1795132800123,alpha,3,resource,\"acquire of web: exit status 1, \"\"boom\"\"\nline 2\"")
        );
    }
}
