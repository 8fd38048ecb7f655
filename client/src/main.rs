//! `tandemctl`: look at and steer a Tandem cluster through the nodes' admin APIs.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;
use serde::Serialize;
use tandem_client::api::EventInfo;
use tandem_client::api::FailoverRequest;
use tandem_client::api::FilesInfo;
use tandem_client::api::MemberInfo;
use tandem_client::api::NodeStatus;
use tandem_client::api::PolicyUpdate;
use tandem_client::api::RecoverRequest;
use tandem_client::api::RejoinRequest;
use tandem_client::api::ResyncProgress;
use tandem_client::api::SwitchoverRequest;
use tandem_client::api::WriteTestRecord;
use tandem_client::Client;
use tandem_client::ClientError;
use tandem_client::EventsQuery;

/// `println!` and `print!` that end the program quietly when stdout is a closed pipe
/// (`tandemctl status | head -3`, `tandemctl events --csv | head`) instead of panicking.
macro_rules! println {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        crate::closed_pipe_ends(writeln!(std::io::stdout(), $($arg)*));
    }};
}

macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        crate::closed_pipe_ends(write!(std::io::stdout(), $($arg)*).and_then(|()| std::io::stdout().flush()));
    }};
}

fn closed_pipe_ends(written: std::io::Result<()>) {
    if written.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
        std::process::exit(0);
    }
}

#[derive(Subcommand)]
enum DbAction {
    /// Replace --node's databases with a consistent copy of the other data node's, then replay
    /// what committed after it. Without --replace-local-data it only says what it would do
    /// (exit code 3).
    Seed {
        #[arg(long)]
        replace_local_data: bool,
    },
}

#[derive(Parser)]
#[command(name = "tandemctl", version, about = "Control a Tandem cluster")]
struct Cli {
    /// Admin addresses (host:port) to try, comma-separated; the first that answers is used.
    #[arg(
        long,
        env = "TANDEM_NODES",
        value_delimiter = ',',
        default_value = "127.0.0.1:7480",
        global = true
    )]
    nodes: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 2000, global = true)]
    timeout_ms: u64,
    /// File holding the admin API token (nodes with `[[admin_tokens]]` need one).
    #[arg(long, env = "TANDEM_TOKEN_FILE", global = true)]
    token_file: Option<std::path::PathBuf>,
    /// CA certificate (PEM) of nodes serving their admin API over TLS; addresses without a
    /// scheme are then reached over HTTPS.
    #[arg(long, env = "TANDEM_CA_FILE", global = true)]
    ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the config file for member NODE as the running cluster knows it (its members,
    /// addresses, and the usual paths of the secret, certificates and tokens made by
    /// deploy/install.sh): the start of a config for a node that replaces it on a new machine.
    Snippet {
        /// Name of the member.
        #[arg(long)]
        node: String,
    },
}

