#!/usr/bin/env python3
"""A real SMTP server for the notification tests (aiosmtpd, from PyPI).

Listens on 127.0.0.1 (a free port, printed as `PORT <n>` on stdout once ready) with
  --mode starttls   plain connection, STARTTLS offered and required before AUTH and MAIL;
  --mode implicit   TLS from the first byte (SMTPS);
  --mode plain      no TLS at all (to prove the client refuses to send a password in clear).
AUTH PLAIN/LOGIN accepts exactly --user / --password. Each accepted message is written to
--maildir as `<n>.json`: envelope, the raw message, whether TLS was on (and its version), the
AUTH login. Failed AUTH attempts are appended to `auth-failures.log` (login only).
Runs until killed.
"""

import argparse
import json
import os
import ssl
import sys
import warnings

warnings.filterwarnings("ignore", message="Session.login_data")

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["starttls", "implicit", "plain"], required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--maildir", required=True)
    args = ap.parse_args()
    os.makedirs(args.maildir, exist_ok=True)

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            if login == args.user and auth_data.password.decode() == args.password:
                return AuthResult(success=True, auth_data=login)
            with open(os.path.join(args.maildir, "auth-failures.log"), "a") as f:
                f.write(f"{mechanism} {login}\n")
        return AuthResult(success=False, handled=False)

    class Handler:
        count = 0

        async def handle_DATA(self, server, session, envelope):
            Handler.count += 1
            # The TLS object of the connection as it is now (STARTTLS or implicit TLS).
            obj = server.transport.get_extra_info("ssl_object")
            tls = obj is not None
            version = obj.version() if tls else None
            record = {
                "mailFrom": envelope.mail_from,
                "rcptTos": envelope.rcpt_tos,
                "content": envelope.content.decode("utf-8", "replace"),
                "tls": tls,
                "tlsVersion": version,
                "authLogin": session.auth_data if session.authenticated else None,
            }
            path = os.path.join(args.maildir, f"{Handler.count}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.rename(path + ".tmp", path)
            return "250 OK"

    class Ctl(Controller):
        def factory(self):
            return SMTP(
                self.handler,
                tls_context=context if args.mode == "starttls" else None,
                require_starttls=args.mode == "starttls",
                authenticator=authenticator,
                # Implicit TLS: the whole connection is TLS, but aiosmtpd only counts STARTTLS.
                auth_require_tls=args.mode == "starttls",
                # Allow AUTH on the plain server too, so a client that sent a password in clear
                # would be caught by the test.
                auth_exclude_mechanism=[],
                hostname="smtp.test",
            )

    kwargs = {}
    if args.mode == "implicit":
        kwargs["ssl_context"] = context
    # A free port: bind port 0, read it, release it (the controller's readiness check needs a
    # real port number).
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Ctl(Handler(), hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    print(f"PORT {port}", flush=True)
    import signal

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
