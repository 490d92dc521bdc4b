"""bench — postern spawn side by side with Postfix spawn, s6-ipcserver,
tcpserver and a bare fork+exec server, on the same machine, in one run.

Usage (as root, from anywhere):   scripts/bench

What it does:
  1. installs what is missing (postfix, gcc, s6, ucspi-tcp) from Debian's
     packages;
  2. builds the load generator (postern-loadgen, in the tests crate), the C
     fork+exec baseline (scripts/bench-forkexec.c) and postern (release);
  3. starts, in a temporary directory, the targets, which all run /bin/cat
     as user nobody per connection:
       postern    a self-contained postern instance ("postern start"),
       postfix    a private Postfix instance ("postfix -c DIR start"),
       s6         s6-ipcserver -c MAXPROC (unix only),
       tcpserver  tcpserver -c MAXPROC (ucspi-tcp; inet only),
       c          bench-forkexec (fork, dup2, exec; no limits at all),
       csetsid    bench-forkexec -s (the same, plus setsid() in the child);
     postern, Postfix, s6 and tcpserver get one endpoint per maxproc value;
  4. for every autogroup setting (BENCH_AUTOGROUP) and every scenario
     (transport x concurrency x maxproc) sets kernel.sched_autogroup_enabled,
     warms the services up and runs the load generator against the targets
     in turn, interleaved, BENCH_REPS times (the order rotates each
     repetition); prints conns/s, latency, the ratios to Postfix of conns/s
     and of p99 latency per repetition (median and min-max), and postern's
     ratios to the best peer of the transport (s6-ipcserver for unix,
     tcpserver for inet) with the issue's targets;
  5. prints a summary of those ratios per autogroup setting;
  6. measures RSS, PSS and peak RSS (VmHWM) of each server process and of
     an idle spawn child after a warm-up (once, at the end);
  7. stops everything it started, including the /bin/cat processes Postfix
     spawn leaves behind, and puts kernel.sched_autogroup_enabled back.

Why autogroup: with kernel.sched_autogroup_enabled = 1 the scheduler makes
every session a scheduling group of its own. A command that leads its own
session (Postfix spawn, csetsid) is then a group of its own, with as much CPU
as the whole load generator. A process is put in a group when it is created
(fork, setsid): the servers that fork every connection themselves (c,
csetsid, s6, tcpserver) are restarted when the setting changes; the postern
and Postfix masters keep theirs (their spawn children are re-created).

Environment (defaults in brackets):
  BENCH_REPS [3], BENCH_SECS [4], BENCH_CONCURRENCY ["1 8"],
  BENCH_TRANSPORTS ["inet unix"], BENCH_MAXPROC ["8 100"],
  BENCH_TARGETS ["postern postfix s6 tcpserver c csetsid"],
  BENCH_AUTOGROUP [both] (on, off or both), BENCH_TIMEOUT [5] (s per
  connection), BENCH_POSTERN (a postern command instead of building),
  BENCH_OUT (append the report to this file), BENCH_KEEP (keep the logs).

Exit status: 0 when the benchmark ran (even with a target not available),
1 when it could not run at all.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from . import common, stats
from .common import Bench, Fatal

ALL_TARGETS = ["postern", "postfix", "s6", "tcpserver", "c", "csetsid"]
FORKING = {"c", "csetsid", "s6", "tcpserver"}  # accept and fork in one process
PEER = {"unix": "s6", "inet": "tcpserver"}  # the best peer per transport
AG_FILE = Path("/proc/sys/kernel/sched_autogroup_enabled")


def ag_word(v: Optional[str]) -> str:
    return {"0": "off", "1": "on"}.get(v or "", "?")


class Spawn:
    def __init__(self, bench: Bench):
        self.b = bench
        self.reps = common.env_int("BENCH_REPS", 3)
        self.secs = common.env_int("BENCH_SECS", 4)
        self.timeout = common.env_int("BENCH_TIMEOUT", 5)
        self.conc = [int(c) for c in common.env_words("BENCH_CONCURRENCY", "1 8")]
        self.transports = common.env_words("BENCH_TRANSPORTS", "inet unix")
        self.maxprocs = [int(m) for m in common.env_words("BENCH_MAXPROC", "8 100")]
        self.targets = [t for t in common.env_words("BENCH_TARGETS", " ".join(ALL_TARGETS))]
        for t in self.targets:
            if t not in ALL_TARGETS:
                raise Fatal(f"BENCH_TARGETS: unknown target {t!r}")
        self.targets = [t for t in ALL_TARGETS if t in self.targets]
        self.autogroup = os.environ.get("BENCH_AUTOGROUP", "both")
        if self.autogroup not in ("on", "off", "both"):
            raise Fatal("BENCH_AUTOGROUP must be on, off or both")
        self.unavail: dict[str, str] = {}
        self.endpoint: dict[tuple[str, str, int], tuple[str, str]] = {}
        self.ep_unavail: dict[tuple[str, str, int], str] = {}
        self.servers: dict[str, list[subprocess.Popen]] = {}
        self.server_ag: dict[str, str] = {}
        self.res: dict[tuple, dict] = {}
        self.pf: Optional[Path] = None
        self.pd: Optional[Path] = None
        self.pd_queue = self.pd_data = ""
        self.ag_orig: Optional[str] = None
        self.nobody = pwd.getpwnam("nobody")

    # -- tools and builds ------------------------------------------------

    def prepare(self) -> None:
        common.ensure_path()
        common.ensure_postfix(self.b)
        common.ensure_gcc(self.b)
        missing = []
        if "s6" in self.targets and not shutil.which("s6-ipcserver"):
            missing.append("s6")
        if "tcpserver" in self.targets and not shutil.which("tcpserver"):
            missing.append("ucspi-tcp")
        if missing:
            common.apt_install(self.b, missing)
        self.cserver = self.b.work / "bench-forkexec"
        self.b.log("building the C fork+exec server")
        common.gcc(self.b, common.ROOT / "scripts/bench-forkexec.c", self.cserver)
        common.cargo_build(self.b, ["-p", "postern-tests", "--bin", "postern-loadgen"],
                           "cargo-loadgen.log")
        self.loadgen = common.release_dir() / "postern-loadgen"
        self.postern = Path(os.environ.get("BENCH_POSTERN", common.release_dir() / "postern"))
        if "BENCH_POSTERN" in os.environ:
            if not os.access(self.postern, os.X_OK):
                self.unavail["postern"] = f"BENCH_POSTERN={self.postern} is not executable"
        elif "postern" in self.targets:
            try:
                common.cargo_build(self.b, ["--workspace"], "cargo-postern.log")
            except Fatal as e:
                self.unavail["postern"] = str(e).splitlines()[0]

    # -- the load generator ------------------------------------------------

    def loadgen_args(self, ep: tuple[str, str]) -> list[str]:
        return [str(self.loadgen), f"--{ep[0]}", ep[1]]

    def run_load(self, ep: tuple[str, str], conc: int) -> dict:
        log = self.b.logfile("loadgen.log")
        cmd = self.loadgen_args(ep) + ["--concurrency", str(conc), "--duration", str(self.secs),
                                       "--timeout", str(self.timeout)]
        try:
            with open(log, "a") as err:
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                   timeout=self.secs + 2 * self.timeout + 30)
            r = stats.parse_loadgen(p.stdout)
        except subprocess.TimeoutExpired:
            r = stats.parse_loadgen("")
        if r["errors"] is None:
            with open(log, "a") as f:
                f.write(f"loadgen without a result line ({ep})\n")
        return r

    def warm(self, ep: tuple[str, str], conc: int, count: int) -> None:
        common.run(self.loadgen_args(ep) + ["--concurrency", str(conc), "--count", str(count),
                                            "--timeout", str(self.timeout)],
                   self.b.logfile("loadgen.log"), timeout=2 * self.timeout + 30)

    def ready(self, ep: tuple[str, str]) -> bool:
        def answers() -> bool:
            if ep[0] == "unix" and not Path(ep[1]).is_socket():
                return False
            return common.run(self.loadgen_args(ep) + ["--count", "1", "--timeout", "2"],
                              timeout=10) == 0
        return common.wait_until(answers, common.START_DEADLINE, 0.1)

    def wait_target(self, target: str) -> None:
        for t in self.transports:
            for m in self.maxprocs:
                ep = self.endpoint.get((target, t, m))
                if ep and not self.ready(ep):
                    self.ep_unavail[(target, t, m)] = (
                        f"{ep[0]} {ep[1]} did not answer within {common.START_DEADLINE:.0f}s")

    # -- targets -------------------------------------------------------------

    def setup_postfix(self) -> None:
        pf = self.pf = self.b.work / "postfix"
        for d in ("etc", "queue", "data"):
            (pf / d).mkdir(parents=True)
        shutil.chown(pf / "data", "postfix")
        (pf / "etc/main.cf").write_text(
            f"compatibility_level = 3.6\nqueue_directory = {pf}/queue\n"
            f"data_directory = {pf}/data\ninet_interfaces = loopback-only\n"
            f"inet_protocols = ipv4\nmyhostname = bench.localdomain\nmydestination =\n"
            f"maillog_file = {pf}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, {pf}\n")
        lines = ["postlog   unix-dgram n - n - 1 postlogd"]
        for m in self.maxprocs:
            if "inet" in self.transports:
                port = common.pick_port()
                lines.append(f"127.0.0.1:{port} inet n n n - {m} spawn user=nobody argv=/bin/cat")
                self.endpoint[("postfix", "inet", m)] = ("inet", f"127.0.0.1:{port}")
            if "unix" in self.transports:
                lines.append(f"benchcat{m} unix n n n - {m} spawn user=nobody argv=/bin/cat")
                self.endpoint[("postfix", "unix", m)] = ("unix", f"{pf}/queue/public/benchcat{m}")
        (pf / "etc/master.cf").write_text("\n".join(lines) + "\n")
        self.b.at_exit(self.stop_postfix)
        log = self.b.logfile("postfix-start.log")
        if common.run(["postfix", "-c", f"{pf}/etc", "start"], log,
                      timeout=common.START_DEADLINE) != 0:
            self.unavail["postfix"] = f"postfix -c {pf}/etc start failed: {common.first_error(log)}"
            return
        self.wait_target("postfix")

    def postfix_master(self) -> Optional[int]:
        try:
            pid = int(re.sub(r"\D", "", (self.pf / "queue/pid/master.pid").read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return pid if common.alive(pid) else None

    def stop_postfix(self) -> None:
        mpid = self.postfix_master()
        procs = common.tree([mpid]) if mpid else set()
        common.run(["postfix", "-c", f"{self.pf}/etc", "stop"], self.b.logfile("postfix-stop.log"),
                   timeout=common.STOP_DEADLINE)
        if mpid and not common.wait_gone([mpid], common.STOP_DEADLINE):
            self.b.log(f"Postfix master {mpid} did not exit; killing it")
            common.kill([mpid])
        common.kill(p for p in procs if common.comm(p) == "cat")
        # Its commands lead their own session and outlive the master; they
        # carry MAIL_CONFIG=<our configuration directory>.
        mark = f"MAIL_CONFIG={self.pf}/etc".encode()
        for p in common.pids_named("cat"):
            try:
                if mark in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"):
                    common.kill([p])
            except OSError:
                pass  # gone meanwhile

    def setup_postern(self) -> None:
        pd = self.pd = self.b.work / "postern"
        pd.mkdir()
        log = self.b.logfile("postern-init.log")
        if common.run([str(self.postern), "init", "--self-contained", f"{pd}/etc"], log) != 0:
            self.unavail["postern"] = f"postern init failed: {common.first_error(log)}"
            return
        q = common.output([str(self.postern), "-c", f"{pd}/etc", "config", "-h", "queue_directory"])
        d = common.output([str(self.postern), "-c", f"{pd}/etc", "config", "-h", "data_directory"])
        if q is None or d is None:
            self.unavail["postern"] = "postern config -h queue_directory data_directory failed"
            return
        self.pd_queue, self.pd_data = q.strip(), d.strip()
        main = pd / "etc/main.cf"
        text = [l for l in main.read_text().splitlines()
                if not re.match(r"\s*maillog_file\s*=", l)]
        main.write_text("\n".join(text + [f"maillog_file = {pd}/maillog"]) + "\n")
        # Only the benchmark's services (the demo service has a fixed port).
        master = pd / "etc/master.cf"
        lines = [f"# disabled by scripts/bench: {l}" if re.match(r"^[^#\s].*\sspawn(\s.*)?$", l)
                 else l for l in master.read_text().splitlines()]
        for m in self.maxprocs:
            if "inet" in self.transports:
                port = common.pick_port()
                lines.append(f"127.0.0.1:{port} inet n n n - {m} spawn user=nobody argv=/bin/cat")
                self.endpoint[("postern", "inet", m)] = ("inet", f"127.0.0.1:{port}")
            if "unix" in self.transports:
                lines.append(f"benchcat{m} unix n n n - {m} spawn user=nobody argv=/bin/cat")
                self.endpoint[("postern", "unix", m)] = ("unix", f"{self.pd_queue}/public/benchcat{m}")
        master.write_text("\n".join(lines) + "\n")
        self.b.at_exit(self.stop_postern)
        log = self.b.logfile("postern-start.log")
        if common.run([str(self.postern), "-c", f"{pd}/etc", "start"], log,
                      timeout=common.START_DEADLINE) != 0:
            self.unavail["postern"] = f"postern start failed: {common.first_error(log)}"
            return
        self.wait_target("postern")

    def postern_master(self) -> Optional[int]:
        try:
            # "PID\nconfiguration directory ...": the first line.
            text = Path(self.pd_data, "master/master.pid").read_text()
            pid = int(text.split("\n", 1)[0].strip())
        except (OSError, ValueError):
            return None
        return pid if common.alive(pid) else None

    def stop_postern(self) -> None:
        mpid = self.postern_master()
        procs = common.tree([mpid]) if mpid else set()
        log = self.b.logfile("postern-stop.log")
        if common.run([str(self.postern), "-c", f"{self.pd}/etc", "stop"], log,
                      timeout=common.STOP_DEADLINE) != 0 and mpid:
            self.b.log(f"postern stop failed: {common.first_error(log)}; killing its processes")
        if mpid and not common.wait_gone([mpid], common.STOP_DEADLINE):
            common.kill([mpid])
        common.kill(p for p in procs if common.comm(p) == "cat")

    def start_forking(self, target: str) -> None:
        """Starts the servers of a forking target, on the endpoints of an
        earlier start if there was one."""
        (self.b.work / target).mkdir(exist_ok=True)
        logf = open(self.b.logfile(f"{target}.log"), "a")
        uid, gid = str(self.nobody.pw_uid), str(self.nobody.pw_gid)
        procs = []

        def start(cmd: list[str]) -> None:
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf))

        def port_for(m: int) -> int:
            ep = self.endpoint.get((target, "inet", m))
            return int(ep[1].rsplit(":", 1)[1]) if ep else common.pick_port()

        if target in ("c", "csetsid"):
            opts = ["-s"] if target == "csetsid" else []
            if "inet" in self.transports:
                port = port_for(self.maxprocs[0])
                start([str(self.cserver), *opts, "-t", f"127.0.0.1:{port}"])
                for m in self.maxprocs:
                    self.endpoint[(target, "inet", m)] = ("inet", f"127.0.0.1:{port}")
            if "unix" in self.transports:
                path = self.b.work / target / "cat.sock"
                start([str(self.cserver), *opts, "-u", str(path)])
                for m in self.maxprocs:
                    self.endpoint[(target, "unix", m)] = ("unix", str(path))
        elif target == "s6":
            for m in self.maxprocs:
                path = self.b.work / target / f"cat{m}.sock"
                if path.exists():
                    path.unlink()
                start(["s6-ipcserver", "-c", str(m), "-u", uid, "-g", gid, str(path), "/bin/cat"])
                self.endpoint[(target, "unix", m)] = ("unix", str(path))
                self.ep_unavail[(target, "inet", m)] = "unix only (s6-ipcserver)"
        elif target == "tcpserver":
            for m in self.maxprocs:
                port = port_for(m)
                start(["tcpserver", "-q", "-R", "-H", "-l", "0", "-b", "128", "-c", str(m),
                       "-u", uid, "-g", gid, "127.0.0.1", str(port), "/bin/cat"])
                self.endpoint[(target, "inet", m)] = ("inet", f"127.0.0.1:{port}")
                self.ep_unavail[(target, "unix", m)] = "inet only (tcpserver)"
        self.servers[target] = procs
        self.server_ag[target] = self.ag_now() or "?"
        for key in [k for k in self.ep_unavail if k[0] == target and "only" not in self.ep_unavail[k]]:
            del self.ep_unavail[key]
        self.wait_target(target)

    def stop_forking(self, target: str) -> None:
        procs = self.servers.pop(target, [])
        pids = [p.pid for p in procs]
        below = common.tree(pids) if pids else set()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(common.STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        common.kill(p for p in below if common.comm(p) == "cat")

    def refresh(self, target: str) -> None:
        """Restarts a forking target created under another autogroup value."""
        if target in FORKING and self.server_ag.get(target) != (self.ag_now() or "?"):
            self.b.log(f"restarting {target} under kernel.sched_autogroup_enabled = {self.ag_now()}")
            self.stop_forking(target)
            self.start_forking(target)

    # -- autogroup -----------------------------------------------------------

    def ag_now(self) -> Optional[str]:
        try:
            return AG_FILE.read_text().strip()
        except OSError:
            return None

    def ag_set(self, v: str) -> bool:
        try:
            AG_FILE.write_text(v + "\n")
            return True
        except OSError:
            return False

    def ag_apply(self, want: str) -> str:
        if want != "asis":
            v = "1" if want == "on" else "0"
            if self.ag_now() != v and not self.ag_set(v):
                self.b.log(f"warning: cannot set kernel.sched_autogroup_enabled = {v}")
        now = ag_word(self.ag_now())
        if want == "asis":
            return f"autogroup {now} (as found)"
        return f"autogroup {want}" if now == want else f"autogroup {now} (wanted {want})"

    def restore_ag(self) -> None:
        if self.ag_orig is not None and self.ag_now() != self.ag_orig:
            if self.ag_set(self.ag_orig):
                self.b.log(f"restored kernel.sched_autogroup_enabled = {self.ag_orig}")
            else:
                self.b.log("could not restore kernel.sched_autogroup_enabled; set it by hand")

    # -- the run ---------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        self.ag_note = ""
        orig = self.ag_now()
        if orig is None:
            self.ag_note = f"there is no readable {AG_FILE}"
        elif not self.ag_set(orig):
            self.ag_note = f"{AG_FILE} cannot be written"
        else:
            self.ag_orig = orig
            self.b.at_exit(self.restore_ag)
        if self.ag_note:
            self.ag_runs = ["asis"]
        elif self.autogroup == "both":
            self.ag_runs = ["on", "off"]
        else:
            self.ag_runs = [self.autogroup]
        label = self.ag_apply(self.ag_runs[0])
        self.b.log(label)
        self.b.at_exit(lambda: [self.stop_forking(t) for t in list(self.servers)])
        for t in self.targets:
            if t in self.unavail:
                continue
            self.b.log(f"starting {t}")
            {"postern": self.setup_postern, "postfix": self.setup_postfix}.get(
                t, lambda t=t: self.start_forking(t))()
            if t in self.unavail:
                self.b.log(f"{t}: not available: {self.unavail[t]}")
        self.active = [t for t in self.targets if t not in self.unavail]
        if not self.active:
            raise Fatal("no target could be started")
        self.header()
        self.scenarios = [(t, c, m) for t in self.transports for c in self.conc
                          for m in self.maxprocs]
        n = len(self.ag_runs) * len(self.scenarios) * self.reps * len(self.active)
        self.b.log(f"{n} runs of {self.secs}s (about {n * self.secs // 60 + 1} min)")
        self.ag_labels: dict[str, str] = {}
        for ag in self.ag_runs:
            for sc in self.scenarios:
                self.scenario(ag, sc)
        self.summary()
        self.memory(label)

    def header(self) -> None:
        o = self.b.out
        o()
        o(f"=== postern spawn benchmark, {common.stamp()} ===")
        o(f"postern {common.commit()}; Postfix {common.postfix_version()}; {os.uname().sysname} "
          f"{os.uname().release}; {os.cpu_count()} cores; load {common.loadavg()}")
        o(f"each run: {self.secs} s of connections that send 100 bytes, half-close and read the echo "
          "from /bin/cat (user nobody);")
        o(f"{self.reps} repetitions per scenario, targets interleaved (order rotating); conns/s is the "
          "median (min-max),")
        o("p50/p99 are medians over repetitions, max is the worst; ratios are per repetition, median (min-max)")
        o("s6 is s6-ipcserver -c MAXPROC (unix), tcpserver is ucspi-tcp's tcpserver -c MAXPROC (inet);")
        o("c is bench-forkexec (fork+exec, no setsid), csetsid the same with setsid() before exec")
        if self.ag_note:
            o(f"kernel.sched_autogroup_enabled: not set by this run ({self.ag_note})")
        else:
            o(f"kernel.sched_autogroup_enabled: runs under {' '.join(self.ag_runs)} "
              f"(was {ag_word(self.ag_orig)}, restored at the end)")
        for t in self.targets:
            if t in self.unavail:
                o(f"{t}: not available: {self.unavail[t]}")

    def usable(self, target: str, t: str, m: int) -> Optional[tuple[str, str]]:
        ep = self.endpoint.get((target, t, m))
        return ep if ep and (target, t, m) not in self.ep_unavail else None

    def scenario(self, ag: str, sc: tuple[str, int, int]) -> None:
        t, c, m = sc
        label = self.ag_labels[ag] = self.ag_apply(ag)
        for target in self.active:
            self.refresh(target)
        for target in self.active:
            ep = self.usable(target, t, m)
            if ep:
                self.warm(ep, c, c * 20)
        n = len(self.active)
        for rep in range(self.reps):
            for i in range(n):
                target = self.active[(i + rep) % n]
                ep = self.usable(target, t, m)
                if not ep:
                    continue
                r = self.res[(target, ag, sc, rep)] = self.run_load(ep, c)
                self.b.log(f"{label} {t} c={c} maxproc={m} rep {rep + 1} {target}: "
                           f"{stats.fmt_num(r['rate'])}/s p99 {stats.fmt_num(r['p99_ms'], 1)} ms")
        o = self.b.out
        o()
        o(f"-- {t}, concurrency {c}, maxproc {m}, {label} ({self.reps} x {self.secs}s)")
        o(f"   {'target':<9} {'conns/s':>8} {'(min-max)':<15} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'errors':>7}")
        for target in self.targets:
            why = self.unavail.get(target) or self.ep_unavail.get((target, t, m))
            if why:
                o(f"   {target:<9} not available: {why}")
                continue
            rs = [self.res.get((target, ag, sc, rep)) for rep in range(self.reps)]
            col = lambda k: [r[k] if r else None for r in rs]  # noqa: E731
            rate = stats.median_min_max(col("rate"))
            p50 = stats.median_min_max(col("p50_ms"))
            p99 = stats.median_min_max(col("p99_ms"))
            mx = stats.median_min_max(col("max_ms"))
            errs = col("errors")
            err = "?" if any(e is None for e in errs) else str(int(sum(errs)))
            o(f"   {target:<9} {stats.fmt_num(rate and rate[0]):>8} "
              f"{(f'({rate[1]:.0f}-{rate[2]:.0f})' if rate else ''):<15} "
              f"{stats.fmt_num(p50 and p50[0], 1):>8} {stats.fmt_num(p99 and p99[0], 1):>8} "
              f"{stats.fmt_num(mx and mx[2]):>8} {err:>7}")
        for target in ("postern", "s6", "tcpserver", "c", "csetsid"):
            if target in self.targets:
                o(f"   {target + '/postfix:':<19} conns/s {self.rep_ratio(target, 'postfix', ag, sc, 'rate'):<18} "
                  f"p99 {self.rep_ratio(target, 'postfix', ag, sc, 'p99_ms')}")
        peer = PEER[t]
        if "postern" in self.targets and peer in self.targets:
            o(f"   {'postern/' + peer + ':':<19} conns/s {self.rep_ratio('postern', peer, ag, sc, 'rate'):<18} "
              f"p99 {self.rep_ratio('postern', peer, ag, sc, 'p99_ms')}")

    def ratios(self, a: str, b: str, ag: str, sc, key: str) -> list:
        out = []
        for rep in range(self.reps):
            x, y = self.res.get((a, ag, sc, rep)), self.res.get((b, ag, sc, rep))
            if x and y:
                out.append(stats.ratio(x[key], y[key]))
        return out

    def rep_ratio(self, a: str, b: str, ag: str, sc, key: str) -> str:
        return stats.fmt_mmm(self.ratios(a, b, ag, sc, key))

    def summary(self) -> None:
        o = self.b.out
        cols = [t for t in ("postern", "s6", "tcpserver", "c", "csetsid") if t in self.targets]
        if "postfix" not in self.targets or not cols:
            return
        for ag in self.ag_runs:
            label = self.ag_labels.get(ag, f"autogroup {ag}")
            for key, what in (("rate", "throughput ratios, {} (conns/s, per repetition: median "
                                        "(min-max); above 1 is faster)"),
                              ("p99_ms", "p99 latency ratios, {} (p99, per repetition: median "
                                         "(min-max); below 1 is better)")):
                o()
                o("-- " + what.format(label))
                o("   " + f"{'scenario':<23}" + "".join(f" {t + '/postfix':<18}" for t in cols).rstrip())
                for sc in self.scenarios:
                    t, c, m = sc
                    row = f"{t:<5} c={c:<2} maxproc={m:<4}"
                    row += "".join(f" {self.rep_ratio(x, 'postfix', ag, sc, key):<18}" for x in cols)
                    o("   " + row.rstrip())
        if "postern" not in self.targets:
            return
        for ag in self.ag_runs:
            label = self.ag_labels.get(ag, f"autogroup {ag}")
            o()
            o(f"-- postern against the best peer (s6-ipcserver for unix, tcpserver for inet), {label}")
            o("   targets (issue 16) at c=8: conns/s >= 1.15x the peer and >= 1.4x Postfix, "
              "p99 <= 1.2x the peer's, max <= 50 ms")
            o(f"   {'scenario':<23} {'conns/s /peer':<18} {'conns/s /postfix':<18} "
              f"{'p99 /peer':<18} {'max ms':>7}  met")
            for sc in self.scenarios:
                t, c, m = sc
                peer = PEER[t]
                if peer not in self.targets:
                    continue
                tp = self.ratios("postern", peer, ag, sc, "rate")
                tf = self.ratios("postern", "postfix", ag, sc, "rate")
                lp = self.ratios("postern", peer, ag, sc, "p99_ms")
                maxes = [self.res[k]["max_ms"] for k in self.res
                         if k[0] == "postern" and k[1] == ag and k[2] == sc]
                worst = max((x for x in maxes if x is not None), default=None)
                met = "-"
                if c == 8:
                    v = [stats.verdict(tp, 1.15), stats.verdict(tf, 1.4),
                         stats.verdict_at_most(lp, 1.2),
                         "yes" if worst is not None and worst <= 50 else "no"]
                    met = "/".join(v)
                o(f"   {t:<5} c={c:<2} maxproc={m:<4} {stats.fmt_mmm(tp):<18} {stats.fmt_mmm(tf):<18} "
                  f"{stats.fmt_mmm(lp):<18} {stats.fmt_num(worst):>7}  {met}")
            o("   met: conns/s vs peer / vs Postfix / p99 vs peer / max (yes: every repetition, "
              "median only, no)")

    def memory(self, label: str) -> None:
        o = self.b.out
        t1, m1 = self.transports[0], self.maxprocs[0]
        rows = []
        for target in self.targets:
            if target in self.unavail:
                rows.append((target, None))
                continue
            ep = self.usable(target, t1, m1) or next(
                (self.usable(target, t, m1) for t in self.transports if self.usable(target, t, m1)), None)
            if ep:
                common.run(self.loadgen_args(ep) + ["--concurrency", "8", "--duration", "1",
                                                    "--timeout", str(self.timeout)],
                           self.b.logfile("loadgen.log"), timeout=self.timeout * 2 + 30)
            mpid = cpid = None
            if target == "postfix":
                mpid = self.postfix_master()
                cs = common.children_named(mpid, "spawn") if mpid else []
                cpid = cs[0] if cs else None
            elif target == "postern":
                mpid = self.postern_master()
                cs = common.children_named(mpid, "postern-spawn") if mpid else []
                cpid = cs[0] if cs else None
            else:
                procs = self.servers.get(target) or []
                # s6-ipcserver execs down to s6-ipcserverd: the same pid.
                mpid = procs[0].pid if procs else None
            rows.append((target, (mpid, cpid)))
        o()
        o(f"-- memory after a warm-up (kB; RSS and PSS from /proc/PID/smaps_rollup, peak RSS is VmHWM; "
          f"once, under {label})")
        o(f"   {'target':<9} {'srv RSS':>9} {'srv PSS':>9} {'srv peak':>9} {'child RSS':>9} "
          f"{'child PSS':>9} {'child peak':>10}   pids")
        mem = {}
        for target, pids in rows:
            if pids is None:
                o(f"   {target:<9} not available: {self.unavail[target]}")
                continue
            mpid, cpid = pids
            mm, cm = common.memory(mpid), common.memory(cpid)
            mem[target] = (mm, cm)
            kb = common.kb
            o(f"   {target:<9} {kb(mm['Rss']):>9} {kb(mm['Pss']):>9} {kb(mm['VmHWM']):>9} "
              f"{kb(cm['Rss']) if cpid else 'n/a':>9} {kb(cm['Pss']) if cpid else 'n/a':>9} "
              f"{kb(cm['VmHWM']) if cpid else 'n/a':>10}   server {mpid or '?'} child {cpid or '-'}")
        if "postern" in mem and "postfix" in mem:
            (am, ac), (bm, bc) = mem["postern"], mem["postfix"]
            f = lambda a, b: stats.fmt_num(stats.ratio(a, b), 2)  # noqa: E731
            o(f"   postern/postfix: master RSS {f(am['Rss'], bm['Rss'])}, master PSS "
              f"{f(am['Pss'], bm['Pss'])}, child RSS {f(ac['Rss'], bc['Rss'])}, child PSS "
              f"{f(ac['Pss'], bc['Pss'])}")


def main() -> int:
    return common.main("bench", "postern-bench.", lambda b: Spawn(b).run())


if __name__ == "__main__":
    raise SystemExit(main())
