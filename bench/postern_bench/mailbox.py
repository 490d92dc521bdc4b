"""The benchmark account and its mailboxes: the account (created if
missing, kept), a fresh directory below ~USER/bench for this run's
mailboxes (removed at the end), and per run an mbox file or a Maildir in
it, counted and then moved aside."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
from pathlib import Path

from . import common, stats
from .common import Bench, Fatal

KINDS = ("mbox", "maildir")


def check_kinds(kinds: list[str], allowed: tuple[str, ...] = KINDS) -> None:
    for k in kinds:
        if k not in allowed:
            raise Fatal(f"BENCH_KINDS: {k!r} is not one of {', '.join(allowed)}")


class Mailboxes:
    """BENCH_USER's account and this run's mailbox directory, self.bd."""

    def __init__(self, bench: Bench, user: str, prefix: str):
        self.b = bench
        self.user = user
        if not re.fullmatch(r"[a-z_][a-z0-9_-]*", user):
            raise Fatal(f"BENCH_USER: {user!r} is not a plain account name")
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            bench.log(f"creating the account {user}")
            log = bench.logfile("useradd.log")
            if common.run(["useradd", "-m", "-s", "/bin/bash", user], log) != 0:
                raise Fatal(f"cannot create the account {user}: {common.first_error(log)}")
            pw = pwd.getpwnam(user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.home = Path(pw.pw_dir)
        top = self.home / "bench"
        if not self.home.is_dir():
            raise Fatal(f"the home directory of {user} ({self.home}) does not exist")
        if top.is_symlink():
            raise Fatal(f"{top} is a symbolic link: refusing to use it")
        if not top.is_dir():
            top.mkdir()
            bench.at_exit(lambda: _rmdir_if_empty(top))
        os.chown(top, self.uid, self.gid)
        # postern's qmgr (the mail owner) looks for ~/.forward.
        os.chmod(self.home, 0o755)
        self.bd = Path(tempfile.mkdtemp(prefix=prefix, dir=top))
        os.chown(self.bd, self.uid, self.gid)
        os.chmod(self.bd, 0o700)
        bench.at_exit(lambda: shutil.rmtree(self.bd, ignore_errors=True))
        # As Postfix's and postern's home_mailbox want it.
        self.bd_rel = str(self.bd.relative_to(self.home))
        self.dropped = 0

    def rel(self, kind: str, tag: str) -> str:
        """home_mailbox of a run (relative to the home directory)."""
        return f"{self.bd_rel}/{tag}-mbox" if kind == "mbox" else f"{self.bd_rel}/{tag}-Maildir/"

    def path(self, kind: str, tag: str) -> Path:
        return self.home / self.rel(kind, tag).rstrip("/")

    def count(self, kind: str, tag: str) -> int:
        """Messages in a mailbox (0 when it does not exist)."""
        box = self.path(kind, tag)
        try:
            if kind == "mbox":
                with open(box, "rb") as f:
                    return stats.mbox_count(f)
            return sum(1 for e in os.scandir(box / "new") if e.is_file())
        except OSError:
            return 0

    def mtime(self, kind: str, tag: str) -> float:
        """When the mailbox last changed (mbox: the file; Maildir: new/)."""
        box = self.path(kind, tag)
        return (box if kind == "mbox" else box / "new").stat().st_mtime

    def drop(self, box: Path) -> None:
        """Moves a finished mailbox out of the way; all are removed at exit.
        Not removed now: on ext4 without a journal (this project's
        machines) the inode allocator skips inodes freed in the last few
        seconds one by one, so a Maildir of thousands of files removed just
        before a run made the next run's file creations several times
        slower -- a cost of the benchmark's cleanup, not of either mail
        system."""
        self.dropped += 1
        (self.bd / ".dropped").mkdir(exist_ok=True)
        try:
            box.rename(self.bd / ".dropped" / str(self.dropped))
        except OSError:
            pass  # never created (a failed run): nothing to move
        Path(f"{box}.lock").unlink(missing_ok=True)
        os.sync()

    def drop_box(self, kind: str, tag: str) -> None:
        self.drop(self.path(kind, tag))


def _rmdir_if_empty(d: Path) -> None:
    try:
        d.rmdir()
    except OSError:
        pass  # not empty: another run's, kept
