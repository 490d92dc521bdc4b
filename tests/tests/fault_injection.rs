//! Fault injection, end to end, as root: a few hundred uniquely numbered
//! messages go through the real pipeline (`postern sendmail` → submit →
//! qmgr → local) to an mbox, a Maildir and a program, while SIGKILLs land at
//! random moments on local's delivery processes (some of them right after
//! a copy was written, before it was reported), local, qmgr, submit,
//! `postern sendmail` in mid-message, and once on the master (which is then
//! started again). Afterwards every copy is counted: nothing lost, nothing
//! twice in the mbox or the Maildir, at least once for the program, no
//! truncated copy anywhere, and nothing at all of a message whose
//! `sendmail` was killed before the end of its input.
//!
//! The random choices come from a seed printed at the start (and in every
//! failure); `POSTERN_FAULT_SEED=<n>` replays one. Larger runs:
//! `scripts/fault-injection`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_tests::{bin, eventually, run_with_input, test_account, Instance};

const MBOX: &str = "fi-mbox";
const MDIR: &str = "fi-mdir";
const PROG: &str = "fi-prog";
const USERS: [&str; 3] = [MBOX, MDIR, PROG];

/// Messages per destination.
fn per_destination() -> usize {
    std::env::var("POSTERN_FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

use postern_tests::Rng;

fn seed() -> u64 {
    postern_tests::seed_from_env("POSTERN_FAULT_SEED")
}

/// This run's tag (its seed, in hex), in every subject: copies that an
/// earlier run's leftovers deliver into the same accounts are not counted.
static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn tag() -> &'static str {
    TAG.get().map_or("untagged", String::as_str)
}

/// The message numbered `n`: a subject that names it, a body long enough
/// that a write can be cut short, and a last line that proves it whole.
fn message(n: usize) -> Vec<u8> {
    let mut m = format!("Subject: fault {} {n}\n\nstart {n}\n", tag()).into_bytes();
    for line in 0..(20 + n % 40) {
        m.extend_from_slice(format!("line {line} of message {n} {}\n", "x".repeat(60)).as_bytes());
    }
    m.extend_from_slice(format!("end {n}\n").as_bytes());
    m
}

/// A message big enough that half of it fills the pipe to `sendmail`: it
/// has then been reading (and sending) when it is killed.
fn big_message(n: usize) -> Vec<u8> {
    let mut m = format!("Subject: fault {} {n}\n\nstart {n}\n", tag()).into_bytes();
    while m.len() < 256 * 1024 {
        m.extend_from_slice(format!("filler of message {n} {}\n", "y".repeat(70)).as_bytes());
    }
    m.extend_from_slice(format!("end {n}\n").as_bytes());
    m
}

/// What one copy found at a destination says: its number, and whether it
/// is whole.
fn judge(copy: &str) -> Option<(usize, bool)> {
    let (run, n) = copy
        .lines()
        .find_map(|l| l.strip_prefix("Subject: fault "))?
        .trim()
        .split_once(' ')?;
    // A copy of another run (a process an earlier run left) is not ours.
    if run != tag() {
        return None;
    }
    let n: usize = n.parse().ok()?;
    let whole = copy.contains(&format!("\nend {n}\n"));
    Some((n, whole))
}

#[derive(Default, Debug)]
struct Tally {
    copies: HashMap<usize, usize>,
    truncated: Vec<usize>,
    /// The queue ids of each message's copies (from its `Received:`).
    ids: HashMap<usize, Vec<String>>,
}

impl Tally {
    fn add(&mut self, copy: &str) {
        if let Some((n, whole)) = judge(copy) {
            *self.copies.entry(n).or_default() += 1;
            if !whole {
                self.truncated.push(n);
            }
            if let Some(id) = copy.split("\tid ").nth(1).and_then(|r| r.split(';').next()) {
                self.ids.entry(n).or_default().push(id.to_string());
            }
        }
    }
    fn count(&self, n: usize) -> usize {
        self.copies.get(&n).copied().unwrap_or(0)
    }
}

fn tally_mbox(path: &Path) -> Tally {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut t = Tally::default();
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        if line.starts_with("From ") && !current.is_empty() {
            t.add(&current);
            current.clear();
        }
        current.push_str(line);
    }
    if !current.is_empty() {
        t.add(&current);
    }
    t
}

