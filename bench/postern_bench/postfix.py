"""A private Postfix instance for the drivers that compare postern's mail
path with Postfix's (local.py, queue.py): its main.cf and master.cf
(Debian's, without smtpd, tlsmgr, the pipe transports and chroot), start,
stop, and its queue."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from . import common
from .common import Bench

MASTER_CF = """\
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
smtp      unix  -       -       n       -       -       smtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def main_cf(top: Path, home_mailbox: str, relayhost: Optional[str]) -> str:
    """main.cf of an instance below top: local delivery for localhost
    (alias_maps as in Debian's main.cf; Postfix's own default adds
    nis:mail.aliases, which only logs a warning here), and everything else
    to relayhost through smtp, or refused when there is none."""
    transport = (f"default_transport = smtp\nrelay_transport = smtp\nrelayhost = {relayhost}\n"
                 if relayhost else "default_transport = error\nrelay_transport = error\n")
    return (f"compatibility_level = 3.6\nqueue_directory = {top}/queue\n"
            f"data_directory = {top}/data\ninet_interfaces = loopback-only\ninet_protocols = ipv4\n"
            f"myhostname = bench.localdomain\nmydestination = localhost\n{transport}"
            f"alias_maps = hash:/etc/aliases\nbiff = no\nhome_mailbox = {home_mailbox}\n"
            f"maillog_file = {top}/maillog\nmaillog_file_prefixes = /var, /dev/stdout, {top}\n")


class Instance:
    """A Postfix instance in bench.work/postfix, stopped at the end of the run."""

    def __init__(self, bench: Bench, home_mailbox: str, relayhost: Optional[str] = None):
        self.b = bench
        self.top = bench.work / "postfix"
        self.etc = self.top / "etc"
        self.maillog = self.top / "maillog"
        for d in ("etc", "queue", "data"):
            (self.top / d).mkdir(parents=True)
        shutil.chown(self.top / "data", "postfix")
        (self.etc / "main.cf").write_text(main_cf(self.top, home_mailbox, relayhost))
        (self.etc / "master.cf").write_text(MASTER_CF)
        bench.at_exit(self.stop)

    def start(self) -> bool:
        return common.run(["postfix", "-c", str(self.etc), "start"],
                          self.b.logfile("postfix-start.log"), timeout=common.START_DEADLINE) == 0

    def running(self) -> bool:
        return common.run(["postfix", "-c", str(self.etc), "status"]) == 0

    def stop(self) -> None:
        mpid = self.master()
        if not self.running() and mpid is None:
            return
        if common.run(["postfix", "-c", str(self.etc), "stop"],
                      self.b.logfile("postfix-stop.log"), timeout=common.STOP_DEADLINE) != 0:
            self.b.log(f"postfix stop failed; see {self.b.logfile('postfix-stop.log')}")
        if mpid and not common.wait_gone([mpid], common.STOP_DEADLINE):
            self.b.log(f"Postfix master {mpid} did not exit; killing it")
            common.kill([mpid])
            common.wait_gone([mpid], 5)

    def master(self) -> Optional[int]:
        try:
            pid = int((self.top / "queue/pid/master.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if common.alive(pid) and common.comm(pid) == "master" else None

    def set(self, param: str, value: str) -> bool:
        return common.run(["postconf", "-c", str(self.etc), "-e", f"{param} = {value}"],
                          self.b.logfile("postconf.log")) == 0

    def param(self, name: str) -> str:
        v = common.output(["postconf", "-c", str(self.etc), "-h", name])
        return v.strip() if v is not None else "?"

    def sendmail(self, recipient: str) -> list[str]:
        return [shutil.which("sendmail") or "/usr/sbin/sendmail", "-C", str(self.etc), "-f",
                "bench@example.org", recipient]

    def queue_files(self, queues: tuple[str, ...] = QUEUES) -> int:
        n = 0
        for d in queues:
            for _, _, files in os.walk(self.top / "queue" / d):
                n += len(files)
        return n

    def settle(self) -> bool:
        """Waits until qmgr has removed the last queue files, so that no
        message is delivered again at the next start."""
        return common.wait_until(lambda: self.queue_files() == 0, common.STOP_DEADLINE, 0.1)

    def clear_queue(self) -> None:
        """Removes whatever a failed run left queued (instance stopped)."""
        for d in QUEUES:
            for dirpath, _, files in os.walk(self.top / "queue" / d):
                for f in files:
                    Path(dirpath, f).unlink(missing_ok=True)

    def log_lines(self) -> int:
        try:
            with open(self.maillog, "rb") as f:
                return sum(1 for _ in f)
        except OSError:
            return 0

    def log_since(self, line: int) -> list[str]:
        try:
            return self.maillog.read_text(errors="replace").splitlines()[line:]
        except OSError:
            return []
