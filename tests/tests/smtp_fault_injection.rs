//! Fault injection on the way off the host, end to end, as root: uniquely
//! numbered messages go `postern sendmail` → submit → qmgr → smtp → a
//! remote server on loopback (`tests/smtp_server.py`, which holds each
//! reply to the end of data a moment, so that kills land between the
//! message's last byte and the server's answer), while SIGKILLs land at
//! random moments on the smtp processes. Afterwards every copy the server
//! kept is counted: nothing lost, no truncated copy (a transaction cut in
//! the middle of the data is not a message), and no more copies twice than
//! kills that landed: a kill after the server took the message and before
//! the agent reported it is the one window where SMTP itself sends twice
//! (RFC 1047), and each kill can open it for one message at most.
//!
//! The random choices come from a seed printed at the start (and in every
//! failure); `POSTERN_FAULT_SEED=<n>` replays one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use postern_tests::remote::Remote;
use postern_tests::{eventually, Instance, Rng};

const MASTER: &str = "submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n\
                      smtp unix - - n - - smtp\n";

/// Messages in a run.
const MESSAGES: usize = 120;

/// Message `n` of run `tag`: a subject that names it, a body long enough
/// to be cut in the middle, and a last line that proves it whole.
fn message(tag: &str, n: usize) -> Vec<u8> {
    let mut m = format!("Subject: smtp-fi {tag} {n}\n\n");
    for i in 0..40 {
        m.push_str(&format!("line {i} of message {n}: {}\n", "x".repeat(60)));
    }
    m.push_str(&format!("end of message {n}\n"));
    m.into_bytes()
}

/// The number of a copy the server kept, and whether it is whole.
fn judge(tag: &str, data: &[u8]) -> Option<(usize, bool)> {
    let text = String::from_utf8_lossy(data).replace("\r\n", "\n");
    let prefix = format!("Subject: smtp-fi {tag} ");
    let n: usize = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))?
        .trim()
        .parse()
        .ok()?;
    Some((n, text.ends_with(&format!("end of message {n}\n"))))
}

#[test]
fn kill_9_of_smtp_loses_nothing_and_sends_twice_only_in_the_reply_window() {
    let seed = postern_tests::seed_from_env("POSTERN_FAULT_SEED");
    let tag = format!("{seed:x}");
    eprintln!("smtp fault injection seed: {seed} (replay: POSTERN_FAULT_SEED={seed})");
    let remote = Remote::start("127.0.0.1", &["--hold", "0.05"]);
    let mut inst = Instance::new(
        &format!(
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
             service_throttle_time = 1s\ndefault_transport = smtp\n\
             relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = none\n\
             smtp_connect_timeout = 5s\nsmtp_helo_timeout = 5s\n",
            remote.port
        ),
        MASTER,
    );
    inst.start();
    // Whether every message has arrived at least once.
    let all_arrived = || {
        let got: std::collections::HashSet<usize> = remote
            .messages()
            .iter()
            .filter_map(|(_, d)| judge(&tag, d).map(|(n, _)| n))
            .collect();
        got.len() == MESSAGES
    };
    let stop = AtomicBool::new(false);
    let mut rng = Rng(seed);
    let kill_seed = rng.next_u64() | 1;
    let kills = std::thread::scope(|scope| {
        let killer = {
            let (inst, stop) = (&inst, &stop);
            scope.spawn(move || {
                let mut rng = Rng(kill_seed);
                let mut kills = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Now and then every smtp process at once, else one.
                    let smtp = inst.children_of("smtp");
                    if rng.below(4) == 0 {
                        for p in smtp {
                            kills += usize::from(inst.sigkill_own(p));
                        }
                    } else if !smtp.is_empty() {
                        let p = smtp[rng.below(smtp.len() as u64) as usize];
                        kills += usize::from(inst.sigkill_own(p));
                    }
                    std::thread::sleep(Duration::from_millis(5 + rng.below(60)));
                }
                kills
            })
        };
        for n in 0..MESSAGES {
            inst.sendmail(
                &["-i", &format!("r{}@remote.test", n % 7)],
                &message(&tag, n),
            );
        }
        // The killing goes on while the queue works through the retries.
        let _ = eventually(Duration::from_secs(30), all_arrived);
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap()
    });
    // Everything arrives (retries included) and the queue empties.
    let settled = eventually(Duration::from_secs(120), || {
        all_arrived()
            && inst
                .postern(&["queue", "list"])
                .stdout
                .contains("-- 0 messages")
    });
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let mut truncated = Vec::new();
    let mut strange = 0;
    for (_, data) in remote.messages() {
        match judge(&tag, &data) {
            Some((n, whole)) => {
                *copies.entry(n).or_default() += 1;
                if !whole {
                    truncated.push(n);
                }
            }
            None => strange += 1,
        }
    }
    let lost: Vec<usize> = (0..MESSAGES).filter(|n| !copies.contains_key(n)).collect();
    let twice: usize = copies.values().map(|c| c - 1).sum();
    let cut = inst
        .log()
        .lines()
        .filter(|l| l.contains("status=deferred"))
        .count();
    // (After an agent dies mid-exchange the queue manager suspends the
    // transport for a while, as Postfix's does: most deferrals are those.)
    eprintln!(
        "seed {seed}: {kills} smtp processes killed, {cut} deliveries cut short (deferred); lost {}, extra copies {twice}, truncated {}, unrecognised {strange}",
        lost.len(),
        truncated.len()
    );
    let log = || {
        let log = inst.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(150)..].join("\n")
    };
    assert!(
        settled && lost.is_empty() && truncated.is_empty() && strange == 0,
        "seed {seed}: settled {settled}, lost {lost:?}, truncated {truncated:?}, unrecognised {strange}\nqueue:\n{}\nlog:\n{}",
        inst.postern(&["queue", "list"]).stdout,
        log()
    );
    assert!(
        twice <= kills,
        "seed {seed}: {twice} extra copies for {kills} kills\nlog:\n{}",
        log()
    );
    // The test must have attacked what it claims to.
    assert!(kills > 0, "seed {seed}: no smtp process was killed");
    let out = inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
}
