//! # postern-common
//!
//! **Name**: postern-common — what every postern process shares.
//!
//! **Description**: the child skeleton every master-managed daemon runs on
//! ([`server`]), the master↔child contract ([`status`]), privilege changes
//! ([`privilege`]), the one log format ([`log`]), account look-ups
//! ([`account`]), exit codes ([`sysexits`]) and the only module with
//! `unsafe` code ([`sys`]).
//!
//! **Security**: [`privilege`] is the one place that changes user and group
//! ids; [`sys`] the one place with raw system calls. Untrusted input handled
//! here: status records from children (decoded strictly, never trusted for
//! anything but bookkeeping).
//!
//! **See also**: sysexits(3), getpwnam(3), epoll(7).

pub mod account;
pub mod aliases;
pub mod command;
pub mod descendants;
pub mod destinations;
pub mod handoff;
pub mod log;
pub mod privilege;
pub mod server;
pub mod status;
pub mod sys;
pub mod sysexits;
pub mod trusted;
pub mod wait;