#[derive(Subcommand)]
enum Cmd {
    /// Show every member: role, term, leader, log, applied, lease, reachability.
    Status,
    /// Planned switchover: the active releases the service and hands it to a synced standby.
    Switchover {
        /// Data node to hand the service to (default: the other data node).
        #[arg(long)]
        to: Option<String>,
    },
    /// Forced failover: hand the service to NODE although it may not be synced. First shows
    /// exactly what NODE lacks and changes nothing; add --accept-data-loss to go ahead.
    /// Exits with 3 when it only reported.
    Failover {
        /// Data node to hand the service to.
        #[arg(long)]
        to: String,
        /// Required: say that this is meant to skip the sync check.
        #[arg(long)]
        force: bool,
        /// Go ahead although NODE lacks what the report lists.
        #[arg(long)]
        accept_data_loss: bool,
    },
    /// When both other members are gone for good: make NODE the only voter so that it can run
    /// the service alone. NODE restarts in place. Bring the others back with `rejoin`.
    Recover {
        /// Required: this overrides the quorum rule that prevents split brain.
        #[arg(long)]
        force_single_node: bool,
        /// The data node to recover (it must be among --nodes).
        #[arg(long)]
        node: String,
    },
    /// After a forced recovery: make NODE, started with an empty data dir, a voter again.
    Rejoin { node: String },
    /// Show a node's resources (VIPs, scripts), the script running now and the latest runs;
    /// --cancel kills the running script (a hung acquire, check or release).
    Resources {
        /// The node to ask (default: the active).
        #[arg(long)]
        node: Option<String>,
        /// Cancel the script running now on that node.
        #[arg(long)]
        cancel: bool,
        /// How many of the latest runs to show.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
    /// Show a node's file mirror (default: the first of --nodes that answers): synced or what
    /// is pending, its folders, counters, a resync's progress and quarantined files.
    Files {
        /// The node to ask, through the first of --nodes that answers.
        #[arg(long)]
        node: Option<String>,
        /// Redraw the resync progress until the node is synced, then print the summary.
        #[arg(long)]
        watch: bool,
    },
    /// Show a data node's database replication (positions, lag, synced or diverged, a seeding's
    /// progress), or seed its database from the other data node's.
    Db {
        /// The node to ask (default: the first of --nodes that is a data node and answers).
        #[arg(long)]
        node: Option<String>,
        #[command(subcommand)]
        action: Option<DbAction>,
    },
    /// Config help for new machines.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Turn maintenance mode on or off (pauses automatic actions; checks keep reporting).
    Maintenance {
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Show the replicated switch policies, or change those given.
    Policy {
        #[arg(long, value_parser = ["on", "off"])]
        auto_switch: Option<String>,
        #[arg(long, value_parser = ["on", "off"])]
        only_switch_when_synced: Option<String>,
        #[arg(long, value_parser = ["on", "off"])]
        auto_failback: Option<String>,
        #[arg(long)]
        min_active_secs: Option<u64>,
        #[arg(long)]
        max_auto_switches: Option<u32>,
        #[arg(long)]
        switch_window_secs: Option<u64>,
        /// Effective window for automatic switches, e.g. "mon-fri 08:00-18:00" (repeat for
        /// several; replaces the current ones). Outside every window a failure only warns.
        #[arg(long = "window", value_name = "DAYS HH:MM-HH:MM")]
        windows: Vec<String>,
        /// Remove every effective window (automatic switches at any time).
        #[arg(long, conflicts_with = "windows")]
        no_windows: bool,
        /// The windows' times of day are local to this offset from UTC, in minutes.
        #[arg(long, allow_hyphen_values = true)]
        window_utc_offset_min: Option<i16>,
    },
    /// Show the replicated audit trail of operator actions.
    Audit,
    /// Show the events of every member (role changes, monitors, policies, resource and
    /// operator actions), oldest first; or follow them live.
    Events {
        /// Only events of the last N minutes.
        #[arg(long)]
        since_mins: Option<u64>,
        /// Only these kinds (comma-separated): role, monitor, policy, resource, operator,
        /// failover, warning.
        #[arg(long)]
        kind: Option<String>,
        /// Only events of this node.
        #[arg(long)]
        node: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<usize>,
        /// Print CSV (for a spreadsheet or an incident report).
        #[arg(long, conflicts_with = "follow")]
        csv: bool,
        /// Keep printing events of every member as they happen (Ctrl-C to stop).
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Write test records through the leader and wait until each is committed and applied.
    WriteTestRecord {
        /// Id of the (first) record; defaults to the current time in microseconds.
        #[arg(long)]
        id: Option<u64>,
        /// Payload text.
        #[arg(long, default_value = "")]
        payload: String,
        /// How many records to write (ids id, id+1, ...).
        #[arg(long, default_value_t = 1)]
        count: u64,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let timeout = Duration::from_millis(cli.timeout_ms);
    if let Err(e) = set_access(&cli) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match &cli.command {
        Cmd::Status => status(&cli, timeout).await,
        Cmd::Switchover { to } => switchover(&cli, timeout, to.clone()).await,
        Cmd::Recover {
            force_single_node,
            node,
        } => recover(&cli, timeout, node, *force_single_node).await,
        Cmd::Rejoin { node } => rejoin(&cli, timeout, node).await,
        Cmd::Resources { node, cancel, last } => resources(&cli, timeout, node.as_deref(), *cancel, *last).await,
        Cmd::Files { node, watch } => files(&cli, timeout, node.as_deref(), *watch).await,
        Cmd::Db { node, action } => match db(&cli, timeout, node.as_deref(), action.as_ref()).await {
            Ok(false) => return ExitCode::from(REPORT_ONLY_EXIT),
            other => other.map(drop),
        },
        Cmd::Failover {
            to,
            force,
            accept_data_loss,
        } => match failover(&cli, timeout, to, *force, *accept_data_loss).await {
            Ok(false) => return ExitCode::from(REPORT_ONLY_EXIT),
            other => other.map(drop),
        },
        Cmd::Config {
            action: ConfigAction::Snippet { node },
        } => config_snippet(&cli, timeout, node).await,
        Cmd::Maintenance { state } => {
            let update = PolicyUpdate {
                maintenance: Some(state == "on"),
                ..Default::default()
            };
            set_policies(&cli, timeout, update).await
        }
        Cmd::Policy {
            auto_switch,
            only_switch_when_synced,
            auto_failback,
            min_active_secs,
            max_auto_switches,
            switch_window_secs,
            windows,
            no_windows,
            window_utc_offset_min,
        } => {
            let on = |v: &Option<String>| v.as_deref().map(|v| v == "on");
            let update = PolicyUpdate {
                auto_switch: on(auto_switch),
                only_switch_when_synced: on(only_switch_when_synced),
                maintenance: None,
                auto_failback: on(auto_failback),
                min_active_secs: *min_active_secs,
                max_auto_switches: *max_auto_switches,
                switch_window_secs: *switch_window_secs,
                windows: if *no_windows {
                    Some(Vec::new())
                } else {
                    Some(windows.clone()).filter(|w| !w.is_empty())
                },
                window_utc_offset_min: *window_utc_offset_min,
            };
            set_policies(&cli, timeout, update).await
        }
        Cmd::Audit => audit(&cli, timeout).await,
        Cmd::Events {
            since_mins,
            kind,
            node,
            limit,
            csv,
            follow,
        } => {
            let query = EventsQuery {
                since_ms: since_mins.map(|m| unix_ms().saturating_sub(m * 60_000)),
                kind: kind.clone(),
                node: node.clone(),
                limit: *limit,
                ..Default::default()
            };
            events(&cli, timeout, query, *csv, *follow).await
        }
        Cmd::WriteTestRecord { id, payload, count } => write(&cli, timeout, *id, payload, *count).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ask the given addresses in order until one answers.
async fn first_answer(nodes: &[String], timeout: Duration) -> anyhow::Result<NodeStatus> {
    Ok(first_answering(nodes, timeout).await?.1)
}

/// The first of `nodes` that answers: the address as given, and its status.
async fn first_answering(nodes: &[String], timeout: Duration) -> anyhow::Result<(String, NodeStatus)> {
    let mut errors = Vec::new();
    for addr in nodes {
        match Client::new(addr.clone()).with_timeout(timeout).status().await {
            Ok(s) => return Ok((addr.clone(), s)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    anyhow::bail!(
        "no node answered ({}); is the cluster running? Pass --nodes host:port,...",
        errors.join("; ")
    )
}

#[derive(Serialize)]
struct Row {
    id: u64,
    name: String,
    admin_addr: String,
    reachable: bool,
    error: Option<String>,
    status: Option<NodeStatus>,
}

async fn status(cli: &Cli, timeout: Duration) -> anyhow::Result<()> {
    // One node gathers every member's status over the peer port (`/v1/cluster`), so this
    // works from any one machine even with each admin API on loopback.
    let (addr, first) = answering_node(cli, timeout).await?;
    let view = Client::new(addr).with_timeout(timeout * 2).cluster().await?;
    let mut rows = Vec::new();
    for m in first.members {
        let node = view.nodes.iter().find(|n| n.name == m.name);
        let (status, error) = match node {
            Some(n) => (n.status.clone(), n.error.clone()),
            None => (None, Some("not in the cluster view".into())),
        };
        rows.push(Row {
            id: m.id,
            name: m.name,
            admin_addr: m.admin_addr,
            reachable: status.is_some(),
            error,
            status,
        });
    }
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let name_of = |id: Option<u64>| {
        id.map(|id| {
            rows.iter()
                .find(|r| r.id == id)
                .map_or(id.to_string(), |r| r.name.clone())
        })
        .unwrap_or_else(|| "-".into())
    };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut table = vec![[
        "NODE",
        "ID",
        "KIND",
        "ROLE",
        "RAFT",
        "TERM",
        "LEADER",
        "LAST LOG",
        "APPLIED",
        "LEASE LEFT",
        "REACHABLE",
    ]
    .map(String::from)];
    for r in &rows {
        match &r.status {
            Some(s) => table.push([
                r.name.clone(),
                r.id.to_string(),
                s.kind.clone(),
                match s.active_epoch {
                    Some(epoch) => format!("{} (epoch {epoch})", s.role),
                    None => s.role.clone(),
                },
                s.raft_state.clone(),
                s.term.to_string(),
                name_of(s.leader),
                opt(s.last_log_index),
                opt(s.applied_index),
                s.lease_remaining_ms.map_or("-".into(), |ms| format!("{ms} ms")),
                "yes".into(),
            ]),
            None => table.push([
                r.name.clone(),
                r.id.to_string(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "?".into(),
                "no".into(),
            ]),
        }
    }
    print_table(&table);
    let leaders: Vec<&Row> = rows
        .iter()
        .filter(|r| r.status.as_ref().is_some_and(|s| s.raft_state == "leader"))
        .collect();
    match leaders.as_slice() {
        [] if rows.iter().all(|r| r.status.as_ref().is_some_and(|s| !s.initialized)) => {
            println!("\ncluster not initialized: run `tandem init --config <a data node's config>`")
        }
        [] => println!("\nno leader right now (election in progress or no quorum)"),
        [l] => println!(
            "\nleader: {} (term {})",
            l.name,
            l.status.as_ref().map_or(0, |s| s.term)
        ),
        many => {
            let names: Vec<&str> = many.iter().map(|r| r.name.as_str()).collect();
            println!(
                "\nnodes reporting leader: {} (an isolated old leader reports so until it hears a newer term)",
                names.join(", ")
            );
        }
    }
    for r in rows.iter().filter(|r| !r.reachable) {
        println!(
            "{} ({}) unreachable: {}",
            r.name,
            r.admin_addr,
            r.error.as_deref().unwrap_or("")
        );
    }
    // The cluster status as the active sees it (it knows the standby's replication), else as
    // the first node that answered.
    let reachable: Vec<&NodeStatus> = rows.iter().filter_map(|r| r.status.as_ref()).collect();
    let viewer = reachable
        .iter()
        .find(|s| s.role == "active")
        .or_else(|| reachable.first());
    if let Some(v) = viewer {
        let c = &v.cluster_status;
        println!("cluster: {} ({}) [as {} sees it]", c.state, c.reason, v.name);
        for w in c.warnings.iter().skip(1) {
            println!("  also: {w}");
        }
    }
    for s in &reachable {
        let links: Vec<String> = s
            .links
            .iter()
            .map(|l| match l.rtt_ms {
                Some(rtt) if l.state == "up" => format!("{} up ({rtt} ms)", l.to),
                _ => format!("{} {}", l.to, l.state),
            })
            .collect();
        println!("links of {}: {}", s.name, links.join(", "));
    }
    let monitors: Vec<[String; 7]> = reachable
        .iter()
        .flat_map(|s| {
            s.monitors.iter().map(|m| {
                [
                    s.name.clone(),
                    m.name.clone(),
                    m.kind.clone(),
                    if m.log_only {
                        format!("{} (log only)", m.scope)
                    } else {
                        m.scope.clone()
                    },
                    m.state.clone(),
                    format!("{}/{}", m.consecutive_failures, m.max_failures),
                    m.last_result.clone().unwrap_or_else(|| "-".into()),
                ]
            })
        })
        .collect();
    if !monitors.is_empty() {
        println!();
        let mut table = vec![["NODE", "MONITOR", "TYPE", "SCOPE", "STATE", "FAILS", "LAST RESULT"].map(String::from)];
        table.extend(monitors);
        print_table(&table);
    }
    Ok(())
}

fn print_table<const N: usize>(table: &[[String; N]]) {
    for line in table_lines(table) {
        println!("{line}");
    }
}

/// The lines of a table, each column as wide as its widest cell.
fn table_lines<const N: usize>(table: &[[String; N]]) -> Vec<String> {
    let widths: Vec<usize> = (0..N)
        .map(|c| table.iter().map(|row| row[c].chars().count()).max().unwrap_or(0))
        .collect();
    table
        .iter()
        .map(|row| {
            let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            line.join("  ").trim_end().to_string()
        })
        .collect()
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn print_event(e: &EventInfo, json: bool) {
    if json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    } else {
        println!(
            "{}  {:<8} epoch {:<3} {:<9} {}",
            format_ms(e.at_ms),
            e.node,
            e.epoch,
            e.kind,
            e.detail
        );
    }
}

/// `HH:MM:SS.mmm` UTC of a Unix time in milliseconds (the CSV export carries the full date).
fn format_ms(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

async fn events(cli: &Cli, timeout: Duration, query: EventsQuery, csv: bool, follow: bool) -> anyhow::Result<()> {
    let (me, first) = answering_node(cli, timeout).await?;
    let client = Client::new(me).with_timeout(timeout);
    if csv {
        print!("{}", client.events_csv(&query).await?);
        return Ok(());
    }
    if !follow {
        let page = client.events(&query).await?;
        for e in &page.events {
            print_event(e, cli.json);
        }
        for u in &page.unreachable {
            eprintln!("warning: events of {u} are missing");
        }
        return Ok(());
    }
    // Follow every member's live stream; a stream that ends is opened again.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<EventInfo>();
    let members: Vec<MemberInfo> = first
        .members
        .into_iter()
        .filter(|m| query.node.as_ref().is_none_or(|n| *n == m.name))
        .collect();
    for m in members {
        let (tx, kind) = (tx.clone(), query.kind.clone());
        tokio::spawn(async move {
            let client = Client::new(m.admin_addr.clone()).with_timeout(Duration::from_secs(2));
            loop {
                let sent = tx.clone();
                let result = client.follow_events(kind.as_deref(), move |e| drop(sent.send(e))).await;
                if let Err(e) = result {
                    eprintln!("warning: {} ({}): {e}; trying again", m.name, m.admin_addr);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    drop(tx);
    while let Some(e) = rx.recv().await {
        print_event(&e, cli.json);
    }
    Ok(())
}

/// How long a write keeps looking for a leader.
const WRITE_LEADER_WAIT: Duration = Duration::from_secs(10);

async fn write(cli: &Cli, timeout: Duration, id: Option<u64>, payload: &str, count: u64) -> anyhow::Result<()> {
    let first_id = id.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    });
    let mut target = first_answer(&cli.nodes, timeout)
        .await?
        .members
        .iter()
        .find(|m| m.kind == "data")
        .map(|m| m.admin_addr.clone())
        .unwrap_or_else(|| cli.nodes[0].clone());
    let candidates: Vec<String> = cli.nodes.clone();
    for n in 0..count {
        let req = WriteTestRecord {
            id: first_id + n,
            payload: payload.to_string(),
            epoch: None,
        };
        let deadline = tokio::time::Instant::now() + WRITE_LEADER_WAIT;
        let mut next_candidate = 0;
        let result = loop {
            match Client::new(target.clone())
                .with_timeout(timeout)
                .write_test_record(&req)
                .await
            {
                Ok(r) => break r,
                Err(ClientError::Api { error, .. }) if error.code == "not_leader" && error.leader.is_some() => {
                    target = error.leader.expect("checked").admin_addr;
                }
                Err(e @ ClientError::Api { .. }) if !matches!(e.code(), Some("not_leader" | "witness_leader")) => {
                    return Err(e.into())
                }
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        anyhow::bail!("no leader accepted record {} within {WRITE_LEADER_WAIT:?}: {e}", req.id);
                    }
                    target = candidates[next_candidate % candidates.len()].clone();
                    next_candidate += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        if cli.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            println!(
                "record {} committed at index {} by node {}",
                result.id, result.index, result.leader
            );
        }
    }
    Ok(())
}

/// How long tandemctl waits for a switchover to finish.
const SWITCHOVER_WAIT: Duration = Duration::from_secs(20);

/// The node that holds the service, resources being restarted or not (its `service`, not its
/// `role`, which says `switching` meanwhile).
fn active_name(view: &tandem_client::api::ClusterView) -> Option<String> {
    view.nodes
        .iter()
        .find(|n| n.status.as_ref().is_some_and(|s| s.service == "active"))
        .map(|n| n.name.clone())
}

/// A node to send an action for the active to (the answering one: it passes the request on
/// to the active over the peer port), once some node is active.
async fn find_active(cli: &Cli, timeout: Duration, what: &str) -> anyhow::Result<String> {
    let (addr, _) = first_answering(&cli.nodes, timeout).await?;
    let view = Client::new(addr.clone()).with_timeout(timeout * 2).cluster().await?;
    if active_name(&view).is_none() {
        anyhow::bail!("no node is active right now, so there is nothing to {what} (see tandemctl status)")
    }
    Ok(addr)
}

async fn recover(cli: &Cli, timeout: Duration, node: &str, force_single_node: bool) -> anyhow::Result<()> {
    if !force_single_node {
        anyhow::bail!(
            "recovery makes {node} the only voter and overrides the rule that prevents split brain; if the other two members are gone for good, run: tandemctl recover --force-single-node --node {node}"
        );
    }
    let mut found = None;
    for addr in &cli.nodes {
        if let Ok(s) = Client::new(addr.clone()).with_timeout(timeout).status().await {
            if s.name == node {
                found = Some(addr.clone());
                break;
            }
        }
    }
    let Some(addr) = found else {
        anyhow::bail!("{node} does not answer at any of --nodes ({})", cli.nodes.join(","));
    };
    eprintln!("WARNING: forcing {node} to be the only voter of the cluster.");
    eprintln!("  If the other data node and the witness are still running somewhere, they can elect");
    eprintln!("  their own leader and run the service too (split brain). Records they committed that");
    eprintln!("  {node} never received are lost. Before starting either again, move its data_dir aside;");
    eprintln!("  then bring it back with: tandemctl rejoin <name>");
    let r = Client::new(addr)
        .with_timeout(timeout)
        .recover(&RecoverRequest { force_single_node })
        .await?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} is restarting as a one-voter cluster; it activates once it leads (tandemctl status)",
            r.node
        );
    }
    Ok(())
}

async fn resources(cli: &Cli, timeout: Duration, node: Option<&str>, cancel: bool, last: usize) -> anyhow::Result<()> {
    let (addr, first) = first_answering(&cli.nodes, timeout).await?;
    let name = match node {
        Some(n) => n.to_string(),
        None => active_name(&Client::new(addr.clone()).with_timeout(timeout * 2).cluster().await?)
            .ok_or_else(|| anyhow::anyhow!("no node is active right now; name one with --node"))?,
    };
    let target = member(&first, &name)?;
    // Through the answering node, which passes the request on to the member named over the
    // peer port: admin APIs may listen on loopback only.
    let client = Client::new(addr).with_timeout(timeout).on_node(&target.name);
    if cancel {
        let r = client.cancel_script().await?;
        if cli.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            match r.cancelled {
                Some(c) => println!(
                    "cancelled {} of {} on {} after {} ms (its process group was killed)",
                    c.action, c.resource, target.name, c.running_ms
                ),
                None => println!("no script is running on {}", target.name),
            }
        }
        return Ok(());
    }
    let r = client.resources().await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("resources of {}:", r.node);
    for v in &r.vips {
        println!(
            "  vip     {:12} {} on {}{}",
            v.name,
            v.address,
            v.interface,
            if v.held { "  (held)" } else { "" }
        );
    }
    for sc in &r.scripts {
        println!(
            "  script  {:12} {}",
            sc.name,
            sc.check
                .as_deref()
                .map_or("no check".to_string(), |c| format!("check: {c}"))
        );
    }
    match &r.running {
        Some(run) => println!("running: {} of {} for {} ms", run.action, run.resource, run.running_ms),
        None => println!("running: nothing"),
    }
    let shown = r.recent.len().saturating_sub(last);
    if !r.recent[shown..].is_empty() {
        println!("latest runs:");
    }
    for run in &r.recent[shown..] {
        println!(
            "  {}  {:8} {:12} epoch {:<4} {:>6} ms  {}",
            utc(run.started_at_ms),
            run.action,
            run.resource,
            run.epoch,
            run.duration_ms,
            run.outcome
        );
        for line in run.stdout.lines().chain(run.stderr.lines()).take(5) {
            println!("      | {line}");
        }
    }
    Ok(())
}

async fn rejoin(cli: &Cli, timeout: Duration, node: &str) -> anyhow::Result<()> {
    let first = first_answer(&cli.nodes, timeout).await?;
    let leader = first
        .leader
        .and_then(|id| first.members.iter().find(|m| m.id == id))
        .ok_or_else(|| anyhow::anyhow!("no leader known to {}; is the recovered node up?", first.name))?;
    let r = Client::new(leader.admin_addr.clone())
        .with_timeout(SWITCHOVER_WAIT)
        .rejoin(&RejoinRequest { node: node.to_string() })
        .await?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("{} is a voter again; voters: {}", r.node, r.voters.join(", "));
    }
    Ok(())
}

/// Exit code of `failover` when it only reported and changed nothing.
const REPORT_ONLY_EXIT: u8 = 3;

/// Returns whether the failover was carried out.
async fn failover(cli: &Cli, timeout: Duration, to: &str, force: bool, accept_data_loss: bool) -> anyhow::Result<bool> {
    if !force {
        anyhow::bail!(
            "a forced failover skips the check that {to} is synced and needs --force; for a planned handover use `tandemctl switchover --to {to}`"
        );
    }
    let via = find_active(cli, timeout, "fail over").await?;
    let client = Client::new(via).with_timeout(SWITCHOVER_WAIT);
    let r = client
        .failover(&FailoverRequest {
            to: Some(to.to_string()),
            force,
            accept_data_loss,
        })
        .await?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(r.executed);
    }
    let index = |i: Option<u64>| i.map_or("none".to_string(), |i| i.to_string());
    println!("forced failover {} -> {}", r.from, r.to);
    println!(
        "  {} lacks {} committed records ({} bytes): it holds up to index {}, committed is {}{}",
        r.to,
        r.missing_records,
        r.missing_bytes,
        index(r.target_matched_index),
        index(r.committed_index),
        if r.needs_snapshot { "; it needs a snapshot" } else { "" }
    );
    println!(
        "  last acknowledged the active: {}",
        r.target_last_ack_ms
            .map_or("never".to_string(), |ms| format!("{ms} ms ago"))
    );
    println!("  files it lacks: {}", r.files);
    if r.executed {
        println!(
            "done: {} released epoch {}; {}",
            r.from,
            r.released_epoch.unwrap_or(0),
            r.outcome
        );
    } else {
        println!(
            "nothing changed. The records above must reach {} before it can lead; if they cannot, the hand-off fails and {} takes the service back.",
            r.to, r.from
        );
        println!(
            "To go ahead: tandemctl failover --to {} --force --accept-data-loss",
            r.to
        );
    }
    Ok(r.executed)
}

async fn switchover(cli: &Cli, timeout: Duration, to: Option<String>) -> anyhow::Result<()> {
    let via = find_active(cli, timeout, "switch over").await?;
    let client = Client::new(via).with_timeout(SWITCHOVER_WAIT);
    let r = client.switchover(&SwitchoverRequest { to }).await?;
    if cli.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "switchover done: {} released epoch {}; {} leads now and takes the service",
            r.from, r.released_epoch, r.to
        );
    }
    Ok(())
}

/// Change policies through the leader (an empty update just shows them).
async fn set_policies(cli: &Cli, timeout: Duration, update: PolicyUpdate) -> anyhow::Result<()> {
    let (addr, first) = first_answering(&cli.nodes, timeout).await?;
    let policies = if update == PolicyUpdate::default() {
        first.policies
    } else {
        // The answering node passes the change on to the leader.
        Client::new(addr)
            .with_timeout(timeout * 2)
            .set_policies(&update)
            .await?
    };
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&policies)?);
        return Ok(());
    }
    let onoff = |b: bool| if b { "on" } else { "off" };
    println!("maintenance              {}", onoff(policies.maintenance));
    println!("auto-switch              {}", onoff(policies.auto_switch));
    println!("only-switch-when-synced  {}", onoff(policies.only_switch_when_synced));
    println!("auto-failback            {}", onoff(policies.auto_failback));
    println!("min-active-secs          {}", policies.min_active_secs);
    println!(
        "max-auto-switches        {} per {} s",
        policies.max_auto_switches, policies.switch_window_secs
    );
    if policies.windows.is_empty() {
        println!("effective windows        always");
    } else {
        println!(
            "effective windows        {} (UTC{:+03}:{:02})",
            policies.windows.join("; "),
            policies.window_utc_offset_min / 60,
            (policies.window_utc_offset_min % 60).abs()
        );
    }
    Ok(())
}

/// The first of `--nodes` that answers: its admin address as it names itself, and its status.
/// The token and CA every request of this run uses.
fn set_access(cli: &Cli) -> anyhow::Result<()> {
    let token = match &cli.token_file {
        Some(path) => {
            let t = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?;
            let t = t.trim().to_string();
            anyhow::ensure!(!t.is_empty(), "the token file {} is empty", path.display());
            Some(t)
        }
        None => None,
    };
    if let Some(ca) = &cli.ca_file {
        anyhow::ensure!(ca.is_file(), "the CA file {} does not exist", ca.display());
    }
    tandem_client::set_default_access(tandem_client::Access {
        token,
        ca_file: cli.ca_file.clone(),
    });
    Ok(())
}

async fn config_snippet(cli: &Cli, timeout: Duration, node: &str) -> anyhow::Result<()> {
    let first = first_answer(&cli.nodes, timeout).await?;
    print!("{}", snippet(member(&first, node)?, &first.members));
    Ok(())
}

/// A node's config file from the cluster's member list.
fn snippet(me: &tandem_client::api::MemberInfo, members: &[tandem_client::api::MemberInfo]) -> String {
    let mut out = format!(
        "# Config of member {name:?} (id {id}, {kind}), as the running cluster knows it.\n\
         # Copy /etc/tandem/cluster.secret, the CA certificate and the tokens from another node,\n\
         # make this node's certificate and key (deploy/install.sh), then: tandem config check.\n\
         node_id = {id}\n\
         data_dir = \"/var/lib/tandem\"\n\
         peer_listen = \"{peer}\"\n\
         admin_listen = \"127.0.0.1:7480\"\n\
         cluster_secret_file = \"/etc/tandem/cluster.secret\"\n\
         \n\
         [tls]\n\
         ca_file = \"/etc/tandem/tls/ca.crt\"\n\
         cert_file = \"/etc/tandem/tls/node.crt\"\n\
         key_file = \"/etc/tandem/tls/node.key\"\n\
         \n\
         [[admin_tokens]]\n\
         name = \"admin\"\n\
         scope = \"admin\"\n\
         token_file = \"/etc/tandem/tokens/admin.token\"\n\
         \n\
         [[admin_tokens]]\n\
         name = \"read\"\n\
         scope = \"read\"\n\
         token_file = \"/etc/tandem/tokens/read.token\"\n",
        name = me.name,
        id = me.id,
        kind = me.kind,
        peer = listen_addr(&me.peer_addr),
    );
    for m in members {
        out.push_str(&format!(
            "\n[[members]]\nid = {}\nname = \"{}\"\nrole = \"{}\"\npeer_addr = \"{}\"\nadmin_addr = \"{}\"\n",
            m.id, m.name, m.kind, m.peer_addr, m.admin_addr
        ));
    }
    out
}

/// Where a node listens for its peers: every address of the machine, on the port the others
/// reach it at.
fn listen_addr(peer_addr: &str) -> String {
    match peer_addr.rsplit_once(':') {
        Some((host, port)) if host.parse::<std::net::IpAddr>().is_err() => format!("0.0.0.0:{port}"),
        _ => peer_addr.to_string(),
    }
}

/// The first node that answers, at the address it answered on.
/// The member of `status`'s list called `name`, or an error naming the members.
fn member<'a>(status: &'a NodeStatus, name: &str) -> anyhow::Result<&'a MemberInfo> {
    status.members.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
        anyhow::anyhow!("no member is named {name:?}; the members are {}", names.join(", "))
    })
}

