//! Database change records (DESIGN §5): the active's database changes travel through the log,
//! and every data node's database replays them in commit order, exactly once.
//!
//! - [`spec`]: the `[database]` config section;
//! - [`binlog`]: a captured MariaDB transaction, and how binlog events are cut into them;
//! - `embedded`: the cluster's own SQLite database, written through the API on the active and
//!   replicated as session changesets (the `sqlite` build feature);
//! - `mariadb`: the capture on the active, the replay on every data node, and the role changes
//!   (`read_only`), on a real server through mysql_async (the `mariadb` build feature);
//! - `seed`: copying the other data node's databases here, to mend a diverged node or fill a
//!   new one.
//!
//! The replicated state counts each source's transactions (`db_positions`); the transactions
//! themselves wait in the node's journal (`tandem_raft_store::journal`) until its database
//! holds them.

pub mod binlog;
#[cfg(feature = "sqlite")]
pub mod embedded;
#[cfg(feature = "mariadb")]
pub mod mariadb;
#[cfg(feature = "mariadb")]
pub mod seed;
pub mod spec;
