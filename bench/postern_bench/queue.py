"""bench-queue — postern's whole pipeline (sendmail -> submit -> qmgr ->
local) side by side with Postfix's (sendmail -> postdrop -> pickup ->
cleanup -> qmgr -> local), with the floor of a submission, on the same
machine, in one run.

Usage (as root, from anywhere):   scripts/bench-queue

What it measures, for each mailbox kind (mbox, Maildir), BENCH_REPS times,
interleaved (postern, Postfix, postern, ...):
  loops=L   L parallel sendmail loops submit BENCH_COUNT messages of
            BENCH_SIZE bytes in all, one sendmail process per message, to a
            running instance; the time from the first submission until the
            mailbox holds them all: end-to-end messages per second.
  submit    one sendmail loop with nothing delivering (postern: its queue
            manager stopped by SIGSTOP; Postfix: the instance stopped, so
            sendmail writes to maildrop through postdrop): submissions per
            second alone.
  drain     then the queue manager is let go (postern: the stopped one is
            killed and the master starts a fresh one; Postfix: "postfix
            start"): the time until the mailbox holds them all.
and once per repetition, in the same loop driver:
  exec      a small C program (bench/queue-floor.c -n) run per message:
            what starting a process costs here;
  floor     the same program writing each message durably (a new file,
            fsync, rename, fsync of the directory) on the mailbox's file
            system: the floor of any submission.
Every accepted message is fsynced on both sides. Each mailbox is checked to
hold exactly BENCH_COUNT messages.

Then, once: peak RSS (VmHWM) of postern's master, submit, qmgr and local
processes after a loop run, and of one sendmail (wait4's ru_maxrss), with
Postfix's master, qmgr and local beside them; and the scale of the master:
BENCH_SERVICES spawn services in master.cf, the time "postern start" takes
until the master says it is ready and the master's RSS.

Environment (defaults in brackets): BENCH_REPS [3], BENCH_COUNT [2000],
BENCH_SIZE [1024], BENCH_LOOPS ["1 2"], BENCH_KINDS ["mbox maildir"],
BENCH_USER [pb-user] (created if missing), BENCH_TIMEOUT [600] (s per run),
BENCH_SERVICES [1000] (0: no scale run), BENCH_OUT, BENCH_KEEP.

Exit status: 0 when the benchmark ran (failed runs are reported as "-"),
1 when it could not run at all.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

from . import common, stats
from .common import Bench, Fatal

POSTFIX_MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Sampler:
    """Samples, every 0.1 s on a thread of its own, the memory of every
    process below a master (found anew each time: children come and go)
    until stopped; keeps per program name the largest peak RSS (VmHWM),
    RSS and PSS seen and how many processes were seen. Peak RSS is the
    kernel's high-water mark, so a short sample interval only matters for
    processes that live less than one."""

    def __init__(self, master: Optional[int], names: list[str]):
        import threading
        self.master, self.names = master, names
        self.seen: dict[str, set[int]] = {n: set() for n in names}
        self.best: dict[str, dict[str, Optional[int]]] = {n: common.memory(None) for n in names}
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        if master:
            self.thread.start()

    def sample(self) -> None:
        for pid in common.tree([self.master]):
            name = "master" if pid == self.master else common.comm(pid)
            if name not in self.seen:
                continue
            self.seen[name].add(pid)
            m = common.memory(pid)
            for k, v in m.items():
                if v is not None and (self.best[name][k] is None or v > self.best[name][k]):
                    self.best[name][k] = v

    def run(self) -> None:
        while not self.stop_event.wait(0.1):
            self.sample()

    def rows(self) -> list[tuple[str, dict]]:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join()
        if self.master:
            self.sample()
        return [(f"{n.removeprefix('postern-')} ({len(self.seen[n])})", self.best[n])
                for n in self.names]


class Queue:
    def __init__(self, bench: Bench):
        self.b = bench
        self.reps = common.env_int("BENCH_REPS", 3)
        self.count = common.env_int("BENCH_COUNT", 2000)
        self.size = common.env_int("BENCH_SIZE", 1024)
        self.loops = [int(x) for x in common.env_words("BENCH_LOOPS", "1 2")]
        self.kinds = common.env_words("BENCH_KINDS", "mbox maildir")
        for k in self.kinds:
            if k not in ("mbox", "maildir"):
                raise Fatal(f"BENCH_KINDS: {k!r} is neither mbox nor maildir")
        self.user = os.environ.get("BENCH_USER", "pb-user")
        self.deadline = common.env_int("BENCH_TIMEOUT", 600)
        services = os.environ.get("BENCH_SERVICES", "1000")
        if not services.isdigit():
            raise Fatal("BENCH_SERVICES must be a number")
        self.services = int(services)
        self.rates: dict[tuple, Optional[float]] = {}
        self.dropped = 0
        self.sendmail_peak: dict[str, Optional[int]] = {}
        self.mem: dict[str, list[tuple[str, dict]]] = {}

    # -- setup -----------------------------------------------------------------

    def prepare(self) -> None:
        common.ensure_path()
        common.ensure_postfix(self.b)
        common.ensure_gcc(self.b)
        common.cargo_build(self.b, ["--workspace"], "cargo.log")
        rel = common.release_dir()
        self.postern, self.sendmail = rel / "postern", rel / "postern-sendmail"
        self.floor = self.b.work / "queue-floor"
        common.gcc(self.b, common.ROOT / "bench/queue-floor.c", self.floor)
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            if common.run(["useradd", "-m", "-s", "/bin/bash", self.user],
                          self.b.logfile("useradd.log")) != 0:
                raise Fatal(f"cannot create {self.user}")
            pw = pwd.getpwnam(self.user)
        self.home = Path(pw.pw_dir)
        if not self.home.is_dir() or (self.home / "bench").is_symlink():
            raise Fatal(f"bad home directory for {self.user}")
        (self.home / "bench").mkdir(exist_ok=True)
        shutil.chown(self.home / "bench", self.user)
        os.chmod(self.home, 0o755)  # postern's qmgr (the mail owner) looks for ~/.forward
        self.bd = Path(tempfile.mkdtemp(prefix="queue.", dir=self.home / "bench"))
        shutil.chown(self.bd, self.user, pw.pw_gid)
        self.b.at_exit(lambda: shutil.rmtree(self.bd, ignore_errors=True))
        self.bd_rel = str(self.bd.relative_to(self.home))
        self.message = self.b.work / "message"
        body = "x" * max(self.size - 70, 0)
        lines = [body[i:i + 72] for i in range(0, len(body), 72)]
        self.message.write_text(f"From: bench@example.org\nTo: {self.user}@localhost\n"
                                f"Subject: bench\n\n" + "\n".join(lines) + "\n")
        self.floor_dir = self.bd / "floor"
        self.floor_dir.mkdir()

    def setup_postern(self) -> None:
        self.pd = self.b.work / "postern/etc"
        if common.run([str(self.postern), "init", "--self-contained", str(self.pd)],
                      self.b.logfile("postern-init.log")) != 0:
            raise Fatal("postern init failed")
        self.pd_data = (common.output([str(self.postern), "-c", str(self.pd), "config", "-h",
                                       "data_directory"]) or "").strip()
        main = self.pd / "main.cf"
        text = [l for l in main.read_text().splitlines()
                if not re.match(r"\s*maillog_file\s*=", l)]
        text += [f"maillog_file = {self.b.work}/postern/maillog", "alias_maps = hash:/etc/aliases"]
        main.write_text("\n".join(text) + "\n")
        master = self.pd / "master.cf"
        master.write_text("\n".join(
            f"# disabled by scripts/bench-queue: {l}" if re.match(r"^[^#\s].*\sspawn(\s.*)?$", l)
            else l for l in master.read_text().splitlines()) + "\n")
        with open(self.pd / "destinations", "a") as f:
            f.write("# added by scripts/bench-queue\nany ~/bench/**\n")
        self.b.at_exit(self.stop_postern)

    def setup_postfix(self) -> None:
        pf = self.pf = self.b.work / "postfix"
        for d in ("etc", "queue", "data"):
            (pf / d).mkdir(parents=True)
        shutil.chown(pf / "data", "postfix")
        (pf / "etc/main.cf").write_text(
            f"compatibility_level = 3.6\nqueue_directory = {pf}/queue\ndata_directory = {pf}/data\n"
            "inet_interfaces = loopback-only\ninet_protocols = ipv4\nmyhostname = bench.localdomain\n"
            "mydestination = localhost\ndefault_transport = error\nrelay_transport = error\n"
            f"alias_maps = hash:/etc/aliases\nbiff = no\nhome_mailbox = {self.bd_rel}/postfix-warmup\n"
            f"maillog_file = {pf}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, {pf}\n")
        (pf / "etc/master.cf").write_text(POSTFIX_MASTER_CF)
        self.b.at_exit(self.stop_postfix)

    # -- instances ---------------------------------------------------------------

    def postern_start(self, kind: str, tag: str) -> bool:
        main = self.pd / "main.cf"
        text = [l for l in main.read_text().splitlines() if not l.startswith("home_mailbox =")]
        main.write_text("\n".join(text + [f"home_mailbox = {self.box_rel(kind, tag)}"]) + "\n")
        return common.run([str(self.postern), "-c", str(self.pd), "start"],
                          self.b.logfile("postern-start.log"), timeout=common.START_DEADLINE) == 0

    def postern_master(self) -> Optional[int]:
        try:
            pid = int(Path(self.pd_data, "master/master.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if common.alive(pid) else None

    def stop_postern(self) -> None:
        if common.run([str(self.postern), "-c", str(self.pd), "status"]) == 0:
            if common.run([str(self.postern), "-c", str(self.pd), "stop"],
                          self.b.logfile("postern-stop.log"), timeout=60) != 0:
                self.b.log("postern stop failed")

    def postfix_start(self) -> bool:
        return common.run(["postfix", "-c", f"{self.pf}/etc", "start"],
                          self.b.logfile("postfix-start.log"), timeout=common.START_DEADLINE) == 0

    def postfix_running(self) -> bool:
        return common.run(["postfix", "-c", f"{self.pf}/etc", "status"]) == 0

    def stop_postfix(self) -> None:
        if self.postfix_running():
            if common.run(["postfix", "-c", f"{self.pf}/etc", "stop"],
                          self.b.logfile("postfix-stop.log"), timeout=60) != 0:
                self.b.log("postfix stop failed")
            common.wait_until(lambda: not self.postfix_running(), 30, 0.1)

    def postfix_queue_files(self) -> int:
        n = 0
        for d in ("maildrop", "incoming", "active", "deferred"):
            for _, _, files in os.walk(self.pf / "queue" / d):
                n += len(files)
        return n

    # -- mailboxes -----------------------------------------------------------------

    def box_rel(self, kind: str, tag: str) -> str:
        return f"{self.bd_rel}/{tag}-mbox" if kind == "mbox" else f"{self.bd_rel}/{tag}-Maildir/"

    def box_count(self, kind: str, tag: str) -> int:
        box = self.home / self.box_rel(kind, tag).rstrip("/")
        try:
            if kind == "mbox":
                with open(box, "rb") as f:
                    return sum(1 for l in f if l.startswith(b"From "))
            return sum(1 for e in os.scandir(box / "new") if e.is_file())
        except OSError:
            return 0

    def wait_full(self, kind: str, tag: str, what: str) -> Optional[float]:
        end = time.monotonic() + self.deadline
        while True:
            n = self.box_count(kind, tag)
            if n >= self.count:
                return time.monotonic()
            if time.monotonic() >= end:
                self.b.log(f"{what}: the mailbox holds {n} of {self.count} after {self.deadline}s")
                return None
            time.sleep(0.02)

    def drop_box(self, kind: str, tag: str) -> None:
        """Moves a finished mailbox away; all are removed at exit. Not now: on
        ext4 without a journal the inode allocator skips inodes freed in the
        last seconds, which made the next run's file creations slower."""
        self.dropped += 1
        (self.bd / ".dropped").mkdir(exist_ok=True)
        box = self.home / self.box_rel(kind, tag).rstrip("/")
        try:
            box.rename(self.bd / ".dropped" / str(self.dropped))
        except OSError:
            pass  # never created (a failed run): nothing to move
        Path(f"{box}.lock").unlink(missing_ok=True)
        os.sync()

    # -- loops -----------------------------------------------------------------------

    def loop(self, argv: list[str], loops: int) -> bool:
        """`loops` parallel loops running argv once per message (COUNT in
        all), the message on standard input; False if one failed."""
        per = self.count // loops
        msg = self.message.read_bytes()

        def one_loop() -> bool:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                for _ in range(per):
                    r, w = os.pipe()
                    # posix_spawn: a vfork-style start, about what a shell
                    # loop costs, the same for every program measured.
                    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                        (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                        (os.POSIX_SPAWN_CLOSE, w)])
                    os.close(r)
                    os.write(w, msg)
                    os.close(w)
                    _, status = os.waitpid(pid, 0)
                    if os.waitstatus_to_exitcode(status) != 0:
                        return False
            finally:
                os.close(null)
            return True

        if loops == 1:
            return one_loop()
        # One process per loop, so the loops run in parallel.
        pids = []
        for _ in range(loops):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = 0 if one_loop() else 1
                finally:
                    os._exit(code)
            pids.append(pid)
        ok = True
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            ok = ok and os.waitstatus_to_exitcode(status) == 0
        return ok

    def peak_rss(self, argv: list[str]) -> Optional[int]:
        """Peak RSS in kB of one run of argv (queue-floor -m)."""
        try:
            p = subprocess.run([str(self.floor), "-m", *argv], input=self.message.read_bytes(),
                               capture_output=True, timeout=60)
            return int(p.stdout) if p.returncode == 0 else None
        except (subprocess.TimeoutExpired, ValueError):
            return None

    def postern_sendmail(self) -> list[str]:
        return [str(self.sendmail), "-C", str(self.pd), "-f", "bench@example.org", self.user]

    def postfix_sendmail(self) -> list[str]:
        return [shutil.which("sendmail") or "/usr/sbin/sendmail", "-C", f"{self.pf}/etc", "-f",
                "bench@example.org", f"{self.user}@localhost"]

    # -- runs ------------------------------------------------------------------------

    def run_postern_loops(self, kind: str, loops: int, measure: bool) -> Optional[float]:
        tag = f"pl{loops}"
        rate = None
        if not self.postern_start(kind, tag):
            self.b.log("postern start failed")
            return None
        sampler = Sampler(self.postern_master(), ["master", "postern-submit", "postern-qmgr",
                                                  "postern-local"]) if measure else None
        os.sync()
        t0 = time.monotonic()
        if not self.loop(self.postern_sendmail(), loops):
            self.b.log("postern: a sendmail failed")
        t1 = self.wait_full(kind, tag, f"postern {kind} loops={loops}")
        if t1:
            rate = self.count / (t1 - t0)
        if sampler:
            self.mem["postern"] = sampler.rows()
            self.sendmail_peak["postern"] = self.peak_rss(self.postern_sendmail())
        self.stop_postern()
        self.drop_box(kind, tag)
        return rate

    def run_postern_drain(self, kind: str) -> tuple[Optional[float], Optional[float]]:
        tag = "pd"
        if not self.postern_start(kind, tag):
            self.b.log("postern start failed")
            return None, None
        if not common.wait_until(lambda: bool(common.pids_named("postern-qmgr")), common.START_DEADLINE):
            self.b.log("postern: no queue manager")
            self.stop_postern()
            return None, None
        q = common.pids_named("postern-qmgr")
        common.kill(q, signal.SIGSTOP)
        os.sync()
        t0 = time.monotonic()
        sub = self.count / (time.monotonic() - t0) if self.loop(self.postern_sendmail(), 1) else None
        if sub is None:
            self.b.log("postern: a sendmail failed")
        os.sync()
        t0 = time.monotonic()
        # A queue manager that has run is not a startup failure: no throttle.
        common.kill(q, signal.SIGKILL)
        t1 = self.wait_full(kind, tag, f"postern {kind} drain")
        drain = self.count / (t1 - t0) if t1 else None
        self.stop_postern()
        self.drop_box(kind, tag)
        return sub, drain

    def postfix_mailbox(self, kind: str, tag: str) -> None:
        common.run(["postconf", "-c", f"{self.pf}/etc", "-e", f"home_mailbox = {self.box_rel(kind, tag)}"])

    def postfix_settle(self) -> None:
        common.wait_until(lambda: self.postfix_queue_files() == 0, 60, 0.1)

    def run_postfix_loops(self, kind: str, loops: int, measure: bool) -> Optional[float]:
        tag = f"fl{loops}"
        rate = None
        self.postfix_mailbox(kind, tag)
        if not self.postfix_start():
            self.b.log("postfix start failed")
            return None
        sampler = Sampler(self.postfix_master(), ["master", "pickup", "cleanup", "qmgr",
                                                  "local"]) if measure else None
        os.sync()
        t0 = time.monotonic()
        if not self.loop(self.postfix_sendmail(), loops):
            self.b.log("postfix: a sendmail failed")
        t1 = self.wait_full(kind, tag, f"postfix {kind} loops={loops}")
        if t1:
            rate = self.count / (t1 - t0)
        self.postfix_settle()
        if sampler:
            self.mem["postfix"] = sampler.rows()
            self.sendmail_peak["postfix"] = self.peak_rss(self.postfix_sendmail())
        self.stop_postfix()
        self.drop_box(kind, tag)
        return rate

    def run_postfix_drain(self, kind: str) -> tuple[Optional[float], Optional[float]]:
        tag = "fd"
        self.postfix_mailbox(kind, tag)
        os.sync()
        t0 = time.monotonic()
        ok = self.loop(self.postfix_sendmail(), 1)
        sub = self.count / (time.monotonic() - t0) if ok else None
        if not ok:
            self.b.log("postfix: a sendmail failed")
        os.sync()
        t0 = time.monotonic()
        if not self.postfix_start():
            self.b.log("postfix start failed")
            return sub, None
        t1 = self.wait_full(kind, tag, f"postfix {kind} drain")
        drain = self.count / (t1 - t0) if t1 else None
        self.postfix_settle()
        self.stop_postfix()
        self.drop_box(kind, tag)
        return sub, drain

    def run_floor(self, exec_only: bool) -> Optional[float]:
        argv = [str(self.floor), "-n" if exec_only else str(self.floor_dir)]
        os.sync()
        t0 = time.monotonic()
        ok = self.loop(argv, 1)
        rate = self.count / (time.monotonic() - t0) if ok else None
        if not exec_only:
            # Renamed away, not removed (see drop_box).
            self.dropped += 1
            self.floor_dir.rename(self.bd / f"floor.{self.dropped}")
            self.floor_dir.mkdir()
        return rate

    # -- memory --------------------------------------------------------------------------

    def postfix_master(self) -> Optional[int]:
        try:
            pid = int((self.pf / "queue/pid/master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if common.alive(pid) else None

    # -- scale -------------------------------------------------------------------------------

    def scale(self) -> None:
        if self.services == 0:
            return
        o = self.b.out
        o()
        o(f"-- scale: the master with {self.services} spawn services in master.cf (unix, maxproc 2, "
          "beside the default queue services), and with none, 3 starts each, interleaved")
        o(f"   {'services':>8} {'start s':<20} {'master RSS kB':<14} {'peak kB':<9} {'descriptors':<11}")
        results: dict[int, list] = {0: [], self.services: []}
        self.reload_result: Optional[str] = None
        for rep in range(3):
            for n in (self.services, 0):
                results[n].append(self.scale_once(n, rep, reload=(rep == 0 and n > 0)))
        for n in (0, self.services):
            took = [r[0] for r in results[n] if r]
            last = next((r for r in reversed(results[n]) if r), None)
            if not took or last is None:
                o(f"   {n:>8} postern start failed (see {self.b.logfile('scale-start.log')})")
                continue
            _, m, fds = last
            o(f"   {n:>8} {stats.fmt_mmm(took):<20} {common.kb(m['Rss']):<14} {common.kb(m['VmHWM']):<9} "
              f"{fds if fds is not None else '-':<11}")
        o("   targets (issue 16): 1,000 services start in under 1 s, master RSS under 20 MB "
          "(start: `postern start` until the master says it is ready; median (min-max))")
        if self.reload_result:
            o(f"   reload under load ({self.services} services): {self.reload_result}")

    def scale_once(self, n: int, rep: int,
                   reload: bool = False) -> Optional[tuple[float, dict, Optional[int]]]:
        """`postern start` of a fresh instance with n spawn services: the
        time until ready, the master's memory and open descriptors; with
        reload, then `postern reload` in the middle of 4 s of connections
        to one of the services (concurrency 8), and what the client saw."""
        etc = self.b.work / f"scale-{n}-{rep}/etc"
        if common.run([str(self.postern), "init", "--self-contained", str(etc)],
                      self.b.logfile("scale-init.log")) != 0:
            return None
        data = (common.output([str(self.postern), "-c", str(etc), "config", "-h", "data_directory"])
                or "").strip()
        main = etc / "main.cf"
        main.write_text("\n".join(l for l in main.read_text().splitlines()
                                  if not re.match(r"\s*maillog_file\s*=", l))
                        + f"\nmaillog_file = {etc.parent}/maillog\n")
        master = etc / "master.cf"
        lines = [f"# {l}" if re.match(r"^[^#\s].*\sspawn(\s.*)?$", l) else l
                 for l in master.read_text().splitlines()]
        lines += [f"svc{i} unix n n n - 2 spawn user=nobody argv=/bin/cat" for i in range(n)]
        master.write_text("\n".join(lines) + "\n")
        os.sync()
        t0 = time.monotonic()
        rc = common.run([str(self.postern), "-c", str(etc), "start"],
                        self.b.logfile("scale-start.log"), timeout=120)
        took = time.monotonic() - t0
        result = None
        if rc == 0:
            try:
                mpid: Optional[int] = int(Path(data, "master/master.pid").read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                mpid = None
            try:
                fds = len(os.listdir(f"/proc/{mpid}/fd")) if mpid else None
            except OSError:
                fds = None
            result = (took, common.memory(mpid), fds)
            if reload:
                self.reload_result = self.reload_under_load(etc)
        common.run([str(self.postern), "-c", str(etc), "stop"], self.b.logfile("scale-stop.log"),
                   timeout=60)
        return result

    def reload_under_load(self, etc: Path) -> str:
        queue = (common.output([str(self.postern), "-c", str(etc), "config", "-h",
                                "queue_directory"]) or "").strip()
        loadgen = common.release_dir() / "postern-loadgen"
        if not os.access(loadgen, os.X_OK):
            return f"not measured ({loadgen} missing)"
        with open(self.b.logfile("scale-loadgen.log"), "a") as err:
            lg = subprocess.Popen([str(loadgen), "--unix", f"{queue}/public/svc0", "--concurrency", "8",
                                   "--duration", "4", "--timeout", "5"],
                                  stdout=subprocess.PIPE, stderr=err, text=True)
            time.sleep(1.5)  # in the middle of the load generator's run
            t0 = time.monotonic()
            rc = common.run([str(self.postern), "-c", str(etc), "reload"],
                            self.b.logfile("scale-reload.log"), timeout=60)
            took = time.monotonic() - t0
            out, _ = lg.communicate(timeout=60)
        r = stats.parse_loadgen(out)
        return (f"postern reload exit {rc} in {took:.2f}s; the client made {stats.fmt_num(r['conns'])} "
                f"connections, {stats.fmt_num(r['errors'])} failed (target 0), max latency "
                f"{stats.fmt_num(r['max_ms'])} ms")

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.setup_postern()
        self.setup_postfix()
        # Warm-up: Postfix's first start creates its queue; postern's creates
        # the mail owner and its directories.
        if not self.postfix_start():
            raise Fatal(f"postfix start failed: {common.first_error(self.b.logfile('postfix-start.log'))}")
        self.stop_postfix()
        if not self.postern_start("mbox", "warmup"):
            raise Fatal(f"postern start failed: {common.first_error(self.b.logfile('postern-start.log'))}")
        self.stop_postern()
        modes = [f"loops={l}" for l in self.loops] + ["submit", "drain"]
        for rep in range(self.reps):
            for which in ("exec", "floor"):
                r = self.rates[("floor", "-", which, rep)] = self.run_floor(which == "exec")
                self.b.log(f"rep {rep + 1} {which}: {stats.fmt_num(r)}/s")
            for kind in self.kinds:
                for mode in modes:
                    if mode == "submit":
                        continue  # measured with drain
                    for side in ("postern", "postfix"):
                        measure = rep == 0 and kind == self.kinds[0] and mode == modes[0]
                        if mode == "drain":
                            sub, drain = getattr(self, f"run_{side}_drain")(kind)
                            self.rates[(side, kind, "submit", rep)] = sub
                            self.rates[(side, kind, "drain", rep)] = drain
                            got = f"submit {stats.fmt_num(sub)}/s, drain {stats.fmt_num(drain)}/s"
                        else:
                            r = getattr(self, f"run_{side}_loops")(kind, int(mode[6:]), measure)
                            self.rates[(side, kind, mode, rep)] = r
                            got = f"{stats.fmt_num(r)}/s"
                        self.b.log(f"rep {rep + 1} {kind} {mode} {side}: {got}")
        self.report(modes)
        self.scale()
        o = self.b.out
        o()
        o(f"reproduce: BENCH_REPS={self.reps} BENCH_COUNT={self.count} BENCH_LOOPS=\"{' '.join(map(str, self.loops))}\" "
          f"BENCH_SERVICES={self.services} scripts/bench-queue")

    def report(self, modes: list[str]) -> None:
        o = self.b.out
        R = range(self.reps)
        o()
        o(f"postern queue benchmark, {common.stamp()}, {os.cpu_count()} cores, load {common.loadavg()}, "
          f"{self.count} messages of {self.size} bytes, {self.reps} repetitions")
        o(f"postern {common.commit()}; Postfix {common.postfix_version()}")
        o()
        o(f"{'kind':<8} {'mode':<9} {'postern msg/s':<22} {'Postfix msg/s':<22} {'ratio':<22} target >= 2x")
        for kind in self.kinds:
            for mode in modes:
                pv = [self.rates.get(("postern", kind, mode, r)) for r in R]
                fv = [self.rates.get(("postfix", kind, mode, r)) for r in R]
                rv = [stats.ratio(p, f) for p, f in zip(pv, fv)]
                o(f"{kind:<8} {mode:<9} {stats.fmt_mmm(pv, 0):<22} {stats.fmt_mmm(fv, 0):<22} "
                  f"{stats.fmt_mmm(rv, 2, 'x'):<22} {stats.verdict(rv, 2.0)}")
        ex = [self.rates.get(("floor", "-", "exec", r)) for r in R]
        fl = [self.rates.get(("floor", "-", "floor", r)) for r in R]
        o()
        o("-- submission against its floor (one loop, per repetition; same loop driver for all)")
        o(f"   exec of a small C program:             {stats.fmt_mmm(ex, 0)} /s")
        o(f"   floor (exec + durable queue file):      {stats.fmt_mmm(fl, 0)} /s")
        for kind in self.kinds:
            sub = [self.rates.get(("postern", kind, "submit", r)) for r in R]
            e2e = [self.rates.get(("postern", kind, "loops=1", r)) for r in R]
            e2e2 = [self.rates.get(("postern", kind, "loops=2", r)) for r in R]
            o(f"   postern submit only ({kind}):{'':<{9 - len(kind)}} {stats.fmt_mmm(sub, 0)} /s, "
              f"share of the floor {stats.fmt_mmm(stats.ratios(zip(sub, fl)))}")
            o(f"   postern end to end, 1 loop ({kind}):{'':<{2 - min(len(kind), 2)}} {stats.fmt_mmm(e2e, 0)} /s "
              f"(target >= 600: {stats.verdict(e2e, 600)}), share of the floor "
              f"{stats.fmt_mmm(stats.ratios(zip(e2e, fl)))}; 2 loops {stats.fmt_mmm(e2e2, 0)} /s "
              f"(target >= 900: {stats.verdict(e2e2, 900)})")
        o()
        o("-- memory during the first loop run (kB; sampled every 0.1 s; per program the largest peak RSS")
        o("   (VmHWM), RSS and PSS of any of its processes, with how many processes were seen)")
        for side in ("postern", "postfix"):
            for name, m in self.mem.get(side, []):
                o(f"   {side:<8} {name:<14} peak {common.kb(m['VmHWM']):>8}  RSS {common.kb(m['Rss']):>8}  "
                  f"PSS {common.kb(m['Pss']):>8}")
            if side in self.sendmail_peak:
                o(f"   {side:<8} {'sendmail':<14} peak {common.kb(self.sendmail_peak[side]):>8}  "
                  "(one submission, wait4's ru_maxrss)")


def main() -> int:
    return common.main("bench-queue", "postern-bench-queue.", lambda b: Queue(b).run())


if __name__ == "__main__":
    raise SystemExit(main())
