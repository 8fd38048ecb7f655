//! # tandem-node
//!
//! The Tandem daemon (`tandem`). Layout:
//!
//! - [`config`]: the node's TOML file, validated once into a [`config::ValidConfig`];
//! - [`consensus`]: the Raft driver — the only module that touches openraft — with the peer
//!   transport (HTTP on the peer port) and the witness's leadership hand-off;
//! - [`failover`]: who may hold the service (DESIGN §4): a pure controller and the driver that
//!   runs it against the node;
//! - [`resources`]: what the active holds: its VIPs, then script resources;
//! - [`monitor`]: health checks of the protected service and the switch rule they feed;
//! - [`files`]: file replication of the sync folders (capture on the active, mirror on the
//!   standby, contents over the peer port);
//! - [`db`]: database change records (MariaDB binlog capture on the active, replay everywhere);
//! - [`cluster`]: heartbeats between the members and the status model shown to operators;
//! - [`events`]: the node's event log (role changes, monitor transitions, actions);
//! - [`admin`]: the admin HTTP API and health routes;
//! - [`console`]: the web console page the admin port serves at `/`;
//! - [`metrics`]: the Prometheus text format of `GET /metrics`;
//! - [`recovery`]: making one data node a cluster of its own when quorum is gone for good;
//! - [`run`]: wiring: open the store, bind the listeners, start Raft and the failover driver,
//!   serve, and on SIGTERM let go of the service before leaving the cluster.

// The mutation switches remove safety rules; only the simulator's build may carry them.
#[cfg(all(feature = "mutants", not(tokio_unstable)))]
compile_error!("mutation switches are for the simulator's build only (simulation/, with --cfg tokio_unstable)");

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod consensus;
pub mod console;
pub mod db;
pub mod events;
pub mod failover;
pub mod files;
pub mod metrics;
pub mod monitor;
pub mod openapi;
pub mod recovery;
pub mod resources;
pub mod systemd;
pub mod tls;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::storage::RaftLogStorage;
use openraft::AsyncRuntime;
use tandem_raft_store::sled_store;
use tandem_raft_store::MemberRole;
use tandem_raft_store::Runtime;
use tandem_raft_store::StateMachineStore;
use tandem_raft_store::TypeConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::ValidConfig;
use crate::consensus::network::PeerConnector;
use crate::consensus::network::PeerNetwork;
use crate::consensus::Consensus;
use crate::failover::controller::ControllerConfig;
use crate::failover::driver::Failover;
use crate::resources::vip::Identity;
use crate::resources::ResourceAgent;

/// How long shutdown waits for Raft and the servers to stop.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch, for timestamps shown to operators (never for timing).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How long before a new leader's election the previous active's lease surely ended (see
/// [`failover::controller`]): openraft refuses votes for `election_timeout_max` after a
/// voter's last acknowledgement of a leader, and the lease is shorter; both are measured on
/// other clocks, so each is stretched by the clock-rate bound the unfavourable way.
pub fn vote_lease_margin(t: &config::Timers) -> Duration {
    let rho = t.max_clock_drift;
    t.election_timeout_max
        .mul_f64(1.0 - rho)
        .saturating_sub(t.lease.mul_f64(1.0 + rho))
}

/// How a node run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM, SIGINT).
    Stopped,
    /// The process must start again in place (a recovery request waits in the data dir).
    Restart,
}

