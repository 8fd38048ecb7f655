//! Health-monitor definitions: the `[[monitors]]` tables of the node's config, validated once
//! into [`MonitorSpec`]s.
//!
//! One flat table per monitor, with `type` choosing the probe. The keys are one struct rather
//! than a serde-tagged enum because serde cannot deny unknown keys through a flattened common
//! part, and its error for a bad tag does not list the valid types; here an unknown key is
//! rejected by serde, and a key of another type (say `url` on a tcp monitor) by
//! [`validate_monitors`], naming the key and the type it belongs to.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::err;
use crate::config::ConfigError;
use crate::config::UNIT_NAME_MAX_BYTES;

/// Most monitors one node may run.
pub const MONITORS_MAX: usize = 64;
/// Longest monitor name.
pub const MONITOR_NAME_MAX_BYTES: usize = 64;
/// Shortest interval between two runs of a probe.
pub const MONITOR_INTERVAL_MIN_MS: u64 = 100;
/// Longest interval between two runs of a probe.
pub const MONITOR_INTERVAL_MAX_MS: u64 = 60 * 60 * 1000;
/// Most consecutive failures a monitor may be set to tolerate.
pub const MONITOR_MAX_FAILURES_MAX: u32 = 100;
/// Most consecutive passes a monitor may need to count as healthy again.
pub const MONITOR_RISE_MAX: u32 = 100;
/// Most of an HTTP response body read (and searched for `body_contains`).
pub const MONITOR_HTTP_BODY_MAX_BYTES: usize = 64 * 1024;
/// Longest text value accepted: a command, command line, URL, address or path.
pub const MONITOR_VALUE_MAX_BYTES: usize = 4096;

/// The probe types, in the order error messages list them.
pub const MONITOR_TYPES: [&str; 8] = ["process", "systemd", "tcp", "http", "script", "disk", "memory", "cpu"];

/// Unit types `systemctl is-active` can report on.
const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".target",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
    ".slice",
    ".scope",
];

/// One `[[monitors]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub max_failures: Option<u32>,
    pub rise: Option<u32>,
    pub log_only: Option<bool>,
    pub scope: Option<String>,
    // process
    pub executable: Option<String>,
    pub command_line: Option<String>,
    // systemd
    pub unit: Option<String>,
    // tcp
    pub address: Option<String>,
    // http
    pub url: Option<String>,
    pub expect_status: Option<u16>,
    pub body_contains: Option<String>,
    pub ca_file: Option<PathBuf>,
    // script
    pub command: Option<String>,
    pub result_file: Option<PathBuf>,
    // disk (max_used_percent is memory's too)
    pub path: Option<PathBuf>,
    pub max_used_percent: Option<f64>,
    pub min_free_bytes: Option<u64>,
    // cpu
    pub max_percent: Option<f64>,
    pub max_load1: Option<f64>,
}

/// Which role a monitor runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Active,
    Standby,
    Both,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Active => "active",
            Scope::Standby => "standby",
            Scope::Both => "both",
        }
    }
}

/// A monitor that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSpec {
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures that make the monitor unhealthy.
    pub max_failures: u32,
    /// Consecutive passes that make an unhealthy monitor healthy again.
    pub rise: u32,
    /// Report only: never counts against the node.
    pub log_only: bool,
    pub scope: Scope,
}

/// What one monitor checks.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// A running process; exactly one of the two is set.
    Process {
        /// A path (matched against `/proc/PID/exe`) or a bare file name (its file name).
        executable: Option<String>,
        /// The full command line, argv joined with single spaces, matched exactly.
        command_line: Option<String>,
    },
    Systemd {
        unit: String,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        address: String,
    },
    /// A GET answered with `expect_status` (and a body containing `body_contains`).
    Http {
        url: String,
        expect_status: u16,
        body_contains: Option<String>,
        /// PEM file of the CA(s) trusted for https, instead of the system roots.
        ca_file: Option<PathBuf>,
    },
    /// A `sh -c` command that exits 0 and/or a result file that does not start with `false`.
    Script {
        command: Option<String>,
        result_file: Option<PathBuf>,
    },
    Disk {
        path: PathBuf,
        max_used_percent: Option<f64>,
        min_free_bytes: Option<u64>,
    },
    Memory {
        max_used_percent: f64,
    },
    Cpu {
        max_percent: Option<f64>,
        max_load1: Option<f64>,
    },
}

