"""bench-local — postern local delivery side by side with Postfix's local
delivery and with this disk's append+fsync rate, on the same machine, in
one run.

Usage (as root, from anywhere):   scripts/bench-local

What it does:
  1. installs Postfix if it is missing, builds the delivery client
     (postern-deliverbench, in the tests crate), the C delivery floor
     (scripts/bench-local-floor.c) and postern (release);
  2. creates the test account (BENCH_USER) if it is missing (it is kept),
     and a fresh directory below ~USER/bench that holds every mailbox of
     this run (removed at the end);
  3. starts a self-contained postern instance with only the local service
     (the demo spawn service commented out) and "any ~/bench/**" added to
     its destination policy, and prepares a private Postfix instance for
     local delivery only (mydestination = localhost, biff = no,
     alias_maps = hash:/etc/aliases as in Debian's main.cf; process and
     concurrency limits at their defaults, printed in the report);
  4. BENCH_REPS times, interleaved (the order rotates each repetition):
       fsync-probe    BENCH_COUNT appends of a BENCH_SIZE message to a
                      fresh file below ~USER/bench, each followed by
                      fdatasync, in one thread: what the disk allows;
       floor          for each mailbox kind: scripts/bench-local-floor.c,
                      BENCH_COUNT deliveries one after the other, each a
                      fork, a switch to the user and the mailbox write
                      with postern's fsyncs, nothing else (no connection,
                      no policy, no lock): what any agent that forks per
                      delivery can reach here;
       postern c=N    for each mailbox kind and each BENCH_CONCURRENCY:
                      postern-deliverbench hands BENCH_COUNT messages to
                      postern-local over its socket, as the queue manager
                      does, into a fresh mbox file / Maildir;
       postfix        for each mailbox kind: with the instance stopped,
                      BENCH_COUNT copies of the same message are submitted
                      with "sendmail -C DIR" (they wait in maildrop); then
                      "postfix start" and the time until the fresh mbox
                      holds them all (its "From " lines) or the Maildir's
                      new/ has them all, taken from the mailbox's mtime;
                      then "postfix stop";
     every run starts after a sync, every mailbox is checked to hold
     exactly BENCH_COUNT messages and moved aside after its run;
  5. prints per mailbox kind the rates (median, min-max), each as a share
     of the fsync-probe rate of the same repetition, the ratios
     postern/Postfix per repetition (median, min-max) and whether the
     target (postern >= 2x Postfix's drain rate) is met, postern c=1 and
     the target as shares of the floor; then a summary; then the memory
     check: the peak RSS (VmHWM) of local's delivery process for one
     BENCH_MEM_SIZE message (100 MB) to BENCH_MEM_RECIPIENTS (10) mboxes,
     measured by postern-localmem, which hands the message over as the
     queue manager does and reads the peak the delivery process logs;
  6. stops everything it started and removes its files.

What the figures include: postern's rate is local delivery alone (the whole
pipeline, queue included, is measured by scripts/bench-queue): per message
a connection, a fork, the policy check and the delivery with its fsync
(mbox: the file; Maildir: the file and new/). Postfix's drain is its whole
pipeline from maildrop: pickup, cleanup (which writes and fsyncs a queue
file), qmgr and local (mbox: one fsync; Maildir: the file is fsynced, new/
is not), plus the master's start (a fraction of a second, printed).

Environment (defaults in brackets):
  BENCH_REPS [3]              repetitions
  BENCH_COUNT [2000]          messages per run
  BENCH_SIZE [1024]           message size in bytes
  BENCH_CONCURRENCY ["1 4"]   postern-deliverbench threads (one run each)
  BENCH_BATCH [1]             messages per exchange (postern-deliverbench
                              --batch; 1: one request per message)
  BENCH_KINDS ["mbox maildir"]
  BENCH_USER [pb-user]        the account delivered to (created if missing)
  BENCH_TIMEOUT [300]         deadline of one run (a drain, a client run), s
  BENCH_SUBMITTERS [4]        parallel sendmail loops filling maildrop
  BENCH_MEM [1]               0: skip the memory check
  BENCH_MEM_SIZE [104857600]  its message size in bytes
  BENCH_MEM_RECIPIENTS [10]   its recipients, one mbox each
  BENCH_POSTERN               use this postern command instead of building
                              the workspace (it finds its daemons itself)
  BENCH_OUT                   also append the report to this file
  BENCH_KEEP                  if set, keep the temporary directory (logs)
  CARGO_BUILD_JOBS, CARGO_TARGET_DIR are honoured by the builds.

Exit status: 0 when the benchmark ran (even with a side not available or a
run failing; the report says so), 1 when it could not run at all.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from . import common, mailbox, postern, postfix, stats
from .common import Bench, Fatal

TARGET_RATIO = 2.0
MEM_TARGET_KB = 16384
FAILURE_LOGS = ("postfix-runs", "deliverbench", "fsync-probe", "floor")

Result = dict  # rate, p50_ms, p99_ms, max_ms (None: unknown), errors (None: unknown)


def failed(errors: Optional[float] = None) -> Result:
    return {"rate": None, "p50_ms": None, "p99_ms": None, "max_ms": None, "errors": errors}


def label(item: tuple) -> str:
    side = item[0]
    if side == "probe":
        return "fsync-probe"
    if side == "postern":
        return f"postern c={item[2]}"
    return "postfix drain" if side == "postfix" else "floor c=1 (C)"


def kind_row(name: str, rates: Sequence, shares: Sequence, p50: Sequence, p99: Sequence,
             maxs: Sequence, errors: str) -> str:
    """One target's row of a mailbox kind's table: rates and latencies
    per repetition, shares of the fsync-probe rate per repetition."""
    return (f"   {name:<14} {stats.fmt_num(stats.median(rates)):>8} {stats.fmt_range(rates):<13} "
            f"{stats.fmt_mmm(shares, 3):<20} {stats.fmt_num(stats.median(p50), 2):>7} "
            f"{stats.fmt_num(stats.median(p99), 2):>7} "
            f"{stats.fmt_num(max((m for m in maxs if m is not None), default=None), 1):>7} "
            f"{errors:>6}")


def kind_header() -> str:
    return (f"   {'target':<14} {'deliv/s':>8} {'(min-max)':<13} {'share of fsync':<20} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>6}")


def probe_rows(rates: Sequence, p50: Sequence, p99: Sequence, maxs: Sequence) -> list[str]:
    """The disk's table: the fsync-probe's rate and latencies."""
    return [f"   {'':<14} {'appends/s':>9} {'(min-max)':<13} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}",
            f"   {'fsync-probe':<14} {stats.fmt_num(stats.median(rates)):>9} "
            f"{stats.fmt_range(rates):<13} {stats.fmt_num(stats.median(p50), 3):>7} "
            f"{stats.fmt_num(stats.median(p99), 3):>7} "
            f"{stats.fmt_num(max((m for m in maxs if m is not None), default=None), 1):>7}"]


def memory_verdict(line: str, target_kb: int = MEM_TARGET_KB) -> str:
    """postern-localmem's line with whether its peak is below the target."""
    kb = stats.parse_loadgen(line)["peak_rss_kb"]
    if kb is None:
        return f"   {line.strip()}; no peak_rss_kb in it"
    return f"   {line.strip()}; target {'met' if kb < target_kb else 'NOT met'}"