fn tally_dir(dirs: &[PathBuf], skip_hidden: bool) -> Tally {
    let mut t = Tally::default();
    for d in dirs {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if skip_hidden && e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                t.add(&text);
            }
        }
    }
    t
}

/// The children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn sigkill(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
}

/// How one submission ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Queued (exit 0).
    Queued,
    /// `sendmail` killed before the end of its input: must never arrive.
    Aborted,
    /// `sendmail` could not know (it says so): at most once.
    Unknown,
}

/// Submits message `n` to `user`, retrying on 75 (not queued) as a caller
/// should; the result says what may be expected of it.
fn submit(etc: &Path, user: &str, n: usize, stop: &AtomicBool) -> Result<Sent, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = run_with_input(
            Command::new(bin("postern-sendmail"))
                .arg("-C")
                .arg(etc)
                .arg(user),
            &message(n),
        );
        match out.code {
            Some(0) => return Ok(Sent::Queued),
            Some(75) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                // Not queued: the service is restarting. Again, as cron
                // would, once the submit socket takes connections.
                let socket = etc.join("queue/public/submit");
                let left = deadline.saturating_duration_since(Instant::now());
                eventually(left, || {
                    std::os::unix::net::UnixStream::connect(&socket).is_ok()
                });
            }
            Some(_)
                if out
                    .stderr
                    .to_ascii_lowercase()
                    .contains("may have been queued") =>
            {
                return Ok(Sent::Unknown)
            }
            _ => return Err(format!("message {n}: {out:?}")),
        }
    }
}

/// Starts `sendmail` for message `n`, feeds it half the message (more than
/// a pipe holds, so it has been reading), and kills it.
fn submit_and_kill(etc: &Path, user: &str, n: usize) {
    let mut child = Command::new(bin("postern-sendmail"))
        .arg("-C")
        .arg(etc)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postern-sendmail");
    let text = big_message(n);
    let mut stdin = child.stdin.take().unwrap();
    // It may fail early (submit killed meanwhile): a broken pipe is fine.
    let _ = stdin.write_all(&text[..text.len() / 2]);
    let _ = child.kill();
    let _ = child.wait();
}

#[derive(Debug, Default)]
struct Kills {
    delivery: usize,
    after_write: usize,
    local: usize,
    qmgr: usize,
    submit: usize,
    master: usize,
}

