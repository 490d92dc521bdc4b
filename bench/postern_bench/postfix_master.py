"""bench-postfix-master — messages per second through Postfix's own
smtpd -> cleanup -> qmgr -> local, under postern's master and under
Postfix's master: the same installation (Debian's stock main.cf and
master.cf, only paths, the SMTP port and mailbox_command changed), in one
run.

Usage (as root, from anywhere):   scripts/bench-postfix-master

Each round starts the instance under one master, sends the messages over
SMTP (each session sends its share, one MAIL transaction per message, to
one local user), and counts from the first connection until the user's
mailbox holds them all; then stops the master. The same queue, the same
daemons and the same mailbox serve both masters, so the difference is the
master's: how it forks, watches and reaps the daemons. The machine is
noisy: compare the per-round ratios, not absolute figures.

Environment (defaults in brackets):
  BENCH_MESSAGES [400]  messages per round
  BENCH_CONC [4]        SMTP sessions sending at once
  BENCH_REPS [3]        rounds per master, interleaved A B B A ...
  BENCH_USER [pt-pfbench]  the local user (created if missing; its
                        /var/mail mailbox is emptied at the start)
  BENCH_POSTERN         a postern command instead of building the workspace
  BENCH_OUT, BENCH_KEEP as for the other drivers.

Exit status: 0 when every round delivered, 1 otherwise (the report names
the round, what was delivered and the maillog's tail).
"""

from __future__ import annotations

import os
import pwd
import smtplib
import threading
import time
from pathlib import Path

from . import common, stats
from .common import Bench, Fatal

MESSAGE_BODY = "x" * 1000


def instance_files(main_cf: str, master_cf: str, top: Path, port: int) -> tuple[str, str]:
    """Debian's main.cf and master.cf for an instance below top: its own
    queue, data and log, no aliases, smtpd on 127.0.0.1:port, and local
    writing the mailbox itself (Debian's postinst sets mailbox_command to
    procmail when procmail is installed, whose 8 s sleep on a busy lock
    then dominates every round)."""
    main = main_cf + (f"\nqueue_directory = {top}/queue\ndata_directory = {top}/data\n"
                      f"maillog_file = {top}/maillog\nmaillog_file_prefixes = {top}\n"
                      "alias_maps =\nalias_database =\nmailbox_command =\n")
    out = []
    for line in master_cf.splitlines(keepends=True):
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "smtp" and fields[1] == "inet":
            line = line.replace("smtp ", f"127.0.0.1:{port} ", 1)
        out.append(line)
    return main, "".join(out)


