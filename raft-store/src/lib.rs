//! # tandem-raft-store
//!
//! The replicated part of Tandem: the records that travel through the Raft log
//! ([`records`]), the state every node builds from them ([`state`]), and openraft storage
//! for that log and state:
//!
//! - [`sled_store`]: the durable store every real node uses (log, vote and state machine on
//!   sled 0.34; flushed before a vote is saved or an append is acknowledged);
//! - [`mem_store`] with [`StateMachineStore::in_memory`]: the same traits in memory, for the
//!   simulator.
//!
//! Both pass openraft's storage conformance suite (see `tests/conformance.rs`). Everything
//! persisted goes through [`codec`], which prefixes a format-version byte.
//!
//! The apply logic in [`state::SmState::apply`] is deterministic: no clock, no randomness, no
//! I/O. A record that breaks a rule (stale epoch, bad path, over a limit) is answered with a
//! [`records::Rejection`] and leaves the state unchanged.

// The mutation switches remove safety rules; only the simulator's build may carry them.
#[cfg(all(feature = "mutants", not(tokio_unstable)))]
compile_error!("mutation switches are for the simulator's build only (simulation/, with --cfg tokio_unstable)");

pub mod codec;
pub mod journal;
pub mod mem_store;
pub mod mutant;
pub mod records;
pub mod sled_store;
pub mod state;
pub mod state_machine;
pub mod types;

pub use mem_store::MemLogStore;
pub use sled_store::SledLogStore;
pub use state_machine::StateMachineStore;
pub use state_machine::StateReader;
pub use types::*;