async fn answering_node(cli: &Cli, timeout: Duration) -> anyhow::Result<(String, NodeStatus)> {
    first_answering(&cli.nodes, timeout).await
}

async fn audit(cli: &Cli, timeout: Duration) -> anyhow::Result<()> {
    let (addr, _) = answering_node(cli, timeout).await?;
    let entries = Client::new(addr).with_timeout(timeout).audit().await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    for e in entries {
        println!(
            "{:>6}  {}  {:<22}  {:<14}  {}",
            e.seq,
            utc(e.at_ms),
            e.actor,
            e.action,
            e.detail
        );
    }
    Ok(())
}

/// How often `files --watch` asks the node while it redraws the progress line in place.
const FILES_WATCH_REDRAW: Duration = Duration::from_millis(500);
/// How often it asks, printing a line each time, when stdout is not a terminal (or with --json).
const FILES_WATCH_LINE: Duration = Duration::from_secs(1);

async fn files(cli: &Cli, timeout: Duration, node: Option<&str>, watch: bool) -> anyhow::Result<()> {
    let (addr, first) = answering_node(cli, timeout).await?;
    let target = member(&first, node.unwrap_or(&first.name))?;
    let client = Client::new(addr).with_timeout(timeout).on_node(&target.name);
    let info = if watch {
        let in_place = std::io::stdout().is_terminal() && !cli.json;
        let every = if in_place { FILES_WATCH_REDRAW } else { FILES_WATCH_LINE };
        let mut drawn = false;
        loop {
            let info = match files_of(&client, target).await {
                Ok(info) => info,
                Err(e) => {
                    if drawn {
                        // Keep the last progress line; the error goes below it.
                        println!();
                    }
                    return Err(e);
                }
            };
            if info.synced && info.progress.is_none() {
                if drawn {
                    redraw("");
                }
                break info;
            }
            if cli.json {
                println!("{}", serde_json::to_string(&info)?);
            } else if in_place {
                redraw(&watch_line(&info));
                drawn = true;
            } else {
                println!("{}", watch_line(&info));
            }
            tokio::time::sleep(every).await;
        }
    } else {
        files_of(&client, target).await?
    };
    if cli.json {
        if watch {
            println!("{}", serde_json::to_string(&info)?);
        } else {
            println!("{}", serde_json::to_string_pretty(&info)?);
        }
        return Ok(());
    }
    println!("{}", files_report(&info, &target.name));
    Ok(())
}

