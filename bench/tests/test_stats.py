"""Unit tests of the benchmark drivers' parsing and statistics.

Run: python3 -m unittest discover -s bench/tests   (from the repository)
"""

import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postern_bench import stats  # noqa: E402


class MedianMinMax(unittest.TestCase):
    def test_odd_even_and_missing(self):
        self.assertEqual(stats.median_min_max([3, 1, 2]), (2, 1, 3))
        self.assertEqual(stats.median_min_max([4, 1, 3, 2]), (2.5, 1, 4))
        self.assertEqual(stats.median_min_max([None, 5.0, float("nan")]), (5.0, 5.0, 5.0))
        self.assertIsNone(stats.median_min_max([]))
        self.assertIsNone(stats.median_min_max([None]))

    def test_format(self):
        self.assertEqual(stats.fmt_mmm([1.234, 1.0, 2.0]), "1.23 (1.00-2.00)")
        self.assertEqual(stats.fmt_mmm([None]), "n/a")
        self.assertEqual(stats.fmt_num(None), "-")
        self.assertEqual(stats.fmt_num(1234.56), "1235")


class Ratios(unittest.TestCase):
    def test_ratio(self):
        self.assertEqual(stats.ratio(3, 2), 1.5)
        self.assertIsNone(stats.ratio(None, 2))
        self.assertIsNone(stats.ratio(1, 0))
        self.assertEqual(stats.ratios([(2, 1), (1, None)]), [2.0, None])

    def test_verdicts(self):
        self.assertEqual(stats.verdict([1.2, 1.3, 1.5], 1.15), "yes")
        self.assertEqual(stats.verdict([1.1, 1.3, 1.5], 1.15), "median only")
        self.assertEqual(stats.verdict([1.1, 1.0, 1.5], 1.15), "no")
        self.assertEqual(stats.verdict([], 1.15), "n/a")
        self.assertEqual(stats.verdict_at_most([0.9, 1.1], 1.2), "yes")
        self.assertEqual(stats.verdict_at_most([0.9, 1.0, 1.3], 1.2), "median only")
        self.assertEqual(stats.verdict_at_most([1.3, 1.25, 1.0], 1.2), "no")


class Parsing(unittest.TestCase):
    def test_loadgen_line(self):
        r = stats.parse_loadgen(
            "conns=4000 errors=0 secs=4.002 rate=999.5 p50_ms=7.25 p99_ms=31.0 max_ms=44.1\n")
        self.assertEqual(r["rate"], 999.5)
        self.assertEqual(r["p99_ms"], 31.0)
        self.assertEqual(r["errors"], 0)

    def test_loadgen_without_connections_or_output(self):
        r = stats.parse_loadgen("conns=0 errors=3 secs=1.000 rate=0.0 p50_ms=nan p99_ms=- max_ms=nan")
        self.assertEqual((r["p50_ms"], r["p99_ms"], r["max_ms"]), (None, None, None))
        self.assertEqual(r["errors"], 3)
        self.assertIsNone(stats.parse_loadgen("")["errors"])
        self.assertIsNone(stats.parse_loadgen("rate=fast")["rate"])

    def test_kb_fields(self):
        text = "Name:\tx\nVmHWM:\t  1234 kB\nVmRSS:\t 1000 kB\nRss:  56 kB\nPss: junk\n"
        self.assertEqual(stats.parse_kb_fields(text, ["VmHWM", "Rss", "Pss", "Gone"]),
                         {"VmHWM": 1234, "Rss": 56, "Pss": None, "Gone": None})

    def test_stat_with_a_hostile_command_name(self):
        s = stats.parse_stat("42 (a) b (c) S 7 42 40 0 -1 4194560")
        self.assertEqual(s, {"pid": 42, "ppid": 7, "pgrp": 42, "session": 40})
        self.assertIsNone(stats.parse_stat("garbage"))
        self.assertIsNone(stats.parse_stat("1 (x) S"))

    def test_descendants(self):
        parents = {1: 0, 10: 1, 11: 10, 12: 11, 20: 1, 21: 20}
        self.assertEqual(stats.descendants(parents, [10]), {10, 11, 12})
        self.assertEqual(stats.descendants(parents, [99]), {99})

    def test_phases(self):
        marks = [("start", 0.0), ("exec", 0.5), ("queued", 2.0)]
        self.assertEqual(stats.phases(marks), [("exec", 0.5), ("queued", 1.5)])
        self.assertEqual(stats.phases(marks[:1]), [])


class Helpers(unittest.TestCase):
    def test_fields_and_deliverbench_line(self):
        r = stats.parse_loadgen("deliveries=50 errors=0 secs=0.100 rate=500.0 p50_ms=1.5 "
                                "p99_ms=3.0 max_ms=4.0")
        self.assertEqual((r["deliveries"], r["rate"], r["errors"]), (50, 500.0, 0))
        self.assertEqual(stats.parse_loadgen("size=1 recipients=10 secs=3 peak_rss_kb=1620")
                         ["peak_rss_kb"], 1620)
        self.assertEqual(stats.parse_fields("a=1 b=x c", ["a", "b", "c"]),
                         {"a": 1, "b": None, "c": None})

    def test_median_range_total(self):
        self.assertEqual(stats.median([3, None, 1]), 2)
        self.assertIsNone(stats.median([]))
        self.assertEqual(stats.fmt_range([5.4, 1.2, 3]), "(1-5)")
        self.assertEqual(stats.fmt_range([None]), "")
        self.assertEqual(stats.total([1, 2, 0]), "3")
        self.assertEqual(stats.total([1, None]), "?")

    def test_target_met(self):
        self.assertEqual(stats.target_met([2.5, 1.5, 2.1], 2), "MET (median; 2 of 3 repetitions >= 2x)")
        self.assertEqual(stats.target_met([1.5, None], 2), "NOT MET (median; 0 of 1 repetitions >= 2x)")
        self.assertEqual(stats.target_met([None], 2), "n/a")

    def test_counts(self):
        mbox = [b"From a  Sat\n", b"body\n", b">From quoted\n", b"From b  Sat\n"]
        self.assertEqual(stats.mbox_count(mbox), 2)
        log = ["x status=sent (250 ok)", "y status=deferred (421)", "z status=bounced", "w"]
        self.assertEqual(stats.count_status(log, ("deferred", "bounced")), 2)
        self.assertEqual(stats.count_status(log, ("sent",)), 1)

    def test_rotation_and_shares(self):
        self.assertEqual(stats.rotation("abc", 0), ["a", "b", "c"])
        self.assertEqual(stats.rotation("abc", 4), ["b", "c", "a"])
        self.assertEqual(stats.rotation([], 1), [])
        self.assertEqual(stats.shares(10, 4), [3, 3, 2, 2])
        self.assertEqual(sum(stats.shares(2001, 2)), 2001)


if __name__ == "__main__":
    unittest.main()
