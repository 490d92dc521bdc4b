//! Every descendant of a command, wherever it went.
//!
//! A command's process group does not hold everything it starts: a
//! descendant may call `setsid` (or `setpgid`) and leave the group, and once
//! its parent has exited it is re-parented — to init, out of every limit,
//! unless the process that runs the command is a *child subreaper*. So each
//! process that runs commands (spawn's and pipe's children, local's
//! delivery process) makes itself one ([`become_subreaper`]) before it
//! starts a command: whatever the command leaves behind stays below it. At
//! the time limit, and as soon as the command has exited, [`end_command`]
//! kills the command's process group and then every process below this one
//! — its children and, recursively, theirs, wherever their group or
//! session — and reaps them, round after round until none remains (a
//! process forked meanwhile is re-parented to us when its parent dies, and
//! found in the next round).
//!
//! Processes are found per round by a walk down the kernel's lists of
//! children from this process (a few files when a command left nothing;
//! a scan of all of `/proc` on a kernel without them), and killed through
//! a pidfd (`pidfd_send_signal`), opened and then checked to still be
//! below us, so a pid reused by an unrelated process is never signalled.
//! A cgroup per command would do the same where
//! the kernel lets a process create one; it is not used because cgroup v2
//! delegation is not available in the containers postern runs and is tested
//! in, while a subreaper needs no setup and no privilege.
//!
//! Every child of the calling process is taken to be part of the command:
//! callers run one command at a time.
//!
//! **Background work.** A delivery command (local's programs, pipe) that
//! exits within its time limit may leave work running — procmail's `c`
//! flag forks a copy that finishes delivering after procmail exits. As in
//! Postfix, that is not killed when the command exits: the caller reports
//! the delivery status at once, notes the command's deadline
//! ([`allow_background_until`]), and once it has reported waits for what
//! is left below it ([`finish_background`]) up to the earliest deadline
//! noted, then kills whatever remains. Nothing outlives the time limit of
//! the command that started it (a later command's leftovers may be cut at
//! an earlier command's deadline: never later than their own).

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

/// How long ending the descendants may take before it gives up (a process
/// stuck in the kernel does not die of SIGKILL at once).
pub const END_LIMIT: Duration = Duration::from_secs(10);

/// Makes this process a child subreaper (not inherited by its children).
pub fn become_subreaper() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper (PR_SET_CHILD_SUBREAPER): {e}"))
}

/// One process as `/proc/PID/stat` shows it: its parent and whether it is a
/// zombie (dead, not reaped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    /// Parent pid.
    pub ppid: i32,
    /// State `Z`.
    pub zombie: bool,
}

/// Parses `/proc/PID/stat` ([`postern_sys::procfs::parse_stat`]).
pub fn parse_stat(stat: &str) -> Option<ProcEntry> {
    postern_sys::procfs::parse_stat(stat).map(|s| ProcEntry {
        ppid: s.ppid,
        zombie: s.zombie(),
    })
}

/// `root` and every process below it, by pid: walked down from `root`
/// through the kernel's lists of children ([`postern_sys::procfs::children`])
/// — a few files for a command that started nothing, where a scan of all
/// of `/proc` reads one file per process on the machine. The lists are not
/// atomic, so the walk is repeated until a second reading of the lists of
/// `root` and of every living process found names no process it missed: a
/// process re-parented meanwhile (its parent died, so it went to the
/// nearest subreaper, `root` or one below it, before its parent showed as
/// a zombie) or forked meanwhile (by a parent that was alive, and is in
/// the table as such) is then in it. Without those lists (a kernel without
/// `CONFIG_PROC_CHILDREN`), every process on the system.
fn processes_below(root: i32) -> HashMap<i32, ProcEntry> {
    // A process that forks without end is killed in the callers' rounds
    // (it is alive, so found); this bounds one snapshot.
    const ATTEMPTS: usize = 8;
    let mut table = HashMap::new();
    for _ in 0..ATTEMPTS {
        let Some(walked) = walk_below(root) else {
            return processes();
        };
        table = walked;
        let missed = std::iter::once(root)
            .chain(table.iter().filter(|(_, e)| !e.zombie).map(|(pid, _)| *pid))
            .filter_map(postern_sys::procfs::children)
            .flatten()
            .any(|c| !table.contains_key(&c));
        if !missed {
            break;
        }
    }
    table
}