impl Probe {
    /// The `type` this probe is configured with.
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Process { .. } => "process",
            Probe::Systemd { .. } => "systemd",
            Probe::Tcp { .. } => "tcp",
            Probe::Http { .. } => "http",
            Probe::Script { .. } => "script",
            Probe::Disk { .. } => "disk",
            Probe::Memory { .. } => "memory",
            Probe::Cpu { .. } => "cpu",
        }
    }

    /// A short description of what is checked, for logs and status pages.
    pub fn target(&self) -> String {
        match self {
            Probe::Process {
                executable: Some(exe), ..
            } => format!("process executable {exe}"),
            Probe::Process { command_line, .. } => {
                format!(
                    "process command line {:?}",
                    shorten(command_line.as_deref().unwrap_or(""))
                )
            }
            Probe::Systemd { unit } => format!("systemd unit {unit}"),
            Probe::Tcp { address } => format!("tcp {address}"),
            Probe::Http { url, .. } => format!("http GET {url}"),
            Probe::Script { command, result_file } => match (command, result_file) {
                (Some(c), None) => format!("script {:?}", shorten(c)),
                (None, Some(f)) => format!("result file {}", f.display()),
                (Some(c), Some(f)) => format!("script {:?} then result file {}", shorten(c), f.display()),
                (None, None) => "script".to_string(),
            },
            Probe::Disk { path, .. } => format!("disk {}", path.display()),
            Probe::Memory { .. } => "memory".to_string(),
            Probe::Cpu { .. } => "cpu".to_string(),
        }
    }
}

