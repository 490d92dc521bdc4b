//! Hostile peers on every socket postern exposes.
//!
//! Each test starts an instance, attacks its endpoints — as an ordinary
//! local user (a Python client run under `setpriv`) where anyone may
//! connect, as root where only root can — and then checks that the
//! service survived: a well-formed client is answered right after, mail
//! sent before and after the attacks is delivered, nothing panicked, and
//! every refusal was logged with a line naming the peer.
//!
//! Inputs: random bytes (seeded: the seed is printed; `HOSTILE_SEED`
//! replays one), truncated frames, oversize length prefixes (`0xFFFFFFFF`,
//! `1<<31`), a valid version with a garbage payload, a frame claiming a
//! huge recipient (or message) count, slowloris, idle connections from one
//! uid, connections closed mid-frame; for `sendmail -bs`, long lines, NUL
//! bytes, invalid UTF-8, pipelined commands, DATA without RCPT and a
//! message beyond `message_size_limit`. `HOSTILE_DUMP=1` prints each
//! attack's result and the maillog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use postern_tests::{bin, eventually, run_with_input, test_account, Instance, Outcome, WAIT};

const EVE: &str = "ph-eve";
const ANN: &str = "ph-ann";

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      showq unix n - n - - showq\n\
                      qmgr fifo n - n 300 1 qmgr\n";

/// The seed of this run's random bytes (printed, so a failure can be replayed).
fn seed() -> u64 {
    let seed = postern_tests::seed_from_env("HOSTILE_SEED");
    eprintln!("hostile_peers_e2e: HOSTILE_SEED={seed}");
    seed
}

use postern_tests::Rng;

/// A frame: 4-byte big-endian length, then `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A submit envelope (postcard): version 2, the user's own sender, `rcpt`.
fn envelope(rcpt: &str) -> Vec<u8> {
    let mut p = vec![2u8, 0, 1, rcpt.len() as u8];
    p.extend_from_slice(rcpt.as_bytes());
    frame(&p)
}

/// The attacks shared by every framed protocol, given the version byte
/// (postcard varint) its payloads start with.
fn framed_attacks(rng: &mut Rng, version: u8) -> Vec<(String, Vec<u8>, &'static str)> {
    let mut garbage = vec![version];
    garbage.extend(rng.bytes(40));
    let mut out = vec![
        ("random bytes".to_string(), rng.bytes(300), "half"),
        ("a truncated length".into(), vec![0, 0], "half"),
        (
            "a truncated frame".into(),
            vec![0, 0, 0, 50, version, 0],
            "half",
        ),
        (
            "length 0xFFFFFFFF".into(),
            vec![0xFF, 0xFF, 0xFF, 0xFF],
            "half",
        ),
        (
            "length 1<<31".into(),
            (1u32 << 31).to_be_bytes().to_vec(),
            "half",
        ),
        (
            "length 1<<31 and bytes".into(),
            [(1u32 << 31).to_be_bytes().to_vec(), rng.bytes(100)].concat(),
            "half",
        ),
        ("an empty frame".into(), frame(&[]), "half"),
        ("valid version, garbage".into(), frame(&garbage), "half"),
        (
            "a huge count".into(),
            frame(&[version, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 1, b'a']),
            "half",
        ),
        (
            "closed mid-frame".into(),
            vec![0, 0, 1, 0, version, 0, 3],
            "close",
        ),
    ];
    for i in 0..4 {
        let len = (rng.next_u64() % 64) as usize;
        out.push((format!("random frame {i}"), frame(&rng.bytes(len)), "half"));
    }
    out
}

/// The Python client: connects to unix sockets as told by a JSON list on
/// standard input and prints what each got back (hex) as JSON.
const CLIENT: &str = r#"
import ctypes, json, os, socket, sys, time
specs = json.load(sys.stdin)
if os.environ.get("AS_UID"):
    # Reach the socket with root's file-system ids, be uid AS_UID to
    # SO_PEERCRED (which reports the effective uid).
    uid, gid = int(os.environ["AS_UID"]), int(os.environ["AS_GID"])
    libc = ctypes.CDLL(None, use_errno=True)
    os.setgroups([])
    os.setresgid(gid, gid, 0)
    os.setresuid(uid, uid, 0)
    libc.setfsuid(0)
    libc.setfsgid(0)