/// `tandemctl db [seed]`; `Ok(false)` when a seed was only reported.
async fn db(cli: &Cli, timeout: Duration, node: Option<&str>, action: Option<&DbAction>) -> anyhow::Result<bool> {
    let (addr, first) = first_answering(&cli.nodes, timeout).await?;
    let target = match node {
        Some(n) => member(&first, n)?,
        None => first
            .members
            .iter()
            .find(|m| m.kind == "data")
            .ok_or_else(|| anyhow::anyhow!("the cluster lists no data node"))?,
    };
    // Through the answering node, passed on to the member named over the peer port.
    let client = Client::new(addr).with_timeout(timeout).on_node(&target.name);
    if let Some(DbAction::Seed { replace_local_data }) = action {
        let answer = client
            .db_seed(&tandem_client::api::SeedRequest {
                replace_local_data: *replace_local_data,
            })
            .await?;
        if !answer.started {
            println!("{}: {}", target.name, answer.report);
            return Ok(false);
        }
        println!("{}: seeding: {}", target.name, answer.report);
        let in_place = std::io::stdout().is_terminal() && !cli.json;
        loop {
            let info = client.db().await?;
            let Some(seed) = &info.seed else { break };
            if seed.state != "running" {
                if in_place {
                    redraw("");
                }
                match &seed.error {
                    Some(e) => anyhow::bail!("seeding {} failed: {e}", target.name),
                    None => println!(
                        "{}: seeded at {}; {} transactions to replay",
                        target.name,
                        seed.position.as_deref().unwrap_or("-"),
                        info.lag_records
                    ),
                }
                break;
            }
            let line = format!(
                "seeding from {}: {} {} of ~{} at {}/s, eta {}",
                seed.from,
                progress_bar(&seed.progress),
                human_bytes(seed.progress.bytes_done),
                human_bytes(seed.progress.bytes_total),
                human_bytes(seed.progress.rate_bytes_per_sec),
                eta(seed.progress.eta_secs)
            );
            if in_place {
                redraw(&line);
            } else {
                println!("{line}");
            }
            tokio::time::sleep(FILES_WATCH_REDRAW).await;
        }
        return Ok(true);
    }
    let info = client.db().await?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("{}", db_report(&info, &target.name));
    }
    Ok(true)
}

