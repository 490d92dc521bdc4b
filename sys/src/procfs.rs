//! What `/proc` says of processes: one parser of `/proc/PID/stat` for
//! every part of postern that looks at processes it did not start itself
//! (the master's stop sweep, the descendants of a command, the maker of a
//! mailbox lock), instead of one per caller.

use std::time::{Duration, SystemTime};

/// The fields of `/proc/PID/stat` postern reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// The parent's pid.
    pub ppid: i32,
    /// The process group.
    pub pgrp: i32,
    /// When it started, in clock ticks after boot (absent from a line cut
    /// short).
    pub start_ticks: Option<u64>,
}

impl Stat {
    /// Dead, waiting to be reaped.
    pub fn zombie(&self) -> bool {
        self.state == 'Z'
    }
}

/// Parses `/proc/PID/stat`: "pid (comm) state ppid pgrp ... starttime ...";
/// comm may hold anything, spaces and parentheses included, so the fields
/// are taken after the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        // Field 22 of the line; the 20th after the command name.
        start_ticks: fields.get(19).and_then(|t| t.parse().ok()),
    })
}

/// Process `pid` as `/proc` shows it now (`None`: gone, or unreadable).
pub fn stat(pid: i32) -> Option<Stat> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .as_deref()
        .and_then(parse_stat)
}

/// Every pid `/proc` lists.
pub fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// The children of process `pid`, from `/proc/PID/task/TID/children` of
/// each of its threads (the kernel lists a child under the thread that
/// created it); `None` when the kernel has no such files
/// (`CONFIG_PROC_CHILDREN`) or the process is gone. The list is not
/// atomic: a child forked or re-parented meanwhile may be missing.
pub fn children(pid: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut out = Vec::new();
    let mut any = false;
    for task in tasks.flatten() {
        match std::fs::read_to_string(task.path().join("children")) {
            Ok(text) => {
                any = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
            // The thread ended meanwhile (its directory went with it); else
            // the kernel has no such file.
            Err(_) if !task.path().exists() => {}
            Err(_) => return None,
        }
    }
    any.then_some(out)
}

/// When process `pid` started, on the wall clock (its start in ticks after
/// the boot time `/proc/stat` gives).
pub fn started_at(pid: i32) -> Option<SystemTime> {
    let ticks = stat(pid)?.start_ticks?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)? as u64;
    let since_boot = Duration::from_millis(ticks.saturating_mul(1000) / hz);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boot) + since_boot)
}

/// A field counted in kB of `/proc/PID/status` text (`VmHWM`, `VmRSS`, ...).
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// A field counted in kB of this process's `/proc/self/status`: its peak
/// resident memory is `VmHWM`.
pub fn own_status_kb(field: &str) -> Option<u64> {
    parse_status_kb(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_parentheses_and_spaces_is_skipped() {
        let line =
            "4242 (evil) Z 1 2 (x) S 17 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (s.state, s.ppid, s.pgrp, s.start_ticks),
            ('S', 17, 4242, Some(123456))
        );
        assert!(!s.zombie());
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (a) R").is_none());
        assert_eq!(parse_stat("1 (a) R 0 1").unwrap().start_ticks, None);
    }

    #[test]
    fn status_fields_in_kb() {
        let text = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t1024 kB\nThreads:\t1\n";
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(2048));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1024));
        assert_eq!(parse_status_kb(text, "Threads"), None);
        assert_eq!(parse_status_kb(text, "VmHW"), None);
        assert_eq!(parse_status_kb(text, "VmPeak"), None);
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(pids().contains(&me));
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let listed = children(me).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(listed.contains(&(child.id() as i32)), "{listed:?}");
        let started = started_at(me).unwrap();
        assert!(own_status_kb("VmHWM").is_some_and(|kb| kb > 0));
        assert!(started <= SystemTime::now() + Duration::from_secs(1));
    }
}