/// One walk of the children lists from `root` (in the table with parent
/// 0); `None` when the kernel has no lists.
fn walk_below(root: i32) -> Option<HashMap<i32, ProcEntry>> {
    let mut table = HashMap::new();
    table.insert(
        root,
        ProcEntry {
            ppid: 0,
            zombie: false,
        },
    );
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        let children = match postern_sys::procfs::children(parent) {
            Some(c) => c,
            // The root must have lists; a process below it that is gone
            // meanwhile has none (its children went to a subreaper).
            None if parent == root => return None,
            None => continue,
        };
        for child in children {
            if table.contains_key(&child) {
                continue;
            }
            if let Some(s) = postern_sys::procfs::stat(child) {
                table.insert(
                    child,
                    ProcEntry {
                        ppid: s.ppid,
                        zombie: s.zombie(),
                    },
                );
                // A zombie has no children: they were re-parented before
                // it died.
                if !s.zombie() {
                    next.push(child);
                }
            }
        }
    }
    Some(table)
}

/// Every process on the system, by pid.
fn processes() -> HashMap<i32, ProcEntry> {
    postern_sys::procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            postern_sys::procfs::stat(pid).map(|s| {
                (
                    pid,
                    ProcEntry {
                        ppid: s.ppid,
                        zombie: s.zombie(),
                    },
                )
            })
        })
        .collect()
}

/// The pids below `root` in `table` (children, theirs, ...), parents first.
pub fn below(root: i32, table: &HashMap<i32, ProcEntry>) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, p) in table {
        children.entry(p.ppid).or_default().push(*pid);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if *child != root && seen.insert(*child) {
                out.push(*child);
                next.push(*child);
            }
        }
    }
    out
}

/// Kills every living process below `root` (another process, which the
/// caller has stopped so that it neither reaps nor starts anything: what is
/// killed stays a zombie below it, and what it orphans is re-parented to it
/// when it is a subreaper), round after round until none is left alive or
/// [`END_LIMIT`] has passed. `root` itself is not signalled.
pub fn kill_below_stopped(root: i32) {
    let deadline = Instant::now() + END_LIMIT;
    while Instant::now() < deadline {
        let table = processes_below(root);
        let tree = below(root, &table);
        let living: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|p| table.get(p).is_some_and(|e| !e.zombie))
            .collect();
        if living.is_empty() {
            return;
        }
        let tree_set: HashSet<i32> = tree.iter().copied().collect();
        for pid in &living {
            kill_below(*pid, root, &tree_set);
        }
        for pid in &living {
            let left = deadline.saturating_duration_since(Instant::now());
            postern_sys::wait::process_exit_within(*pid, left);
        }
    }
}

/// Kills `pid` if it is still below `me` (`tree`: the pids below it):
/// through a pidfd opened first, so a reused pid is never signalled.
fn kill_below(pid: i32, me: i32, tree: &HashSet<i32>) {
    let Ok(pidfd) = postern_sys::pidfd_open(pid) else {
        // Gone already (ESRCH), or no pidfds (Linux < 5.3): a child of `me`
        // cannot have been reused (`me` has not reaped it), so kill it by pid.
        if parent_of(pid) == Some(me) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        return;
    };
    // The pidfd holds this very process: if its parent is still us or one of
    // our descendants, it is ours to kill.
    if parent_of(pid).is_some_and(|pp| pp == me || tree.contains(&pp)) {
        let _ = postern_sys::pidfd_kill(&pidfd);
    }
}

fn parent_of(pid: i32) -> Option<i32> {
    postern_sys::procfs::stat(pid).map(|s| s.ppid)
}

