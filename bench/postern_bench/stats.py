"""Parsing and statistics of the benchmark drivers: pure functions, tested
by bench/tests (python3 -m unittest discover -s bench/tests)."""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

Number = Optional[float]


def median_min_max(values: Iterable[Number]) -> Optional[tuple[float, float, float]]:
    """(median, min, max) of the numbers given, None values skipped; None if
    there are none. The median of an even count is the mean of the middle two."""
    v = sorted(x for x in values if x is not None and not math.isnan(x))
    if not v:
        return None
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return med, v[0], v[-1]


def ratio(a: Number, b: Number) -> Number:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def ratios(pairs: Iterable[tuple[Number, Number]]) -> list[Number]:
    """Per-repetition ratios of paired values."""
    return [ratio(a, b) for a, b in pairs]


def fmt_mmm(values: Iterable[Number], digits: int = 2, suffix: str = "") -> str:
    """"median (min-max)" of the values, "n/a" if there are none."""
    s = median_min_max(values)
    if s is None:
        return "n/a"
    m, lo, hi = s
    return f"{m:.{digits}f}{suffix} ({lo:.{digits}f}-{hi:.{digits}f})"


def fmt_num(x: Number, digits: int = 0) -> str:
    """x with the given decimals, "-" when missing."""
    return "-" if x is None else f"{x:.{digits}f}"


def _num(text: str) -> Number:
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def parse_fields(line: str, keys: Sequence[str]) -> dict[str, Number]:
    """The `key=value` words of a result line whose key is one of keys, as
    numbers; a missing or unparsable field (`nan`, `-`) is None. Unknown
    fields are ignored."""
    out: dict[str, Number] = {k: None for k in keys}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key in out:
            out[key] = _num(value)
    return out


def parse_loadgen(line: str) -> dict[str, Number]:
    """The result line of postern-loadgen (`conns=N errors=E secs=S rate=R
    p50_ms=P p99_ms=Q max_ms=M`), and of postern-deliverbench and the C
    floors, which print the same fields (`deliveries=N` for `conns=N`), as
    numbers (parse_fields); the latencies are None when there were no
    connections."""
    return parse_fields(line, ("conns", "deliveries", "errors", "secs", "rate", "p50_ms",
                               "p99_ms", "max_ms", "peak_rss_kb"))


def parse_kb_fields(text: str, names: Sequence[str]) -> dict[str, Optional[int]]:
    """kB values of `Name:   123 kB` lines (/proc/PID/status, smaps_rollup)."""
    out: dict[str, Optional[int]] = {n: None for n in names}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if sep and key in out:
            parts = rest.split()
            if parts and parts[0].isdigit():
                out[key] = int(parts[0])
    return out


def parse_stat(text: str) -> Optional[dict[str, int]]:
    """pid, ppid, pgrp and session from /proc/PID/stat (the command name in
    parentheses may hold spaces and parentheses: fields follow the last ')')."""
    head, sep, tail = text.rpartition(")")
    if not sep:
        return None
    f = tail.split()
    try:
        return {
            "pid": int(head.split("(", 1)[0]),
            "ppid": int(f[1]),
            "pgrp": int(f[2]),
            "session": int(f[3]),
        }
    except (IndexError, ValueError):
        return None


def descendants(parents: dict[int, int], roots: Iterable[int]) -> set[int]:
    """The roots and every process below them, from a pid -> ppid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    keep = set(roots)
    todo = list(keep)
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in keep:
                keep.add(c)
                todo.append(c)
    return keep


def verdict(values: Sequence[Number], at_least: float) -> str:
    """"yes" when every value (per repetition) reaches the target, "median
    only" when the median does, else "no"; "n/a" without values."""
    s = median_min_max(values)
    if s is None:
        return "n/a"
    med, lo, _ = s
    if lo >= at_least:
        return "yes"
    return "median only" if med >= at_least else "no"


def verdict_at_most(values: Sequence[Number], at_most: float) -> str:
    """As verdict, for an upper bound."""
    s = median_min_max(values)
    if s is None:
        return "n/a"
    med, _, hi = s
    if hi <= at_most:
        return "yes"
    return "median only" if med <= at_most else "no"


def phases(marks: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Durations between consecutive (name, time) marks, each named by the
    mark that ends it."""
    return [(name, t - marks[i][1]) for i, (name, t) in enumerate(marks[1:])]


def median(values: Iterable[Number]) -> Number:
    """The median of the numbers given (None values skipped), None if none."""
    s = median_min_max(values)
    return None if s is None else s[0]


def fmt_range(values: Iterable[Number], digits: int = 0) -> str:
    """"(min-max)" of the values, "" if there are none."""
    s = median_min_max(values)
    return "" if s is None else f"({s[1]:.{digits}f}-{s[2]:.{digits}f})"


def target_met(values: Sequence[Number], target: float) -> str:
    """Whether per-repetition ratios meet a target by their median, with how
    many repetitions reach it: "MET (median; 2 of 3 repetitions >= 2x)"."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return "n/a"
    met = sum(1 for x in v if x >= target)
    word = "MET" if (median(v) or 0) >= target else "NOT MET"
    return f"{word} (median; {met} of {len(v)} repetitions >= {target:g}x)"


def total(values: Iterable[Number]) -> str:
    """The sum of per-repetition counts, "?" when one is unknown."""
    v = list(values)
    if any(x is None for x in v):
        return "?"
    return f"{sum(v):.0f}"


def mbox_count(lines: Iterable[bytes]) -> int:
    """Messages in an mbox: its lines that begin with "From " (a body line
    that does is quoted as ">From " by every delivery agent measured)."""
    return sum(1 for l in lines if l.startswith(b"From "))


def count_status(lines: Iterable[str], statuses: Sequence[str]) -> int:
    """Log lines of a delivery with one of the statuses (status=sent, ...)."""
    keys = tuple(f"status={s}" for s in statuses)
    return sum(1 for l in lines if any(k in l for k in keys))


def rotation(items: Sequence, rep: int) -> list:
    """The order of the runs in repetition rep (from 0): items rotated by
    rep, so that no target always runs first."""
    if not items:
        return []
    k = rep % len(items)
    return list(items[k:]) + list(items[:k])


def shares(count: int, parts: int) -> list[int]:
    """count split into parts as even as can be (the first ones larger)."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]
