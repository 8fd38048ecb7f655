//! Seeding a data node's database from the other data node's: a consistent dump
//! (`mariadb-dump --single-transaction --gtid`) loaded without binlogging, the binlog started
//! again at the dump's GTID position, and the journal's later transactions replayed from there.
//!
//! This is what mends a node whose database diverged (a returning ex-active with transactions
//! that never committed) or whose journal has a gap (it caught up from a snapshot), and what
//! fills a new standby's empty server.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use mysql_async::prelude::Queryable as _;
use tandem_client::api::ResyncProgress;
use tandem_client::api::SeedAnswer;
use tandem_client::api::SeedInfo;
use tokio::io::AsyncReadExt as _;
use tokio::io::AsyncWriteExt as _;

use super::binlog::parse_position;
use super::binlog::Gtid;
use super::mariadb::sql_err;
use super::mariadb::MariaDb;
use crate::events::Kind;

/// Schemas that belong to the server itself and are never dropped nor copied (accounts stay
/// each server's own).
const SYSTEM_SCHEMAS: &str = "'mysql', 'information_schema', 'performance_schema', 'sys'";
/// How long the seeding waits for this node to apply the transaction the dump was taken at.
const POSITION_WAIT: Duration = Duration::from_secs(10);
/// How much of the dump's head is searched for its GTID position.
const DUMP_HEAD_BYTES: usize = 64 * 1024;

/// Why a seed request is refused.
#[derive(Debug)]
pub enum SeedRefusal {
    /// The node cannot be seeded now (active, already seeding, no `seed_url`).
    Conflict(String),
}

