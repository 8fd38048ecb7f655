//! Sync folders in the node's config: `[[sync]]` entries, validated into [`FolderSpec`]s.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ignore::gitignore::Gitignore;
use ignore::gitignore::GitignoreBuilder;
use serde::Deserialize;
use tandem_raft_store::records::check_folder_id;

use crate::config::err;
use crate::config::ConfigError;

/// Most sync folders one cluster mirrors.
pub const SYNC_FOLDERS_MAX: usize = 32;
/// Most ignore patterns per folder.
pub const IGNORE_PATTERNS_MAX: usize = 256;
/// Bounds of the quiet period after the last change to a path before it is sent.
pub const QUIET_MS_MAX: u64 = 10_000;
/// Bounds of the longest a busy path waits before it is sent anyway.
pub const MAX_DELAY_MS_MAX: u64 = 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFolder {
    id: String,
    /// This node's path of the folder.
    path: Option<PathBuf>,
    /// Per-node paths by member name, where the two data nodes keep the folder elsewhere.
    #[serde(default)]
    paths: BTreeMap<String, PathBuf>,
    /// gitignore-style patterns of paths that stay local to each node.
    #[serde(default)]
    ignore: Vec<String>,
    /// Replicate the owner (uid/gid) too; needs root on the standby.
    #[serde(default = "yes")]
    keep_owner: bool,
    #[serde(default = "default_quiet_ms")]
    quiet_ms: u64,
    #[serde(default = "default_max_delay_ms")]
    max_delay_ms: u64,
    /// Ceiling on resync and fetch traffic, MiB/s (0: none).
    #[serde(default)]
    resync_rate_limit_mib_s: u64,
}

fn yes() -> bool {
    true
}

fn default_quiet_ms() -> u64 {
    20
}

fn default_max_delay_ms() -> u64 {
    500
}

/// One sync folder as this node sees it.
#[derive(Debug, Clone)]
pub struct FolderSpec {
    pub id: String,
    pub root: PathBuf,
    pub ignore: Arc<Gitignore>,
    pub patterns: Vec<String>,
    pub keep_owner: bool,
    /// A path is sent once it was quiet this long, or closed after writing.
    pub quiet: Duration,
    /// A path that keeps changing is sent after this long anyway.
    pub max_delay: Duration,
    /// Bytes per second for fetches and resync; `None`: no limit.
    pub rate_limit: Option<u64>,
}

impl FolderSpec {
    /// Whether `rel` (or a directory above it) matches an ignore pattern.
    pub fn ignored(&self, rel: &str, is_dir: bool) -> bool {
        self.ignore.matched_path_or_any_parents(rel, is_dir).is_ignore()
    }
}

