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
//! **Fatal records.** A child that cannot start sends, just before it exits,
//! one datagram of [`RECORD_LEN`] bytes with state 3 followed by its reason
//! in UTF-8 (at most [`MAX_REASON`] bytes; [`encode_fatal`]), so that the
//! master's throttle line and `postern status` carry the child's own reason
//! instead of a separate log line that can be lost.
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

/// The longest reason a fatal record carries, in bytes.
pub const MAX_REASON: usize = 400;
/// The longest datagram on a status channel.
pub const MAX_MESSAGE: usize = RECORD_LEN + MAX_REASON;
const FATAL_STATE: u32 = 3;

/// One datagram on a status channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A state change.
    State(StatusRecord),
    /// The child's reason for failing at startup; it exits next.
    Fatal {
        /// The child's pid.
        pid: u32,
        /// Its service generation.
        generation: u32,
        /// Why it could not start.
        reason: String,
    },
}

/// Encodes a fatal record; the reason is cut to [`MAX_REASON`] bytes (at a
/// character boundary).
pub fn encode_fatal(pid: u32, generation: u32, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = Vec::with_capacity(RECORD_LEN + end);
    out.extend_from_slice(&pid.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&FATAL_STATE.to_le_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
    out
}

/// Decodes any datagram of a status channel.
pub fn decode_message(bytes: &[u8]) -> Result<Message, RecordError> {
    if bytes.len() >= RECORD_LEN && bytes.len() <= MAX_MESSAGE {
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if word(8) == FATAL_STATE {
            return Ok(Message::Fatal {
                pid: word(0),
                generation: word(4),
                reason: String::from_utf8_lossy(&bytes[RECORD_LEN..]).into_owned(),
            });
        }
    }
    StatusRecord::decode(bytes).map(Message::State)
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

    #[test]
    fn fatal_records() {
        let bytes = encode_fatal(12, 3, "user=root: uid 0 is not allowed");
        assert_eq!(
            decode_message(&bytes),
            Ok(Message::Fatal {
                pid: 12,
                generation: 3,
                reason: "user=root: uid 0 is not allowed".into()
            })
        );
        // Cut at a character boundary.
        let long = "é".repeat(MAX_REASON);
        let bytes = encode_fatal(1, 1, &long);
        assert!(bytes.len() <= MAX_MESSAGE);
        let Ok(Message::Fatal { reason, .. }) = decode_message(&bytes) else {
            panic!("not a fatal record");
        };
        assert_eq!(reason.len(), MAX_REASON);
        // Ordinary records still decode; too long is malformed.
        let r = StatusRecord {
            pid: 1,
            generation: 1,
            state: ChildState::Taken,
        };
        assert_eq!(decode_message(&r.encode()), Ok(Message::State(r)));
        assert_eq!(
            decode_message(&[0; MAX_MESSAGE + 1]),
            Err(RecordError::Length(MAX_MESSAGE + 1))
        );
        // A fatal-state word with trailing bytes but a bad length elsewhere.
        assert_eq!(decode_message(&[0; 13]), Err(RecordError::Length(13)));
    }

    // The fixed numbers sit above stdio, in order, below the master's own.
    const _: () = assert!(STATUS_FD > 2 && LISTEN_FD == STATUS_FD + 1);
    const _: () = assert!(FIRST_FREE_FD == LISTEN_FD + MAX_LISTEN_FDS as RawFd);
}
