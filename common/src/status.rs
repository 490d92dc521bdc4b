//! The master↔child contract.
//!
//! **Descriptors.** A child of the master finds, at fixed numbers:
//! - [`STATUS_FD`] (3): its end of the service's status channel, an
//!   `AF_UNIX` `SOCK_SEQPACKET` socket. The child writes [`StatusRecord`]s; it
//!   reads nothing, but sees end-of-file when the master closes the channel
//!   (the master exited, or a reload replaced the service's channel): it then
//!   exits as soon as it is idle.
//! - [`LISTEN_FD`] (4) and up: the service's listening endpoints, as many as
//!   the `-l` option says, at most [`MAX_LISTEN_FDS`]. The master checks before
//!   `dup2` that no source descriptor collides with a target number.
//!
//! **Records.** One record per datagram, exactly [`RECORD_LEN`] bytes,
//! little-endian: `pid: u32, generation: u32, state: u32`. The generation is
//! the one the master gave the child with `-g`; a record from an older
//! generation is ignored. A datagram of any other length, an unknown state or
//! a pid that is not the sender's is a malformed record: the master logs it
//! and ignores it.
//!
//! **States.** [`ChildState::Available`] when ready for a request (after
//! startup and after each request), [`ChildState::Taken`] when it has accepted
//! one. A child that exits with a failure before it ever reported
//! `Available` after a `Taken` has not completed a request: the master then
//! throttles the service.

use std::os::fd::RawFd;

/// The child's end of its service's status channel.
pub const STATUS_FD: RawFd = 3;
/// The first listening endpoint.
pub const LISTEN_FD: RawFd = 4;
/// The most listening endpoints one service may have.
pub const MAX_LISTEN_FDS: usize = 16;
/// Descriptors at or above this number are free for the master's own use:
/// the master keeps every descriptor it hands to a child at or above it, so
/// the `dup2` to the fixed numbers never overwrites one it still needs.
pub const FIRST_FREE_FD: RawFd = LISTEN_FD + MAX_LISTEN_FDS as RawFd;

/// Size of one status record.
pub const RECORD_LEN: usize = 12;

/// What a child reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Idle, waiting for a request.
    Available,
    /// Busy with a request.
    Taken,
}

/// One status record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRecord {
    /// The child's pid.
    pub pid: u32,
    /// The service generation the child was started for.
    pub generation: u32,
    /// Its state.
    pub state: ChildState,
}

/// Why a datagram is not a status record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Wrong length.
    #[error("status record of {0} bytes (expected {RECORD_LEN})")]
    Length(usize),
    /// Unknown state number.
    #[error("status record with unknown state {0}")]
    State(u32),
}

impl StatusRecord {
    /// Encodes the record.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&self.pid.to_le_bytes());
        out[4..8].copy_from_slice(&self.generation.to_le_bytes());
        let state: u32 = match self.state {
            ChildState::Available => 1,
            ChildState::Taken => 2,
        };
        out[8..12].copy_from_slice(&state.to_le_bytes());
        out
    }

    /// Decodes one datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let Ok(raw) = <[u8; RECORD_LEN]>::try_from(bytes) else {
            return Err(RecordError::Length(bytes.len()));
        };
        let word = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let state = match word(8) {
            1 => ChildState::Available,
            2 => ChildState::Taken,
            other => return Err(RecordError::State(other)),
        };
        Ok(StatusRecord {
            pid: word(0),
            generation: word(4),
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for state in [ChildState::Available, ChildState::Taken] {
            let r = StatusRecord {
                pid: 4242,
                generation: 7,
                state,
            };
            assert_eq!(StatusRecord::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn malformed_records() {
        assert_eq!(StatusRecord::decode(&[]), Err(RecordError::Length(0)));
        assert_eq!(StatusRecord::decode(&[0; 13]), Err(RecordError::Length(13)));
        let mut r = StatusRecord {
            pid: 1,
            generation: 1,
            state: ChildState::Taken,
        }
        .encode();
        r[8] = 9;
        assert_eq!(StatusRecord::decode(&r), Err(RecordError::State(9)));
        r[8] = 0;
        assert_eq!(StatusRecord::decode(&r), Err(RecordError::State(0)));
    }

    // The fixed numbers sit above stdio, in order, below the master's own.
    const _: () = assert!(STATUS_FD > 2 && LISTEN_FD == STATUS_FD + 1);
    const _: () = assert!(FIRST_FREE_FD == LISTEN_FD + MAX_LISTEN_FDS as RawFd);
}