/// Kills every process below this one and reaps them, until none remains
/// or [`END_LIMIT`] has passed. `command`, this process's child, is killed
/// but not reaped: its exit status is the caller's to collect. Returns how
/// many processes other than `command` were killed; an error names those
/// still alive at the limit.
pub fn end_all(command: Option<i32>) -> Result<usize, String> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + END_LIMIT;
    let mut killed: HashSet<i32> = HashSet::new();
    loop {
        let table = processes_below(me);
        let tree = below(me, &table);
        let living: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|p| table.get(p).is_some_and(|e| !e.zombie))
            .collect();
        let children: Vec<i32> = tree
            .iter()
            .copied()
            .filter(|p| table.get(p).is_some_and(|e| e.ppid == me))
            .collect();
        let to_reap: Vec<i32> = children
            .iter()
            .copied()
            .filter(|p| Some(*p) != command)
            .collect();
        if living.is_empty() && to_reap.is_empty() {
            killed.remove(&command.unwrap_or(0));
            return Ok(killed.len());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} process(es) below pid {me} still alive {}s after SIGKILL: {living:?}",
                living.len(),
                END_LIMIT.as_secs()
            ));
        }
        let tree_set: HashSet<i32> = tree.iter().copied().collect();
        for pid in &living {
            kill_below(*pid, me, &tree_set);
            killed.insert(*pid);
        }
        // Wait for our children to die (their children then come to us),
        // and reap all but the command.
        for pid in &children {
            let left = deadline.saturating_duration_since(Instant::now());
            if postern_sys::wait::process_exit_within(*pid, left) && Some(*pid) != command {
                let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Ends a command this process started (`pid`, which leads its own process
/// group and is not reaped yet) and everything it started: SIGKILL to its
/// process group, then [`end_all`]. Needs the rights to kill the command's
/// user's processes (root, or that user). Returns how many processes other
/// than the command were killed.
pub fn end_command(pid: i32) -> Result<usize, String> {
    // Not reaped yet, so its pid and group number cannot have been reused.
    match kill(Pid::from_raw(-pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return Err(format!("cannot kill process group {pid}: {e}")),
    }
    end_all(Some(pid))
}

/// The earliest deadline of a command that exited leaving work below this
/// process (`None`: none did).
static BACKGROUND_DEADLINE: Mutex<Option<Instant>> = Mutex::new(None);

/// Notes that a command which exited in time may leave descendants running
/// until `deadline` (its start plus its time limit); the earliest note wins.
pub fn allow_background_until(deadline: Instant) {
    let mut d = BACKGROUND_DEADLINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *d = Some(d.map_or(deadline, |old| old.min(deadline)));
}

/// Waits for every process below this one to end (reaping them), up to the
/// deadline [`allow_background_until`] noted, then calls `end` (normally
/// [`end_all`]`(None)`, with the rights it needs) on whatever is left.
/// Returns at once when nothing was noted. Call it after the delivery
/// status has been reported: it may wait up to the whole time limit.
/// Returns how many processes `end` killed.
pub fn finish_background(end: impl FnOnce() -> Result<usize, String>) -> Result<usize, String> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = BACKGROUND_DEADLINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let Some(deadline) = deadline else {
        return Ok(0);
    };
    let me = std::process::id() as i32;
    loop {
        // Reap what has ended; a child's death re-parents its own children
        // to us (the subreaper), found by the next scan.
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if matches!(status, nix::sys::wait::WaitStatus::StillAlive) {
                break;
            }
        }
        let table = processes_below(me);
        let children: Vec<i32> = below(me, &table)
            .into_iter()
            .filter(|p| table.get(p).is_some_and(|e| e.ppid == me))
            .collect();
        if children.is_empty() {
            return Ok(0);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return end();
        }
        let pidfds: Vec<_> = children
            .iter()
            .filter_map(|&p| postern_sys::pidfd_open(p).ok())
            .collect();
        if pidfds.is_empty() {
            // Without pidfds: nothing to wait on but the deadline.
            std::thread::sleep(left);
            continue;
        }
        let mut fds: Vec<PollFd<'_>> = pidfds
            .iter()
            .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
            .collect();
        let timeout =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("12 (sleep) S 7 12 12 0 -1"),
            Some(ProcEntry {
                ppid: 7,
                zombie: false
            })
        );
        // A command name with spaces and parentheses.
        assert_eq!(
            parse_stat("12 (a) Z 1 (b) R 9 1 1"),
            Some(ProcEntry {
                ppid: 9,
                zombie: false
            })
        );
        assert_eq!(
            parse_stat("13 (x) Z 5 13"),
            Some(ProcEntry {
                ppid: 5,
                zombie: true
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn the_tree_below_a_process() {
        let p = |ppid| ProcEntry {
            ppid,
            zombie: false,
        };
        // 1 ─ 10 ─ 11 ─ 12, 10 ─ 13; 1 ─ 20 (not ours).
        let table: HashMap<i32, ProcEntry> = [
            (10, p(1)),
            (11, p(10)),
            (12, p(11)),
            (13, p(10)),
            (20, p(1)),
        ]
        .into_iter()
        .collect();
        let mut got = below(10, &table);
        got.sort();
        assert_eq!(got, vec![11, 12, 13]);
        assert!(below(12, &table).is_empty());
        // A cycle in a racy snapshot does not loop for ever.
        let cyclic: HashMap<i32, ProcEntry> = [(30, p(31)), (31, p(30))].into_iter().collect();
        assert_eq!(below(30, &cyclic), vec![31]);
    }

    /// The walk down the children lists finds a grandchild, with its parent.
    #[test]
    fn the_walk_finds_every_process_below() {
        let me = std::process::id() as i32;
        // sh starts a sleep, says its pid, then waits for its standard
        // input to close.
        let mut sh = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & echo $!; read x"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let sleep: i32 = line.trim().parse().unwrap();
        let shell = sh.id() as i32;
        let table = processes_below(me);
        drop(sh.stdin.take());
        // Best effort: the sleep is re-parented to init after the shell
        // exits and ends on its own within 30 s either way.
        let _ = kill(Pid::from_raw(sleep), Signal::SIGKILL);
        sh.wait().unwrap();
        assert_eq!(table.get(&shell).map(|e| e.ppid), Some(me), "{table:?}");
        assert_eq!(table.get(&sleep).map(|e| e.ppid), Some(shell), "{table:?}");
        assert!(below(me, &table).contains(&sleep), "{table:?}");
    }

    #[test]
    fn a_descendant_that_left_the_session_is_ended() {
        use std::os::unix::process::CommandExt;
        // Run in a child process of its own (forked by a shell that is our
        // child), so that the test process's other children are not touched:
        // the shell starts `setsid sleep` and exits at once; the sleep is
        // re-parented to the subreaper, which is this helper.
        let marker = format!("1000.{}", std::process::id());
        let mut helper = std::process::Command::new(std::env::current_exe().unwrap());
        helper
            .args([
                "--exact",
                "descendants::tests::helper_subreaper",
                "--nocapture",
            ])
            .env("POSTERN_DESCENDANTS_MARKER", &marker)
            .process_group(0);
        let out = helper.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("ended "), "{text}");
        // No `sleep MARKER` left anywhere.
        let left = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        });
        assert!(!left, "sleep {marker} survived");
    }

    /// Runs only as the helper process of the test above.
    #[test]
    fn helper_subreaper() {
        let Ok(marker) = std::env::var("POSTERN_DESCENDANTS_MARKER") else {
            return;
        };
        become_subreaper().unwrap();
        let mut sh = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "setsid sleep {marker} </dev/null >/dev/null 2>&1 &"
            ))
            .spawn()
            .unwrap();
        let pid = sh.id() as i32;
        // The shell exits at once; its sleep is ours now, in another session.
        assert!(postern_sys::wait::process_exit_within(
            pid,
            Duration::from_secs(30)
        ));
        let n = end_all(Some(pid)).unwrap();
        sh.wait().unwrap();
        assert!(n >= 1, "nothing was killed");
        println!("ended {n}");
    }
}