class Local:
    def __init__(self, bench: Bench):
        self.b = bench
        self.reps = common.env_int("BENCH_REPS", 3)
        self.count = common.env_int("BENCH_COUNT", 2000)
        self.size = common.env_int("BENCH_SIZE", 1024)
        self.concurrency = [int(x) for x in common.env_words("BENCH_CONCURRENCY", "1 4")
                            if x.isdigit() and int(x) > 0]
        if len(self.concurrency) != len(common.env_words("BENCH_CONCURRENCY", "1 4")):
            raise Fatal("BENCH_CONCURRENCY must be positive integers")
        self.batch = common.env_int("BENCH_BATCH", 1)
        self.kinds = common.env_words("BENCH_KINDS", "mbox maildir")
        mailbox.check_kinds(self.kinds)
        self.user = os.environ.get("BENCH_USER", "pb-user")
        self.deadline = common.env_int("BENCH_TIMEOUT", 300)
        self.submitters = common.env_int("BENCH_SUBMITTERS", 4)
        self.mem = os.environ.get("BENCH_MEM", "1") != "0"
        self.mem_size = common.env_int("BENCH_MEM_SIZE", 104857600)
        self.mem_rcpts = common.env_int("BENCH_MEM_RECIPIENTS", 10)
        self.unavail: dict[str, str] = {}  # postern|postfix|floor -> why that side cannot run
        self.res: dict[tuple, Result] = {}  # (item, rep) -> result
        self.pf_start: dict[tuple, Optional[float]] = {}  # (kind, rep) -> "postfix start" s
        self.pd: Optional[postern.Instance] = None
        self.pf: Optional[postfix.Instance] = None

    # -- builds and setup ---------------------------------------------------------

    def prepare(self) -> None:
        common.ensure_path()
        common.ensure_postfix(self.b)
        rel = common.release_dir()
        self.client = rel / "postern-deliverbench"
        common.cargo_build(self.b, ["-p", "postern-tests", "--bin", "postern-deliverbench",
                                    "--bin", "postern-localmem"], "cargo-client.log")
        self.floor = self.b.work / "bench-local-floor"
        try:
            common.ensure_gcc(self.b)
            common.gcc(self.b, common.ROOT / "scripts/bench-local-floor.c", self.floor)
        except Fatal as e:
            self.unavail["floor"] = str(e)
        self.postern = Path(os.environ.get("BENCH_POSTERN", rel / "postern"))
        if os.environ.get("BENCH_POSTERN"):
            if not os.access(self.postern, os.X_OK):
                self.unavail["postern"] = f"BENCH_POSTERN={self.postern} is not executable"
        else:
            try:
                common.cargo_build(self.b, ["--workspace"], "cargo-postern.log")
            except Fatal as e:
                self.unavail["postern"] = str(e).splitlines()[0]
        self.boxes = mailbox.Mailboxes(self.b, self.user, "run.")
        self.message = self.b.work / "message"
        msg = common.output([str(self.client), "--print-message", "--size", str(self.size),
                             "--user", self.user])
        if msg is None:
            raise Fatal("postern-deliverbench --print-message failed")
        self.message.write_text(msg)

    def setup_postern(self) -> None:
        try:
            # mailbox_size_limit: for the memory check's large message (the
            # runs' messages are far below any limit).
            self.pd = postern.Instance(self.b, self.postern, "scripts/bench-local",
                                       {"mailbox_size_limit": "0"})
        except Fatal as e:
            self.unavail["postern"] = str(e)
            return
        master = (self.pd.etc / "master.cf").read_text().splitlines()
        if not any(l.split()[:2] == ["local", "unix"] and l.split()[-1] == "local"
                   for l in master if l.strip()):
            self.unavail["postern"] = f"{self.pd.etc}/master.cf has no 'local unix ... local' line"
            return
        self.socket = self.pd.queue / "private/local"
        if not self.pd.start():
            log = self.b.logfile("postern-start.log")
            self.unavail["postern"] = f"'postern -c {self.pd.etc} start' failed: {common.first_error(log)}"
            return
        # Ready when a delivery succeeds.
        box = self.boxes.path("mbox", "postern-warmup")
        log = self.b.logfile("postern-warmup.log")
        argv = [str(self.client), "--socket", str(self.socket), "--user", self.user, "--mailbox",
                str(box), "--count", "20", "--size", str(self.size), "--timeout", "10"]
        if not common.wait_until(lambda: self.socket.is_socket() and common.run(argv, log, timeout=30) == 0,
                                 common.START_DEADLINE, 0.2):
            self.unavail["postern"] = (f"no delivery succeeded within {common.START_DEADLINE:.0f}s: "
                                       f"{common.first_error(log)}")
            return
        self.boxes.drop(box)

    def setup_postfix(self) -> None:
        self.pf = pf = postfix.Instance(self.b, self.boxes.rel("mbox", "postfix-warmup"))
        # The first start creates the queue (about 2 s); one message must arrive.
        if not pf.start():
            log = self.b.logfile("postfix-start.log")
            self.unavail["postfix"] = f"postfix -c {pf.etc} start failed: {common.first_error(log)}"
            return
        log = self.b.logfile("postfix-warmup.log")
        with open(self.message, "rb") as msg:
            sent = common.run(pf.sendmail(f"{self.user}@localhost"), log, timeout=30, stdin=msg)
        if sent != 0:
            self.unavail["postfix"] = f"sendmail -C {pf.etc} failed: {common.first_error(log)}"
            return
        if not common.wait_until(lambda: self.boxes.count("mbox", "postfix-warmup") >= 1
                                 and pf.queue_files() == 0, common.START_DEADLINE, 0.1):
            why = next((l for l in pf.log_since(0) if "status=deferred" in l or "status=bounced" in l
                        or "warning" in l or "fatal" in l), f"see {pf.maillog}")
            self.unavail["postfix"] = (f"a message was not delivered within "
                                       f"{common.START_DEADLINE:.0f}s: {why}")
            return
        pf.stop()
        self.boxes.drop_box("mbox", "postfix-warmup")

    # -- runs ------------------------------------------------------------------------

    def fail_log(self, name: str, line: str) -> None:
        with open(self.b.logfile(f"{name}.log"), "a") as f:
            f.write(line + "\n")

    def client_run(self, argv: list[str], logname: str) -> Result:
        """postern-deliverbench's result line as numbers ({} when none)."""
        with open(self.b.logfile(f"{logname}.log"), "a") as err:
            try:
                p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, text=True,
                                   timeout=self.deadline, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                err.write(f"{argv[0]}: no result within {self.deadline}s\n")
                return {}
        r = stats.parse_loadgen(p.stdout)
        if r["errors"] is None:
            self.fail_log(logname, f"{argv[0]} exited {p.returncode} without a result line")
            return {}
        return r

    def run_probe(self, rep: int) -> Result:
        f = self.boxes.bd / f"fsync-probe-{rep}"
        os.sync()
        r = self.client_run([str(self.client), "--fsync-probe", str(f), "--count", str(self.count),
                             "--size", str(self.size)], "fsync-probe")
        self.boxes.drop(f)
        return r or failed()

    def run_postern(self, kind: str, conc: int, rep: int) -> Result:
        tag = f"postern-c{conc}-{rep}"
        box = self.boxes.path(kind, tag)
        os.sync()
        r = self.client_run([str(self.client), "--socket", str(self.socket), "--user", self.user,
                             "--mailbox" if kind == "mbox" else "--maildir", str(box),
                             "--count", str(self.count), "--concurrency", str(conc),
                             "--size", str(self.size), "--batch", str(self.batch)], "deliverbench")
        n = self.boxes.count(kind, tag)
        self.boxes.drop(box)
        if not r:
            return failed()
        if r["errors"] == 0 and n != self.count:
            self.fail_log("deliverbench", f"postern {kind} c={conc} rep {rep}: the mailbox holds "
                                          f"{n} messages, not {self.count}")
            return failed()
        return r

    def run_floor(self, kind: str, rep: int) -> Result:
        tag = f"floor-{rep}"
        box = self.boxes.path(kind, tag)
        os.sync()
        r = self.client_run([str(self.floor), "-k", kind, "-d", str(box), "-m", str(self.message),
                             "-c", str(self.count), "-n", self.user], "floor")
        n = self.boxes.count(kind, tag)
        self.boxes.drop(box)
        if not r or r["errors"] != 0 or n != self.count:
            self.fail_log("floor", f"floor {kind} rep {rep}: errors={stats.fmt_num(r.get('errors'))}, "
                                   f"the mailbox holds {n} messages, not {self.count}")
            return failed(r.get("errors"))
        return {**r, "p50_ms": None, "p99_ms": None, "max_ms": None}

    def run_postfix(self, kind: str, rep: int) -> Result:
        pf = self.pf
        assert pf is not None
        tag = f"postfix-{rep}"
        if not pf.set("home_mailbox", self.boxes.rel(kind, tag)):
            self.fail_log("postfix-runs", "postconf -e home_mailbox failed")
            return failed()
        if pf.queue_files() != 0:
            self.fail_log("postfix-runs", f"rep {rep} {kind}: the queue is not empty before submitting")
            return failed()
        # Fills maildrop with COUNT copies of the message, instance stopped.
        ok = common.loops(pf.sendmail(f"{self.user}@localhost"), self.count, self.submitters,
                          self.message.read_bytes())
        n = pf.queue_files(("maildrop",))
        if not ok or n != self.count:
            self.fail_log("postfix-runs", f"rep {rep} {kind}: submission failed: a sendmail failed "
                                          f"or maildrop holds {n} messages, not {self.count}")
            pf.clear_queue()
            return failed()
        before = pf.log_lines()
        os.sync()
        t0 = time.time()
        why = "" if pf.start() else \
            f"postfix start failed: {common.first_error(self.b.logfile('postfix-start.log'))}"
        self.pf_start[(kind, rep)] = time.time() - t0
        tend = None
        if not why:
            if common.wait_until(lambda: self.boxes.count(kind, tag) >= self.count, self.deadline):
                tend = self.boxes.mtime(kind, tag)
            else:
                why = f"{self.boxes.count(kind, tag)} of {self.count} delivered after {self.deadline}s"
        pf.settle()
        pf.stop()
        lines = pf.log_since(before)
        errors = stats.count_status(lines, ("deferred", "bounced"))
        n = self.boxes.count(kind, tag)
        if not why and n != self.count:
            why = f"the mailbox holds {n} messages, not {self.count}"
        if not why and pf.queue_files() != 0:
            why = f"{pf.queue_files()} messages still queued"
        if not why and (tend is None or tend <= t0):
            why = "the mailbox's mtime is not after the start"
        self.boxes.drop_box(kind, tag)
        if why:
            shown = [l for l in lines if any(w in l for w in ("status=deferred", "status=bounced",
                                                                "warning", "fatal", "error"))][:3]
            self.fail_log("postfix-runs", "\n".join([f"rep {rep} {kind}: {why}", *shown]))
            pf.clear_queue()
            return failed(errors or None)
        assert tend is not None
        return {**failed(errors), "rate": self.count / (tend - t0)}

    # -- the run ---------------------------------------------------------------------

    def run(self) -> None:
        self.prepare()
        for side in ("postern", "postfix"):
            if side in self.unavail:
                self.b.log(f"{side}: not available: {self.unavail[side]}")
                continue
            self.b.log(f"setting up {side}")
            getattr(self, f"setup_{side}")()
            if side in self.unavail:
                self.b.log(f"{side}: not available: {self.unavail[side]}")
        self.header()
        items: list[tuple] = [("probe",)]
        for kind in self.kinds:
            if "postern" not in self.unavail:
                items += [("postern", kind, c) for c in self.concurrency]
            if "postfix" not in self.unavail:
                items.append(("postfix", kind))
            if "floor" not in self.unavail:
                items.append(("floor", kind))
        if len(items) == 1:
            raise Fatal("neither postern nor Postfix could be set up")
        self.items = items
        self.b.log(f"running {self.reps} repetitions x {len(items)} runs of {self.count} messages")
        for rep in range(self.reps):
            for item in stats.rotation(items, rep):
                side = item[0]
                if side == "probe":
                    r = self.run_probe(rep)
                elif side == "postern":
                    r = self.run_postern(item[1], item[2], rep)
                elif side == "postfix":
                    r = self.run_postfix(item[1], rep)
                else:
                    r = self.run_floor(item[1], rep)
                self.res[(item, rep)] = r
                where = f" {item[1]}" if len(item) > 1 else ""
                self.b.log(f"rep {rep + 1} {label(item)}{where}: "
                           f"{stats.fmt_num(r.get('rate'))}/s, errors {stats.fmt_num(r.get('errors'))}")
        self.report()
        if self.mem:
            self.memory_check()
        self.failures()
        self.b.out()
        self.b.out(f"reproduce: BENCH_REPS={self.reps} BENCH_COUNT={self.count} BENCH_SIZE={self.size} "
                   f"BENCH_CONCURRENCY=\"{' '.join(map(str, self.concurrency))}\" "
                   f"BENCH_KINDS=\"{' '.join(self.kinds)}\" BENCH_BATCH={self.batch} scripts/bench-local")

    def header(self) -> None:
        o = self.b.out
        pf = self.pf if "postfix" not in self.unavail else None
        pd = self.pd if "postern" not in self.unavail else None

        def pfp(name: str) -> str:
            return pf.param(name) if pf else "?"

        def pdp(name: str) -> str:
            return pd.param(name) if pd else "?"

        fs = common.output(["df", "-PT", str(self.boxes.bd)]) or ""
        fsw = fs.splitlines()[1].split() if len(fs.splitlines()) > 1 else ["?", "?"]
        n, s = self.count, self.size
        o()
        o(f"=== postern local delivery benchmark, {common.stamp()} ===")
        o(f"postern {common.commit()}; Postfix {common.postfix_version()}; {platform.system()} "
          f"{platform.release()}; {os.cpu_count()} cores; load {common.loadavg()}")
        o(f"filesystem of the mailboxes: {fsw[1]} on {fsw[0]}")
        o(f"each run: {n} messages of {s} bytes (headers + text body) to user {self.user}, "
          "into a fresh mbox file or Maildir;")
        o(f"{self.reps} repetitions, runs interleaved (order rotating); rates are deliveries/s, "
          "median (min-max) over repetitions;")
        o("shares and ratios are computed per repetition (fsync-probe of the same repetition), "
          "then median (min-max)")
        o(f"postern: postern-deliverbench -> postern-local (local unix - n n - - local; "
          f"mailbox_delivery_lock = {pdp('mailbox_delivery_lock')}, max_use = {pdp('max_use')}); "
          f"local only, no queue; {self.batch} message(s) per exchange")
        o(f"Postfix: drain from maildrop (postfix start until the mailbox holds all {n}; "
          f"{self.submitters} sendmail loops filled maildrop beforehand)")
        o(f"  default_process_limit = {pfp('default_process_limit')}, "
          f"local_destination_concurrency_limit = {pfp('local_destination_concurrency_limit')} "
          f"(defaults), local_destination_recipient_limit = "
          f"{pfp('local_destination_recipient_limit')},")
        o(f"  in_flow_delay = {pfp('in_flow_delay')}, mailbox_delivery_lock = "
          f"{pfp('mailbox_delivery_lock')}, biff = {pfp('biff')}, alias_maps = {pfp('alias_maps')}")
        if self.batch == 1:
            o("fsyncs per message: postern mbox 1 (file), Maildir 2 (file, new/); Postfix mbox 2 "
              "(queue file, mailbox), Maildir 2 (queue file, message file)")
        else:
            o(f"fsyncs: postern mbox 1 per exchange of {self.batch} (file), Maildir 1 per message "
              "(file) + 1 per exchange (new/); Postfix mbox 2 (queue file, mailbox), Maildir 2 "
              "(queue file, message file) per message")
        o(f"fsync-probe: {n} appends of the same {s}-byte message to one file, each followed by "
          "fdatasync, one thread")
        o("floor: scripts/bench-local-floor.c, one delivery at a time: fork, "
          f"setgroups/setresgid/setresuid to {self.user}, the write and postern's fsyncs, exit, wait")
        for side in ("postern", "postfix", "floor"):
            if side in self.unavail:
                o(f"{side}: not available: {self.unavail[side]}")

    # -- report ------------------------------------------------------------------------

    def col(self, item: tuple, key: str) -> list:
        return [self.res.get((item, r), {}).get(key) for r in range(self.reps)]

    def rep_ratios(self, a: tuple, b: tuple, factor: float = 1.0) -> list:
        return [None if x is None else x * factor
                for x in stats.ratios(zip(self.col(a, "rate"), self.col(b, "rate")))]

    def report(self) -> None:
        o = self.b.out
        probe = ("probe",)
        o()
        o(f"-- disk: append {self.size} bytes + fdatasync, one thread ({self.reps} x {self.count})")
        for line in probe_rows(self.col(probe, "rate"), self.col(probe, "p50_ms"),
                               self.col(probe, "p99_ms"), self.col(probe, "max_ms")):
            o(line)
        summary: dict[tuple, list] = {}
        both = "postern" not in self.unavail and "postfix" not in self.unavail
        for kind in self.kinds:
            o()
            o(f"-- {kind} ({self.reps} x {self.count} messages of {self.size} bytes)")
            o(kind_header())
            for item in (i for i in self.items if len(i) > 1 and i[1] == kind):
                o(kind_row(label(item), self.col(item, "rate"), self.rep_ratios(item, probe),
                           self.col(item, "p50_ms"), self.col(item, "p99_ms"),
                           self.col(item, "max_ms"), stats.total(self.col(item, "errors"))))
            pfi, fli = ("postfix", kind), ("floor", kind)
            if "postfix" in self.unavail:
                o(f"   postfix: not available: {self.unavail['postfix']}")
            else:
                starts = [self.pf_start.get((kind, r)) for r in range(self.reps)]
                o(f"   (of Postfix's drain time, \"postfix start\" itself took "
                  f"{stats.fmt_mmm(starts)} s)")
            if "postern" in self.unavail:
                o(f"   postern: not available: {self.unavail['postern']}")
            for c in self.concurrency if both else []:
                rs = self.rep_ratios(("postern", kind, c), pfi)
                o(f"   {'postern c=' + str(c) + ' / postfix:':<26} {stats.fmt_mmm(rs):<20} "
                  f"target >= {TARGET_RATIO:g}x: {stats.target_met(rs, TARGET_RATIO)}")
                summary[(kind, c)] = rs
            # Where postern and the target stand against what a fork per
            # delivery allows on this disk.
            if "floor" not in self.unavail and "postern" not in self.unavail and 1 in self.concurrency:
                o(f"   {'postern c=1 / floor:':<26} "
                  f"{stats.fmt_mmm(self.rep_ratios(('postern', kind, 1), fli))}")
            if "floor" not in self.unavail and "postfix" not in self.unavail:
                o(f"   {f'target ({TARGET_RATIO:g}x postfix) / floor:':<26} "
                  f"{stats.fmt_mmm(self.rep_ratios(pfi, fli, TARGET_RATIO))}")
        o()
        o("-- summary: postern/Postfix per repetition (median (min-max)); shares of the "
          "fsync-probe rate (medians)")
        o(f"   {'scenario':<14} {'postern/postfix':<18} {'postern':>8} {'postfix':>8} "
          f"{'share pn / pf':<17} target >= {TARGET_RATIO:g}x")
        for (kind, c), rs in summary.items():
            pn, pfi = ("postern", kind, c), ("postfix", kind)
            share = (f"{stats.fmt_num(stats.median(self.rep_ratios(pn, probe)), 3)} / "
                     f"{stats.fmt_num(stats.median(self.rep_ratios(pfi, probe)), 3)}")
            o(f"   {kind + ' c=' + str(c):<14} {stats.fmt_mmm(rs):<18} "
              f"{stats.fmt_num(stats.median(self.col(pn, 'rate'))):>8} "
              f"{stats.fmt_num(stats.median(self.col(pfi, 'rate'))):>8} {share:<17} "
              f"{stats.target_met(rs, TARGET_RATIO)}")
        o(f"   (Postfix's drain runs at its own default concurrency; fsync-probe median: "
          f"{stats.fmt_num(stats.median(self.col(probe, 'rate')))} appends/s)")

    def memory_check(self) -> None:
        """The peak RSS of local's delivery process for one large message to
        several mboxes (issue 15), by postern-localmem (in the tests crate;
        any driver can call it). Kept apart from the runs above."""
        o = self.b.out
        o()
        o(f"-- memory: local's delivery process, one {self.mem_size}-byte message to "
          f"{self.mem_rcpts} mboxes (peak RSS, VmHWM; target < {MEM_TARGET_KB} kB)")
        if "postern" in self.unavail or self.pd is None:
            o("   postern not available")
            return
        os.sync()
        log = self.b.logfile("localmem.log")
        with open(log, "a") as err:
            try:
                p = subprocess.run([str(common.release_dir() / "postern-localmem"), "--socket",
                                    str(self.socket), "--user", self.user, "--dir", str(self.boxes.bd),
                                    "--log", str(self.pd.maillog), "--size", str(self.mem_size),
                                    "--recipients", str(self.mem_rcpts)],
                                   stdout=subprocess.PIPE, stderr=err, text=True,
                                   timeout=self.deadline, stdin=subprocess.DEVNULL)
                ok = p.returncode == 0
            except subprocess.TimeoutExpired:
                err.write(f"postern-localmem: no result within {self.deadline}s\n")
                ok = False
        if not ok:
            o(f"   failed: {common.first_error(log)}")
            return
        o(memory_verdict(p.stdout))

    def failures(self) -> None:
        """The first lines of the runs' failure logs, if any."""
        logs = [(n, self.b.logfile(f"{n}.log")) for n in FAILURE_LOGS]
        logs = [(n, f) for n, f in logs if f.exists() and f.stat().st_size > 0]
        if not logs:
            return
        self.b.out()
        self.b.out("-- failures (first lines of the logs)")
        for name, f in logs:
            for line in f.read_text(errors="replace").splitlines()[:5]:
                self.b.out(f"   {name}: {line}")


def main() -> int:
    return common.main("bench-local", "postern-bench-local.", lambda b: Local(b).run())


if __name__ == "__main__":
    raise SystemExit(main())
