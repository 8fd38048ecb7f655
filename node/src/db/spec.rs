//! The `[database]` section of a data node's config, validated into a [`DatabaseSpec`].
//!
//! ```toml
//! [database]
//! kind = "mariadb"
//! url = "mysql://tandem@127.0.0.1:3306"   # this node's own server; no password here
//! password_file = "/etc/tandem/db-password" # optional
//! source = "mariadb"                        # the name its changes carry in the log
//! capture_server_id = 4001                  # the id the capture registers with, unique
//! ```

use std::path::Path;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::err;
use crate::config::ConfigError;

/// Longest name of a change stream.
pub const SOURCE_MAX_BYTES: usize = 64;
/// Longest a password file may be.
pub const PASSWORD_FILE_MAX_BYTES: u64 = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    kind: String,
    url: String,
    password_file: Option<PathBuf>,
    #[serde(default = "default_source")]
    source: String,
    capture_server_id: Option<u32>,
    /// The other data node's server, as this node reaches it: what `tandemctl db seed` copies
    /// this node's databases from (same account and password as `url`).
    seed_url: Option<String>,
}

fn default_source() -> String {
    "mariadb".into()
}

/// A validated `[database]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Host of this node's server.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// Name of the change stream in the log (`DbChange::source`).
    pub source: String,
    /// The other data node's server (host, port), to seed this node's from.
    pub seed_from: Option<(String, u16)>,
    /// Server id the capture registers with on this node's server (unique among the server's
    /// replicas, never the server's own).
    pub capture_server_id: u32,
}