impl MariaDb {
    /// Start seeding this node's database (`replace`), or say what that would do.
    pub async fn start_seed(self: &Arc<Self>, replace: bool) -> Result<SeedAnswer, SeedRefusal> {
        let spec = self.spec();
        let Some((host, port)) = spec.seed_from.clone() else {
            return Err(SeedRefusal::Conflict(
                "no database.seed_url in this node's config: name the other data node's server there".into(),
            ));
        };
        if self.failover().active_epoch().is_some() {
            return Err(SeedRefusal::Conflict(
                "this node is the active: its database is the one the other node is seeded from".into(),
            ));
        }
        if self.with_info(|i| i.seed.as_ref().is_some_and(|s| s.state == "running")) {
            return Err(SeedRefusal::Conflict(
                "a seeding of this node's database is running already".into(),
            ));
        }
        let info = self.info();
        let report = format!(
            "every database of {}:{} (this node's server{}{}) is dropped and replaced by a consistent copy of {host}:{port}; \
             accounts (the mysql schema) stay as they are; then the transactions committed after the copy are replayed",
            spec.host,
            spec.port,
            info.server_gtid.as_ref().map_or(String::new(), |g| format!(", at {g}")),
            info.diverged.as_ref().map_or(String::new(), |d| format!(", diverged: {d}")),
        );
        if !replace {
            return Ok(SeedAnswer {
                started: false,
                report: format!("nothing changed. With --replace-local-data: {report}"),
            });
        }
        self.with_info(|i| {
            i.seed = Some(SeedInfo {
                state: "running".into(),
                from: format!("{host}:{port}"),
                progress: ResyncProgress {
                    files_done: 0,
                    files_total: 0,
                    bytes_done: 0,
                    bytes_total: 0,
                    rate_bytes_per_sec: 0,
                    eta_secs: None,
                },
                position: None,
                error: None,
            })
        });
        self.event(Kind::Operator, format!("database seeding started: {report}"));
        let this = self.clone();
        tokio::spawn(async move {
            let result = this.seed(&host, port).await;
            this.with_info(|i| {
                let seed = i.seed.as_mut().expect("seed info set at start");
                match &result {
                    Ok(pos) => {
                        seed.state = "done".into();
                        seed.position = Some(pos.clone());
                    }
                    Err(e) => {
                        seed.state = "failed".into();
                        seed.error = Some(e.clone());
                    }
                }
            });
            match result {
                Ok(pos) => this.event(
                    Kind::Operator,
                    format!("database seeded at {pos}; replaying what committed after it"),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "database seeding failed");
                    this.event(Kind::Warning, format!("database seeding failed: {e}"));
                }
            }
        });
        Ok(SeedAnswer { started: true, report })
    }

    /// Copy the other server's databases here; the GTID position of the copy.
    async fn seed(&self, host: &str, port: u16) -> Result<String, String> {
        let _held = self.hold().await;
        let spec = self.spec().clone();
        let mut source = self.connect_to(host, port).await?;
        let schemas: Vec<String> = source
            .query(format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SYSTEM_SCHEMAS})"
            ))
            .await
            .map_err(sql_err)?;
        let estimate: Option<u64> = if schemas.is_empty() {
            Some(0)
        } else {
            source
                .query_first(format!(
                    "SELECT CAST(COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS UNSIGNED) FROM information_schema.TABLES \
                     WHERE TABLE_SCHEMA NOT IN ({SYSTEM_SCHEMAS})"
                ))
                .await
                .map_err(sql_err)?
        };
        self.with_info(|i| {
            if let Some(s) = i.seed.as_mut() {
                s.progress.bytes_total = estimate.unwrap_or(0);
            }
        });

        // This node's own databases go first (not binlogged: they were never the cluster's).
        let mut local = self.connect_to(&spec.host, spec.port).await?;
        local.query_drop("SET SESSION sql_log_bin = 0").await.map_err(sql_err)?;
        let mine: Vec<String> = local
            .query(format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({SYSTEM_SCHEMAS})"
            ))
            .await
            .map_err(sql_err)?;
        for s in &mine {
            local
                .query_drop(format!("DROP DATABASE `{}`", s.replace('`', "``")))
                .await
                .map_err(sql_err)?;
        }

        let position = if schemas.is_empty() {
            // Nothing to dump: the position is read under a global read lock.
            source
                .query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(sql_err)?;
            let pos: Option<String> = source
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(sql_err)?;
            source.query_drop("UNLOCK TABLES").await.map_err(sql_err)?;
            pos.unwrap_or_default()
        } else {
            self.dump_and_load(host, port, &schemas).await?
        };

        // The binlog starts again at the copy's position, as if this server had written it.
        local.query_drop("RESET MASTER").await.map_err(sql_err)?;
        local
            .query_drop(format!("SET GLOBAL gtid_binlog_state = '{position}'"))
            .await
            .map_err(sql_err)?;
        local.query_drop("SET GLOBAL read_only = ON").await.map_err(sql_err)?;

        // Which committed transaction the copy stands at: the journal goes on after it.
        let at = parse_position(&position)?;
        let deadline = Instant::now() + POSITION_WAIT;
        let seq = loop {
            match self.seq_of(&at) {
                Some(seq) => break seq,
                None if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                None => {
                    return Err(format!(
                        "the copy stands at {position}, which is neither the committed position nor in this \
                         node's journal; seed again"
                    ))
                }
            }
        };
        self.journal()
            .trim(&spec.source, seq)
            .map_err(|e| format!("cannot trim the journal: {e}"))?;
        self.with_info(|i| {
            i.diverged = None;
            i.server_gtid = Some(position.clone());
            i.read_only = Some(true);
        });
        tracing::info!(position, seq, "database seeded");
        Ok(position)
    }

    /// The sequence number of the committed transaction a server at `at` holds last.
    fn seq_of(&self, at: &std::collections::BTreeMap<u32, Gtid>) -> Option<u64> {
        let source = &self.spec().source;
        let (committed_seq, committed) = self.committed();
        let last = at.values().next().copied();
        match (last, committed) {
            (None, None) => return Some(0),
            (Some(l), Some(c)) if l == c => return Some(committed_seq),
            _ => {}
        }
        let last = last?;
        let journal = self.journal().read(source, 0, usize::MAX);
        if let Some(e) = journal.iter().find(|e| e.change.gtid == last.to_string()) {
            return Some(e.change.seq);
        }
        let first = journal.first()?;
        let tx = super::binlog::Transaction::decode(&first.change.events).ok()?;
        (tx.prev == Some(last)).then(|| first.change.seq - 1)
    }

    /// Pipe `mariadb-dump` of `schemas` on the other server into this node's server, with
    /// progress; the dump's GTID position.
    async fn dump_and_load(&self, host: &str, port: u16, schemas: &[String]) -> Result<String, String> {
        let spec = self.spec().clone();
        let client_args = |cmd: &mut tokio::process::Command, h: &str, p: u16| {
            cmd.arg("--no-defaults")
                .arg(format!("--host={h}"))
                .arg(format!("--port={p}"))
                .arg(format!("--user={}", spec.user))
                .arg("--protocol=TCP");
            if let Some(pw) = &spec.password {
                cmd.env("MYSQL_PWD", pw);
            }
        };
        let mut dump = tokio::process::Command::new(program("mariadb-dump"));
        client_args(&mut dump, host, port);
        dump.args([
            "--single-transaction",
            "--gtid",
            "--master-data=2",
            "--routines",
            "--events",
            "--triggers",
            "--databases",
        ])
        .args(schemas)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut load = tokio::process::Command::new(program("mariadb"));
        client_args(&mut load, &spec.host, spec.port);
        load.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut dump = dump
            .spawn()
            .map_err(|e| format!("cannot run mariadb-dump (package mariadb-client): {e}"))?;
        let mut load = load
            .spawn()
            .map_err(|e| format!("cannot run mariadb (package mariadb-client): {e}"))?;
        let mut out = dump.stdout.take().expect("piped");
        let mut into = load.stdin.take().expect("piped");
        into.write_all(b"SET SESSION sql_log_bin = 0;\n")
            .await
            .map_err(|e| format!("loading the copy: {e}"))?;
        let started = Instant::now();
        let mut head = Vec::new();
        let mut done = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = out.read(&mut buf).await.map_err(|e| format!("reading the dump: {e}"))?;
            if n == 0 {
                break;
            }
            if head.len() < DUMP_HEAD_BYTES {
                head.extend_from_slice(&buf[..n.min(DUMP_HEAD_BYTES - head.len())]);
            }
            into.write_all(&buf[..n])
                .await
                .map_err(|e| format!("loading the copy into this node's server: {e}"))?;
            done += n as u64;
            let secs = started.elapsed().as_secs_f64();
            self.with_info(|i| {
                if let Some(s) = i.seed.as_mut() {
                    let p = &mut s.progress;
                    p.bytes_done = done;
                    p.rate_bytes_per_sec = if secs > 0.0 { (done as f64 / secs) as u64 } else { 0 };
                    p.eta_secs = (p.rate_bytes_per_sec > 0 && p.bytes_total > done)
                        .then(|| (p.bytes_total - done) / p.rate_bytes_per_sec);
                }
            });
        }
        drop(into);
        let dumped = dump.wait_with_output().await.map_err(|e| e.to_string())?;
        let loaded = load.wait_with_output().await.map_err(|e| e.to_string())?;
        if !dumped.status.success() {
            return Err(format!(
                "mariadb-dump of {host}:{port} failed: {}",
                String::from_utf8_lossy(&dumped.stderr).trim()
            ));
        }
        if !loaded.status.success() {
            return Err(format!(
                "loading the copy into {}:{} failed: {}",
                spec.host,
                spec.port,
                String::from_utf8_lossy(&loaded.stderr).trim()
            ));
        }
        dump_position(&String::from_utf8_lossy(&head))
            .ok_or_else(|| "the dump does not say its GTID position (gtid_slave_pos)".to_string())
    }
}

