//! Node configuration: one TOML file per node, validated once at load into [`ValidConfig`].
//!
//! Every error names the key it is about and the rule it breaks, so an operator can fix the
//! file without reading code. Nothing is started with a config that failed validation.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;

/// Shortest cluster secret accepted, in bytes.
pub const CLUSTER_SECRET_MIN_BYTES: usize = 16;
/// Where the admin API listens when the config does not say: loopback only.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7480";
/// Longest load balancer detection time accepted (`timers.load_balancer_detection_ms`).
pub const LOAD_BALANCER_DETECTION_MAX_MS: u64 = 300_000;
/// Largest config file read.
pub const CONFIG_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// A config problem: the key (dotted path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "`{}`: {}", self.key, self.message)
        }
    }
}

pub(crate) fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node_id: NodeId,
    data_dir: PathBuf,
    peer_listen: String,
    admin_listen: Option<String>,
    health_listen: Option<String>,
    cluster_secret: Option<String>,
    cluster_secret_file: Option<PathBuf>,
    #[serde(default = "default_cluster_name")]
    cluster_name: String,
    #[serde(default)]
    timers: RawTimers,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    members: Vec<RawMember>,
    #[serde(default)]
    resources: Vec<RawResource>,
    #[serde(default)]
    monitors: Vec<crate::monitor::spec::RawMonitor>,
    #[serde(default)]
    sync: Vec<crate::files::spec::RawFolder>,
    database: Option<crate::db::spec::RawDatabase>,
    tls: Option<crate::tls::RawTls>,
    #[serde(default)]
    admin_tokens: Vec<crate::auth::RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
enum RawResource {
    Script {
        name: String,
        acquire: String,
        release: String,
        #[serde(default = "default_script_timeout_ms")]
        acquire_timeout_ms: u64,
        #[serde(default = "default_script_timeout_ms")]
        release_timeout_ms: u64,
        /// Optional: exits 0 while the resource is healthy; run periodically while held.
        check: Option<String>,
        #[serde(default = "default_check_interval_ms")]
        check_interval_ms: u64,
        #[serde(default = "default_script_timeout_ms")]
        check_timeout_ms: u64,
    },
    Vip {
        name: String,
        /// `ADDRESS/PREFIX`, e.g. `10.0.0.100/24` or `fd00::100/64`.
        address: String,
        interface: String,
    },
    /// A systemd unit: `systemctl start` to acquire, `stop` to release, `is-active` as check.
    Systemd {
        name: String,
        unit: String,
        #[serde(default = "default_script_timeout_ms")]
        acquire_timeout_ms: u64,
        #[serde(default = "default_script_timeout_ms")]
        release_timeout_ms: u64,
        #[serde(default = "default_check_interval_ms")]
        check_interval_ms: u64,
        #[serde(default = "default_script_timeout_ms")]
        check_timeout_ms: u64,
    },
}

/// Longest systemd unit name (systemd's own limit).
pub const UNIT_NAME_MAX_BYTES: usize = 255;
/// Unit types a resource may start.
const UNIT_SUFFIXES: [&str; 8] = [
    ".service",
    ".socket",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".timer",
    ".path",
];

/// A unit name that is safe inside single quotes and names a unit type that can be started.
fn validate_unit(unit: &str, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let chars_ok = unit
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-'));
    if unit.is_empty() || unit.len() > UNIT_NAME_MAX_BYTES || !chars_ok {
        return Err(err(
            key("unit"),
            format!("{unit:?} is not a unit name (1–{UNIT_NAME_MAX_BYTES} bytes of letters, digits and : _ . @ -), e.g. \"app.service\""),
        ));
    }
    if !UNIT_SUFFIXES.iter().any(|s| unit.len() > s.len() && unit.ends_with(s)) {
        return Err(err(
            key("unit"),
            format!("{unit:?} must end in one of {}", UNIT_SUFFIXES.join(" ")),
        ));
    }
    Ok(())
}

fn default_script_timeout_ms() -> u64 {
    5_000
}

fn default_check_interval_ms() -> u64 {
    5_000
}

/// Shortest interval between two checks of a resource.
pub const CHECK_INTERVAL_MIN_MS: u64 = 100;

/// Most resources one node may hold.
pub const RESOURCES_MAX: usize = 32;
/// Longest resource command accepted.
pub const RESOURCE_COMMAND_MAX_BYTES: usize = 4096;
/// Added to the sum of release timeouts for the kill of an overrunning release.
pub const RELEASE_ESCALATION_MS: u64 = 1_000;

/// Longest interface name the kernel accepts (IFNAMSIZ − 1).
pub const INTERFACE_NAME_MAX_BYTES: usize = 15;
/// Most virtual IPs one node may hold.
pub const VIPS_MAX: usize = 8;

/// A virtual IP: the address clients reach the active at (DESIGN §7). VIPs are the node's
/// network identity: taken before the other resources and dropped the moment the lease fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub name: String,
    pub address: IpAddr,
    pub prefix: u8,
    pub interface: String,
}

/// A resource the active holds (DESIGN §7): a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub name: String,
    /// Shell command run with `/bin/sh -c` to acquire.
    pub acquire: String,
    pub release: String,
    pub acquire_timeout: Duration,
    pub release_timeout: Duration,
    /// Run every `check_interval` while held; a failure starts the resources over.
    pub check: Option<Check>,
}

