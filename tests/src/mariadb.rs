//! A real MariaDB server for the database tests: its own data directory, socket and loopback
//! port, binlog in row format with full row images and strict GTIDs, as Tandem's capture needs.
//! `tests/run.sh` installs the `mariadb-server` package.

use std::path::Path;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;

/// How often a data directory is made before the harness gives up.
const INSTALL_ATTEMPTS: u32 = 3;
/// Longest a server may take to accept connections after it was started.
const MARIADB_START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MariaDb {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub ip: String,
    pub port: u16,
    pub server_id: u32,
}

/// The account Tandem's nodes use in the tests (all privileges, from any loopback address).
pub const TANDEM_USER: &str = "tandem";

impl MariaDb {
    /// Make a data directory and start `mariadbd` on it; returns once it answers.
    pub fn start(server_id: u32) -> anyhow::Result<MariaDb> {
        Self::start_at(server_id, "127.0.0.1", crate::free_port("127.0.0.1"))
    }

    /// [`Self::start`] listening on `ip:port` (two servers may share a port on two loopback
    /// addresses, so one config line names each node's own server).
    pub fn start_at(server_id: u32, ip: &str, port: u16) -> anyhow::Result<MariaDb> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        // One data directory at a time in a test process, and a failed one made again: two
        // installs side by side were seen to fail.
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 1;
        loop {
            let out = Command::new(program("mariadb-install-db"))
                .args([
                    "--no-defaults",
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                ])
                .arg("--skip-test-db")
                .arg(format!("--datadir={}", data.display()))
                .output()
                .context("mariadb-install-db (package mariadb-server; tests/run.sh installs it)")?;
            if out.status.success() {
                break;
            }
            if attempt == INSTALL_ATTEMPTS {
                bail!(
                    "mariadb-install-db failed {attempt} times: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            attempt += 1;
            let _ = std::fs::remove_dir_all(&data);
            std::thread::sleep(Duration::from_millis(500));
        }
        drop(_one);
        let mut db = MariaDb {
            child: None,
            dir,
            ip: ip.to_string(),
            port,
            server_id,
        };
        db.spawn()?;
        // Not in the binlog: both servers of a test start at the same (empty) GTID position.
        db.try_sql(&format!(
            "SET SESSION sql_log_bin = 0; CREATE USER '{TANDEM_USER}'@'%'; GRANT ALL PRIVILEGES ON *.* TO '{TANDEM_USER}'@'%' WITH GRANT OPTION"
        ))?;
        Ok(db)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let child = Command::new(program("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--bind-address={}", self.ip))
            .args(["--user=root", "--skip-name-resolve"])
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!("--log-bin={}", d.join("data/binlog").display()))
            .args([
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--gtid-strict-mode=ON",
            ])
            .args(["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mariadbd (package mariadb-server; tests/run.sh installs it)")?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.try_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("mariadbd exited at start ({status}): {}", self.error_log_tail());
            }
            if started.elapsed() > MARIADB_START_TIMEOUT {
                bail!(
                    "mariadbd did not answer within {MARIADB_START_TIMEOUT:?}: {}",
                    self.error_log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mariadbd.sock")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `mysql://tandem@IP:PORT` for a client.
    pub fn url(&self) -> String {
        format!("mysql://{TANDEM_USER}@{}:{}", self.ip, self.port)
    }

    /// Run SQL through the `mariadb` client; tab-separated rows without a header.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn try_sql(&self, sql: &str) -> anyhow::Result<String> {
        let out = client(&self.socket())
            .args(["-e", sql])
            .output()
            .context("run the mariadb client")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// SIGKILL the server (a crash: InnoDB and the binlog recover at the next start).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// Start it again on the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn error_log_tail(&self) -> String {
        crate::tail(&self.dir.path().join("error.log"), 20)
    }
}

/// Two servers for a test cluster's data nodes, `a` (id 1) at 127.0.11.1 and `b` (id 2) at
/// 127.0.12.1, on one port; and the `[database]` section that gives each node its own server
/// and the other's as its seed source (for `ClusterOptions::data_config`).
pub fn pair() -> anyhow::Result<([MariaDb; 2], String)> {
    let port = crate::free_port("127.0.0.1");
    let dbs = [
        MariaDb::start_at(1, "127.0.11.1", port)?,
        MariaDb::start_at(2, "127.0.12.1", port)?,
    ];
    let config = format!(
        "[database]\nkind = \"mariadb\"\nurl = \"mysql://{TANDEM_USER}@127.0.1@NODE_ID@.1:{port}\"\n\
         seed_url = \"mysql://{TANDEM_USER}@127.0.1@OTHER_NODE_ID@.1:{port}\"\n"
    );
    Ok((dbs, config))
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `mariadb` client as root on the server at `socket`, printing rows tab-separated without
/// a header.
pub fn client(socket: &Path) -> Command {
    let mut c = Command::new(program("mariadb"));
    c.args(["--no-defaults", "--user=root", "--batch", "--skip-column-names"])
        .arg(format!("--socket={}", socket.display()));
    c
}

/// A MariaDB program: where Debian puts it (the server is in /usr/sbin, which a user's PATH
/// may lack), else by name.
fn program(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}