out = []
for s in specs:
    r = {"name": s["name"]}
    try:
        if s.get("end") == "flood":
            conns = []
            for _ in range(s["count"]):
                c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                c.connect(s["path"])
                conns.append(c)
            # Hold them until told to let go (a file appears) or 20s.
            deadline = time.time() + 20
            while not os.path.exists(s["release"]) and time.time() < deadline:
                time.sleep(0.05)
            got = []
            for c in conns:
                c.settimeout(0.2)
                try:
                    got.append(c.recv(4096).hex())
                except Exception as e:
                    got.append("")
                c.close()
            r["replies"] = got
            out.append(r)
            continue
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(s.get("timeout", 15))
        c.connect(s["path"])
        data = bytes.fromhex(s["hex"])
        got = b""
        try:
            if s.get("drip"):
                for b in data:
                    c.send(bytes([b]))
                    time.sleep(s["drip"])
            else:
                c.sendall(data)
            if s["end"] == "close":
                c.close()
                r["reply"] = ""
                out.append(r)
                continue
            if s["end"] == "half":
                c.shutdown(socket.SHUT_WR)
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += b
        except (ConnectionResetError, BrokenPipeError):
            # The service closed with our bytes unread: a reset, and
            # what it said before may be lost with it.
            r["reset"] = True
        r["reply"] = got.hex()
    except Exception as e:
        r["error"] = repr(e)
    out.append(r)
print(json.dumps(out))
"#;

