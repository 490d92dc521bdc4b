//! The embedded default configuration.
//!
//! With no configuration directory, postern runs on the main.cf and master.cf
//! compiled into the binary (the `defaults/` directory of this crate), so that
//! a new user can start an instance without writing a file. The only thing that
//! varies is where the instance keeps its state ([`Layout`]): the usual system
//! directories for root, or directories of the user's own otherwise.
//! `postern init DIR` writes the same files out for editing.

use std::path::{Path, PathBuf};

/// The default main.cf, with `@QUEUE_DIRECTORY@` and `@DATA_DIRECTORY@` to fill in.
pub const MAIN_CF_TEMPLATE: &str = include_str!("../defaults/main.cf");
/// The default master.cf.
pub const MASTER_CF: &str = include_str!("../defaults/master.cf");
/// The default allowed-destinations policy of local.
pub const DESTINATIONS: &str = include_str!("../defaults/destinations");

/// The default destinations policy, for programs in `program_dir`.
pub fn destinations(program_dir: &Path) -> String {
    DESTINATIONS.replace("@PROGRAM_DIRECTORY@", &program_dir.display().to_string())
}

/// Where an instance keeps its queue and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `queue_directory`.
    pub queue_directory: PathBuf,
    /// `data_directory`.
    pub data_directory: PathBuf,
}

impl Layout {
    /// The system layout: /var/spool/postern and /var/lib/postern.
    pub fn system() -> Self {
        Layout {
            queue_directory: PathBuf::from(crate::params::default::QUEUE_DIRECTORY),
            data_directory: PathBuf::from(crate::params::default::DATA_DIRECTORY),
        }
    }

    /// A self-contained layout inside `dir`: `dir/queue` and `dir/data`.
    pub fn inside(dir: &Path) -> Self {
        Layout {
            queue_directory: dir.join("queue"),
            data_directory: dir.join("data"),
        }
    }

    /// The main.cf text for this layout.
    pub fn main_cf(&self) -> String {
        MAIN_CF_TEMPLATE
            .replace(
                "@QUEUE_DIRECTORY@",
                &self.queue_directory.display().to_string(),
            )
            .replace(
                "@DATA_DIRECTORY@",
                &self.data_directory.display().to_string(),
            )
    }
}