/// At most 60 characters of `text`, for one-line descriptions.
fn shorten(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn default_timeout_ms(interval_ms: u64) -> u64 {
    interval_ms.min(1000)
}

/// Validate the `[[monitors]]` tables in order; the first broken one is reported.
pub fn validate_monitors(raw: Vec<RawMonitor>) -> Result<Vec<MonitorSpec>, ConfigError> {
    if raw.len() > MONITORS_MAX {
        return Err(err(
            "monitors",
            format!("{} monitors; MONITORS_MAX is {MONITORS_MAX}", raw.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("monitors[{i}].{field}");
        let spec = validate_monitor(m, &key)?;
        if !names.insert(spec.name.clone()) {
            return Err(err(key("name"), format!("duplicate monitor name {:?}", spec.name)));
        }
        out.push(spec);
    }
    Ok(out)
}

fn validate_monitor(m: RawMonitor, key: &dyn Fn(&str) -> String) -> Result<MonitorSpec, ConfigError> {
    let name = m
        .name
        .clone()
        .ok_or_else(|| err(key("name"), "missing: every monitor needs a name"))?;
    let name_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() || name.len() > MONITOR_NAME_MAX_BYTES || !name_ok {
        return Err(err(
            key("name"),
            format!(
                "{name:?} must be 1–{MONITOR_NAME_MAX_BYTES} (MONITOR_NAME_MAX_BYTES) letters, digits, '_', '.' or '-'"
            ),
        ));
    }
    let types = MONITOR_TYPES.join(", ");
    let kind = m
        .kind
        .clone()
        .ok_or_else(|| err(key("type"), format!("missing: set type to one of {types}")))?;
    let Some(kind) = MONITOR_TYPES.iter().copied().find(|t| *t == kind) else {
        return Err(err(
            key("type"),
            format!("unknown monitor type {kind:?}: use one of {types}"),
        ));
    };
    reject_foreign_keys(&m, kind, key)?;

    let interval_ms = m.interval_ms.unwrap_or(1000);
    if interval_ms < MONITOR_INTERVAL_MIN_MS {
        return Err(err(
            key("interval_ms"),
            format!("{interval_ms} is below MONITOR_INTERVAL_MIN_MS ({MONITOR_INTERVAL_MIN_MS})"),
        ));
    }
    if interval_ms > MONITOR_INTERVAL_MAX_MS {
        return Err(err(
            key("interval_ms"),
            format!("{interval_ms} is above MONITOR_INTERVAL_MAX_MS ({MONITOR_INTERVAL_MAX_MS}, one hour)"),
        ));
    }
    let timeout_ms = m.timeout_ms.unwrap_or(default_timeout_ms(interval_ms));
    if timeout_ms == 0 {
        return Err(err(key("timeout_ms"), "must be greater than 0"));
    }
    if timeout_ms > interval_ms {
        return Err(err(
            key("timeout_ms"),
            format!("{timeout_ms} is longer than interval_ms ({interval_ms}): a run must end before the next is due"),
        ));
    }
    let max_failures = m.max_failures.unwrap_or(3);
    if max_failures == 0 || max_failures > MONITOR_MAX_FAILURES_MAX {
        return Err(err(
            key("max_failures"),
            format!("{max_failures} must be between 1 and MONITOR_MAX_FAILURES_MAX ({MONITOR_MAX_FAILURES_MAX})"),
        ));
    }
    let rise = m.rise.unwrap_or(1);
    if rise == 0 || rise > MONITOR_RISE_MAX {
        return Err(err(
            key("rise"),
            format!("{rise} must be between 1 and MONITOR_RISE_MAX ({MONITOR_RISE_MAX})"),
        ));
    }
    let scope = match m.scope.as_deref() {
        None | Some("active") => Scope::Active,
        Some("standby") => Scope::Standby,
        Some("both") => Scope::Both,
        Some(other) => {
            return Err(err(
                key("scope"),
                format!("{other:?} is not a scope: use active, standby or both"),
            ))
        }
    };
    let log_only = m.log_only.unwrap_or(false);
    let probe = validate_probe(m, kind, key)?;
    Ok(MonitorSpec {
        name,
        probe,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        max_failures,
        rise,
        log_only,
        scope,
    })
}

/// The type-specific keys each type takes.
fn keys_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "process" => &["executable", "command_line"],
        "systemd" => &["unit"],
        "tcp" => &["address"],
        "http" => &["url", "expect_status", "body_contains", "ca_file"],
        "script" => &["command", "result_file"],
        "disk" => &["path", "max_used_percent", "min_free_bytes"],
        "memory" => &["max_used_percent"],
        "cpu" => &["max_percent", "max_load1"],
        _ => &[],
    }
}

/// A key set that belongs to another type is a mistake worth naming, not something to ignore.
fn reject_foreign_keys(m: &RawMonitor, kind: &str, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let set = [
        ("executable", m.executable.is_some()),
        ("command_line", m.command_line.is_some()),
        ("unit", m.unit.is_some()),
        ("address", m.address.is_some()),
        ("url", m.url.is_some()),
        ("expect_status", m.expect_status.is_some()),
        ("body_contains", m.body_contains.is_some()),
        ("ca_file", m.ca_file.is_some()),
        ("command", m.command.is_some()),
        ("result_file", m.result_file.is_some()),
        ("path", m.path.is_some()),
        ("max_used_percent", m.max_used_percent.is_some()),
        ("min_free_bytes", m.min_free_bytes.is_some()),
        ("max_percent", m.max_percent.is_some()),
        ("max_load1", m.max_load1.is_some()),
    ];
    let allowed = keys_of(kind);
    match set.iter().find(|(field, is_set)| *is_set && !allowed.contains(field)) {
        None => Ok(()),
        Some((field, _)) => Err(err(
            key(field),
            format!("does not apply to a {kind} monitor, which takes {}", allowed.join(", ")),
        )),
    }
}

fn validate_probe(m: RawMonitor, kind: &str, key: &dyn Fn(&str) -> String) -> Result<Probe, ConfigError> {
    let probe = match kind {
        "process" => {
            match (&m.executable, &m.command_line) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(err(
                        key("executable"),
                        "a process monitor needs exactly one of executable (a path or file name) or command_line",
                    ))
                }
                (Some(exe), None) => {
                    text(exe, &key("executable"))?;
                    if exe.ends_with('/') || (exe.contains('/') && !exe.starts_with('/')) {
                        return Err(err(
                            key("executable"),
                            format!("{exe:?} must be an absolute path or a bare file name, e.g. \"/usr/sbin/mysqld\" or \"mysqld\""),
                        ));
                    }
                }
                (None, Some(line)) => text(line, &key("command_line"))?,
            }
            Probe::Process {
                executable: m.executable,
                command_line: m.command_line,
            }
        }
        "systemd" => {
            let unit = m.unit.ok_or_else(|| {
                err(
                    key("unit"),
                    "missing: a systemd monitor needs unit, e.g. \"mariadb.service\"",
                )
            })?;
            validate_unit(&unit, &key("unit"))?;
            Probe::Systemd { unit }
        }
        "tcp" => {
            let address = m
                .address
                .ok_or_else(|| err(key("address"), "missing: a tcp monitor needs address = \"host:port\""))?;
            validate_host_port(&address, &key("address"))?;
            Probe::Tcp { address }
        }
        "http" => {
            let url = m.url.ok_or_else(|| {
                err(
                    key("url"),
                    "missing: an http monitor needs url, e.g. \"http://127.0.0.1:8080/health\"",
                )
            })?;
            validate_url(&url, &key("url"))?;
            let expect_status = m.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(err(
                    key("expect_status"),
                    format!("{expect_status} is not an HTTP status (100–599)"),
                ));
            }
            if let Some(needle) = &m.body_contains {
                if needle.is_empty() || needle.len() > MONITOR_HTTP_BODY_MAX_BYTES {
                    return Err(err(
                        key("body_contains"),
                        format!("must be 1–{MONITOR_HTTP_BODY_MAX_BYTES} bytes (MONITOR_HTTP_BODY_MAX_BYTES: no more of the body is read)"),
                    ));
                }
            }
            if let Some(ca) = &m.ca_file {
                absolute(ca, &key("ca_file"))?;
                if !url.starts_with("https://") {
                    return Err(err(key("ca_file"), "applies to https:// URLs only"));
                }
            }
            Probe::Http {
                url,
                expect_status,
                body_contains: m.body_contains,
                ca_file: m.ca_file,
            }
        }
        "script" => {
            if m.command.is_none() && m.result_file.is_none() {
                return Err(err(
                    key("command"),
                    "a script monitor needs command (passes on exit 0), result_file (fails when it starts with \"false\"), or both",
                ));
            }
            if let Some(c) = &m.command {
                text(c, &key("command"))?;
            }
            if let Some(f) = &m.result_file {
                absolute(f, &key("result_file"))?;
            }
            Probe::Script {
                command: m.command,
                result_file: m.result_file,
            }
        }
        "disk" => {
            let path = m.path.ok_or_else(|| {
                err(
                    key("path"),
                    "missing: a disk monitor needs the path of a mounted filesystem",
                )
            })?;
            absolute(&path, &key("path"))?;
            if m.max_used_percent.is_none() && m.min_free_bytes.is_none() {
                return Err(err(
                    key("max_used_percent"),
                    "a disk monitor needs max_used_percent, min_free_bytes, or both",
                ));
            }
            if let Some(p) = m.max_used_percent {
                percent(p, &key("max_used_percent"))?;
            }
            if m.min_free_bytes == Some(0) {
                return Err(err(key("min_free_bytes"), "must be greater than 0"));
            }
            Probe::Disk {
                path,
                max_used_percent: m.max_used_percent,
                min_free_bytes: m.min_free_bytes,
            }
        }
        "memory" => {
            let max_used_percent = m.max_used_percent.ok_or_else(|| {
                err(
                    key("max_used_percent"),
                    "missing: a memory monitor needs max_used_percent",
                )
            })?;
            percent(max_used_percent, &key("max_used_percent"))?;
            Probe::Memory { max_used_percent }
        }
        "cpu" => {
            if m.max_percent.is_none() && m.max_load1.is_none() {
                return Err(err(
                    key("max_percent"),
                    "a cpu monitor needs max_percent, max_load1, or both",
                ));
            }
            if let Some(p) = m.max_percent {
                percent(p, &key("max_percent"))?;
            }
            if let Some(l) = m.max_load1 {
                if !(l.is_finite() && l > 0.0) {
                    return Err(err(key("max_load1"), format!("{l} must be a load average above 0")));
                }
            }
            Probe::Cpu {
                max_percent: m.max_percent,
                max_load1: m.max_load1,
            }
        }
        _ => unreachable!("type checked against MONITOR_TYPES"),
    };
    Ok(probe)
}