/// Run a node until `shutdown` completes or a restart is requested.
pub async fn run(cfg: ValidConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<Exit> {
    let span = tracing::info_span!("node", node = %cfg.me().name);
    run_real(Arc::new(cfg), shutdown).instrument(span).await
}

/// Everything a node takes from its environment. [`run`] builds the real ones (sled, TCP,
/// shell commands); the simulator passes its own (an in-memory store, the simulated network, a
/// recording agent).
pub struct NodeParts<L, C, LS> {
    pub peer_listener: L,
    pub admin_listener: L,
    /// The health routes alone, for load balancers (`health_listen`).
    pub health_listener: Option<L>,
    /// Makes the outgoing peer connections.
    pub connector: C,
    pub log: LS,
    pub sm: StateMachineStore,
    pub agent: Arc<ResourceAgent>,
    /// Seed of openraft's randomness (the election timers).
    pub seed: u64,
}

/// A running node's parts, for whoever started it (the simulator observes through them).
#[derive(Clone)]
pub struct NodeHandles {
    pub consensus: Consensus,
    pub failover: Failover,
}

async fn run_real(cfg: Arc<ValidConfig>, shutdown: impl Future<Output = ()>) -> anyhow::Result<Exit> {
    let me = cfg.me().clone();

    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data_dir {}", cfg.data_dir.display()))?;
    let store_dir = cfg.data_dir.join("raft");
    let (log, sm) = sled_store::open(&store_dir).map_err(|e| {
        // Only a held lock means another process; other errors say what they are.
        let hint = if e.to_string().contains("lock") {
            " (is another tandem process using this data_dir?)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot open the Raft store in {}{hint}: {e}", store_dir.display())
    })?;

    // A forced single-node recovery asked for before the restart is carried out now, on the
    // store, before Raft reads it.
    recovery::carry_out_pending(&cfg.data_dir, || {
        log.force_single_voter(cfg.node_id, consensus::member(&me))
    })?;

    // Bind every port before starting Raft, so a port in use fails fast and clearly.
    let peer_tcp = TcpListener::bind(cfg.peer_listen)
        .await
        .with_context(|| format!("cannot listen on peer_listen {}", cfg.peer_listen))?;
    let admin_tcp = TcpListener::bind(cfg.admin_listen)
        .await
        .with_context(|| format!("cannot listen on admin_listen {}", cfg.admin_listen))?;
    let health_tcp = match cfg.health_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on health_listen {addr}"))?,
        ),
        None => None,
    };

    let local_ip: Option<IpAddr> = Some(cfg.peer_listen.ip()).filter(|ip| !ip.is_unspecified());
    #[cfg(feature = "tls")]
    let (peer_listener, admin_listener, health_listener, connector) = {
        use tls::NodeListener;
        let spec = cfg.tls.as_ref();
        let peer_tls = spec.map(|t| tls::acceptor(t, true)).transpose()?;
        let admin_tls = spec.filter(|t| t.admin).map(|t| tls::acceptor(t, false)).transpose()?;
        let client = spec.map(tls::peer_client_config).transpose()?;
        (
            NodeListener::new(peer_tcp, peer_tls, "peer")?,
            NodeListener::new(admin_tcp, admin_tls, "admin")?,
            health_tcp.map(|h| NodeListener::new(h, None, "health")).transpose()?,
            consensus::network::tls_connector(local_ip, client),
        )
    };
    #[cfg(not(feature = "tls"))]
    let (peer_listener, admin_listener, health_listener, connector) = (
        peer_tcp,
        admin_tcp,
        health_tcp,
        consensus::network::tcp_connector(local_ip),
    );
    let parts = NodeParts {
        peer_listener,
        admin_listener,
        health_listener,
        connector,
        log,
        sm,
        agent: ResourceAgent::new(me.name.clone(), cfg.resources.clone()),
        seed: rand::random(),
    };
    let recovered = cfg
        .data_dir
        .join(recovery::DONE_FILE)
        .exists()
        .then(|| cfg.data_dir.clone());
    run_with(cfg, parts, shutdown, |node| {
        if let Some(data_dir) = recovered {
            tokio::spawn(recovery::record_in_audit_trail(node.consensus.clone(), data_dir));
        }
    })
    .await
}

