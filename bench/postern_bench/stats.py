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


def parse_loadgen(line: str) -> dict[str, Number]:
    """The result line of postern-loadgen (`conns=N errors=E secs=S rate=R
    p50_ms=P p99_ms=Q max_ms=M`) as numbers; a missing or unparsable field
    (`nan`, `-`) is None, and so are the latencies when there were no
    connections. Unknown fields are ignored."""
    out: dict[str, Number] = {
        k: None for k in ("conns", "errors", "secs", "rate", "p50_ms", "p99_ms", "max_ms")
    }
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and key in out:
            out[key] = _num(value)
    return out


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