/// A non-blank value of at most [`MONITOR_VALUE_MAX_BYTES`].
fn text(value: &str, key: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        return Err(err(key, "must not be empty"));
    }
    if value.len() > MONITOR_VALUE_MAX_BYTES {
        return Err(err(
            key,
            format!("is longer than MONITOR_VALUE_MAX_BYTES ({MONITOR_VALUE_MAX_BYTES})"),
        ));
    }
    Ok(())
}

/// Paths are absolute: a monitor runs in the node's working directory, which the config file
/// does not show.
fn absolute(path: &std::path::Path, key: &str) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(err(key, format!("{} must be an absolute path", path.display())));
    }
    text(&path.to_string_lossy(), key)
}

/// A share in (0, 100].
fn percent(value: f64, key: &str) -> Result<(), ConfigError> {
    // Written as comparisons so that NaN is rejected too.
    if !(value > 0.0 && value <= 100.0) {
        return Err(err(key, format!("{value} must be a percentage in (0, 100]")));
    }
    Ok(())
}

/// A unit name `systemctl` takes as one argument: no option look-alikes, a known unit type.
fn validate_unit(unit: &str, key: &str) -> Result<(), ConfigError> {
    let chars_ok = unit
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\'));
    if unit.is_empty() || unit.len() > UNIT_NAME_MAX_BYTES || !chars_ok || unit.starts_with('-') {
        return Err(err(
            key,
            format!("{unit:?} is not a unit name (1–{UNIT_NAME_MAX_BYTES} bytes of letters, digits and : _ . @ - \\, not starting with -), e.g. \"mariadb.service\""),
        ));
    }
    if !UNIT_SUFFIXES.iter().any(|s| unit.len() > s.len() && unit.ends_with(s)) {
        return Err(err(
            key,
            format!("{unit:?} must end in one of {}", UNIT_SUFFIXES.join(" ")),
        ));
    }
    Ok(())
}