/// A resource's health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub command: String,
    pub interval: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    snapshot_every_entries: u64,
    kept_after_snapshot: u64,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            snapshot_every_entries: 20_000,
            kept_after_snapshot: 5_000,
        }
    }
}

/// When the state machine is snapshotted and how much log stays behind a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPolicy {
    /// Applied entries between two snapshots.
    pub snapshot_every_entries: u64,
    /// Entries kept after a snapshot, so a briefly absent peer catches up by log, not snapshot.
    pub kept_after_snapshot: u64,
}

impl RawConfig {
    fn role_of(&self, id: NodeId) -> Option<MemberRole> {
        self.members.iter().find(|m| m.id == id).map(|m| m.role)
    }
}

fn default_cluster_name() -> String {
    "tandem".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimers {
    heartbeat_ms: u64,
    election_timeout_min_ms: u64,
    election_timeout_max_ms: u64,
    lease_ms: u64,
    lease_margin_ms: u64,
    max_clock_drift: f64,
    witness_election_factor: f64,
    release_budget_ms: Option<u64>,
    load_balancer_detection_ms: u64,
}

impl Default for RawTimers {
    fn default() -> Self {
        // DESIGN §4 starting defaults.
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            lease_ms: 340,
            lease_margin_ms: 50,
            max_clock_drift: 0.01,
            witness_election_factor: 2.5,
            release_budget_ms: None,
            load_balancer_detection_ms: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMember {
    id: NodeId,
    name: String,
    role: MemberRole,
    peer_addr: String,
    admin_addr: String,
}

/// A voter of the cluster, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub id: NodeId,
    pub name: String,
    pub role: MemberRole,
    pub peer_addr: String,
    pub admin_addr: String,
}

/// Timers after validation (DESIGN §4).
#[derive(Debug, Clone, PartialEq)]
pub struct Timers {
    pub heartbeat: Duration,
    /// Election timeout range of the data nodes.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub lease: Duration,
    pub lease_margin: Duration,
    pub max_clock_drift: f64,
    /// The witness's election timeouts are the data nodes' times this factor.
    pub witness_election_factor: f64,
    /// Worst case from lease expiry to every resource released (DESIGN §4); a new active waits
    /// this long after the previous active's lease before taking exclusive resources.
    pub release_budget: Duration,
    /// How long a load balancer in front of the nodes may keep sending to a node after its
    /// `/health/active` stopped answering 200 (unhealthy threshold × interval + timeout).
    pub load_balancer_detection: Duration,
}

impl Timers {
    /// The election timeout range this node uses: the witness waits 2–3× longer so a data
    /// node wins whenever it can (DESIGN §3).
    pub fn election_timeouts_for(&self, role: MemberRole) -> (Duration, Duration) {
        match role {
            MemberRole::Data => (self.election_timeout_min, self.election_timeout_max),
            MemberRole::Witness => (
                self.election_timeout_min.mul_f64(self.witness_election_factor),
                self.election_timeout_max.mul_f64(self.witness_election_factor),
            ),
        }
    }

    /// How long after the previous active's lease a new active waits before it starts the
    /// service (when the previous one never released): its release budget, or the load
    /// balancer's detection time when that is longer (a frozen node's service may run on and
    /// get traffic until the balancer marks it down).
    pub fn takeover_wait(&self) -> Duration {
        self.release_budget.max(self.load_balancer_detection)
    }

    /// The largest lease the rule of DESIGN §4 allows with these timers.
    pub fn lease_bound(&self) -> Duration {
        self.election_timeout_min
            .mul_f64(1.0 - 2.0 * self.max_clock_drift)
            .saturating_sub(self.lease_margin)
    }
}

/// A configuration that passed every check.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub node_id: NodeId,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// A plain-HTTP port serving only the health routes, for load balancers.
    pub health_listen: Option<SocketAddr>,
    /// TLS on the peer port (mutual) and, unless turned off, the admin API.
    pub tls: Option<crate::tls::TlsSpec>,
    /// Bearer tokens of the admin API; none means the API is open to whoever reaches it.
    pub admin_tokens: Vec<crate::auth::AdminToken>,
    pub cluster_secret: String,
    pub cluster_name: String,
    pub timers: Timers,
    pub log: LogPolicy,
    /// The virtual IPs, taken first and dropped first.
    pub vips: Vec<VipConfig>,
    /// What the active holds after its VIPs, in acquisition order.
    pub resources: Vec<ResourceConfig>,
    /// All voters, ordered by id.
    pub members: Vec<MemberConfig>,
    /// Health checks of the protected service (DESIGN §6).
    pub monitors: Vec<crate::monitor::spec::MonitorSpec>,
    /// Sync folders this node mirrors (data nodes only).
    pub folders: Vec<crate::files::spec::FolderSpec>,
    /// This node's database, whose changes are captured and replayed (data nodes only).
    pub database: Option<crate::db::spec::DatabaseSpec>,
}

impl ValidConfig {
    /// This node's own entry in `members`.
    pub fn me(&self) -> &MemberConfig {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .expect("validated: node_id is a member")
    }

    pub fn role(&self) -> MemberRole {
        self.me().role
    }

    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let meta =
            std::fs::metadata(path).map_err(|e| err("", format!("cannot read config file {}: {e}", path.display())))?;
        if meta.len() > CONFIG_FILE_MAX_BYTES {
            return Err(err(
                "",
                format!(
                    "config file {} is {} bytes, more than CONFIG_FILE_MAX_BYTES ({CONFIG_FILE_MAX_BYTES})",
                    path.display(),
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| err("", format!("cannot read config file {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base)
    }

    /// Validate config text; relative paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(toml_error)?;
        validate(raw, base)
    }
}

/// Turn a TOML/serde error into a key-naming error.
fn toml_error(e: toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    // serde names the offending field in backticks: "unknown field `x`", "missing field `y`".
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("")
        .to_string();
    let at = e.span().map(|s| format!(" (at byte {})", s.start)).unwrap_or_default();
    err(key, format!("{message}{at}"))
}

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        err(
            key,
            format!("{value:?} is not an IP address with a port, such as 127.0.0.1:7001"),
        )
    })
}

fn host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = || err(key, format!("{value:?} must be host:port, such as 10.0.0.5:7001"));
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

fn validate(mut raw: RawConfig, base: &Path) -> Result<ValidConfig, ConfigError> {
    // Members: exactly two data nodes and one witness, all voters (DESIGN §1, §3).
    if raw.members.len() != 3 {
        return Err(err(
            "members",
            format!(
                "a Tandem cluster has exactly three voters (two data nodes and a witness); found {}",
                raw.members.len()
            ),
        ));
    }
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for (i, m) in raw.members.iter().enumerate() {
        let key = |field: &str| format!("members[{i}].{field}");
        if !ids.insert(m.id) {
            return Err(err(
                key("id"),
                format!("duplicate member id {}: every node needs its own id", m.id),
            ));
        }
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                key("name"),
                format!(
                    "{:?} must be non-empty and use only letters, digits, '-' and '_'",
                    m.name
                ),
            ));
        }
        if !names.insert(m.name.clone()) {
            return Err(err(key("name"), format!("duplicate member name {:?}", m.name)));
        }
        host_port(&key("peer_addr"), &m.peer_addr)?;
        host_port(&key("admin_addr"), &m.admin_addr)?;
        for (field, a) in [("peer_addr", &m.peer_addr), ("admin_addr", &m.admin_addr)] {
            if !addrs.insert(a.clone()) {
                return Err(err(key(field), format!("address {a} is used twice among the members")));
            }
        }
    }
    let count = |role| raw.members.iter().filter(|m| m.role == role).count();
    if count(MemberRole::Witness) != 1 {
        return Err(err(
            "members",
            format!(
                "the witness must be a voter: exactly one member needs role = \"witness\" (found {})",
                count(MemberRole::Witness)
            ),
        ));
    }
    if count(MemberRole::Data) != 2 {
        return Err(err(
            "members",
            format!(
                "exactly two members need role = \"data\" (found {})",
                count(MemberRole::Data)
            ),
        ));
    }
    if !ids.contains(&raw.node_id) {
        return Err(err(
            "node_id",
            format!("{} is not the id of any entry in [[members]]", raw.node_id),
        ));
    }

    let peer_listen = socket_addr("peer_listen", &raw.peer_listen)?;
    let admin_listen = socket_addr(
        "admin_listen",
        raw.admin_listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
    )?;
    if peer_listen == admin_listen {
        return Err(err("admin_listen", "must differ from peer_listen"));
    }
    let health_listen = raw
        .health_listen
        .as_deref()
        .map(|h| socket_addr("health_listen", h))
        .transpose()?;
    if let Some(h) = health_listen {
        if h == peer_listen || h == admin_listen {
            return Err(err("health_listen", "must differ from peer_listen and admin_listen"));
        }
    }
    let tls = raw.tls.take().map(|t| crate::tls::validate_tls(t, base)).transpose()?;
    let admin_tokens = crate::auth::validate_tokens(std::mem::take(&mut raw.admin_tokens), base)?;

    if raw.data_dir.as_os_str().is_empty() {
        return Err(err("data_dir", "must not be empty"));
    }
    let data_dir = base.join(&raw.data_dir);

    let witness = raw.role_of(raw.node_id) == Some(MemberRole::Witness);
    let cluster_secret = match (raw.cluster_secret, raw.cluster_secret_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "cluster_secret_file",
                "set either cluster_secret or cluster_secret_file, not both",
            ))
        }
        (None, None) => {
            return Err(err(
                "cluster_secret",
                "missing: peers authenticate each other with it; set cluster_secret or cluster_secret_file",
            ))
        }
        (Some(s), None) => s,
        (None, Some(file)) => {
            let file = base.join(file);
            std::fs::read_to_string(&file)
                .map_err(|e| err("cluster_secret_file", format!("cannot read {}: {e}", file.display())))?
                .trim()
                .to_string()
        }
    };
    if cluster_secret.len() < CLUSTER_SECRET_MIN_BYTES {
        return Err(err(
            "cluster_secret",
            format!(
                "is {} bytes; CLUSTER_SECRET_MIN_BYTES is {CLUSTER_SECRET_MIN_BYTES}",
                cluster_secret.len()
            ),
        ));
    }
    if cluster_secret.chars().any(|c| c.is_control() || c == ' ') {
        return Err(err("cluster_secret", "must not contain spaces or control characters"));
    }

    let (vips, resources) = validate_resources(raw.resources)?;
    if witness && !(resources.is_empty() && vips.is_empty()) {
        return Err(err(
            "resources",
            "the witness never runs the service: remove [[resources]] from its config",
        ));
    }
    let monitors = crate::monitor::spec::validate_monitors(raw.monitors)?;
    if witness && !monitors.is_empty() {
        return Err(err(
            "monitors",
            "the witness never runs the service: remove [[monitors]] from its config",
        ));
    }
    let member_names: BTreeSet<String> = raw.members.iter().map(|m| m.name.clone()).collect();
    let me_name = raw
        .members
        .iter()
        .find(|m| m.id == raw.node_id)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    if witness && !raw.sync.is_empty() {
        return Err(err(
            "sync",
            "the witness keeps no sync folders (it holds only the small files in its log): remove [[sync]] from its config",
        ));
    }
    let folders = crate::files::spec::validate_folders(raw.sync, &me_name, &member_names, base, &data_dir)?;
    let database = raw
        .database
        .map(|d| crate::db::spec::validate_database(d, raw.node_id, witness, base))
        .transpose()?;
    let timers = validate_timers(&raw.timers, &resources)?;
    if raw.log.snapshot_every_entries == 0 {
        return Err(err("log.snapshot_every_entries", "must be greater than 0"));
    }
    let log = LogPolicy {
        snapshot_every_entries: raw.log.snapshot_every_entries,
        kept_after_snapshot: raw.log.kept_after_snapshot,
    };
    let mut members: Vec<MemberConfig> = raw
        .members
        .into_iter()
        .map(|m| MemberConfig {
            id: m.id,
            name: m.name,
            role: m.role,
            peer_addr: m.peer_addr,
            admin_addr: m.admin_addr,
        })
        .collect();
    members.sort_by_key(|m| m.id);

    Ok(ValidConfig {
        node_id: raw.node_id,
        data_dir,
        peer_listen,
        admin_listen,
        health_listen,
        tls,
        admin_tokens,
        cluster_secret,
        cluster_name: raw.cluster_name,
        timers,
        log,
        vips,
        resources,
        members,
        monitors,
        folders,
        database,
    })
}

