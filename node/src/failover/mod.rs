//! Failover: when this node may hold the service, and in what order it takes and lets go of
//! its network identity and resources (DESIGN §4).
//!
//! [`controller::Controller`] is a pure state machine: the caller feeds it time and inputs
//! (Raft views, committed activations, resource results, operator commands) and carries out
//! the [`controller::Effect`]s it returns. It reads no clock and does no I/O.

pub mod controller;
pub mod driver;
