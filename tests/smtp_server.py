#!/usr/bin/env python3
"""A small SMTP server for postern's smtp tests (tests/tests/smtp_e2e.rs).

It stands for a remote mail server with the faults the tests need: a
recipient refused for good (--reject) or once for now (--defer-once),
a connection dropped in the middle of DATA (--drop-data), a server that
never answers (--silent), one that turns every client away at the
greeting (--greeting "421 ..."), STARTTLS (--tls CERT KEY) and AUTH PLAIN/LOGIN
offered only over TLS (--auth USER:PASS). Each accepted message is saved
in --out as N.eml (the data as received, dot-stuffing undone, CRLF kept)
with N.env (client name, TLS, authenticated user, sender, recipients);
sessions.max holds the most sessions open at once (a session ends
at QUIT), transactions.max the most mail transactions at once (MAIL FROM
until the reply to the end of data, RSET or the end of the session),
connections the connections accepted so far, quits the QUIT
commands. --close-idle stands for a
server that ends a session kept open between two messages: "rset" closes
it after answering RSET, "mail" at its second MAIL FROM, without a reply.
--hostile MODE breaks the protocol on purpose (see HOSTILE).
--listen takes ADDRESS:PORT, an IPv6 address in brackets ([::1]:0); port 0
picks a free one. Prints "ready PORT" once listening.
"""

import argparse
import base64
import os
import socket
import socketserver
import ssl
import sys
import threading
import time

lock = threading.Lock()
state = {"open": 0, "max": 0, "count": 0, "deferred": set(),
         "busy": 0, "busy_max": 0, "connections": 0, "quits": 0}


# The --hostile modes (tests/tests/smtp_hostile_e2e.rs).
HOSTILE = {
    "longline": "greet with a line of megabytes without a newline",
    "endless": "answer EHLO with 250- lines forever",
    "manyext": "list 5000 EHLO extensions (then behave)",
    "drip": "answer EHLO with a 250- line every 0.2s, forever",
    "garbage": "refuse RCPT with NUL, invalid UTF-8 and a bare CR in the text",
    "code000": "answer MAIL with code 000",
    "code999": "answer MAIL with code 999",
    "code2x0": "answer MAIL with code 2x0",
    "mixed": "answer MAIL with a reply whose code changes between lines",
    "data250": "answer DATA with 250 instead of 354",
    "liar": "send 250 for the end of data together with the 354",
    "early": "send an unsolicited reply right after the greeting",
}


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth")
    p.add_argument("--auth-without-tls", action="store_true",
                   help="offer AUTH (and accept it) on a plaintext session too")
    p.add_argument("--reject", action="append", default=[])
    p.add_argument("--defer-once", action="append", default=[])
    p.add_argument("--drop-data", action="store_true")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--tls-broken", action="store_true",
                   help="offer STARTTLS, then answer the handshake with garbage")
    p.add_argument("--hold", type=float, default=0.0,
                   help="seconds to wait before answering the end of data")
    p.add_argument("--greeting",
                   help="greet with this reply (e.g. a 421) and close")
    p.add_argument("--close-idle", choices=["rset", "mail"])
    p.add_argument("--hostile", choices=sorted(HOSTILE),
                   help="break the protocol this way")
    return p.parse_args()


ARGS = parse_args()


def write_file(name, value):
    tmp = os.path.join(ARGS.out, "." + name)
    with open(tmp, "w") as f:
        f.write(str(value))
    os.replace(tmp, os.path.join(ARGS.out, name))


def record_peak(current, peak, name, delta):
    """Adds delta to state[current]; a new peak goes to file `name`.
    Called with the lock held."""
    state[current] += delta
    if state[current] > state[peak]:
        state[peak] = state[current]
        write_file(name, state[peak])


def record_busy(delta):
    with lock:
        record_peak("busy", "busy_max", "transactions.max", delta)


def record_open(delta):
    with lock:
        record_peak("open", "max", "sessions.max", delta)
        if delta > 0:
            state["connections"] += 1
            write_file("connections", state["connections"])


