"""An SMTP server for the notification tests: keeps every message it is given, as sent.

    python smtp_sink.py PORT OUTDIR [--starttls CERT KEY | --smtps CERT KEY] [--auth USER PASS]

Listens on 127.0.0.1:PORT and writes each message's raw bytes to OUTDIR/NNNN.eml (written under a
temporary name first, then renamed, so a reader never sees half a message). `--starttls` offers
STARTTLS and refuses mail before it; `--smtps` speaks TLS from the first byte; `--auth` requires
AUTH PLAIN or LOGIN with that user and password. Prints `ready` once listening, then runs until it
is killed.
"""

import argparse
import itertools
import logging
import os
import signal
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keep:
    def __init__(self, outdir):
        self.outdir = outdir
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        with self.lock:
            n = next(self.counter)
        final = os.path.join(self.outdir, f"{n:04}.eml")
        tmp = os.path.join(self.outdir, f".{n:04}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, final)
        return "250 OK kept"


def tls_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("outdir")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    tls.add_argument("--smtps", nargs=2, metavar=("CERT", "KEY"))
    p.add_argument("--auth", nargs=2, metavar=("USER", "PASS"))
    args = p.parse_args()
    # aiosmtpd warns about AUTH without STARTTLS even over implicit TLS; the tests read stderr.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)

    os.makedirs(args.outdir, exist_ok=True)
    kwargs = {}
    if args.starttls:
        kwargs["tls_context"] = tls_context(*args.starttls)
        kwargs["require_starttls"] = True
    if args.auth:
        user, password = (s.encode() for s in args.auth)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login == user
                and auth_data.password == password
            )
            # handled=False: aiosmtpd then answers 535 itself instead of saying nothing.
            return AuthResult(success=ok, handled=False)

        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        # aiosmtpd counts only STARTTLS as TLS; implicit TLS is TLS too, and plain runs allow
        # AUTH in the clear on purpose (a relay on the same host).
        kwargs["auth_require_tls"] = bool(args.starttls)

    controller = Controller(
        Keep(args.outdir),
        hostname="127.0.0.1",
        port=args.port,
        ssl_context=tls_context(*args.smtps) if args.smtps else None,
        **kwargs,
    )
    controller.start()
    print("ready", flush=True)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