/// The summary of `tandemctl db` for the node named `node`.
fn db_report(info: &tandem_client::api::DbInfo, node: &str) -> String {
    let mut lines = vec![match (&info.diverged, info.synced) {
        (Some(why), _) => format!("{node}: NOT SYNCED, diverged: {why}"),
        (None, true) => format!("{node}: synced"),
        (None, false) => format!(
            "{node}: catching up, {} transactions ({}) behind",
            info.lag_records,
            human_bytes(info.lag_bytes)
        ),
    }];
    lines.push(format!(
        "source {}: committed seq {} at {}; this node's server at {} (seq {})",
        info.source,
        info.committed_seq,
        info.committed_gtid.as_deref().unwrap_or("-"),
        info.server_gtid.as_deref().unwrap_or("-"),
        info.applied_seq
    ));
    lines.push(format!(
        "server {}; {}; captured {}, applied {}{}",
        match info.read_only {
            Some(true) => "read-only",
            Some(false) => "writable",
            None => "not reached yet",
        },
        if info.capturing {
            "capturing (the active)"
        } else {
            "not capturing"
        },
        info.captured_total,
        info.applied_total,
        info.last_applied_ms_ago
            .map_or(String::new(), |ms| format!(", last {ms} ms ago"))
    ));
    if let Some(e) = &info.error {
        lines.push(format!("last error: {e}"));
    }
    if let Some(s) = &info.seed {
        lines.push(format!(
            "last seeding from {}: {}{}",
            s.from,
            s.state,
            s.error.as_ref().map_or(String::new(), |e| format!(": {e}"))
        ));
    }
    lines.join("\n")
}