fn validate_host_port(value: &str, key: &str) -> Result<(), ConfigError> {
    text(value, key)?;
    let bad = || {
        err(
            key,
            format!("{value:?} must be host:port, such as 127.0.0.1:3306 or [::1]:3306"),
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        }
    };
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn validate_url(url: &str, key: &str) -> Result<(), ConfigError> {
    text(url, key)?;
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| err(key, format!("{url:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("https") if !cfg!(feature = "https-monitors") => {
            return Err(err(
                key,
                format!("{url:?}: this build has no TLS (built without the https-monitors feature); use http://"),
            ))
        }
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(err(
                key,
                format!("{url:?} has scheme {other:?}: use http:// or https://"),
            ))
        }
        None => return Err(err(key, format!("{url:?} must start with http:// or https://"))),
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    if uri.host().is_none_or(str::is_empty) || authority.contains('@') {
        return Err(err(
            key,
            format!("{url:?} must name a host (without user info), e.g. \"http://127.0.0.1:8080/health\""),
        ));
    }
    if uri.port_u16() == Some(0) {
        return Err(err(key, format!("{url:?}: port 0 cannot be reached")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's shape around the monitors, to see what an operator sees from TOML.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Wrapper {
        #[serde(default)]
        monitors: Vec<RawMonitor>,
    }

    fn parse(text: &str) -> Result<Vec<MonitorSpec>, ConfigError> {
        let w: Wrapper = toml::from_str(text).map_err(|e| err("", e.message().trim()))?;
        validate_monitors(w.monitors)
    }

    fn one(body: &str) -> Result<MonitorSpec, ConfigError> {
        parse(&format!("[[monitors]]\nname = \"m\"\n{body}\n")).map(|mut v| v.remove(0))
    }

    /// The key of the error for a monitor with `body`.
    fn key_of(body: &str) -> String {
        one(body).expect_err("monitor must be rejected").key
    }

    const TCP: &str = "type = \"tcp\"\naddress = \"127.0.0.1:80\"";

    #[test]
    fn defaults_are_filled_in() {
        let m = one(TCP).unwrap();
        assert_eq!(
            m,
            MonitorSpec {
                name: "m".into(),
                probe: Probe::Tcp {
                    address: "127.0.0.1:80".into()
                },
                interval: Duration::from_millis(1000),
                timeout: Duration::from_millis(1000),
                max_failures: 3,
                rise: 1,
                log_only: false,
                scope: Scope::Active,
            }
        );
        assert_eq!(
            (m.probe.kind(), m.probe.target()),
            ("tcp", "tcp 127.0.0.1:80".to_string())
        );
        // A short interval shortens the default timeout with it.
        let m = one(&format!("{TCP}\ninterval_ms = 250")).unwrap();
        assert_eq!(m.timeout, Duration::from_millis(250));
        let m = one(&format!("{TCP}\nscope = \"both\"\nlog_only = true\nrise = 2")).unwrap();
        assert_eq!((m.scope.as_str(), m.log_only, m.rise), ("both", true, 2));
        let http = one("type = \"http\"\nurl = \"http://127.0.0.1/health\"").unwrap();
        assert_eq!(
            http.probe,
            Probe::Http {
                url: "http://127.0.0.1/health".into(),
                expect_status: 200,
                body_contains: None,
                ca_file: None
            }
        );
    }

    #[test]
    fn every_type_loads() {
        for body in [
            "type = \"process\"\nexecutable = \"mysqld\"",
            "type = \"process\"\nexecutable = \"/usr/sbin/mysqld\"",
            "type = \"process\"\ncommand_line = \"sleep 30\"",
            "type = \"systemd\"\nunit = \"mariadb.service\"",
            "type = \"systemd\"\nunit = \"systemd-fsck@dev-disk-by\\\\x2duuid-1.service\"",
            TCP,
            "type = \"tcp\"\naddress = \"[::1]:5432\"",
            "type = \"tcp\"\naddress = \"db.example:5432\"",
            "type = \"http\"\nurl = \"https://db:8443/\"\nca_file = \"/etc/ca.pem\"\nbody_contains = \"ok\"\nexpect_status = 204",
            "type = \"script\"\ncommand = \"true\"",
            "type = \"script\"\nresult_file = \"/run/app/ok\"",
            "type = \"script\"\ncommand = \"check > /run/ok\"\nresult_file = \"/run/ok\"",
            "type = \"disk\"\npath = \"/var\"\nmax_used_percent = 90",
            "type = \"disk\"\npath = \"/var\"\nmin_free_bytes = 1000000",
            "type = \"memory\"\nmax_used_percent = 90.5",
            "type = \"cpu\"\nmax_percent = 95",
            "type = \"cpu\"\nmax_load1 = 8.0",
        ] {
            let m = one(body).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(body.contains(m.probe.kind()), "{body}");
            assert!(!m.probe.target().is_empty());
        }
    }

    #[test]
    fn an_unknown_type_is_named_with_the_valid_ones() {
        let e = one("type = \"floppy\"").unwrap_err();
        assert_eq!(e.key, "monitors[0].type");
        assert!(e.message.contains("\"floppy\""), "{e}");
        assert!(
            e.message
                .contains("process, systemd, tcp, http, script, disk, memory, cpu"),
            "{e}"
        );
        assert_eq!(key_of("address = \"a:1\""), "monitors[0].type", "type missing");
    }

    #[test]
    fn unknown_keys_and_keys_of_another_type_are_rejected() {
        let e = one(&format!("{TCP}\nport = 80")).unwrap_err();
        assert!(e.message.contains("unknown field `port`"), "{e}");
        let e = one(&format!("{TCP}\nurl = \"http://x/\"")).unwrap_err();
        assert_eq!(e.key, "monitors[0].url");
        assert!(
            e.message
                .contains("does not apply to a tcp monitor, which takes address"),
            "{e}"
        );
        assert_eq!(
            key_of("type = \"memory\"\nmax_used_percent = 90\nmin_free_bytes = 1"),
            "monitors[0].min_free_bytes"
        );
    }

    #[test]
    fn intervals_and_timeouts_are_bounded() {
        let at = |extra: &str| one(&format!("{TCP}\n{extra}"));
        assert!(at(&format!("interval_ms = {MONITOR_INTERVAL_MIN_MS}")).is_ok());
        assert!(at(&format!("interval_ms = {MONITOR_INTERVAL_MAX_MS}")).is_ok());
        for bad in [0, MONITOR_INTERVAL_MIN_MS - 1, MONITOR_INTERVAL_MAX_MS + 1] {
            let e = at(&format!("interval_ms = {bad}")).unwrap_err();
            assert_eq!(e.key, "monitors[0].interval_ms", "{bad}: {e}");
        }
        assert!(at("interval_ms = 500\ntimeout_ms = 500").is_ok());
        assert_eq!(at("timeout_ms = 0").unwrap_err().key, "monitors[0].timeout_ms");
        let e = at("interval_ms = 500\ntimeout_ms = 501").unwrap_err();
        assert_eq!(e.key, "monitors[0].timeout_ms");
        assert!(e.message.contains("longer than interval_ms"), "{e}");
    }

    #[test]
    fn failure_and_rise_counts_are_bounded() {
        let at = |extra: &str| one(&format!("{TCP}\n{extra}"));
        assert!(at(&format!("max_failures = {MONITOR_MAX_FAILURES_MAX}")).is_ok());
        assert!(at(&format!("rise = {MONITOR_RISE_MAX}")).is_ok());
        for bad in [
            "max_failures = 0".to_string(),
            format!("max_failures = {}", MONITOR_MAX_FAILURES_MAX + 1),
        ] {
            assert_eq!(at(&bad).unwrap_err().key, "monitors[0].max_failures", "{bad}");
        }
        for bad in ["rise = 0".to_string(), format!("rise = {}", MONITOR_RISE_MAX + 1)] {
            assert_eq!(at(&bad).unwrap_err().key, "monitors[0].rise", "{bad}");
        }
        assert_eq!(at("scope = \"primary\"").unwrap_err().key, "monitors[0].scope");
    }

    #[test]
    fn missing_targets_are_named() {
        for (body, key) in [
            ("type = \"tcp\"", "address"),
            ("type = \"http\"", "url"),
            ("type = \"systemd\"", "unit"),
            ("type = \"process\"", "executable"),
            (
                "type = \"process\"\nexecutable = \"a\"\ncommand_line = \"a\"",
                "executable",
            ),
            ("type = \"script\"", "command"),
            ("type = \"disk\"\nmax_used_percent = 90", "path"),
            ("type = \"disk\"\npath = \"/var\"", "max_used_percent"),
            ("type = \"memory\"", "max_used_percent"),
            ("type = \"cpu\"", "max_percent"),
        ] {
            assert_eq!(key_of(body), format!("monitors[0].{key}"), "{body}");
        }
        assert!(one("type = \"process\"")
            .unwrap_err()
            .message
            .contains("exactly one of"));
        assert_eq!(
            key_of("type = \"process\"\nexecutable = \"sbin/mysqld\""),
            "monitors[0].executable"
        );
        assert_eq!(key_of("type = \"script\"\ncommand = \"  \""), "monitors[0].command");
        assert_eq!(
            key_of("type = \"disk\"\npath = \"var\"\nmin_free_bytes = 1"),
            "monitors[0].path"
        );
        assert_eq!(
            key_of("type = \"disk\"\npath = \"/var\"\nmin_free_bytes = 0"),
            "monitors[0].min_free_bytes"
        );
        assert_eq!(
            key_of("type = \"script\"\nresult_file = \"ok\""),
            "monitors[0].result_file"
        );
    }

    #[test]
    fn urls_need_an_http_scheme_and_a_host() {
        let e = one("type = \"http\"\nurl = \"ftp://x/\"").unwrap_err();
        assert_eq!(e.key, "monitors[0].url");
        assert!(e.message.contains("use http:// or https://"), "{e}");
        for bad in [
            "127.0.0.1:80/health",
            "http://",
            "http://u:p@x/",
            "not a url",
            "http://x:0/",
        ] {
            assert_eq!(
                key_of(&format!("type = \"http\"\nurl = {bad:?}")),
                "monitors[0].url",
                "{bad}"
            );
        }
        assert_eq!(
            key_of("type = \"http\"\nurl = \"http://x/\"\nca_file = \"/ca.pem\""),
            "monitors[0].ca_file",
            "a CA for plain http is a mistake"
        );
        assert_eq!(
            key_of("type = \"http\"\nurl = \"http://x/\"\nexpect_status = 99"),
            "monitors[0].expect_status"
        );
    }

    #[test]
    fn addresses_and_units_are_checked() {
        for bad in ["127.0.0.1", "127.0.0.1:0", ":80", "a b:80", "[zz]:80", "host:http"] {
            assert_eq!(
                key_of(&format!("type = \"tcp\"\naddress = {bad:?}")),
                "monitors[0].address",
                "{bad}"
            );
        }
        let long = format!("{}.service", "a".repeat(UNIT_NAME_MAX_BYTES));
        for bad in [
            "",
            "mariadb",
            "-x.service",
            "a b.service",
            "it's.service",
            ".service",
            long.as_str(),
        ] {
            assert_eq!(
                key_of(&format!("type = \"systemd\"\nunit = {bad:?}")),
                "monitors[0].unit",
                "{bad}"
            );
        }
    }

    #[test]
    fn percentages_must_be_in_zero_to_a_hundred() {
        for ok in ["0.1", "100"] {
            assert!(
                one(&format!("type = \"memory\"\nmax_used_percent = {ok}")).is_ok(),
                "{ok}"
            );
        }
        for bad in ["0", "-5", "100.5", "nan"] {
            let e = one(&format!("type = \"memory\"\nmax_used_percent = {bad}")).unwrap_err();
            assert_eq!(e.key, "monitors[0].max_used_percent", "{bad}");
            assert!(e.message.contains("(0, 100]"), "{e}");
        }
        assert_eq!(key_of("type = \"cpu\"\nmax_percent = 101"), "monitors[0].max_percent");
        assert_eq!(key_of("type = \"cpu\"\nmax_load1 = 0"), "monitors[0].max_load1");
        assert_eq!(
            key_of("type = \"disk\"\npath = \"/\"\nmax_used_percent = 0"),
            "monitors[0].max_used_percent"
        );
    }

    #[test]
    fn names_are_checked_and_unique() {
        let with_name = |name: &str| parse(&format!("[[monitors]]\nname = {name:?}\n{TCP}\n"));
        assert!(with_name("db-1.ok_x").is_ok());
        assert!(with_name(&"n".repeat(MONITOR_NAME_MAX_BYTES)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"n".repeat(MONITOR_NAME_MAX_BYTES + 1)] {
            assert_eq!(with_name(bad).unwrap_err().key, "monitors[0].name", "{bad:?}");
        }
        let m = format!("[[monitors]]\nname = \"db\"\n{TCP}\n");
        let e = parse(&format!("{m}{m}")).unwrap_err();
        assert_eq!(e.key, "monitors[1].name");
        assert!(e.message.contains("duplicate"), "{e}");
        assert_eq!(
            parse(&format!("[[monitors]]\n{TCP}\n")).unwrap_err().key,
            "monitors[0].name"
        );
    }

    #[test]
    fn the_number_of_monitors_is_bounded() {
        let many = |n: usize| -> String {
            (0..n)
                .map(|i| format!("[[monitors]]\nname = \"m{i}\"\n{TCP}\n"))
                .collect()
        };
        assert_eq!(parse(&many(MONITORS_MAX)).unwrap().len(), MONITORS_MAX);
        let e = parse(&many(MONITORS_MAX + 1)).unwrap_err();
        assert_eq!(e.key, "monitors");
        assert!(e.message.contains("MONITORS_MAX"), "{e}");
    }

    #[test]
    fn long_values_and_bodies_are_bounded() {
        let long = "x".repeat(MONITOR_VALUE_MAX_BYTES);
        assert!(one(&format!("type = \"script\"\ncommand = \"{long}\"")).is_ok());
        assert_eq!(
            key_of(&format!("type = \"script\"\ncommand = \"{long}x\"")),
            "monitors[0].command"
        );
        let url = "type = \"http\"\nurl = \"http://x/\"";
        let body = "b".repeat(MONITOR_HTTP_BODY_MAX_BYTES);
        assert!(one(&format!("{url}\nbody_contains = \"{body}\"")).is_ok());
        assert_eq!(
            key_of(&format!("{url}\nbody_contains = \"{body}b\"")),
            "monitors[0].body_contains",
            "a needle longer than what is read can never match"
        );
        assert_eq!(
            key_of(&format!("{url}\nbody_contains = \"\"")),
            "monitors[0].body_contains"
        );
    }
}
