"""What the benchmark drivers share: logging and the report, packages and
builds, processes (trees, memory, waiting), ports and readiness, and the
cleanup of everything a run started."""

from __future__ import annotations

import datetime
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from . import stats

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 60.0
STOP_DEADLINE = 30.0


class Fatal(Exception):
    """The benchmark cannot run at all (exit status 1)."""


class Bench:
    """One run: its name (for messages), temporary directory, report, and
    the cleanups to run at the end, last registered first."""

    def __init__(self, name: str, prefix: str):
        self.name = name
        self.work = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        # Postfix's processes must be able to reach its queue below.
        os.chmod(self.work, 0o755)
        (self.work / "logs").mkdir()
        self.report_lines: list[str] = []
        self._cleanups: list[Callable[[], None]] = []

    def log(self, msg: str) -> None:
        print(f"{self.name}: {msg}", file=sys.stderr, flush=True)

    def out(self, line: str = "") -> None:
        print(line, flush=True)
        self.report_lines.append(line)

    def logfile(self, name: str) -> Path:
        return self.work / "logs" / name

    def at_exit(self, fn: Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def finish(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as e:  # one failed cleanup must not skip the others
                self.log(f"cleanup: {e}")
        self._cleanups.clear()
        out = os.environ.get("BENCH_OUT")
        if out and self.report_lines:
            with open(out, "a") as f:
                f.write("\n".join(self.report_lines) + "\n")
            self.log(f"appended the report to {out}")
        if os.environ.get("BENCH_KEEP"):
            self.log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main(name: str, prefix: str, body: Callable[[Bench], None]) -> int:
    """Runs body with a Bench, always cleaning up (also on SIGTERM, SIGHUP
    and ^C); 1 when it could not run at all."""
    if os.geteuid() != 0:
        print(f"{name}: must run as root", file=sys.stderr)
        return 1

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    try:
        bench = Bench(name, prefix)
    except OSError as e:
        print(f"{name}: {e}", file=sys.stderr)
        return 1
    try:
        body(bench)
        return 0
    except Fatal as e:
        bench.log(str(e))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        bench.finish()


def env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    if not text.isdigit() or int(text) <= 0:
        raise Fatal(f"{name} must be a positive integer, not {text!r}")
    return int(text)


def env_words(name: str, default: str) -> list[str]:
    return os.environ.get(name, default).split()


# ---------------------------------------------------------------------------
# Commands, packages and builds.


def run(cmd: list[str], log: Optional[Path] = None, timeout: float = 600, **kw) -> int:
    """Runs cmd, output appended to log (or discarded), standard input
    from /dev/null unless stdin= says otherwise; its exit status (124 on
    timeout, 127 when it cannot be started)."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    with open(log, "a") if log else open(os.devnull, "w") as f:
        try:
            return subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, **kw
            ).returncode
        except subprocess.TimeoutExpired:
            return 124
        except OSError as e:
            f.write(f"{cmd[0]}: {e}\n")
            return 127


def output(cmd: list[str], timeout: float = 60) -> Optional[str]:
    """cmd's standard output when it succeeds, else None."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def first_error(log: Path) -> str:
    """The first line of a log that looks like an error, else its first line."""
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no output)"
    for l in lines:
        if any(w in l.lower() for w in ("error", "fatal", "fail", "denied", "not found", "no such")):
            return l
    return lines[0] if lines else "(no output)"


_apt_updated = False


def apt_install(bench: Bench, packages: list[str], debconf: Optional[str] = None) -> None:
    """apt-get install, after one apt-get update per run."""
    global _apt_updated
    log = bench.logfile("apt.log")
    if not _apt_updated:
        bench.log("apt-get update")
        if run(["apt-get", "update", "-qq"], log) != 0:
            raise Fatal(f"apt-get update failed; see {log}")
        _apt_updated = True
    if debconf:
        subprocess.run(["debconf-set-selections"], input=debconf, text=True, check=False)
    bench.log("installing " + " ".join(packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if run(["apt-get", "install", "-y", "-qq", *packages], log, env=env) != 0:
        raise Fatal(f"apt-get install {' '.join(packages)} failed; see {log}")


def ensure_path() -> None:
    os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
    if not shutil.which("cargo"):
        os.environ["PATH"] = str(Path.home() / ".cargo/bin") + ":" + os.environ["PATH"]


def ensure_postfix(bench: Bench) -> None:
    if not shutil.which("postfix"):
        apt_install(bench, ["postfix"],
                    debconf="postfix postfix/main_mailer_type select Local only\n")


def ensure_gcc(bench: Bench) -> None:
    if not shutil.which("gcc") or not Path("/usr/include/stdio.h").exists():
        apt_install(bench, ["gcc", "libc6-dev"])


def release_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"


def cargo_build(bench: Bench, args: list[str], logname: str) -> None:
    log = bench.logfile(logname)
    bench.log("cargo build --release " + " ".join(args))
    if run(["cargo", "build", "--release", *args], log, timeout=3600, cwd=ROOT) != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise Fatal("cargo build failed:\n" + "\n".join(tail))


def gcc(bench: Bench, source: Path, out: Path) -> None:
    log = bench.logfile("gcc.log")
    if run(["gcc", "-O2", "-Wall", "-o", str(out), str(source)], log) != 0:
        raise Fatal(f"cannot build {source}: {first_error(log)}")


def commit() -> str:
    c = output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    c = c.strip() if c else "unknown"
    if output(["git", "-C", str(ROOT), "status", "--porcelain"]):
        c += "+dirty"
    return c


def stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def postfix_version() -> str:
    v = output(["postconf", "-d", "-h", "mail_version"])
    return v.strip() if v else "?"


# ---------------------------------------------------------------------------
# Processes.


def parents() -> dict[int, int]:
    """pid -> ppid of every process."""
    out: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                s = stats.parse_stat(Path(f"/proc/{d}/stat").read_text())
            except OSError:
                continue
            if s:
                out[s["pid"]] = s["ppid"]
    return out


def tree(roots: Iterable[int]) -> set[int]:
    return stats.descendants(parents(), roots)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def children_named(ppid: int, name: str) -> list[int]:
    return sorted(p for p, pp in parents().items() if pp == ppid and comm(p) == name)


def pids_named(name: str) -> list[int]:
    return sorted(p for p in parents() if comm(p) == name)


def kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass  # already gone: what was wanted


def wait_until(cond: Callable[[], bool], limit: float, step: float = 0.05) -> bool:
    """Polls cond until it holds or limit seconds pass (a benchmark driver,
    not a test: it waits on other programs' state)."""
    end = time.monotonic() + limit
    while True:
        if cond():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def wait_gone(pids: Iterable[int], limit: float) -> bool:
    pids = list(pids)
    return wait_until(lambda: not any(alive(p) for p in pids), limit)


def memory(pid: Optional[int]) -> dict[str, Optional[int]]:
    """RSS, PSS (smaps_rollup) and peak RSS (VmHWM, status) in kB."""
    out: dict[str, Optional[int]] = {"Rss": None, "Pss": None, "VmHWM": None}
    if not pid:
        return out
    try:
        out.update(stats.parse_kb_fields(Path(f"/proc/{pid}/smaps_rollup").read_text(),
                                         ["Rss", "Pss"]))
        out.update(stats.parse_kb_fields(Path(f"/proc/{pid}/status").read_text(), ["VmHWM"]))
    except OSError:
        pass  # gone meanwhile: reported as "-"
    return out


def kb(x: Optional[int]) -> str:
    return "-" if x is None else f"{x:,}"


# ---------------------------------------------------------------------------
# Endpoints.

_used_ports: set[int] = set()


def connects(port: int) -> bool:
    """Whether something accepts a TCP connection on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def pick_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    for _ in range(1000):
        p = random.randint(20000, 28999)
        if p in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                continue
        _used_ports.add(p)
        return p
    raise Fatal("no free TCP port")


def loops(argv: list[str], count: int, parallel: int, stdin: bytes) -> bool:
    """Runs argv count times in all, from `parallel` loops at once, stdin
    on its standard input each time; False if one run failed. A loop
    starts each run with posix_spawn (a vfork-style start, about what a
    shell loop costs, the same for every program measured) and waits for
    it before the next; the loops are processes of their own, so that they
    run in parallel."""

    def one_loop(n: int) -> bool:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            for _ in range(n):
                r, w = os.pipe()
                pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
                    (os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                    (os.POSIX_SPAWN_CLOSE, w)])
                os.close(r)
                try:
                    os.write(w, stdin)
                except BrokenPipeError:
                    pass  # it exited early: its status tells
                os.close(w)
                _, status = os.waitpid(pid, 0)
                if os.waitstatus_to_exitcode(status) != 0:
                    return False
        finally:
            os.close(null)
        return True

    shares = stats.shares(count, parallel)
    if parallel == 1:
        return one_loop(count)
    pids = []
    for n in shares:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if one_loop(n) else 1
            finally:
                os._exit(code)
        pids.append(pid)
    ok = True
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        ok = ok and os.waitstatus_to_exitcode(status) == 0
    return ok


class LogCounter:
    """Counts the lines of a log that contain needle, from where the log
    ends now on: reads only what was appended since the last call, and
    only whole lines."""

    def __init__(self, path: Path, needle: str):
        self.path, self.needle = path, needle.encode()
        self.n = 0
        self.rest = b""
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0

    def count(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.n
        self.offset += len(data)
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        self.n += sum(1 for l in lines if self.needle in l)
        return self.n