class PostfixMaster:
    def __init__(self, bench: Bench):
        self.b = bench
        self.messages = common.env_int("BENCH_MESSAGES", 400)
        self.conc = common.env_int("BENCH_CONC", 4)
        self.reps = common.env_int("BENCH_REPS", 3)
        self.user = os.environ.get("BENCH_USER", "pt-pfbench")

    def prepare(self) -> None:
        common.ensure_path()
        common.ensure_postfix(self.b)
        if os.environ.get("BENCH_POSTERN"):
            self.postern = os.environ["BENCH_POSTERN"]
        else:
            common.cargo_build(self.b, ["--workspace"], "cargo.log")
            self.postern = str(common.release_dir() / "postern")
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            if common.run(["useradd", "--create-home", self.user], self.b.logfile("useradd.log")) != 0:
                raise Fatal(f"cannot create the account {self.user}")
        # The mailbox is read after every message: start it empty.
        self.mbox = Path(f"/var/mail/{self.user}")
        if self.mbox.exists():
            os.truncate(self.mbox, 0)
        self.top = self.b.work / "instance"
        self.top.mkdir()
        self.port = common.pick_port()
        self.etc = self.top / "etc"
        self.etc.mkdir()
        main, master = instance_files(Path("/etc/postfix/main.cf").read_text(),
                                      Path("/etc/postfix/master.cf").read_text(), self.top, self.port)
        (self.etc / "main.cf").write_text(main)
        (self.etc / "master.cf").write_text(master)
        for who in ("postern", "postfix"):
            self.b.at_exit(lambda who=who: self.stop(who))

    def command(self, who: str, verb: str) -> list[str]:
        return [self.postern if who == "postern" else "postfix", "-c", str(self.etc), verb]

    def start(self, who: str) -> None:
        log = self.b.logfile(f"{who}-start.log")
        if common.run(self.command(who, "start"), log, timeout=common.START_DEADLINE) != 0:
            raise Fatal(f"{' '.join(self.command(who, 'start'))}: {common.first_error(log)}")

    def stop(self, who: str) -> None:
        common.run(self.command(who, "stop"), self.b.logfile(f"{who}-stop.log"),
                   timeout=common.STOP_DEADLINE)

    def mailbox_count(self, tag: str) -> int:
        try:
            return self.mbox.read_text(errors="replace").count(f"Subject: {tag} ")
        except FileNotFoundError:
            return 0

    def send(self, tag: str, count: int, errors: list) -> None:
        try:
            s = smtplib.SMTP("127.0.0.1", self.port, timeout=60)
            for i in range(count):
                s.sendmail("bench@localhost", [f"{self.user}@localhost"],
                           f"Subject: {tag} {i}\r\n\r\n{MESSAGE_BODY}\r\n")
            s.quit()
        except Exception as e:  # reported, and the round fails
            errors.append(repr(e))

    def round_rate(self, who: str, rep: int) -> float:
        tag = f"bench-{who}-{rep}"
        self.start(who)
        if not common.wait_until(lambda: common.connects(self.port), common.START_DEADLINE):
            raise Fatal(f"{who}: port {self.port} never went up")
        errors: list[str] = []
        t0 = time.monotonic()
        threads = [threading.Thread(target=self.send, args=(tag, n, errors))
                   for n in stats.shares(self.messages, self.conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done = common.wait_until(lambda: bool(errors) or self.mailbox_count(tag) >= self.messages,
                                 300, 0.02)
        elapsed = time.monotonic() - t0
        got = self.mailbox_count(tag)
        if errors or not done or got < self.messages:
            self.stop(who)
            log = self.top / "maillog"
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise Fatal(f"{who} round {rep}: {errors or 'timed out'} ({got} of {self.messages} "
                        f"delivered); {log}:\n{tail}")
        self.stop(who)
        if not common.wait_until(lambda: not common.connects(self.port), common.STOP_DEADLINE):
            raise Fatal(f"{who}: port {self.port} never went down")
        return self.messages / elapsed

    def run(self) -> None:
        self.prepare()
        o = self.b.out
        o(f"# Postfix {common.postfix_version()} smtpd -> local, {self.messages} messages of 1 KB per "
          f"round, {self.conc} SMTP sessions, {self.reps} rounds per master; postern: {self.postern}")
        o(f"{'round':>5} {'master':<8} {'msgs/s':>8}")
        rates: dict[str, list] = {"postern": [], "postfix": []}
        for rep in range(self.reps):
            for who in stats.rotation(["postern", "postfix"], rep):
                r = self.round_rate(who, rep)
                rates[who].append(r)
                o(f"{rep:>5} {who:<8} {r:>8.1f}")
        ratios = stats.ratios(zip(rates["postern"], rates["postfix"]))
        o(f"postern/postfix msgs/s: {stats.fmt_mmm(ratios)}")
        o(f"reproduce: BENCH_MESSAGES={self.messages} BENCH_CONC={self.conc} BENCH_REPS={self.reps} "
          "scripts/bench-postfix-master")


def main() -> int:
    return common.main("bench-postfix-master", "postern-bench-pfm.",
                       lambda b: PostfixMaster(b).run())


if __name__ == "__main__":
    raise SystemExit(main())