pub fn validate_folders(
    raw: Vec<RawFolder>,
    me: &str,
    members: &BTreeSet<String>,
    base: &Path,
    data_dir: &Path,
) -> Result<Vec<FolderSpec>, ConfigError> {
    if raw.len() > SYNC_FOLDERS_MAX {
        return Err(err(
            "sync",
            format!("{} sync folders; SYNC_FOLDERS_MAX is {SYNC_FOLDERS_MAX}", raw.len()),
        ));
    }
    let mut out: Vec<FolderSpec> = Vec::with_capacity(raw.len());
    for (i, f) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("sync[{i}].{field}");
        check_folder_id(&f.id).map_err(|e| err(key("id"), e.to_string()))?;
        if out.iter().any(|o| o.id == f.id) {
            return Err(err(key("id"), format!("duplicate sync folder id {:?}", f.id)));
        }
        for name in f.paths.keys() {
            if !members.contains(name) {
                return Err(err(
                    key("paths"),
                    format!("{name:?} is not the name of a member; paths are keyed by member name"),
                ));
            }
        }
        let path = f.paths.get(me).or(f.path.as_ref()).ok_or_else(|| {
            err(
                key("path"),
                format!(
                    "missing: set path, or paths.{me}, to where this node keeps folder {:?}",
                    f.id
                ),
            )
        })?;
        if !path.is_absolute() {
            return Err(err(key("path"), format!("{} must be an absolute path", path.display())));
        }
        let root = base.join(path);
        if root.parent().is_none() {
            return Err(err(key("path"), "the root directory cannot be a sync folder"));
        }
        if root.starts_with(data_dir) || data_dir.starts_with(&root) {
            return Err(err(
                key("path"),
                format!(
                    "{} overlaps data_dir {}; Tandem's own state must stay outside sync folders",
                    root.display(),
                    data_dir.display()
                ),
            ));
        }
        if let Some(other) = out
            .iter()
            .find(|o| o.root.starts_with(&root) || root.starts_with(&o.root))
        {
            return Err(err(
                key("path"),
                format!(
                    "{} overlaps sync folder {:?} at {}",
                    root.display(),
                    other.id,
                    other.root.display()
                ),
            ));
        }
        if f.ignore.len() > IGNORE_PATTERNS_MAX {
            return Err(err(
                key("ignore"),
                format!(
                    "{} patterns; IGNORE_PATTERNS_MAX is {IGNORE_PATTERNS_MAX}",
                    f.ignore.len()
                ),
            ));
        }
        let mut builder = GitignoreBuilder::new(&root);
        for line in &f.ignore {
            builder
                .add_line(None, line)
                .map_err(|e| err(key("ignore"), format!("pattern {line:?}: {e}")))?;
        }
        let ignore = builder.build().map_err(|e| err(key("ignore"), e.to_string()))?;
        if f.quiet_ms > QUIET_MS_MAX {
            return Err(err(
                key("quiet_ms"),
                format!("{} is more than QUIET_MS_MAX ({QUIET_MS_MAX})", f.quiet_ms),
            ));
        }
        if f.max_delay_ms < f.quiet_ms || f.max_delay_ms > MAX_DELAY_MS_MAX {
            return Err(err(
                key("max_delay_ms"),
                format!(
                    "{} must lie between quiet_ms ({}) and MAX_DELAY_MS_MAX ({MAX_DELAY_MS_MAX})",
                    f.max_delay_ms, f.quiet_ms
                ),
            ));
        }
        out.push(FolderSpec {
            id: f.id,
            root,
            ignore: Arc::new(ignore),
            patterns: f.ignore,
            keep_owner: f.keep_owner,
            quiet: Duration::from_millis(f.quiet_ms),
            max_delay: Duration::from_millis(f.max_delay_ms),
            rate_limit: (f.resync_rate_limit_mib_s > 0).then(|| f.resync_rate_limit_mib_s * 1024 * 1024),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<FolderSpec>, ConfigError> {
        #[derive(Deserialize)]
        struct T {
            sync: Vec<RawFolder>,
        }
        let t: T = toml::from_str(text).map_err(|e| err("", e.to_string()))?;
        let members = ["node-a", "node-b", "witness"].map(String::from).into();
        validate_folders(
            t.sync,
            "node-a",
            &members,
            Path::new("/etc/tandem"),
            Path::new("/var/lib/tandem"),
        )
    }

    #[test]
    fn folders_map_paths_per_node_and_compile_ignore_patterns() {
        let f = parse(
            r#"
            [[sync]]
            id = "scenes"
            path = "/srv/scenes"
            paths = { node-a = "/data/scenes" }
            ignore = ["licence.key", "*.tmp", "cache/", "!keep.tmp"]
            "#,
        )
        .unwrap();
        assert_eq!(f[0].root, Path::new("/data/scenes"));
        assert!(f[0].keep_owner);
        assert!(f[0].ignored("licence.key", false));
        assert!(f[0].ignored("a/b.tmp", false) && !f[0].ignored("keep.tmp", false));
        assert!(f[0].ignored("cache", true) && f[0].ignored("cache/x/y", false));
        assert!(
            !f[0].ignored("cache", false),
            "a file named cache is not the cache/ directory"
        );
        assert!(!f[0].ignored("scene.cfg", false));
    }

    #[test]
    fn bad_folders_are_refused_by_key() {
        let cases = [
            (
                r#"[[sync]]
id = "a b"
path = "/srv/a""#,
                "sync[0].id",
            ),
            (
                r#"[[sync]]
id = "a"
path = "srv/a""#,
                "sync[0].path",
            ),
            (
                r#"[[sync]]
id = "a""#,
                "sync[0].path",
            ),
            (
                r#"[[sync]]
id = "a"
path = "/var/lib/tandem/files""#,
                "sync[0].path",
            ),
            (
                r#"[[sync]]
id = "a"
path = "/srv/a"
[[sync]]
id = "b"
path = "/srv/a/b""#,
                "sync[1].path",
            ),
            (
                r#"[[sync]]
id = "a"
path = "/srv/a"
paths = { node-z = "/x" }"#,
                "sync[0].paths",
            ),
            (
                r#"[[sync]]
id = "a"
path = "/srv/a"
ignore = ["x[z-a]"]"#,
                "sync[0].ignore",
            ),
            (
                r#"[[sync]]
id = "a"
path = "/srv/a"
quiet_ms = 100
max_delay_ms = 50"#,
                "sync[0].max_delay_ms",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {}", e.message);
        }
    }
}