fn validate_resources(raw: Vec<RawResource>) -> Result<(Vec<VipConfig>, Vec<ResourceConfig>), ConfigError> {
    if raw.len() > RESOURCES_MAX {
        return Err(err(
            "resources",
            format!("{} resources; RESOURCES_MAX is {RESOURCES_MAX}", raw.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut vips: Vec<VipConfig> = Vec::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("resources[{i}].{field}");
        let name = match &r {
            RawResource::Script { name, .. } | RawResource::Vip { name, .. } | RawResource::Systemd { name, .. } => {
                name.clone()
            }
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(err(
                key("name"),
                format!("{name:?} must be non-empty and use only letters, digits, '-' and '_'"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(err(key("name"), format!("duplicate resource name {name:?}")));
        }
        let check_spec;
        let (acquire, release, acquire_timeout_ms, release_timeout_ms) = match r {
            RawResource::Vip { address, interface, .. } => {
                if !out.is_empty() {
                    return Err(err(
                        key("type"),
                        "a vip must come before every other resource: the address is the node's identity, taken first and dropped first",
                    ));
                }
                let vip = validate_vip(name, &address, interface, &key)?;
                if let Some(same) = vips.iter().find(|v| v.address == vip.address) {
                    return Err(err(
                        key("address"),
                        format!("{} is already the address of vip {:?}", vip.address, same.name),
                    ));
                }
                if vips.len() == VIPS_MAX {
                    return Err(err(key("type"), format!("more than VIPS_MAX ({VIPS_MAX}) vips")));
                }
                vips.push(vip);
                continue;
            }
            RawResource::Script {
                acquire,
                release,
                acquire_timeout_ms,
                release_timeout_ms,
                check,
                check_interval_ms,
                check_timeout_ms,
                ..
            } => {
                check_spec = check.map(|c| (c, check_interval_ms, check_timeout_ms));
                (acquire, release, acquire_timeout_ms, release_timeout_ms)
            }
            RawResource::Systemd {
                unit,
                acquire_timeout_ms,
                release_timeout_ms,
                check_interval_ms,
                check_timeout_ms,
                ..
            } => {
                validate_unit(&unit, &key)?;
                check_spec = Some((
                    format!("systemctl is-active --quiet '{unit}'"),
                    check_interval_ms,
                    check_timeout_ms,
                ));
                (
                    format!("systemctl start '{unit}'"),
                    format!("systemctl stop '{unit}'"),
                    acquire_timeout_ms,
                    release_timeout_ms,
                )
            }
        };
        let check = match check_spec {
            None => None,
            Some((command, interval_ms, timeout_ms)) => {
                if command.trim().is_empty() {
                    return Err(err(key("check"), "must be a shell command (or leave check out)"));
                }
                if command.len() > RESOURCE_COMMAND_MAX_BYTES {
                    return Err(err(
                        key("check"),
                        format!("is longer than RESOURCE_COMMAND_MAX_BYTES ({RESOURCE_COMMAND_MAX_BYTES})"),
                    ));
                }
                if interval_ms < CHECK_INTERVAL_MIN_MS {
                    return Err(err(
                        key("check_interval_ms"),
                        format!("{interval_ms} is below CHECK_INTERVAL_MIN_MS ({CHECK_INTERVAL_MIN_MS})"),
                    ));
                }
                if timeout_ms == 0 {
                    return Err(err(key("check_timeout_ms"), "must be greater than 0"));
                }
                Some(Check {
                    command,
                    interval: Duration::from_millis(interval_ms),
                    timeout: Duration::from_millis(timeout_ms),
                })
            }
        };
        for (field, cmd) in [("acquire", &acquire), ("release", &release)] {
            if cmd.trim().is_empty() {
                return Err(err(key(field), "must be a shell command"));
            }
            if cmd.len() > RESOURCE_COMMAND_MAX_BYTES {
                return Err(err(
                    key(field),
                    format!("is longer than RESOURCE_COMMAND_MAX_BYTES ({RESOURCE_COMMAND_MAX_BYTES})"),
                ));
            }
        }
        for (field, ms) in [
            ("acquire_timeout_ms", acquire_timeout_ms),
            ("release_timeout_ms", release_timeout_ms),
        ] {
            if ms == 0 {
                return Err(err(key(field), "must be greater than 0"));
            }
        }
        out.push(ResourceConfig {
            name,
            acquire,
            release,
            acquire_timeout: Duration::from_millis(acquire_timeout_ms),
            release_timeout: Duration::from_millis(release_timeout_ms),
            check,
        });
    }
    Ok((vips, out))
}

fn validate_vip(
    name: String,
    address: &str,
    interface: String,
    key: &dyn Fn(&str) -> String,
) -> Result<VipConfig, ConfigError> {
    let bad_address = || {
        err(
            key("address"),
            format!("{address:?} is not ADDRESS/PREFIX, e.g. \"10.0.0.100/24\" or \"fd00::100/64\""),
        )
    };
    let (ip, prefix) = address.split_once('/').ok_or_else(bad_address)?;
    let ip: IpAddr = ip.trim().parse().map_err(|_| bad_address())?;
    let prefix: u8 = prefix.trim().parse().map_err(|_| bad_address())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(err(
            key("address"),
            format!("prefix /{prefix} must be between 1 and {max} for {ip}"),
        ));
    }
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(err(
            key("address"),
            format!("{ip} cannot be a virtual IP: it must be a unicast address clients can reach"),
        ));
    }
    if interface.is_empty()
        || interface.len() > INTERFACE_NAME_MAX_BYTES
        || interface
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(err(
            key("interface"),
            format!(
                "{interface:?} is not an interface name (1–{INTERFACE_NAME_MAX_BYTES} bytes, no '/' or spaces), e.g. \"eth0\""
            ),
        ));
    }
    Ok(VipConfig {
        name,
        address: ip,
        prefix,
        interface,
    })
}

fn validate_timers(t: &RawTimers, resources: &[ResourceConfig]) -> Result<Timers, ConfigError> {
    let ms = Duration::from_millis;
    if t.heartbeat_ms == 0 {
        return Err(err("timers.heartbeat_ms", "must be greater than 0"));
    }
    if t.heartbeat_ms >= t.election_timeout_min_ms {
        return Err(err(
            "timers.heartbeat_ms",
            format!(
                "heartbeat ({} ms) must be shorter than election_timeout_min_ms ({} ms), or followers start elections against a healthy leader",
                t.heartbeat_ms, t.election_timeout_min_ms
            ),
        ));
    }
    if t.election_timeout_min_ms >= t.election_timeout_max_ms {
        return Err(err(
            "timers.election_timeout_max_ms",
            format!(
                "must be greater than election_timeout_min_ms ({} ms), so that election timeouts are spread",
                t.election_timeout_min_ms
            ),
        ));
    }
    if !(0.0..0.1).contains(&t.max_clock_drift) {
        return Err(err(
            "timers.max_clock_drift",
            format!("{} must be in [0, 0.1), e.g. 0.01 for 1%", t.max_clock_drift),
        ));
    }
    if !(2.0..=3.0).contains(&t.witness_election_factor) {
        return Err(err(
            "timers.witness_election_factor",
            format!(
                "{} must be between 2 and 3: the witness waits 2–3× longer than the data nodes before standing",
                t.witness_election_factor
            ),
        ));
    }
    if t.lease_ms == 0 {
        return Err(err("timers.lease_ms", "must be greater than 0"));
    }
    let timers = Timers {
        heartbeat: ms(t.heartbeat_ms),
        election_timeout_min: ms(t.election_timeout_min_ms),
        election_timeout_max: ms(t.election_timeout_max_ms),
        lease: ms(t.lease_ms),
        lease_margin: ms(t.lease_margin_ms),
        max_clock_drift: t.max_clock_drift,
        witness_election_factor: t.witness_election_factor,
        release_budget: ms(0),
        load_balancer_detection: ms(t.load_balancer_detection_ms),
    };
    if t.load_balancer_detection_ms > LOAD_BALANCER_DETECTION_MAX_MS {
        return Err(err(
            "timers.load_balancer_detection_ms",
            format!(
                "{} ms is more than LOAD_BALANCER_DETECTION_MAX_MS ({LOAD_BALANCER_DETECTION_MAX_MS} ms); make the load balancer's health check faster",
                t.load_balancer_detection_ms
            ),
        ));
    }
    // DESIGN §4: the release budget covers every release running to its timeout, plus the kill.
    let needed: u64 = resources
        .iter()
        .map(|r| r.release_timeout.as_millis() as u64)
        .sum::<u64>()
        + RELEASE_ESCALATION_MS;
    let release_budget = match t.release_budget_ms {
        None => needed,
        Some(b) if b >= needed => b,
        Some(b) => {
            return Err(err(
                "timers.release_budget_ms",
                format!(
                    "{b} ms is less than the worst-case release: the sum of release_timeout_ms ({} ms) + RELEASE_ESCALATION_MS ({RELEASE_ESCALATION_MS} ms) = {needed} ms; raise it or shorten the release timeouts",
                    needed - RELEASE_ESCALATION_MS
                ),
            ))
        }
    };
    let timers = Timers {
        release_budget: ms(release_budget),
        ..timers
    };
    // DESIGN §4: the lease must run out before any follower may vote for someone else.
    let bound = timers.lease_bound();
    if timers.lease > bound {
        return Err(err(
            "timers.lease_ms",
            format!(
                "lease ({} ms) breaks the rule lease ≤ election_timeout_min × (1 − 2ρ) − margin = {} × (1 − 2×{}) − {} = {} ms; shorten the lease or lengthen election_timeout_min_ms",
                t.lease_ms,
                t.election_timeout_min_ms,
                t.max_clock_drift,
                t.lease_margin_ms,
                bound.as_millis()
            ),
        ));
    }
    Ok(timers)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const GOOD: &str = r#"
node_id = 1
data_dir = "data/a"
peer_listen = "127.0.0.1:7001"
admin_listen = "127.0.0.1:7101"
cluster_secret = "0123456789abcdef0123"

[[members]]
id = 1
name = "a"
role = "data"
peer_addr = "127.0.0.1:7001"
admin_addr = "127.0.0.1:7101"

[[members]]
id = 2
name = "b"
role = "data"
peer_addr = "127.0.0.1:7002"
admin_addr = "127.0.0.1:7102"

[[members]]
id = 3
name = "w"
role = "witness"
peer_addr = "127.0.0.1:7003"
admin_addr = "127.0.0.1:7103"
"#;

    fn parse(text: &str) -> Result<ValidConfig, ConfigError> {
        ValidConfig::parse(text, Path::new("/etc/tandem"))
    }

    fn key_of(text: &str) -> String {
        parse(text).expect_err("config must be rejected").key
    }

    #[test]
    fn a_good_config_loads_with_design_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.role(), MemberRole::Data);
        assert_eq!(c.data_dir, Path::new("/etc/tandem/data/a"));
        assert_eq!(c.timers.lease, Duration::from_millis(340));
        assert_eq!(c.timers.lease_bound(), Duration::from_millis(342));
        let (min, max) = c.timers.election_timeouts_for(MemberRole::Witness);
        assert_eq!((min.as_millis(), max.as_millis()), (1000, 2000));
    }

    #[test]
    fn lease_that_outlives_an_election_is_rejected_naming_the_rule() {
        let e =
            parse(&GOOD.replace("[[members]]\nid = 1", "[timers]\nlease_ms = 380\n\n[[members]]\nid = 1")).unwrap_err();
        assert_eq!(e.key, "timers.lease_ms");
        assert!(e.message.contains("election_timeout_min × (1 − 2ρ) − margin"), "{e}");
        assert!(e.message.contains("342 ms"), "{e}");
    }

    #[test]
    fn heartbeat_must_be_shorter_than_election_timeout() {
        let text = GOOD.replace(
            "[[members]]\nid = 1",
            "[timers]\nheartbeat_ms = 400\n\n[[members]]\nid = 1",
        );
        assert_eq!(key_of(&text), "timers.heartbeat_ms");
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse(&format!("lease = 3\n{GOOD}")).unwrap_err();
        assert_eq!(e.key, "lease");
        assert!(e.message.contains("unknown field"), "{e}");
        let e = parse(&GOOD.replace(
            "[[members]]\nid = 1",
            "[timers]\nheartbeat = 100\n\n[[members]]\nid = 1",
        ))
        .unwrap_err();
        assert_eq!(e.key, "heartbeat");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        assert_eq!(key_of(&GOOD.replace("id = 2", "id = 1")), "members[1].id");
    }

    #[test]
    fn the_witness_must_be_a_voter() {
        let e = parse(&GOOD.replace("role = \"witness\"", "role = \"data\"")).unwrap_err();
        assert_eq!(e.key, "members");
        assert!(e.message.contains("witness must be a voter"), "{e}");
    }

    const APP: &str = "\n[[resources]]\ntype = \"script\"\nname = \"app\"\nacquire = \"systemctl start app\"\nrelease = \"systemctl stop app\"\nrelease_timeout_ms = 800\n";

    #[test]
    fn resources_load_and_set_the_release_budget() {
        let c = parse(&format!("{GOOD}{APP}")).unwrap();
        assert_eq!(c.resources.len(), 1);
        assert_eq!(c.resources[0].acquire_timeout, Duration::from_secs(5), "DESIGN default");
        assert_eq!(
            c.timers.release_budget,
            Duration::from_millis(800 + RELEASE_ESCALATION_MS)
        );
        // Without resources, the budget is the escalation allowance alone.
        assert_eq!(
            parse(GOOD).unwrap().timers.release_budget,
            Duration::from_millis(RELEASE_ESCALATION_MS)
        );
    }

    #[test]
    fn a_load_balancer_detection_time_lengthens_the_takeover_wait_only_when_longer() {
        let with = |ms: u64| {
            GOOD.replace(
                "[[members]]\nid = 1",
                &format!("[timers]\nload_balancer_detection_ms = {ms}\n\n[[members]]\nid = 1"),
            )
        };
        let c = parse(&format!("{GOOD}{APP}")).unwrap();
        assert_eq!(
            c.timers.takeover_wait(),
            c.timers.release_budget,
            "default 0: the release budget"
        );
        let c = parse(&format!("{}{APP}", with(6000))).unwrap();
        assert_eq!(c.timers.takeover_wait(), Duration::from_secs(6));
        assert_eq!(
            c.timers.release_budget,
            Duration::from_millis(800 + RELEASE_ESCALATION_MS)
        );
        let c = parse(&format!("{}{APP}", with(100))).unwrap();
        assert_eq!(
            c.timers.takeover_wait(),
            c.timers.release_budget,
            "a shorter one changes nothing"
        );
        let e = parse(&with(LOAD_BALANCER_DETECTION_MAX_MS + 1)).unwrap_err();
        assert_eq!(e.key, "timers.load_balancer_detection_ms");
        assert!(e.message.contains("LOAD_BALANCER_DETECTION_MAX_MS"), "{e}");
    }

    #[test]
    fn admin_api_defaults_to_loopback_and_ports_must_differ() {
        let c = parse(&GOOD.replace("admin_listen = \"127.0.0.1:7101\"\n", "")).unwrap();
        assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert!(c.admin_listen.ip().is_loopback());
        assert!(c.health_listen.is_none() && c.tls.is_none() && c.admin_tokens.is_empty());
        let h = |v: &str| {
            GOOD.replace(
                "cluster_secret =",
                &format!("health_listen = \"{v}\"\ncluster_secret ="),
            )
        };
        assert_eq!(parse(&h("0.0.0.0:7490")).unwrap().health_listen.unwrap().port(), 7490);
        assert_eq!(key_of(&h("127.0.0.1:7101")), "health_listen");
        assert_eq!(key_of(&h("nowhere")), "health_listen");
        let t = GOOD.replace(
            "[[members]]\nid = 1",
            "[tls]\nca_file = \"/nonexistent/ca.crt\"\ncert_file = \"c\"\nkey_file = \"k\"\n\n[[members]]\nid = 1",
        );
        assert_eq!(key_of(&t), "tls.ca_file");
        let tok = GOOD.replace(
            "[[members]]\nid = 1",
            "[[admin_tokens]]\nname = \"x\"\nscope = \"root\"\ntoken_file = \"t\"\n\n[[members]]\nid = 1",
        );
        assert!(
            parse(&tok).unwrap_err().to_string().contains("root"),
            "an unknown scope is named"
        );
    }

    #[test]
    fn a_release_budget_shorter_than_the_releases_is_rejected_naming_the_rule() {
        let text = GOOD.replace(
            "[[members]]\nid = 1",
            "[timers]\nrelease_budget_ms = 1000\n\n[[members]]\nid = 1",
        );
        let e = parse(&format!("{text}{APP}")).unwrap_err();
        assert_eq!(e.key, "timers.release_budget_ms");
        assert!(
            e.message
                .contains("sum of release_timeout_ms (800 ms) + RELEASE_ESCALATION_MS"),
            "{e}"
        );
    }

    #[test]
    fn bad_resources_name_their_key() {
        let witness = GOOD.replace("node_id = 1", "node_id = 3");
        assert_eq!(key_of(&format!("{witness}{APP}")), "resources");
        assert_eq!(key_of(&format!("{GOOD}{APP}{APP}")), "resources[1].name");
        assert_eq!(
            key_of(&format!("{GOOD}{}", APP.replace("systemctl stop app", " "))),
            "resources[0].release"
        );
        assert_eq!(
            key_of(&format!(
                "{GOOD}{}",
                APP.replace("release_timeout_ms = 800", "release_timeout_ms = 0")
            )),
            "resources[0].release_timeout_ms"
        );
        let unknown = APP.replace("type = \"script\"", "type = \"floppy\"");
        assert!(parse(&format!("{GOOD}{unknown}"))
            .unwrap_err()
            .message
            .contains("unknown variant `floppy`"));
    }

    const VIP: &str =
        "\n[[resources]]\ntype = \"vip\"\nname = \"front\"\naddress = \"10.77.0.100/24\"\ninterface = \"eth0\"\n";

    #[test]
    fn vips_load_apart_from_the_other_resources() {
        let c = parse(&format!("{GOOD}{VIP}{APP}")).unwrap();
        assert_eq!(
            c.vips,
            vec![VipConfig {
                name: "front".into(),
                address: "10.77.0.100".parse().unwrap(),
                prefix: 24,
                interface: "eth0".into(),
            }]
        );
        assert_eq!(c.resources.len(), 1);
        let v6 = VIP.replace("10.77.0.100/24", "fd77::100/64");
        assert_eq!(parse(&format!("{GOOD}{v6}")).unwrap().vips[0].prefix, 64);
    }

    #[test]
    fn bad_vips_name_their_key_and_the_fix() {
        let with = |from: &str, to: &str| format!("{GOOD}{}", VIP.replace(from, to));
        for bad in [
            "10.77.0.100",
            "10.77.0.100/33",
            "10.77.0.100/0",
            "fast/24",
            "127.0.0.2/8",
            "224.0.0.5/24",
        ] {
            let e = parse(&with("10.77.0.100/24", bad)).unwrap_err();
            assert_eq!(e.key, "resources[0].address", "{bad}: {e}");
        }
        assert!(parse(&with("10.77.0.100/24", "10.77.0.100"))
            .unwrap_err()
            .message
            .contains("ADDRESS/PREFIX"));
        let long = "a".repeat(INTERFACE_NAME_MAX_BYTES + 1);
        for bad in ["", "eth 0", "../eth0", long.as_str()] {
            assert_eq!(
                key_of(&with("interface = \"eth0\"", &format!("interface = {bad:?}"))),
                "resources[0].interface",
                "{bad:?}"
            );
        }
        // The VIP is the identity: it may not follow a script.
        let e = parse(&format!("{GOOD}{APP}{VIP}")).unwrap_err();
        assert_eq!(e.key, "resources[1].type");
        assert!(e.message.contains("must come before every other resource"), "{e}");
        let twice = VIP.replace("front", "again");
        assert_eq!(key_of(&format!("{GOOD}{VIP}{twice}")), "resources[1].address");
        let witness = GOOD.replace("node_id = 1", "node_id = 3");
        assert_eq!(key_of(&format!("{witness}{VIP}")), "resources");
        let many: String = (0..=VIPS_MAX)
            .map(|i| {
                VIP.replace("front", &format!("v{i}"))
                    .replace(".100/", &format!(".{}/", 100 + i))
            })
            .collect();
        let e = parse(&format!("{GOOD}{many}")).unwrap_err();
        assert_eq!(e.key, format!("resources[{VIPS_MAX}].type"));
        assert!(e.message.contains("VIPS_MAX"), "{e}");
    }

    #[test]
    fn a_script_check_loads_with_defaults_and_bad_ones_name_their_key() {
        let with_check = APP.replace(
            "release_timeout_ms = 800",
            "release_timeout_ms = 800\ncheck = \"pidof app\"",
        );
        let c = parse(&format!("{GOOD}{with_check}")).unwrap();
        assert_eq!(
            c.resources[0].check,
            Some(Check {
                command: "pidof app".into(),
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(5),
            })
        );
        assert!(parse(&format!("{GOOD}{APP}")).unwrap().resources[0].check.is_none());
        let bad = |extra: &str| {
            key_of(&format!(
                "{GOOD}{}",
                APP.replace(
                    "release_timeout_ms = 800",
                    &format!("release_timeout_ms = 800\n{extra}")
                )
            ))
        };
        assert_eq!(bad("check = \" \""), "resources[0].check");
        assert_eq!(
            bad("check = \"true\"\ncheck_interval_ms = 99"),
            "resources[0].check_interval_ms"
        );
        assert_eq!(
            bad("check = \"true\"\ncheck_timeout_ms = 0"),
            "resources[0].check_timeout_ms"
        );
        let long = "x".repeat(RESOURCE_COMMAND_MAX_BYTES + 1);
        assert_eq!(bad(&format!("check = \"{long}\"")), "resources[0].check");
    }

    const UNIT: &str = "\n[[resources]]\ntype = \"systemd\"\nname = \"web\"\nunit = \"nginx.service\"\n";

    #[test]
    fn a_systemd_unit_becomes_start_stop_and_is_active() {
        let c = parse(&format!("{GOOD}{UNIT}")).unwrap();
        let r = &c.resources[0];
        assert_eq!(r.acquire, "systemctl start 'nginx.service'");
        assert_eq!(r.release, "systemctl stop 'nginx.service'");
        let check = r.check.as_ref().unwrap();
        assert_eq!(check.command, "systemctl is-active --quiet 'nginx.service'");
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(r.release_timeout, Duration::from_secs(5));
        let long = format!("{}.service", "a".repeat(UNIT_NAME_MAX_BYTES));
        for bad in [
            "",
            "nginx",
            "it's.service",
            "a b.service",
            ".service",
            "x.device",
            long.as_str(),
        ] {
            let e = parse(&format!("{GOOD}{}", UNIT.replace("nginx.service", bad))).unwrap_err();
            assert_eq!(e.key, "resources[0].unit", "{bad:?}: {e}");
        }
        assert_eq!(
            key_of(&format!(
                "{GOOD}{}",
                UNIT.replace("unit =", "release_timeout_ms = 0\nunit =")
            )),
            "resources[0].release_timeout_ms"
        );
    }

    #[test]
    fn other_broken_settings_name_their_key() {
        assert_eq!(key_of(&GOOD.replace("node_id = 1", "node_id = 9")), "node_id");
        assert_eq!(
            key_of(&GOOD.replace("\"0123456789abcdef0123\"", "\"short\"")),
            "cluster_secret"
        );
        assert_eq!(
            key_of(&GOOD.replace("cluster_secret = \"0123456789abcdef0123\"\n", "")),
            "cluster_secret"
        );
        assert_eq!(
            key_of(&GOOD.replace("peer_listen = \"127.0.0.1:7001\"", "peer_listen = \"nowhere\"")),
            "peer_listen"
        );
        assert_eq!(
            key_of(&GOOD.replace("127.0.0.1:7002\"\nadmin", "127.0.0.1:7001\"\nadmin")),
            "members[1].peer_addr"
        );
        assert_eq!(key_of(&GOOD.replace("name = \"b\"", "name = \"a\"")), "members[1].name");
        assert_eq!(key_of(&GOOD.replace("node_id = 1\n", "")), "node_id");
        let factor = GOOD.replace(
            "[[members]]\nid = 1",
            "[timers]\nwitness_election_factor = 1.5\n\n[[members]]\nid = 1",
        );
        assert_eq!(key_of(&factor), "timers.witness_election_factor");
        let snap = GOOD.replace(
            "[[members]]\nid = 1",
            "[log]\nsnapshot_every_entries = 0\n\n[[members]]\nid = 1",
        );
        assert_eq!(key_of(&snap), "log.snapshot_every_entries");
        let spread = GOOD.replace(
            "[[members]]\nid = 1",
            "[timers]\nelection_timeout_max_ms = 400\n\n[[members]]\nid = 1",
        );
        assert_eq!(key_of(&spread), "timers.election_timeout_max_ms");
    }
}