/// One attack for the Python client.
fn spec(name: &str, path: &Path, bytes: &[u8], end: &str) -> serde_json::Value {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serde_json::json!({"name": name, "path": path, "hex": hex, "end": end})
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// A running instance with the queue, an own mail spool, and the client.
struct Target {
    inst: Instance,
    client: PathBuf,
}

impl Target {
    fn new(main_extra: &str, master_extra: &str) -> Target {
        for u in [EVE, ANN] {
            let (_, _, home) = test_account(u, "/bin/bash");
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inst = Instance::new(
            &format!("queue_run_delay = 1s\nminimal_backoff_time = 1s\n{main_extra}"),
            &format!("{MASTER}{master_extra}"),
        );
        inst.own_spool();
        let aliases = inst.dir.path().join("aliases");
        std::fs::write(&aliases, "").unwrap();
        inst.append_main(&format!("alias_maps = {}\n", aliases.display()));
        let client = inst.dir.path().join("client.py");
        std::fs::write(&client, CLIENT).unwrap();
        std::fs::set_permissions(&client, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut t = Target { inst, client };
        t.inst.start();
        t
    }

    /// The Python client with `specs`, as `user` (via setpriv), or as root.
    fn client(&self, user: Option<&str>, env: &[(&str, String)]) -> Command {
        let mut cmd = match user {
            Some(u) => {
                let (uid, gid, _) = test_account(u, "/bin/bash");
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("/usr/bin/python3");
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        cmd.arg(&self.client);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs the attacks and returns one result per spec.
    fn attack(
        &self,
        user: Option<&str>,
        env: &[(&str, String)],
        specs: &[serde_json::Value],
    ) -> Vec<serde_json::Value> {
        let input = serde_json::to_vec(specs).unwrap();
        let out = run_with_input(&mut self.client(user, env), &input);
        assert_eq!(out.code, Some(0), "attack client: {out:?}");
        serde_json::from_str(out.stdout.trim()).unwrap()
    }

    /// Starts the attacks in the background (read with [`Self::finish`]).
    fn attack_bg(&self, user: Option<&str>, specs: &[serde_json::Value]) -> Child {
        let mut child = self
            .client(user, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&serde_json::to_vec(specs).unwrap())
            .unwrap();
        child
    }

    fn finish(child: Child) -> Vec<serde_json::Value> {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "attack client: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn mbox(&self, user: &str) -> String {
        let bytes =
            std::fs::read(self.inst.dir.path().join("spool").join(user)).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `postern sendmail` as `user`, `input` on its standard input.
    fn sendmail_as(&self, user: &str, args: &[&str], input: &[u8]) -> Outcome {
        let (uid, gid, _) = test_account(user, "/bin/bash");
        let mut cmd = Command::new(bin("postern-sendmail"));
        cmd.arg("-C")
            .arg(self.inst.etc())
            .args(args)
            .env_remove("POSTERN_CONFIG")
            .env_remove("MAIL_CONFIG");
        std::os::unix::process::CommandExt::uid(&mut cmd, uid);
        std::os::unix::process::CommandExt::gid(&mut cmd, gid);
        run_with_input(&mut cmd, input)
    }

    /// Sends a message from `from` to `to` (must be queued: exit 0).
    fn send(&self, from: &str, to: &str, subject: &str) {
        let out = self.sendmail_as(
            from,
            &[to],
            format!("Subject: {subject}\n\nbody\n").as_bytes(),
        );
        assert_eq!(out.code, Some(0), "{out:?}\n{}", self.inst.log());
    }

    /// Waits until `user`'s mbox holds the message with `subject`.
    fn wait_delivered(&self, user: &str, subject: &str) {
        let needle = format!("Subject: {subject}\n");
        let ok = eventually(WAIT, || self.mbox(user).contains(&needle));
        assert!(
            ok,
            "{subject} never reached {user}:\n{}\nlog:\n{}",
            self.mbox(user),
            self.inst.log()
        );
    }

    /// Nothing panicked, and the master is still the one we started.
    fn check_alive(&self) {
        let log = self.inst.log();
        assert!(!log.contains("panicked"), "a panic:\n{log}");
        if std::env::var_os("HOSTILE_DUMP").is_some() {
            eprintln!("=== log ===\n{log}");
        }
        let pid = self.inst.master_pid.expect("master");
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "the master is gone:\n{log}"
        );
    }
}

/// The submit socket as an ordinary user: every malformed envelope and
/// message stream is refused with a logged line naming the uid and pid,
/// nothing is queued from it, an idle flood beyond the per-uid limit is
/// refused 4.7.0 while other users' mail goes through, and mail from the
/// attacker itself is delivered right after.
#[test]
fn submit_survives_hostile_clients() {
    let mut rng = Rng(seed());
    let t = Target::new(
        "submit_input_timeout = 2s\nsubmit_client_connection_count_limit = 4\nmessage_size_limit = 100000\n",
        "",
    );
    let (eve_uid, _, _) = test_account(EVE, "/bin/bash");
    t.send(EVE, ANN, "before the attack");
    let sock = t.inst.public("submit");
    let ok_env = envelope(&format!("{ANN}@localhost"));
    let mut specs: Vec<_> = framed_attacks(&mut rng, 2)
        .into_iter()
        .map(|(n, b, e)| spec(&n, &sock, &b, e))
        .collect();
    let chunk = |len: u32, body: &[u8]| [len.to_be_bytes().to_vec(), body.to_vec()].concat();
    // After a valid envelope: the message stream's own attacks.
    for (name, tail, end) in [
        ("chunk length 0xFFFFFFFE", chunk(0xFFFF_FFFE, b""), "half"),
        ("chunk length 1<<31", chunk(1 << 31, b"xx"), "half"),
        ("chunk of 64KiB+1", chunk(64 * 1024 + 1, b"x"), "half"),
        ("truncated chunk", chunk(100, b"Subject: cut\n"), "half"),
        ("no end of message", chunk(5, b"hello"), "half"),
        ("closed mid-chunk", chunk(100, b"Subject: x"), "close"),
        ("random chunks", chunk(50, &rng.bytes(50)), "half"),
        (
            "over message_size_limit",
            (0..3)
                .flat_map(|_| chunk(60_000, &[b'x'; 60_000]))
                .chain(chunk(0, b""))
                .collect(),
            "half",
        ),
    ] {
        let bytes = [ok_env.clone(), tail].concat();
        specs.push(spec(name, &sock, &bytes, end));
    }
    // Recipients that are not addresses.
    for (name, rcpt) in [
        ("a control character", "a\u{1}b@localhost"),
        ("white space", "a b@localhost"),
        ("empty", ""),
    ] {
        let env = envelope(rcpt);
        specs.push(spec(name, &sock, &[env, chunk(0, b"")].concat(), "half"));
    }
    // Slowloris: the envelope one byte a second (each read is within
    // submit_input_timeout), then nothing: cut at the timeout.
    let mut slow = spec("slowloris", &sock, &ok_env[..5], "open");
    slow["drip"] = serde_json::json!(1.0);
    let slow = t.attack_bg(Some(EVE), &[slow]);
    let results = t.attack(Some(EVE), &[], &specs);
    for r in &results {
        if std::env::var_os("HOSTILE_DUMP").is_some() {
            eprintln!("{r}");
        }
        assert!(r.get("error").is_none(), "{r}");
        let reply = String::from_utf8_lossy(&unhex(r["reply"].as_str().unwrap_or(""))).into_owned();
        if r["name"] != "closed mid-frame"
            && r["name"] != "closed mid-chunk"
            && r.get("reset").is_none()
        {
            // A well-formed refusal: 4.x.y or 5.x.y, never a queue id.
            assert!(
                reply.contains("5.") || reply.contains("4."),
                "{}: {reply:?}\n{}",
                r["name"],
                t.inst.log()
            );
        }
    }
    // Many idle connections from one uid: beyond the limit, 4.7.0 at once;
    // meanwhile another user's mail goes through.
    let release = t.inst.dir.path().join("release-submit");
    let mut flood = spec("flood", &sock, b"", "flood");
    flood["count"] = serde_json::json!(12);
    flood["release"] = serde_json::json!(release);
    let flood = t.attack_bg(Some(EVE), &[flood]);
    t.inst
        .wait_log(&format!("refused a submission from uid {eve_uid} pid"), 1);
    t.send(ANN, ANN, "during the flood");
    std::fs::write(&release, "").unwrap();
    let flood = Target::finish(flood);
    let replies = flood[0]["replies"].as_array().unwrap();
    let limited = replies
        .iter()
        .filter(|r| String::from_utf8_lossy(&unhex(r.as_str().unwrap())).contains("4.7.0"))
        .count();
    assert!(limited >= 8, "{flood:?}");
    let slow = Target::finish(slow);
    assert!(slow[0].get("error").is_none(), "{slow:?}");
    // Right after: a well-formed client is served, and mail flows.
    t.send(EVE, ANN, "after the attack");
    for s in ["before the attack", "during the flood", "after the attack"] {
        t.wait_delivered(ANN, s);
    }
    let log = t.inst.log();
    for needle in [
        "bad submission from pid".to_string(),
        format!("(uid {eve_uid}): frame of 4294967295 bytes exceeds"),
        format!("refused a submission from uid {eve_uid} pid"),
        "5.5.2 bad submission: a chunk of 65537 bytes".to_string(),
        "5.3.4 message exceeds message_size_limit".to_string(),
        "5.1.3 bad recipient".to_string(),
        format!("submission from uid {eve_uid} pid"),
        "too many submissions in progress".to_string(),
    ] {
        assert!(log.contains(&needle), "no {needle:?} in the log:\n{log}");
    }
    // Nothing from the attacks was queued: three messages in all.
    assert_eq!(log.matches("/pickup[").count(), 3, "{log}");
    let copies = t
        .mbox(ANN)
        .lines()
        .filter(|l| l.starts_with("From "))
        .count();
    assert_eq!(copies, 3, "{}", t.mbox(ANN));
    t.check_alive();
}

/// showq and the queue manager's fifo as an ordinary user, the master's
/// control socket (refused to the user; as root: garbage, long lines, a
/// flood beyond its client limit, slowloris).
#[test]
fn showq_qmgr_and_control_survive_hostile_clients() {
    let mut rng = Rng(seed() ^ 0x5);
    let t = Target::new("", "");
    let (eve_uid, _, _) = test_account(EVE, "/bin/bash");
    let sock = t.inst.public("showq");
    let mut specs: Vec<_> = framed_attacks(&mut rng, 1)
        .into_iter()
        .map(|(n, b, e)| spec(&n, &sock, &b, e))
        .collect();
    specs.push(spec("a wrong version", &sock, &frame(&[9]), "half"));
    let results = t.attack(Some(EVE), &[], &specs);
    for r in &results {
        assert!(r.get("error").is_none(), "{r}");
    }
    t.inst
        .wait_log(&format!("bad showq request from uid {eve_uid} pid"), 5);
    // The fifo: random bytes, a lot of them, from the user.
    let fifo = t.inst.public("qmgr");
    let noise = rng.bytes(200_000);
    let (uid, gid, _) = test_account(EVE, "/bin/bash");
    let script = format!(
        "import os\nfd = os.open({:?}, os.O_WRONLY | os.O_NONBLOCK)\n\
         try:\n    os.write(fd, bytes.fromhex(open(0).read()))\nexcept BlockingIOError:\n    pass\n",
        fifo.display().to_string()
    );
    let hex: String = noise.iter().map(|b| format!("{b:02x}")).collect();
    let out = run_with_input(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "/usr/bin/python3", "-c", &script]),
        hex.as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    // The control socket: not even reachable by the user.
    let control = t.inst.dir.path().join("etc/data/master/master.control");
    let control = if control.exists() {
        control
    } else {
        find_control(&t.inst)
    };
    let r = t.attack(
        Some(EVE),
        &[],
        &[spec("control", &control, b"status\n", "half")],
    );
    assert!(
        r[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Permission")),
        "{r:?}"
    );
    // As root: garbage, an overlong line, a flood beyond 32 clients.
    for input in [
        rng.bytes(100),
        vec![b'x'; 10_000],
        b"status\0\xff\xfe\n".to_vec(),
        b"reload ../../etc\n".to_vec(),
    ] {
        let reply = postern_tests::unix_exchange(&control, &input).unwrap_or_default();
        let text = String::from_utf8_lossy(&reply);
        assert!(text.is_empty() || text.starts_with("error:"), "{text:?}");
    }
    let flood: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(&control).ok())
        .collect();
    t.inst.wait_log(
        "control socket: 32 connections already open: closed a new one from pid",
        1,
    );
    let started = Instant::now();
    t.inst
        .wait_log("control socket: closed a connection from pid", 32);
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(flood);
    // Slowloris on the control socket: a request begun and never ended is
    // cut at its 2s deadline (the master closes the connection).
    let mut s = UnixStream::connect(&control).unwrap();
    let _ = s.write_all(b"st");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the slow control client was not cut: {closed:?}"
    );
    // Right after: status, mailq as the user, and mail through the fifo.
    let status = t.inst.status();
    assert!(status.contains("showq"), "{status}");
    t.send(EVE, ANN, "after the noise");
    t.wait_delivered(ANN, "after the noise");
    let mailq = t.sendmail_as(EVE, &["-bp"], b"");
    assert_eq!(mailq.code, Some(0), "{mailq:?}\n{}", t.inst.log());
    t.check_alive();
}

/// Where the master's control socket is (data_directory/master).
fn find_control(inst: &Instance) -> PathBuf {
    let out = inst.postern(&["config", "-h", "data_directory"]);
    PathBuf::from(out.stdout.trim()).join("master/master.control")
}

/// private/local: a foreign uid is refused (logged, naming it); root's
/// malformed frames are refused (logged, naming the pid); a delivery is
/// made right after. And a pipe service's socket and smtp's, the same.
#[test]
fn local_pipe_and_smtp_refuse_foreign_and_malformed_requests() {
    let mut rng = Rng(seed() ^ 0x9);
    let t = Target::new(
        "",
        "tee unix - n n - - pipe flags=R user=nobody argv=/bin/cat\n\
         smtp unix - - n - - smtp\n",
    );
    // The handoff's version (a postcard varint: one byte below 128), so
    // that the garbage after it reaches the request's decoder.
    let version = u8::try_from(postern_common::handoff::PROTOCOL_VERSION).unwrap();
    assert!(version < 128);
    let (eve_uid, eve_gid, _) = test_account(EVE, "/bin/bash");
    let local = t.inst.local_socket();
    let pipe = t.inst.etc().join("queue/private/tee");
    let smtp = t.inst.etc().join("queue/private/smtp");
    // The user cannot reach the socket at all.
    let r = t.attack(Some(EVE), &[], &[spec("local", &local, b"x", "half")]);
    assert!(
        r[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Permission")),
        "{r:?}"
    );
    // A process whose effective uid is the user's but reaches the path
    // with root's file-system ids: refused by local by SO_PEERCRED.
    let env = [
        ("AS_UID", eve_uid.to_string()),
        ("AS_GID", eve_gid.to_string()),
    ];
    for sock in [&local, &pipe, &smtp] {
        let r = t.attack(
            None,
            &env,
            &[spec("foreign", sock, &frame(&[version, 1]), "half")],
        );
        assert!(r[0].get("error").is_none(), "{r:?}");
        assert_eq!(r[0]["reply"], "", "{r:?}");
    }
    t.inst
        .wait_log(&format!("refused a connection from uid {eve_uid} pid"), 3);
    // Root's garbage: every framed attack, plus a batch count over 64.
    for sock in [&local, &pipe, &smtp] {
        let mut specs: Vec<_> = framed_attacks(&mut rng, version)
            .into_iter()
            .map(|(n, b, e)| spec(&n, sock, &b, e))
            .collect();
        specs.push(spec("65 messages", sock, &frame(&[version, 65, 0]), "half"));
        specs.push(spec(
            "a wrong version",
            sock,
            &frame(&[version - 1, 1]),
            "half",
        ));
        let results = t.attack(None, &[], &specs);
        for r in &results {
            assert!(r.get("error").is_none(), "{r}");
            // Never a reply to a request that was not one.
            assert_eq!(r["reply"], "", "{r}");
        }
    }
    t.inst.wait_log("bad request from pid", 30);
    // Right after: a delivery through local.
    t.send(EVE, ANN, "after the garbage");
    t.wait_delivered(ANN, "after the garbage");
    t.check_alive();
}

/// `sendmail -bs` as an ordinary user: long lines, NUL bytes, invalid
/// UTF-8, DATA without RCPT and an oversize message are refused; the
/// pipelined message among them is queued and delivered.
#[test]
fn sendmail_bs_refuses_hostile_input() {
    let t = Target::new("message_size_limit = 50000\n", "");
    let mut script = Vec::new();
    script.extend_from_slice(b"EHLO x\r\n");
    script.extend_from_slice(&[b'A'; 5000]);
    script.extend_from_slice(b"\r\n");
    script.extend_from_slice(b"NOOP\0NOOP\r\n");
    script.extend_from_slice(b"MAIL FROM:<\xff\xfe@localhost>\r\n");
    script.extend_from_slice(b"\xc3\x28\xa0\xa1\r\n");
    script.extend_from_slice(b"DATA\r\n");
    script.extend_from_slice(b"MAIL FROM:<>\r\nDATA\r\nRSET\r\n");
    // Pipelined: a whole transaction in one write.
    script.extend_from_slice(
        format!(
            "MAIL FROM:<{EVE}@localhost>\r\nRCPT TO:<{ANN}@localhost>\r\nDATA\r\nSubject: piped\r\n\r\n\0nul "
        )
        .as_bytes(),
    );
    script.extend_from_slice(b"\xff body\r\n.\r\n");
    // Oversize.
    script.extend_from_slice(
        format!("MAIL FROM:<{EVE}@localhost>\r\nRCPT TO:<{ANN}@localhost>\r\nDATA\r\n").as_bytes(),
    );
    for _ in 0..1000 {
        script.extend_from_slice(&[b'y'; 99]);
        script.extend_from_slice(b"\r\n");
    }
    script.extend_from_slice(b".\r\nQUIT\r\n");
    let out = t.sendmail_as(EVE, &["-bs"], &script);
    assert_eq!(out.code, Some(0), "{out:?}");
    let codes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.len() > 3 && l.as_bytes()[3] == b' ')
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes.first(), Some(&"220"), "{}", out.stdout);
    for code in ["500", "503", "552", "221"] {
        assert!(codes.contains(&code), "no {code}: {}", out.stdout);
    }
    assert_eq!(
        out.stdout.matches("Ok: queued as").count(),
        1,
        "{}",
        out.stdout
    );
    t.wait_delivered(ANN, "piped");
    t.check_alive();
}