/// `GET /v1/files` of `target`, with a hint when it is the witness (which mirrors nothing).
async fn files_of(client: &Client, target: &MemberInfo) -> anyhow::Result<FilesInfo> {
    match client.files().await {
        Err(e) if e.code() == Some("no_sync_folders") && target.kind == "witness" => anyhow::bail!(
            "{} is the witness and mirrors no folders; ask a data node: tandemctl files --node DATA_NODE",
            target.name
        ),
        other => Ok(other?),
    }
}

/// Overwrite the current terminal line with `line`.
fn redraw(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = write!(out, "\r{line}\x1b[K").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// The summary of `tandemctl files` for the node named `node`, without a final newline.
fn files_report(info: &FilesInfo, node: &str) -> String {
    let mut lines = vec![sync_line(info)];
    if let Some(reason) = &info.stalled {
        lines.push(format!("stalled: {reason}"));
    }
    lines.push(if info.capturing {
        format!("{node}: capturing (the active, watching its folders)")
    } else {
        format!("{node}: mirroring (applying what the active commits)")
    });
    lines.push(String::new());
    let mut folders = vec![["ID", "ROOT", "ENTRIES", "SIZE", "IGNORE"].map(String::from)];
    for f in &info.folders {
        folders.push([
            f.id.clone(),
            f.root.clone(),
            f.entries.to_string(),
            human_bytes(f.bytes),
            if f.ignore.is_empty() {
                "-".into()
            } else {
                f.ignore.join(",")
            },
        ]);
    }
    lines.extend(table_lines(&folders));
    let c = &info.counters;
    lines.push(String::new());
    lines.push(format!(
        "counters: proposed {}, applied {}, pushed {}/{}, fetched {}/{} (raw/wire)",
        c.proposed,
        c.applied,
        human_bytes(c.pushed_bytes),
        human_bytes(c.pushed_wire_bytes),
        human_bytes(c.fetched_bytes),
        human_bytes(c.fetched_wire_bytes)
    ));
    lines.push(format!(
        "          inline {}, rescans {}",
        human_bytes(c.inline_bytes),
        c.rescans
    ));
    if let Some(p) = &info.progress {
        lines.push(String::new());
        lines.push(progress_line(p));
    }
    if !info.quarantined.is_empty() {
        lines.push(String::new());
        lines.push("QUARANTINED:".into());
        let mut table = vec![["FOLDER", "PATH", "MOVED TO", "EPOCH", "WHEN"].map(String::from)];
        for q in &info.quarantined {
            table.push([
                q.folder.clone(),
                q.path.clone(),
                q.moved_to.clone(),
                q.epoch.to_string(),
                utc(q.at_ms),
            ]);
        }
        lines.extend(table_lines(&table));
    }
    lines.join("\n")
}

/// `files: synced` or `files: NOT synced (N pending, SIZE)`.
fn sync_line(info: &FilesInfo) -> String {
    if info.synced {
        "files: synced".into()
    } else {
        format!(
            "files: NOT synced ({} pending, {})",
            info.pending_files,
            human_bytes(info.pending_bytes)
        )
    }
}

/// What `files --watch` shows while the node is not synced: the progress of a resync, else
/// what is pending; and why applying stopped, if it did.
fn watch_line(info: &FilesInfo) -> String {
    let line = info.progress.as_ref().map_or_else(|| sync_line(info), progress_line);
    match &info.stalled {
        Some(reason) => format!("{line}; stalled: {reason}"),
        None => line,
    }
}

/// `resync: [####------] 45% 1234/5000 files, 1.1 GiB/2.5 GiB, 85.0 MiB/s, ETA 0:42`.
fn progress_line(p: &ResyncProgress) -> String {
    format!(
        "resync: {} {}/{} files, {}/{}, {}/s, ETA {}",
        progress_bar(p),
        p.files_done,
        p.files_total,
        human_bytes(p.bytes_done),
        human_bytes(p.bytes_total),
        human_bytes(p.rate_bytes_per_sec),
        eta(p.eta_secs)
    )
}

/// Width of the resync progress bar, in characters.
const PROGRESS_BAR_WIDTH: u64 = 30;

/// `[#########---------------------] 30%`: the share of the bytes fetched, rounded down (a
/// resync with nothing to fetch is complete).
fn progress_bar(p: &ResyncProgress) -> String {
    let (done, total) = if p.bytes_total == 0 {
        (1, 1)
    } else {
        (u128::from(p.bytes_done.min(p.bytes_total)), u128::from(p.bytes_total))
    };
    let filled = (done * u128::from(PROGRESS_BAR_WIDTH) / total) as usize;
    format!(
        "[{}{}] {}%",
        "#".repeat(filled),
        "-".repeat(PROGRESS_BAR_WIDTH as usize - filled),
        done * 100 / total
    )
}

/// `h:mm:ss` or `m:ss` to go; `-` while unknown.
fn eta(secs: Option<u64>) -> String {
    match secs {
        None => "-".into(),
        Some(s) if s >= 3600 => format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60),
        Some(s) => format!("{}:{:02}", s / 60, s % 60),
    }
}