/// Check `[database]`; `base` resolves a relative `password_file`.
pub fn validate_database(
    raw: RawDatabase,
    node_id: u64,
    witness: bool,
    base: &Path,
) -> Result<DatabaseSpec, ConfigError> {
    if witness {
        return Err(err(
            "database",
            "the witness runs no database (it only votes): remove [database] from its config",
        ));
    }
    if raw.kind != "mariadb" {
        return Err(err(
            "database.kind",
            format!(
                "unknown database kind {:?}: the supported kind is \"mariadb\" (MariaDB 10.5 or later)",
                raw.kind
            ),
        ));
    }
    if !cfg!(feature = "mariadb") {
        return Err(err(
            "database.kind",
            "this build of tandem has no MariaDB support (built without the `mariadb` feature)",
        ));
    }
    let (user, password_in_url, host, port) = parse_url("database.url", &raw.url)?;
    let seed_from = match &raw.seed_url {
        None => None,
        Some(u) => {
            let (seed_user, with_password, h, p) = parse_url("database.seed_url", u)?;
            if with_password || seed_user != user {
                return Err(err(
                    "database.seed_url",
                    format!(
                        "use the same account as database.url ({user}), without a password: it shares password_file"
                    ),
                ));
            }
            Some((h, p))
        }
    };
    if password_in_url {
        return Err(err(
            "database.url",
            "keep the password out of the URL (it would show in status and logs): put it in a file and name it in database.password_file",
        ));
    }
    let password = match raw.password_file {
        None => None,
        Some(p) => {
            let path = if p.is_absolute() { p } else { base.join(p) };
            let meta = std::fs::metadata(&path)
                .map_err(|e| err("database.password_file", format!("cannot read {}: {e}", path.display())))?;
            if meta.len() > PASSWORD_FILE_MAX_BYTES {
                return Err(err(
                    "database.password_file",
                    format!(
                        "{} is {} bytes, more than PASSWORD_FILE_MAX_BYTES ({PASSWORD_FILE_MAX_BYTES})",
                        path.display(),
                        meta.len()
                    ),
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err("database.password_file", format!("cannot read {}: {e}", path.display())))?;
            Some(text.trim_end_matches(['\n', '\r']).to_string())
        }
    };
    let name_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if raw.source == "embedded" {
        return Err(err(
            "database.source",
            "\"embedded\" is the embedded SQLite database's own stream: choose another name",
        ));
    }
    if raw.source.is_empty() || raw.source.len() > SOURCE_MAX_BYTES || !raw.source.chars().all(name_ok) {
        return Err(err(
            "database.source",
            format!(
                "{:?} is not a source name: 1 to {SOURCE_MAX_BYTES} letters, digits, '-' or '_'",
                raw.source
            ),
        ));
    }
    let capture_server_id = raw.capture_server_id.unwrap_or(4000 + node_id as u32);
    if capture_server_id == 0 {
        return Err(err(
            "database.capture_server_id",
            "must not be 0 (a replica with server id 0 is told to stop at the end of the binlog)",
        ));
    }
    Ok(DatabaseSpec {
        host,
        port,
        user,
        password,
        source: raw.source,
        seed_from,
        capture_server_id,
    })
}

/// `mysql://USER[:PASSWORD]@HOST[:PORT]` → (user, whether a password was given, host, port).
fn parse_url(key: &str, url: &str) -> Result<(String, bool, String, u16), ConfigError> {
    let bad = |why: &str| {
        err(
            key,
            format!("{url:?} is not a MariaDB URL ({why}); write it as mysql://USER@HOST:PORT"),
        )
    };
    let rest = url
        .strip_prefix("mysql://")
        .or_else(|| url.strip_prefix("mariadb://"))
        .ok_or_else(|| bad("it must start with mysql://"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') {
        return Err(bad(
            "no database name or options: Tandem replicates every database of the server",
        ));
    }
    let (userinfo, hostport) = rest.rsplit_once('@').ok_or_else(|| bad("no user"))?;
    let (user, password) = match userinfo.split_once(':') {
        Some((u, _)) => (u, true),
        None => (userinfo, false),
    };
    if user.is_empty() {
        return Err(bad("no user"));
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
            h,
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 1 to 65535"))?,
        ),
        _ => (hostport, 3306),
    };
    if host.is_empty() || port == 0 {
        return Err(bad("no host"));
    }
    Ok((
        user.to_string(),
        password,
        host.trim_matches(['[', ']']).to_string(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawDatabase {
        RawDatabase {
            kind: "mariadb".into(),
            url: url.into(),
            password_file: None,
            source: default_source(),
            capture_server_id: None,
            seed_url: None,
        }
    }

    fn message(r: Result<DatabaseSpec, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_good_section_is_read_with_its_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let mut r = raw("mysql://tandem@db.local:3307");
        r.password_file = Some("pw".into());
        r.seed_url = Some("mysql://tandem@10.0.0.2".into());
        let spec = validate_database(r, 2, false, dir.path()).unwrap();
        assert_eq!(
            spec,
            DatabaseSpec {
                host: "db.local".into(),
                port: 3307,
                user: "tandem".into(),
                password: Some("s3cret".into()),
                source: "mariadb".into(),
                seed_from: Some(("10.0.0.2".into(), 3306)),
                capture_server_id: 4002,
            }
        );
        let spec = validate_database(raw("mysql://root@127.0.0.1"), 1, false, dir.path()).unwrap();
        assert_eq!((spec.port, spec.capture_server_id), (3306, 4001));
    }

    #[test]
    fn each_bad_key_is_refused_by_name() {
        let base = Path::new("/nonexistent");
        let e = message(validate_database(raw("mysql://root@h:1"), 3, true, base));
        assert!(e.contains("database") && e.contains("witness"), "{e}");
        let mut r = raw("mysql://root@h:1");
        r.kind = "postgres".into();
        let e = message(validate_database(r, 1, false, base));
        assert!(e.contains("database.kind") && e.contains("postgres"), "{e}");
        for (url, why) in [
            ("http://root@h:1", "must start with mysql://"),
            ("mysql://h:3306", "no user"),
            ("mysql://root@h:99999", "port"),
            ("mysql://root@h:1/shop", "no database name"),
            ("mysql://root:pw@h:1", "keep the password out of the URL"),
        ] {
            let e = message(validate_database(raw(url), 1, false, base));
            assert!(e.contains("database.url") && e.contains(why), "{url}: {e}");
        }
        let mut r = raw("mysql://root@h:1");
        r.password_file = Some("/nonexistent/pw".into());
        let e = message(validate_database(r, 1, false, base));
        assert!(
            e.contains("database.password_file") && e.contains("/nonexistent/pw"),
            "{e}"
        );
        let mut r = raw("mysql://root@h:1");
        r.seed_url = Some("mysql://other@h:2".into());
        let e = message(validate_database(r, 1, false, base));
        assert!(e.contains("database.seed_url") && e.contains("same account"), "{e}");
        let mut r = raw("mysql://root@h:1");
        r.capture_server_id = Some(0);
        let e = message(validate_database(r, 1, false, base));
        assert!(e.contains("database.capture_server_id"), "{e}");
        for bad in ["bad\u{0}name", "", "embedded"] {
            let mut r = raw("mysql://root@h:1");
            r.source = bad.into();
            let e = message(validate_database(r, 1, false, base));
            assert!(e.contains("database.source"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_password_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), vec![b'x'; PASSWORD_FILE_MAX_BYTES as usize + 1]).unwrap();
        let mut r = raw("mysql://root@h:1");
        r.password_file = Some("pw".into());
        let e = message(validate_database(r, 1, false, dir.path()));
        assert!(e.contains("PASSWORD_FILE_MAX_BYTES"), "{e}");
    }
}