/// The GTID position `mariadb-dump --gtid --master-data=2` writes in its head:
/// `-- SET GLOBAL gtid_slave_pos='0-1-5';`.
fn dump_position(head: &str) -> Option<String> {
    let line = head.lines().find(|l| l.contains("gtid_slave_pos"))?;
    let start = line.find('\'')? + 1;
    let end = start + line[start..].find('\'')?;
    let pos = &line[start..end];
    parse_position(pos).ok().map(|_| pos.to_string())
}

/// A MariaDB client program, where Debian puts it or by name.
fn program(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new("/usr/bin").join(name);
    if p.exists() {
        p
    } else {
        name.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_position_is_read_from_its_head() {
        let head = "-- MariaDB dump\n--\n-- Preferably use GTID to start replication from GTID position:\n\n\
                    -- SET GLOBAL gtid_slave_pos='0-1-42';\n\nCREATE DATABASE x;\n";
        assert_eq!(dump_position(head).as_deref(), Some("0-1-42"));
        assert_eq!(dump_position("-- SET GLOBAL gtid_slave_pos='';").as_deref(), Some(""));
        assert_eq!(dump_position("CREATE DATABASE x;"), None);
        assert_eq!(dump_position("-- SET GLOBAL gtid_slave_pos='nonsense';"), None);
    }
}