#[test]
fn kill_9_anywhere_loses_duplicates_and_truncates_nothing() {
    let seed = seed();
    eprintln!("fault injection seed: {seed} (replay: POSTERN_FAULT_SEED={seed})");
    TAG.set(format!("{seed:x}")).unwrap();
    let n_per = per_destination();
    for u in USERS {
        let (_, _, home) = test_account(u, "/bin/bash");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A Maildir of this run's own (the accounts outlive a run, and two runs
    // may share them), and fresh .forward files.
    let mdir_home = PathBuf::from(format!("/home/{MDIR}"));
    let maildir_root = mdir_home.join("Mail").join(format!("fault-{}", tag()));
    let _ = std::fs::remove_dir_all(&maildir_root);
    {
        let (uid, gid) = postern_tests::ids_of(MDIR);
        let mail = mdir_home.join("Mail");
        let _ = std::fs::create_dir(&mail);
        nix::unistd::chown(&mail, Some(uid.into()), Some(gid.into())).unwrap();
    }
    let mut inst = Instance::new(
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
         service_throttle_time = 1s\ncommand_time_limit = 20s\n",
        "local unix - n n - - local\nsubmit unix n - n - - submit\nqmgr fifo n - n 1 1 qmgr\n",
    );
    let spool = inst.own_spool();
    let policy = inst.etc().join("destinations");
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str("maildir ~/Mail/**\n");
    std::fs::write(&policy, text).unwrap();
    // The program keeps each message it is given in a file of its own,
    // renamed into place once whole. It first pauses a moment, so that
    // delivery processes live long enough to be killed however fast the
    // rest of the pipeline is.
    let out_dir = inst.dir.path().join("program-out");
    std::fs::create_dir(&out_dir).unwrap();
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let program = inst.etc().join("programs").join("keep");
    std::fs::write(
        &program,
        format!(
            "#!/bin/sh\nsleep 0.02\nt={d}/.part.$$\ncat > \"$t\" && mv \"$t\" {d}/msg.$$.$(date +%s%N)\n",
            d = out_dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (user, text) in [
        (MBOX, String::new()),
        (MDIR, format!("{}/\n", maildir_root.display())),
        (PROG, "\"|keep\"\n".to_string()),
    ] {
        let (uid, gid, home) = test_account(user, "/bin/bash");
        let f = home.join(".forward");
        let _ = std::fs::remove_file(&f);
        if !text.is_empty() {
            std::fs::write(&f, text).unwrap();
            nix::unistd::chown(&f, Some(uid.into()), Some(gid.into())).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    inst.start();
    let etc = inst.etc();
    let mbox_path = spool.join(MBOX);
    let maildir: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .map(|s| maildir_root.join(s))
        .collect();

    let total = n_per * USERS.len();
    let stop = AtomicBool::new(false);
    let sent: Mutex<HashMap<usize, Sent>> = Mutex::new(HashMap::new());
    let mut rng = Rng(seed);
    // Which messages have their sendmail killed mid-way: about one in 30.
    let aborted: Vec<usize> = (0..total).filter(|_| rng.below(30) == 0).collect();
    let kill_seed = rng.next_u64() | 1;

    let (kills, results) = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..USERS.len())
            .map(|d| {
                let (etc, stop, sent, aborted) = (&etc, &stop, &sent, &aborted);
                scope.spawn(move || -> Result<(), String> {
                    for n in (d..total).step_by(USERS.len()) {
                        let outcome = if aborted.contains(&n) {
                            submit_and_kill(etc, USERS[d], n);
                            Sent::Aborted
                        } else {
                            submit(etc, USERS[d], n, stop)?
                        };
                        sent.lock().unwrap().insert(n, outcome);
                    }
                    Ok(())
                })
            })
            .collect();
        let killer = {
            let (inst, stop, mbox_path, maildir) = (&mut inst, &stop, &mbox_path, &maildir);
            scope.spawn(move || {
                let mut rng = Rng(kill_seed);
                let mut k = Kills::default();
                // The master is killed once, a third of the way in or so.
                let mut master_at = 20 + rng.below(30);
                // Once the senders are done, the killing goes on while the
                // queue still works, until a delivery process has been hit
                // (the suite must attack what it claims to) or 30 s pass.
                let mut extra: Option<Instant> = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        let until =
                            *extra.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
                        if k.after_write + k.delivery > 0 || Instant::now() >= until {
                            break;
                        }
                    }
                    let local: Vec<u32> = inst.children_of("local");
                    let delivery: Vec<u32> = local.iter().flat_map(|&p| children(p)).collect();
                    match rng.below(100) {
                        // Right after a copy is written and before it is
                        // reported: the window that makes duplicates.
                        0..=39 => {
                            let size = || {
                                std::fs::metadata(mbox_path).map_or(0, |m| m.len())
                                    + maildir
                                        .iter()
                                        .map(|d| std::fs::read_dir(d).map_or(0, |r| r.count()))
                                        .sum::<usize>() as u64
                            };
                            let before = size();
                            let until = Instant::now() + Duration::from_millis(300);
                            while Instant::now() < until && size() == before {
                                std::hint::spin_loop();
                            }
                            for p in local.iter().flat_map(|&p| children(p)) {
                                k.after_write += usize::from(inst.sigkill_own(p));
                            }
                        }
                        40..=74 => {
                            for p in delivery {
                                k.delivery += usize::from(inst.sigkill_own(p));
                            }
                        }
                        75..=82 => {
                            for p in local {
                                k.local += usize::from(inst.sigkill_own(p));
                            }
                        }
                        83..=90 => {
                            for p in inst.children_of("qmgr") {
                                k.qmgr += usize::from(inst.sigkill_own(p));
                            }
                        }
                        91..=99 => {
                            for p in inst.children_of("submit") {
                                k.submit += usize::from(inst.sigkill_own(p));
                            }
                        }
                        _ => {}
                    }
                    master_at = master_at.saturating_sub(1);
                    if master_at == 1 {
                        if let Some(pid) = inst.master_pid.take() {
                            k.master += usize::from(sigkill(pid));
                            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
                            inst.start();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10 + rng.below(60)));
                }
                k
            })
        };
        let results: Vec<Result<(), String>> =
            senders.into_iter().map(|s| s.join().unwrap()).collect();
        stop.store(true, Ordering::Relaxed);
        (killer.join().unwrap(), results)
    });
    for r in results {
        if let Err(e) = r {
            panic!(
                "seed {seed}: a submission failed: {e}\nlog:\n{}",
                inst.log()
            );
        }
    }
    eprintln!("seed {seed}: kills {kills:?}");
    let sent = sent.into_inner().unwrap();
    let expected = |d: usize| {
        (d..total)
            .step_by(USERS.len())
            .filter(|n| sent.get(n) == Some(&Sent::Queued))
            .collect::<Vec<usize>>()
    };
    // Everything queued arrives (retries included) and the queue empties.
    let settled = eventually(Duration::from_secs(120 + n_per as u64 / 10), || {
        let mb = tally_mbox(&mbox_path);
        let md = tally_dir(&maildir, false);
        let pr = tally_dir(std::slice::from_ref(&out_dir), true);
        expected(0).iter().all(|&n| mb.count(n) >= 1)
            && expected(1).iter().all(|&n| md.count(n) >= 1)
            && expected(2).iter().all(|&n| pr.count(n) >= 1)
            && inst
                .postern(&["queue", "list"])
                .stdout
                .contains("-- 0 messages")
    });
    let mb = tally_mbox(&mbox_path);
    let md = tally_dir(&maildir, false);
    let pr = tally_dir(std::slice::from_ref(&out_dir), true);
    let mut report = String::new();
    for (d, (name, t)) in [("mbox", &mb), ("maildir", &md), ("program", &pr)]
        .into_iter()
        .enumerate()
    {
        let mut lost = Vec::new();
        let mut twice = Vec::new();
        let mut ghost = Vec::new();
        for n in (d..total).step_by(USERS.len()) {
            let c = t.count(n);
            match sent.get(&n) {
                Some(Sent::Queued) if c == 0 => lost.push(n),
                Some(Sent::Queued) | Some(Sent::Unknown) if c > 1 && d < 2 => twice.push(n),
                Some(Sent::Aborted) if c > 0 => ghost.push(n),
                _ => {}
            }
        }
        eprintln!(
            "{name}: {} queued, {} aborted, lost {}, duplicated {}, truncated {}, of an aborted submission {}",
            expected(d).len(),
            (d..total)
                .step_by(USERS.len())
                .filter(|n| sent.get(n) == Some(&Sent::Aborted))
                .count(),
            lost.len(),
            twice.len(),
            t.truncated.len(),
            ghost.len()
        );
        if !lost.is_empty() || !twice.is_empty() || !t.truncated.is_empty() || !ghost.is_empty() {
            report.push_str(&format!(
                "{name}: lost {lost:?}, duplicated {twice:?}, truncated {:?}, delivered though its sendmail was killed {ghost:?}\n",
                t.truncated
            ));
            // What the log says of each message that went wrong.
            let log = inst.log();
            for n in twice.iter().chain(&t.truncated).chain(&ghost) {
                let mut ids = t.ids.get(n).cloned().unwrap_or_default();
                ids.dedup();
                for id in ids {
                    report.push_str(&format!("--- message {n}, queue id {id}:\n"));
                    for l in log.lines().filter(|l| l.contains(&id)) {
                        report.push_str(l);
                        report.push('\n');
                    }
                }
            }
        }
    }
    assert!(
        settled && report.is_empty(),
        "seed {seed} (replay: POSTERN_FAULT_SEED={seed}); settled: {settled}; kills {kills:?}\n{report}queue:\n{}\nlog (last 200 lines):\n{}",
        inst.postern(&["queue", "list"]).stdout,
        {
            let log = inst.log();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(200)..].join("\n")
        }
    );
    // The suite must have attacked what it claims to.
    assert!(
        kills.after_write + kills.delivery > 0 && kills.local + kills.qmgr + kills.submit > 0,
        "seed {seed}: too few kills landed: {kills:?}"
    );
    // No unfinished copy of a killed sendmail stays in the queue.
    // (The queue manager removes a dead writer's temporary once it is a
    // few seconds old, at its next deferred-queue run.)
    let incoming = etc.join("queue").join("incoming");
    let left = || -> Vec<String> {
        std::fs::read_dir(&incoming)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let clean = eventually(Duration::from_secs(30), || left().is_empty());
    assert!(clean, "seed {seed}: left in incoming: {:?}", left());
    let _ = std::fs::remove_dir_all(&maildir_root);
}
