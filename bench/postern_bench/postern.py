"""A self-contained postern instance for the drivers that deliver mail
(local.py, queue.py): `postern init --self-contained` in bench.work, its
log in the run's directory, the demo spawn service commented out (its port
would collide with any other instance on this machine), the run's
mailboxes allowed by the destination policy; start, stop and parameters."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from . import common
from .common import Bench, Fatal

SPAWN_LINE = re.compile(r"^[^#\s].*\sspawn(\s.*)?$")


def without_spawn(master_cf: str, why: str) -> str:
    """master.cf with every spawn service commented out."""
    return "\n".join(f"# disabled by {why}: {l}" if SPAWN_LINE.match(l) else l
                     for l in master_cf.splitlines()) + "\n"


def with_params(main_cf: str, params: dict[str, str]) -> str:
    """main.cf with each of params set (earlier settings of them removed)."""
    keep = [l for l in main_cf.splitlines()
            if not any(re.match(rf"\s*{re.escape(k)}\s*=", l) for k in params)]
    return "\n".join(keep + [f"{k} = {v}" for k, v in params.items()]) + "\n"


class Instance:
    """postern's instance in bench.work/postern, stopped at the end of the
    run. Fatal when it cannot be created."""

    def __init__(self, bench: Bench, postern: Path, why: str, params: dict[str, str]):
        self.b = bench
        self.postern = postern
        self.etc = bench.work / "postern/etc"
        self.maillog = bench.work / "postern/maillog"
        log = bench.logfile("postern-init.log")
        if common.run([str(postern), "init", "--self-contained", str(self.etc)], log) != 0:
            raise Fatal(f"'postern init --self-contained {self.etc}' failed: {common.first_error(log)}")
        self.queue = Path(self.param("queue_directory"))
        self.data = Path(self.param("data_directory"))
        if not self.queue.is_absolute() or not self.data.is_absolute():
            raise Fatal(f"'postern -c {self.etc} config -h queue_directory data_directory' failed")
        self.set({"maillog_file": str(self.maillog), **params})
        master = self.etc / "master.cf"
        master.write_text(without_spawn(master.read_text(), why))
        with open(self.etc / "destinations", "a") as f:
            f.write(f"# added by {why}\nany ~/bench/**\n")
        bench.at_exit(self.stop)

    def param(self, name: str) -> str:
        v = common.output([str(self.postern), "-c", str(self.etc), "config", "-h", name])
        return v.strip() if v is not None else "?"

    def set(self, params: dict[str, str]) -> None:
        main = self.etc / "main.cf"
        main.write_text(with_params(main.read_text(), params))

    def start(self) -> bool:
        return common.run([str(self.postern), "-c", str(self.etc), "start"],
                          self.b.logfile("postern-start.log"), timeout=common.START_DEADLINE) == 0

    def master(self) -> Optional[int]:
        try:
            pid = int((self.data / "master/master.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if common.alive(pid) else None

    def stop(self) -> None:
        mpid = self.master()
        if mpid is None:
            return
        log = self.b.logfile("postern-stop.log")
        if common.run([str(self.postern), "-c", str(self.etc), "stop"], log,
                      timeout=common.STOP_DEADLINE) != 0:
            self.b.log(f"postern stop failed: {common.first_error(log)}")
        if not common.wait_gone([mpid], common.STOP_DEADLINE):
            self.b.log(f"postern master {mpid} did not exit; killing it")
            common.kill([mpid])
