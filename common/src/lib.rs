//! # postern-common
//!
//! **Name**: postern-common — what every postern process shares.
//!
//! **Description**: account look-ups ([`account`]) and the documented exit
//! codes ([`sysexits`]) used by the `postern` command and the daemons.
//!
//! **Security**: account look-ups read the system's user and group databases
//! through the C library (nix's safe wrappers); nothing here changes
//! privileges.
//!
//! **See also**: sysexits(3), getpwnam(3).

pub mod account;
pub mod sysexits;