/// Run a node on the given parts until `shutdown` completes or a restart is requested;
/// `started` is called once Raft and the failover driver run.
pub async fn run_with<L, C, LS>(
    cfg: Arc<ValidConfig>,
    parts: NodeParts<L, C, LS>,
    shutdown: impl Future<Output = ()>,
    started: impl FnOnce(&NodeHandles),
) -> anyhow::Result<Exit>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    C: PeerConnector,
    LS: RaftLogStorage<TypeConfig>,
    LS::LogReader: Send + Sync + 'static,
{
    // openraft's randomness is drawn from `seed` for everything Raft starts below.
    let seed = parts.seed;
    tandem_raft_store::with_seed(seed, async move {
        let me = cfg.me().clone();
        let NodeParts {
            peer_listener,
            admin_listener,
            health_listener,
            connector,
            log,
            sm,
            agent,
            seed: _,
        } = parts;
        let network =
            PeerNetwork::with_connector(cfg.node_id, cfg.cluster_secret.clone(), connector).with_tls(cfg.tls.is_some());
        let file_feed = (!cfg.folders.is_empty()).then(|| sm.subscribe_files());
        let db_journal = sm.db_journal();
        if me.role == MemberRole::Data {
            db_journal.enable();
        }
        let consensus = Consensus::start(cfg.clone(), log, sm, network.clone())
            .await
            .context("cannot start raft")?;
        let events = Arc::new(events::EventLog::new(me.name.clone()));
        agent.report_to(events.clone());

        let (stop_tx, stop_rx) = watch::channel(false);
        let serve = |listener: L, app: axum::Router, what: &'static str| {
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let result = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "{what} server failed");
                }
            })
        };
        let identity = Identity::new(cfg.vips.clone());
        let failover = Failover::new(ControllerConfig {
            node: cfg.node_id,
            role: me.role,
            lease: cfg.timers.lease,
            release_budget: cfg.timers.takeover_wait(),
            drift_margin: cfg.timers.lease_margin,
            // What is left of the VIP's kernel lifetime when the lease ends (zero without a VIP).
            identity_wait: identity.identity_wait(cfg.timers.lease),
            vote_lease_margin: vote_lease_margin(&cfg.timers),
            // Time for the target to win the election a transfer starts.
            handoff_grace: cfg.timers.election_timeout_max * 2,
        });
        let monitors = monitor::Monitors::new(cfg.monitors.clone(), events.clone());
        let cluster = cluster::ClusterState::new(
            cfg.clone(),
            consensus.clone(),
            failover.clone(),
            monitors.clone(),
            events.clone(),
        );
        let exchange: files::Exchange = {
            let network = network.clone();
            Arc::new(move |addr, path, body, timeout| {
                let network = network.clone();
                Box::pin(async move { network.exchange(&addr, path, body, timeout).await })
            })
        };
        let file_sync = files::FileSync::new(
            &cfg,
            consensus.clone(),
            failover.clone(),
            events.clone(),
            exchange.clone(),
        )?;
        let mut peer_routes = consensus::peer_api::router(&consensus, &cfg.cluster_secret, cluster.clone());
        if let Some(f) = &file_sync {
            cluster.set_files(f.clone());
            let files = f.clone();
            agent.gate_acquire(Arc::new(move || {
                let files = files.clone();
                Box::pin(async move { files.catch_up_before_service().await })
            }));
            let files = f.clone();
            agent.after_release(Arc::new(move || {
                let files = files.clone();
                Box::pin(async move { files.drain().await })
            }));
            peer_routes = peer_routes.merge(consensus::peer_api::with_secret(
                files::transfer::routes(f.clone()),
                &cfg.cluster_secret,
            ));
        }
        #[cfg(feature = "sqlite")]
        let embedded = if me.role == MemberRole::Data {
            let dir = cfg.data_dir.join("embedded");
            let e = db::embedded::Embedded::open(
                &dir,
                consensus.clone(),
                failover.clone(),
                events.clone(),
                db_journal.clone(),
                exchange.clone(),
            )
            .map_err(|e| anyhow::anyhow!("embedded database: {e}"))?;
            peer_routes = peer_routes.merge(consensus::peer_api::with_secret(
                db::embedded::peer_routes(e.clone()),
                &cfg.cluster_secret,
            ));
            Some(e)
        } else {
            None
        };
        #[cfg(feature = "mariadb")]
        let database = cfg.database.clone().map(|spec| {
            let db = db::mariadb::MariaDb::new(
                spec,
                consensus.clone(),
                failover.clone(),
                events.clone(),
                db_journal.clone(),
            );
            let d = db.clone();
            cluster.set_db(Arc::new(move || d.brief()));
            let d = db.clone();
            agent.gate_acquire(Arc::new(move || {
                let d = d.clone();
                Box::pin(async move { d.before_service().await })
            }));
            let d = db.clone();
            agent.before_release(Arc::new(move || {
                let d = d.clone();
                Box::pin(async move { d.read_only().await })
            }));
            let d = db.clone();
            agent.after_release(Arc::new(move || {
                let d = d.clone();
                Box::pin(async move { d.drain().await })
            }));
            db
        });
        #[cfg(not(feature = "mariadb"))]
        let _ = db_journal;
        let restart = Arc::new(tokio::sync::Notify::new());
        let admin_state = admin::AdminState {
            consensus: consensus.clone(),
            failover: failover.clone(),
            restart: restart.clone(),
            identity: identity.clone(),
            agent: agent.clone(),
            cluster: cluster.clone(),
            files: file_sync.clone(),
            #[cfg(feature = "mariadb")]
            database: database.clone(),
            #[cfg(feature = "sqlite")]
            embedded: embedded.clone(),
            tokens: auth::Tokens::new(cfg.admin_tokens.clone()),
            exchange: exchange.clone(),
        };
        let (admin_routes, member_routes) = admin::routers(admin_state.clone());
        peer_routes = peer_routes.merge(consensus::peer_api::with_secret(member_routes, &cfg.cluster_secret));
        let peer_server = serve(peer_listener, peer_routes, "peer");
        let failover_driver = tokio::spawn(failover::driver::run(
            consensus.clone(),
            failover.clone(),
            identity.clone(),
            agent.clone(),
            events.clone(),
            stop_rx.clone(),
        ));
        let (standing_tx, standing_rx) = watch::channel(monitor::Standing::Neither);
        // The node's background tasks, by the name the log gives them if one stops.
        let mut health = vec![
            (
                "the cluster view",
                tokio::spawn(cluster::run(cluster.clone(), network, standing_tx, stop_rx.clone())),
            ),
            ("the monitors", tokio::spawn(monitors.run(standing_rx, stop_rx.clone()))),
            (
                "the monitor switch",
                tokio::spawn(monitor::switch::run(cluster.clone(), stop_rx.clone())),
            ),
        ];
        if let (Some(f), Some(feed)) = (&file_sync, file_feed) {
            health.push(("file replication", tokio::spawn(f.clone().run(feed, stop_rx.clone()))));
        }
        #[cfg(feature = "mariadb")]
        if let Some(d) = &database {
            health.push(("database replication", tokio::spawn(d.clone().run(stop_rx.clone()))));
        }
        #[cfg(feature = "sqlite")]
        if let Some(e) = &embedded {
            health.push((
                "embedded database replication",
                tokio::spawn(e.clone().run(stop_rx.clone())),
            ));
        }
        let health_server = health_listener.map(|l| serve(l, admin::health_router(admin_state.clone()), "health"));
        let admin_server = serve(admin_listener, admin_routes, "admin");
        // Spawned through openraft's runtime: its election timer draws from the seeded randomness.
        let witness = (me.role == MemberRole::Witness)
            .then(|| Runtime::spawn(consensus::witness::run(consensus.clone(), stop_rx.clone())));
        started(&NodeHandles {
            consensus: consensus.clone(),
            failover: failover.clone(),
        });

        tracing::info!(
            id = cfg.node_id,
            role = %me.role,
            peer = %cfg.peer_listen,
            admin = %cfg.admin_listen,
            "tandem node started"
        );

        // The main loop: wait for the end, telling systemd (when it runs this node) once the
        // node has joined its cluster, and petting its watchdog only while every part of the
        // node still runs.
        let mut shutdown = std::pin::pin!(shutdown);
        let watchdog = systemd::watchdog_interval();
        let mut tick =
            tokio::time::interval(watchdog.map_or(Duration::from_secs(1), |w| w.min(Duration::from_secs(1))));
        let mut ready = false;
        let mut last_status = String::new();
        let exit = loop {
            tokio::select! {
                _ = &mut shutdown => break Exit::Stopped,
                _ = restart.notified() => break Exit::Restart,
                _ = tick.tick() => {}
            }
            let view = consensus.raft_view(tokio::time::Instant::now());
            // The first part found stopped, by name, for the log.
            let stopped = if view.role == failover::controller::RaftRole::Shutdown {
                Some("Raft")
            } else if failover_driver.is_finished() {
                Some("the failover driver")
            } else if peer_server.is_finished() {
                Some("the peer server")
            } else if admin_server.is_finished() {
                Some("the admin server")
            } else if health_server.as_ref().is_some_and(|h| h.is_finished()) {
                Some("the health server")
            } else {
                health.iter().find(|(_, t)| t.is_finished()).map(|(name, _)| *name)
            };
            let status = match (consensus.is_voter(), view.leader, failover.serving_epoch()) {
                (false, _, _) => "STATUS=waiting to join a cluster (tandem init on one data node)".to_string(),
                (true, None, _) => format!("STATUS=term {}: no leader known", view.term),
                (true, Some(_), Some(epoch)) => format!("STATUS=active, epoch {epoch}"),
                (true, Some(l), None) => format!("STATUS={}, leader is node {l}", me.role),
            };
            if !ready && consensus.is_voter() && view.leader.is_some() {
                ready = systemd::notify(&format!("READY=1\n{status}"));
                last_status = status;
            } else if status != last_status {
                systemd::notify(&status);
                last_status = status;
            }
            if watchdog.is_some() {
                match stopped {
                    None => {
                        systemd::notify("WATCHDOG=1");
                    }
                    Some(part) => tracing::error!(
                        "{part} stopped while the process runs; no longer petting the systemd watchdog, \
                         so systemd will restart this node"
                    ),
                }
            }
        };
        systemd::notify("STOPPING=1");
        tracing::info!(?exit, "shutting down");
        // Let go of the service first, then leave the cluster.
        let _ = stop_tx.send(true);
        let _ = failover_driver.await;
        for (_, task) in health {
            let _ = task.await;
        }
        consensus.shutdown(SHUTDOWN_TIMEOUT).await;
        let servers = async {
            let _ = peer_server.await;
            let _ = admin_server.await;
            if let Some(h) = health_server {
                let _ = h.await;
            }
            if let Some(w) = witness {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, servers).await.is_err() {
            tracing::warn!("servers did not stop in time; exiting anyway");
        }
        tracing::info!("stopped");
        Ok(exit)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vote_lease_margin_with_the_default_timers() {
        let ms = Duration::from_millis;
        let mut t = config::Timers {
            heartbeat: ms(100),
            election_timeout_min: ms(400),
            election_timeout_max: ms(800),
            lease: ms(340),
            lease_margin: ms(50),
            max_clock_drift: 0.01,
            witness_election_factor: 2.5,
            release_budget: ms(1000),
            load_balancer_detection: ms(0),
        };
        // 800 ms × 0.99 − 340 ms × 1.01 = 448.6 ms.
        assert_eq!(vote_lease_margin(&t).as_micros(), 448_600);
        // A lease longer than the vote lease gives no margin rather than a negative one.
        t.lease = ms(900);
        assert_eq!(vote_lease_margin(&t), Duration::ZERO);
    }
}
