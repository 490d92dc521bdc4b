//! Property tests: queue files, sendmail command lines, address headers and
//! routing tables that are garbage or mangled give errors, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

use postern_queue::queuefile::{Class, Envelope, QueueFile, Writer};
use proptest::prelude::*;

/// A well-formed queue file with records, to mangle.
fn seed() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let env = Envelope {
        arrival: 1_795_245_296,
        sender: "ann@example.org".into(),
        uid: 1000,
        class: Class::Normal,
    };
    let mut w = Writer::create(dir.path(), "SEED1", &env).unwrap();
    w.write_message(b"Subject: x\n\nFrom body\n").unwrap();
    w.finish(&["bob@example.org".into(), "carol".into()])
        .unwrap();
    let mut text = std::fs::read(dir.path().join("SEED1")).unwrap();
    text.extend_from_slice(b"i\t0\tbob|mailbox /x\nd\t0\tbob|mailbox /x\nt\t1\t4.2.0\tk\twhy\nbN\t1\t5.1.1\t1\tk2\tno\n");
    text
}

fn read(bytes: &[u8]) {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(bytes).unwrap();
    let _ = QueueFile::read_from(f);
}

proptest! {
    #[test]
    fn random_bytes_as_a_queue_file(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        read(&bytes);
    }

    #[test]
    fn mangled_queue_files(edits in proptest::collection::vec((any::<usize>(), 0u8..3, any::<u8>()), 1..8)) {
        let mut bytes = seed();
        for (pos, op, b) in edits {
            let at = pos % (bytes.len() + 1);
            match op {
                0 if at < bytes.len() => bytes[at] = b,
                1 => bytes.insert(at, b),
                _ if at < bytes.len() => { bytes.remove(at); }
                _ => {}
            }
        }
        read(&bytes);
    }

    #[test]
    fn sendmail_command_lines(args in proptest::collection::vec(".{0,12}", 0..6)) {
        let _ = postern_queue::sendmail::parse_args(&args);
    }

    #[test]
    fn address_headers(value in ".{0,80}") {
        let _ = postern_queue::headers::addresses(&value);
        let _ = postern_queue::headers::fields(&value);
    }
}

#[test]
fn the_seed_itself_reads() {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&seed()).unwrap();
    let q = QueueFile::read_from(f).unwrap();
    assert_eq!(q.recipients.len(), 2);
    assert_eq!(q.failures.len(), 1);
}