/// `512 B`, `1.5 KiB`, `85.0 MiB`, `2.5 GiB` (binary units, one decimal, rounded; GiB is the
/// largest unit).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut unit = 0;
    loop {
        let size = 1u128 << (10 * (unit + 1));
        // Tenths of the unit, rounded half up.
        let tenths = (u128::from(n) * 20 + size) / (2 * size);
        // 1023.96 KiB would show as 1024.0 KiB: that is 1.0 MiB.
        if tenths < 10_240 || unit + 1 == UNITS.len() {
            return format!("{}.{} {}", tenths / 10, tenths % 10, UNITS[unit]);
        }
        unit += 1;
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from milliseconds since the Unix epoch.
fn utc(ms: u64) -> String {
    let iso = tandem_client::utc_time(ms);
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use tandem_client::api::FileCounters;
    use tandem_client::api::FilesInfo;
    use tandem_client::api::FolderInfo;
    use tandem_client::api::QuarantineInfo;
    use tandem_client::api::ResyncProgress;

    use super::eta;
    use super::files_report;
    use super::human_bytes;
    use super::progress_bar;
    use super::progress_line;
    use super::utc;
    use super::watch_line;
    use super::Cli;
    use super::Cmd;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_248_382_418), "2026-11-21 08:06:22 UTC"); // `date -u -d @1795248382`
    }

    fn progress(bytes_done: u64, bytes_total: u64) -> ResyncProgress {
        ResyncProgress {
            files_done: 1234,
            files_total: 5000,
            bytes_done,
            bytes_total,
            rate_bytes_per_sec: 85 * 1024 * 1024,
            eta_secs: Some(42),
        }
    }

    fn files_info() -> FilesInfo {
        FilesInfo {
            synced: false,
            capturing: false,
            pending_files: 3786,
            pending_bytes: 1_503_238_554,
            stalled: None,
            progress: Some(progress(1_207_959_552, 2_684_354_560)),
            quarantined: vec![QuarantineInfo {
                folder: "www".into(),
                path: "uploads/report.pdf".into(),
                moved_to: "/var/lib/tandem/quarantine/7/www/uploads/report.pdf".into(),
                epoch: 7,
                at_ms: 1_795_248_382_418,
            }],
            folders: vec![
                FolderInfo {
                    id: "www".into(),
                    root: "/srv/www".into(),
                    entries: 1214,
                    bytes: 2_684_354_560,
                    ignore: vec!["*.tmp".into(), "cache/".into()],
                },
                FolderInfo {
                    id: "conf".into(),
                    root: "/etc/myapp".into(),
                    entries: 12,
                    bytes: 4096,
                    ignore: Vec::new(),
                },
            ],
            counters: FileCounters {
                proposed: 0,
                applied: 1180,
                pushed_bytes: 0,
                pushed_wire_bytes: 0,
                fetched_bytes: 1_207_959_552,
                fetched_wire_bytes: 524_288_000,
                inline_bytes: 36_045,
                rescans: 0,
            },
        }
    }

    #[test]
    fn human_bytes_uses_binary_units_with_one_decimal() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1), "1 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1_572_864), "1.5 MiB");
        assert_eq!(human_bytes(85 * 1024 * 1024), "85.0 MiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(2_684_354_560), "2.5 GiB");
        assert_eq!(human_bytes(5 << 40), "5120.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "17179869184.0 GiB");
    }

    #[test]
    fn human_bytes_rounds_up_into_the_next_unit() {
        assert_eq!(human_bytes(1075), "1.0 KiB"); // 1.0498 KiB
        assert_eq!(human_bytes(1076), "1.1 KiB"); // 1.0508 KiB
        assert_eq!(human_bytes(1_048_575), "1.0 MiB"); // 1 MiB - 1 is not "1024.0 KiB"
        assert_eq!(human_bytes((1 << 30) - 1), "1.0 GiB");
    }

    #[test]
    fn progress_bar_fills_by_bytes() {
        assert_eq!(progress_bar(&progress(0, 1000)), format!("[{}] 0%", "-".repeat(30)));
        assert_eq!(progress_bar(&progress(45, 100)), "[#############-----------------] 45%");
        assert_eq!(
            progress_bar(&progress(999, 1000)),
            "[#############################-] 99%"
        );
        assert_eq!(
            progress_bar(&progress(1000, 1000)),
            format!("[{}] 100%", "#".repeat(30))
        );
    }

    #[test]
    fn progress_bar_is_full_with_nothing_to_fetch_or_more_than_announced() {
        assert_eq!(progress_bar(&progress(0, 0)), format!("[{}] 100%", "#".repeat(30)));
        assert_eq!(
            progress_bar(&progress(1500, 1000)),
            format!("[{}] 100%", "#".repeat(30))
        );
        assert_eq!(
            progress_bar(&progress(u64::MAX - 1, u64::MAX)),
            "[#############################-] 99%"
        );
    }

    #[test]
    fn eta_formats_minutes_and_hours() {
        assert_eq!(eta(None), "-");
        assert_eq!(eta(Some(0)), "0:00");
        assert_eq!(eta(Some(42)), "0:42");
        assert_eq!(eta(Some(599)), "9:59");
        assert_eq!(eta(Some(3599)), "59:59");
        assert_eq!(eta(Some(3600)), "1:00:00");
        assert_eq!(eta(Some(3725)), "1:02:05");
        assert_eq!(eta(Some(360_000)), "100:00:00");
    }

    #[test]
    fn progress_line_shows_files_bytes_rate_and_eta() {
        let mut p = progress(1_207_959_552, 2_684_354_560);
        assert_eq!(
            progress_line(&p),
            "resync: [#############-----------------] 45% 1234/5000 files, 1.1 GiB/2.5 GiB, 85.0 MiB/s, ETA 0:42"
        );
        p.eta_secs = None;
        p.rate_bytes_per_sec = 0;
        assert!(progress_line(&p).ends_with(", 0 B/s, ETA -"), "{}", progress_line(&p));
    }

    #[test]
    fn watch_line_shows_progress_else_what_is_pending_and_a_stall() {
        let mut info = files_info();
        assert_eq!(watch_line(&info), progress_line(info.progress.as_ref().unwrap()));
        info.progress = None;
        info.stalled = Some("no space left on /srv/www".into());
        assert_eq!(
            watch_line(&info),
            "files: NOT synced (3786 pending, 1.4 GiB); stalled: no space left on /srv/www"
        );
    }

    #[test]
    fn files_report_of_a_standby_in_a_resync() {
        let report = files_report(&files_info(), "b");
        println!("{report}");
        assert_eq!(
            report,
            "\
files: NOT synced (3786 pending, 1.4 GiB)
b: mirroring (applying what the active commits)

ID    ROOT        ENTRIES  SIZE     IGNORE
www   /srv/www    1214     2.5 GiB  *.tmp,cache/
conf  /etc/myapp  12       4.0 KiB  -

counters: proposed 0, applied 1180, pushed 0 B/0 B, fetched 1.1 GiB/500.0 MiB (raw/wire)
          inline 35.2 KiB, rescans 0

resync: [#############-----------------] 45% 1234/5000 files, 1.1 GiB/2.5 GiB, 85.0 MiB/s, ETA 0:42

QUARANTINED:
FOLDER  PATH                MOVED TO                                             EPOCH  WHEN
www     uploads/report.pdf  /var/lib/tandem/quarantine/7/www/uploads/report.pdf  7      2026-11-21 08:06:22 UTC"
        );
    }

    #[test]
    fn files_report_of_a_synced_active_with_a_stall() {
        let mut info = files_info();
        info.synced = true;
        info.capturing = true;
        info.pending_files = 0;
        info.pending_bytes = 0;
        info.progress = None;
        info.quarantined.clear();
        info.stalled = Some("folder conf is missing here".into());
        let report = files_report(&info, "a");
        println!("{report}");
        assert_eq!(
            report.lines().take(3).collect::<Vec<_>>(),
            [
                "files: synced",
                "stalled: folder conf is missing here",
                "a: capturing (the active, watching its folders)"
            ]
        );
        assert!(
            !report.contains("resync:") && !report.contains("QUARANTINED"),
            "{report}"
        );
    }

    #[test]
    fn files_takes_watch_and_a_node() {
        let cli = Cli::try_parse_from(["tandemctl", "files", "--watch"]).expect("parses");
        assert!(matches!(
            cli.command,
            Cmd::Files {
                watch: true,
                node: None
            }
        ));
        let cli = Cli::try_parse_from(["tandemctl", "--nodes", "b:7101", "files"]).expect("parses");
        assert!(matches!(
            cli.command,
            Cmd::Files {
                watch: false,
                node: None
            }
        ));
        assert_eq!(cli.nodes, ["b:7101"]);
        let cli = Cli::try_parse_from(["tandemctl", "files", "--node", "a"]).expect("parses");
        assert!(matches!(cli.command, Cmd::Files { watch: false, node: Some(ref n) } if n == "a"));
    }
}
