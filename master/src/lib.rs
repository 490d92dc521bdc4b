//! # postern-master
//!
//! **Name**: postern-master — the supervisor of a postern instance.
//!
//! **Synopsis**: started by `postern start` (see `postern-cli`), or
//! `postern-master [-c CONFIG_DIR] [--foreground]` under a service manager.
//!
//! **Description**: reads main.cf and master.cf, owns every listening
//! endpoint, forks children on demand, reads their status, reaps them,
//! throttles crash loops, reloads on SIGHUP and stops on SIGTERM; answers
//! the control socket ([`control_server`]). Runs postern's programs and,
//! in a Postfix instance, Postfix's own daemons under Postfix's contract
//! ([`postfix`]). See [`supervisor`] for the
//! manual.
//!
//! **Security**: runs as root; only root can change what it runs as root
//! (the configuration checks of `postern_common::check`).
//!
//! **See also**: master(8), master(5), postern(1).

pub mod control_server;
pub mod endpoint;
pub mod lifecycle;
pub mod postfix;
pub mod supervisor;
