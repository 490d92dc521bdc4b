//! Property tests: no input, however malformed, makes the parsers panic, and
//! a configuration is usable exactly when no error was reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_conf::{Config, ServicesFile};
use proptest::prelude::*;

const SEED_MAIN: &str =
    "max_use = 3\nmax_idle = ${ipc_timeout?{10s}:{20s}}\n  # c\nfoo = $bar $(baz) ${q:x}\n";
const SEED_MASTER: &str = "demo inet n - n 60? 4 spawn -o { max_use = 2 } user=nobody argv=/bin/cat\n  -o x=1\n[::1]:25 inet - - - - - spawn\n";

fn check(main: &[u8], master: &[u8]) {
    let ports = ServicesFile::parse("smtp 25/tcp\n");
    let loaded = Config::from_text("main.cf", main, "master.cf", master, &ports);
    let has_error = loaded.diagnostics.iter().any(|d| d.is_error());
    assert_eq!(loaded.config.is_some(), !has_error);
    if let Some(c) = loaded.config {
        for s in &c.master.services {
            let _ = c.for_service(s);
        }
    }
}

/// Replaces, inserts or deletes characters drawn from the syntax's own alphabet.
fn mutate(seed: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    const ALPHABET: &[u8] = b"${}()?:=# \t\n-oy/[]0123456789abcsmhdw,\xff";
    let mut bytes = seed.as_bytes().to_vec();
    for &(pos, op, ch) in edits {
        let at = if bytes.is_empty() {
            0
        } else {
            pos % (bytes.len() + 1)
        };
        let c = ALPHABET[ch as usize % ALPHABET.len()];
        match op % 3 {
            0 if at < bytes.len() => bytes[at] = c,
            1 => bytes.insert(at, c),
            _ if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(main in proptest::collection::vec(any::<u8>(), 0..400),
                    master in proptest::collection::vec(any::<u8>(), 0..400)) {
        check(&main, &master);
    }

    #[test]
    fn mutated_lines(main_edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12),
                     master_edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 0..12)) {
        check(&mutate(SEED_MAIN, &main_edits), &mutate(SEED_MASTER, &master_edits));
    }

    #[test]
    fn shuffled_lines(order in proptest::collection::vec(any::<u8>(), 0..20)) {
        let lines: Vec<&str> = SEED_MAIN.lines().chain(SEED_MASTER.lines()).collect();
        let pick = |o: &u8| lines[*o as usize % lines.len()];
        let text: Vec<&str> = order.iter().map(pick).collect();
        check(text.join("\n").as_bytes(), text.join("\n").as_bytes());
    }
}
