//! # postern-common
//!
//! **Name**: postern-common — what every postern process shares.
//!
//! **Description**: the child skeleton every master-managed daemon runs on
//! ([`server`]), the master↔child contract ([`status`]), the control
//! protocol between `postern` and the master ([`control`]), an instance's
//! layout on disk ([`instance`]), the one frame codec of its own channels
//! ([`frame`]), the configuration checks shared by
//! `postern check` and the master ([`check`], [`programs`]), the queue as
//! `postern status` reports it ([`queue_health`]), the one log format
//! ([`log`]), mail formatting streamed from the queue file ([`mail`]), account look-ups ([`account`]) and exit codes ([`sysexits`]).
//!
//! **Security**: no `unsafe` here (forbidden): raw system calls and privilege
//! changes live in `postern-sys`, which callers import directly. Untrusted
//! input handled here: status records from children (decoded strictly, never
//! trusted for anything but bookkeeping).
//!
//! **See also**: sysexits(3), getpwnam(3), epoll(7).

pub mod account;
pub mod check;
pub mod command;
pub mod control;
pub mod descendants;
pub mod destinations;
pub mod frame;
pub mod handoff;
pub mod instance;
pub mod log;
pub mod mail;
pub use postern_conf::programs;
pub mod queue_health;
pub mod server;
pub mod status;
pub mod sysexits;
pub mod trusted;
