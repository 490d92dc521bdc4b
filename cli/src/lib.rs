//! # postern-cli
//!
//! **Name**: postern — the administration command of a postern instance.
//!
//! **Synopsis**:
//! ```text
//! postern [-c CONFIG_DIR] check
//! postern [-c CONFIG_DIR] config [-n | -d] [-x] [-h] [-M] [NAME...]
//! postern init [--self-contained] [--force] DIR
//! postern [-c CONFIG_DIR] start [--foreground] | stop | abort
//! postern [-c CONFIG_DIR] reload [SERVICE]
//! postern [-c CONFIG_DIR] status [--json]
//! ```
//!
//! **Description**: `check` validates main.cf, master.cf, the directories
//! and the accounts they name, and lists every problem with its file and line;
//! `config` prints parameters the way postconf(1) does; `init` writes the
//! embedded default configuration out for editing; `start`, `stop`, `abort`,
//! `reload` and `status` operate the instance (see [`control`]; the master itself is
//! `postern-master`). The configuration
//! directory is `-c DIR`, else `$POSTERN_CONFIG`, else `/etc/postern` when it
//! holds a main.cf, else the embedded default configuration.
//!
//! **Security**: `check` and `config` only read. `init` writes two files and
//! never overwrites one without `--force`.
//!
//! **Configuration**: all of main.cf; `postern config -d` lists every
//! parameter with its default.
//!
//! **Exit status**: 0 success; 1 `check` found problems, `config` was
//! asked for an unknown parameter, the instance is not in the state the
//! command needs (already running, not running), `status` found it
//! degraded (a throttled service, mail stuck in incoming), or `reload` was
//! refused by the master (the running configuration stays); 3 `status`:
//! not running; 64 bad usage; 71 a system error (a port already in use);
//! 73 `init` could not write; 75 the master did not answer in time; 77 a
//! command that needs root run without it; 78 the configuration cannot be
//! used.
//!
//! **See also**: postconf(1), postconf(5), master(5).

pub mod cli;
pub mod control;
pub mod deliver;
pub mod destinations;
pub mod manual;
pub mod show;
