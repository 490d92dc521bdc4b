"""Unit tests of the drivers' pure parts: configuration edits, report
rows, and the log counter (on a temporary file).

Run: python3 -m unittest discover -s bench/tests   (from the repository)
"""

import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from postern_bench import common, local, postern, postfix, postfix_master  # noqa: E402


class ConfigEdits(unittest.TestCase):
    def test_without_spawn(self):
        cf = ("# comment spawn\n127.0.0.1:10026 inet n n n - 10 spawn user=nobody argv=/bin/cat\n"
              "local     unix  -  n  n  -  -  local\n")
        out = postern.without_spawn(cf, "me").splitlines()
        self.assertEqual(out[0], "# comment spawn")
        self.assertTrue(out[1].startswith("# disabled by me: 127.0.0.1:10026"))
        self.assertEqual(out[2], "local     unix  -  n  n  -  -  local")

    def test_with_params(self):
        cf = "a = 1\n  maillog_file = /x\nb = 2\n"
        self.assertEqual(postern.with_params(cf, {"maillog_file": "/y", "c": "3"}),
                         "a = 1\nb = 2\nmaillog_file = /y\nc = 3\n")

    def test_postfix_main_cf(self):
        relay = postfix.main_cf(Path("/t"), "bench/box", "[127.0.0.1]:2525")
        self.assertIn("default_transport = smtp\n", relay)
        self.assertIn("relayhost = [127.0.0.1]:2525\n", relay)
        self.assertIn("home_mailbox = bench/box\n", relay)
        self.assertIn("default_transport = error\n", postfix.main_cf(Path("/t"), "m", None))
        self.assertIn("smtp      unix", postfix.MASTER_CF)

    def test_postfix_master_instance(self):
        main, master = postfix_master.instance_files(
            "myhostname = h\n", "smtp      inet  n       -       y       -       -       smtpd\n"
            "smtp      unix  -       -       y       -       -       smtp\n", Path("/t"), 2525)
        self.assertIn("queue_directory = /t/queue\n", main)
        self.assertTrue(master.startswith("127.0.0.1:2525 "))
        self.assertIn("\nsmtp      unix", master)


class LocalReport(unittest.TestCase):
    def test_rows(self):
        row = local.kind_row("postern c=1", [100, 200, 150], [0.5, None], [1.0, 2.0], [3, 4],
                             [5.0, None, 7.5], "0")
        self.assertEqual(row.split(), ["postern", "c=1", "150", "(100-200)", "0.500",
                                       "(0.500-0.500)", "1.50", "3.50", "7.5", "0"])
        self.assertEqual(len(local.kind_header()), len(row))
        empty = local.kind_row("postfix drain", [None], [], [None], [None], [None], "?")
        self.assertEqual(empty.split(), ["postfix", "drain", "-", "n/a", "-", "-", "-", "?"])
        head, probe = local.probe_rows([5000], [0.2], [0.4], [9.0])
        self.assertEqual(probe.split(), ["fsync-probe", "5000", "(5000-5000)", "0.200", "0.400", "9.0"])
        self.assertEqual(local.label(("postern", "mbox", 4)), "postern c=4")
        self.assertEqual(local.label(("floor", "mbox")), "floor c=1 (C)")

    def test_memory_verdict(self):
        line = "size=104857600 recipients=10 secs=3.3 peak_rss_kb=1620\n"
        self.assertTrue(local.memory_verdict(line).endswith("peak_rss_kb=1620; target met"))
        self.assertTrue(local.memory_verdict(line, 1000).endswith("target NOT met"))
        self.assertIn("no peak_rss_kb", local.memory_verdict("garbage"))


class LogCounter(unittest.TestCase):
    def test_counts_only_new_whole_lines(self):
        with tempfile.TemporaryDirectory() as d:
            log = Path(d, "maillog")
            log.write_text("old status=sent\n")
            c = common.LogCounter(log, "status=sent")
            self.assertEqual(c.count(), 0)
            with open(log, "a") as f:
                f.write("a status=sent\nb status=deferred\nc status=se")
            self.assertEqual(c.count(), 1)
            with open(log, "a") as f:
                f.write("nt\n")
            self.assertEqual(c.count(), 2)
            self.assertEqual(common.LogCounter(Path(d, "none"), "x").count(), 0)


if __name__ == "__main__":
    unittest.main()
