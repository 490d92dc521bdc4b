//! End to end: the pipe transport streams the message from the queue file
//! to its command; its memory does not grow with the message.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;

use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};
use postern_tests::{test_account, Instance, WAIT};

const LIST: &str = "pp-list";

/// The peak resident memory (VmHWM, kB) of process `pid`.
fn peak_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// A 50 MB message through a pipe service arrives byte-exact (no
/// envelope lines without `flags=`, no quoting of its `From ` lines), and
/// the pipe process's peak memory stays far below the message's size: a
/// copy held in memory, even once, would exceed the bound.
#[test]
fn a_large_message_is_streamed_to_the_command() {
    const SIZE: usize = 50 << 20;
    const BOUND_KB: u64 = 16 << 10;
    test_account(LIST, "/bin/sh");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = dir.path().join("deliver");
    // The command's parent is the pipe process that runs it.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $PPID > {d}/pipe.pid\ncat > {d}/got\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut inst = Instance::new(
        "command_time_limit = 120s\n",
        &format!(
            "tee unix - n n - - pipe user={LIST} argv={}\n",
            script.display()
        ),
    );
    inst.start();
    // Lines of 64 bytes, every 16th a "From " line.
    let mut body = b"Subject: large\n\n".to_vec();
    let mut n = 0u64;
    while body.len() < SIZE {
        let kind = if n % 16 == 0 {
            "From line"
        } else {
            "body line"
        };
        body.extend_from_slice(format!("{kind} {n:053}\n").as_bytes());
        n += 1;
    }
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&body).unwrap();
    let fd = OwnedFd::from(file);
    let req = DeliveryRequest {
        queue_id: "PIPE1".into(),
        sender: "sender@example.org".into(),
        arrival: 1_795_245_296,
        message_offset: 0,
        message_size: None,
        recipients: vec![Instruction {
            recipient: "list@pipe.test".into(),
            original_recipient: None,
            user: "list".into(),
            extension: None,
            destination: Destination::Transport {
                nexthop: "pipe.test".into(),
            },
            uncertain: false,
        }],
    };
    let socket = inst.etc().join("queue/private/tee");
    let reply = handoff::deliver(&socket, &req, &fd, WAIT).unwrap();
    assert_eq!(
        reply.statuses[0].outcome,
        Outcome::Delivered,
        "{reply:?}\n{}",
        inst.log()
    );
    let got = std::fs::read(dir.path().join("got")).unwrap();
    assert!(
        got == body,
        "{} bytes arrived for {}",
        got.len(),
        body.len()
    );
    drop(got);
    // The pipe process waits for more work: its peak is over its life.
    let pid: u32 = std::fs::read_to_string(dir.path().join("pipe.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        inst.children_of("tee").contains(&pid),
        "{pid} is not the tee service's process"
    );
    let kb = peak_kb(pid);
    eprintln!("pipe process {pid}: peak memory {kb} kB for a {SIZE}-byte message");
    assert!(
        kb < BOUND_KB,
        "pipe's peak memory {kb} kB for a {SIZE}-byte message"
    );
}