class Session(socketserver.StreamRequestHandler):
    def setup(self):
        super().setup()
        self.tls = False
        self.user = None
        self.helo = None
        self.busy = False
        self.mails = 0

    def transaction(self, busy):
        if busy != self.busy:
            self.busy = busy
            record_busy(1 if busy else -1)

    def send(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def readline(self):
        line = self.rfile.readline(65536)
        if not line:
            raise EOFError
        return line

    def ehlo_lines(self, name):
        lines = ["server.test", "PIPELINING", "SIZE 10240000", "8BITMIME"]
        if (ARGS.tls or ARGS.tls_broken) and not self.tls:
            lines.append("STARTTLS")
        if ARGS.auth and (self.tls or ARGS.auth_without_tls):
            lines.append("AUTH PLAIN LOGIN")
        for i, l in enumerate(lines):
            self.send(("250 " if i == len(lines) - 1 else "250-") + l)

    def auth(self, words):
        user, password = ARGS.auth.split(":", 1)
        mech = words[1].upper() if len(words) > 1 else ""
        if mech == "PLAIN":
            resp = words[2] if len(words) > 2 else None
            if resp is None:
                self.send("334 ")
                resp = self.readline().decode().strip()
            parts = base64.b64decode(resp).split(b"\0")
            ok = len(parts) == 3 and parts[1].decode() == user and parts[2].decode() == password
            given = parts[1].decode() if len(parts) == 3 else ""
        elif mech == "LOGIN":
            self.send("334 VXNlcm5hbWU6")
            given = base64.b64decode(self.readline().strip()).decode()
            self.send("334 UGFzc3dvcmQ6")
            pw = base64.b64decode(self.readline().strip()).decode()
            ok = given == user and pw == password
        else:
            self.send("504 5.5.4 unrecognized authentication type")
            return
        if ok:
            self.user = given
            self.send("235 2.7.0 Authentication successful")
        else:
            self.send("535 5.7.8 Error: authentication failed")

    def handle(self):
        record_open(1)
        self.counted = True
        try:
            if ARGS.silent:
                # Hold the connection without a word until the client leaves.
                while self.request.recv(4096):
                    pass
                return
            if ARGS.greeting:
                self.send(ARGS.greeting)
                return
            if ARGS.hostile == "longline":
                chunk = b"x" * 65536
                self.wfile.write(b"220 ")
                for _ in range(64):
                    self.wfile.write(chunk)
                self.wfile.flush()
                # Then wait for the client to leave.
                while self.request.recv(4096):
                    pass
                return
            if ARGS.hostile == "early":
                # One write: the extra reply arrives with the greeting.
                self.wfile.write(b"220 server.test ESMTP\r\n250 2.0.0 unsolicited\r\n")
                self.wfile.flush()
            else:
                self.send("220 server.test ESMTP test")
            self.session()
        except (EOFError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            self.transaction(False)
            if self.counted:
                record_open(-1)

    def starttls(self):
        self.send("220 2.0.0 Ready to start TLS")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls[0], ARGS.tls[1])
        self.request = ctx.wrap_socket(self.request, server_side=True)
        self.rfile = self.request.makefile("rb")
        self.wfile = self.request.makefile("wb")
        self.tls = True
        self.helo = None

    def session(self):
        sender = None
        rcpts = []
        while True:
            line = self.readline().decode("utf-8", "replace").rstrip("\r\n")
            words = line.split()
            verb = words[0].upper() if words else ""
            if verb == "EHLO" and ARGS.hostile == "endless":
                while True:
                    self.wfile.write(b"250-more\r\n" * 1024)
                    self.wfile.flush()
            elif verb == "EHLO" and ARGS.hostile == "drip":
                while True:
                    self.send("250-slowly")
                    time.sleep(0.2)
            elif verb == "EHLO" and ARGS.hostile == "manyext":
                self.helo = words[1] if len(words) > 1 else ""
                self.wfile.write(b"250-server.test\r\n")
                for i in range(5000):
                    self.wfile.write(b"250-X-EXTENSION-%d\r\n" % i)
                self.send("250 PIPELINING")
            elif verb == "EHLO":
                self.helo = words[1] if len(words) > 1 else ""
                self.ehlo_lines(self.helo)
            elif verb == "HELO":
                self.helo = words[1] if len(words) > 1 else ""
                self.send("250 server.test")
            elif verb == "STARTTLS" and ARGS.tls_broken:
                self.send("220 2.0.0 Ready to start TLS")
                self.wfile.write(b"this is not a TLS record\r\n" * 4)
                self.wfile.flush()
                return
            elif verb == "STARTTLS" and ARGS.tls and not self.tls:
                self.starttls()
            elif verb == "AUTH" and ARGS.auth and (self.tls or ARGS.auth_without_tls):
                self.auth(words)
            elif verb == "MAIL":
                self.mails += 1
                if ARGS.close_idle == "mail" and self.mails == 2:
                    return
                if ARGS.auth and not self.user:
                    self.send("530 5.7.0 Authentication required")
                    continue
                sender = line[line.index(":") + 1:].split(">")[0].lstrip(" <")
                rcpts = []
                bad = {"code000": b"000 2.1.0 Ok\r\n", "code999": b"999 2.1.0 Ok\r\n",
                       "code2x0": b"2x0 2.1.0 Ok\r\n",
                       "mixed": b"250-2.1.0 Ok\r\n550 5.1.0 no\r\n"}.get(ARGS.hostile)
                if bad:
                    self.wfile.write(bad)
                    self.wfile.flush()
                    continue
                self.transaction(True)
                self.send("250 2.1.0 Ok")
            elif verb == "RCPT":
                if sender is None:
                    self.send("503 5.5.1 Error: need MAIL command")
                    continue
                addr = line[line.index(":") + 1:].split(">")[0].lstrip(" <")
                if ARGS.hostile == "garbage":
                    self.wfile.write(b"550 5.1.1 bad\x00\xff\xfe\rnews\r\n")
                    self.wfile.flush()
                    continue
                if addr in ARGS.reject:
                    self.send("550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr)
                    continue
                if addr in ARGS.defer_once:
                    with lock:
                        first = addr not in state["deferred"]
                        state["deferred"].add(addr)
                    if first:
                        self.send("451 4.2.0 <%s>: Recipient address rejected: try again later" % addr)
                        continue
                rcpts.append(addr)
                self.send("250 2.1.5 Ok")
            elif verb == "DATA":
                if not rcpts:
                    self.send("554 5.5.1 Error: no valid recipients")
                    continue
                if ARGS.hostile == "data250":
                    self.send("250 2.0.0 Ok")
                    continue
                if ARGS.hostile == "liar":
                    self.wfile.write(b"354 go ahead\r\n250 2.0.0 Ok: queued as LIE\r\n")
                    self.wfile.flush()
                else:
                    self.send("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()
                while True:
                    l = self.readline()
                    if l in (b".\r\n", b".\n"):
                        break
                    if l.startswith(b".."):
                        l = l[1:]
                    data += l
                    if ARGS.drop_data and len(data) > 0:
                        # Gone in the middle of the message.
                        self.request.shutdown(socket.SHUT_RDWR)
                        return
                if ARGS.hold:
                    time.sleep(ARGS.hold)
                with lock:
                    state["count"] += 1
                    n = state["count"]
                base = os.path.join(ARGS.out, str(n))
                with open(base + ".eml.tmp", "wb") as f:
                    f.write(data)
                with open(base + ".env", "w") as f:
                    f.write("helo=%s\ntls=%s\nuser=%s\nfrom=%s\nto=%s\n" % (
                        self.helo, "yes" if self.tls else "no", self.user or "",
                        sender, ",".join(rcpts)))
                os.replace(base + ".eml.tmp", base + ".eml")
                self.transaction(False)
                self.send("250 2.0.0 Ok: queued as T%d" % n)
                sender = None
                rcpts = []
            elif verb == "RSET":
                sender, rcpts = None, []
                self.transaction(False)
                self.send("250 2.0.0 Ok")
                if ARGS.close_idle == "rset":
                    return
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                # The session is over before the client hears so: it may
                # start the next one at once.
                record_open(-1)
                self.counted = False
                with lock:
                    state["quits"] += 1
                    write_file("quits", state["quits"])
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 Error: command not recognized")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    host, port = ARGS.listen.rsplit(":", 1)
    host = host.strip("[]")
    if ":" in host:
        Server.address_family = socket.AF_INET6
    srv = Server((host, int(port)), Session)
    print("ready %d" % srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
