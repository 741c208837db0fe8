#!/usr/bin/python3
"""Send a message (stdin) into the stack as an outside server would: SMTP to --host:--port, HELO as the
outside MX, STARTTLS verified against the stack's CA, then MAIL FROM / RCPT TO / DATA.

    send-from-outside --from x@outside.test --to user@example.test --host postfix --tls-name mail.example.test < msg

Prints each server reply that decides the outcome and the final one (DATA's). Exit status: 0 accepted,
4 a 4xx refusal, 5 a 5xx refusal (the reply is printed on stderr), 2 a connection or TLS failure.
"""

from __future__ import annotations

import argparse
import smtplib
import ssl
import sys


class Refused(Exception):
    def __init__(self, stage: str, code: int, text: bytes) -> None:
        super().__init__(f"{stage}: {code} {text.decode(errors='replace')}")
        self.code = code


def check(stage: str, reply: tuple[int, bytes], ok: range = range(200, 400)) -> str:
    code, text = reply
    if code not in ok:
        raise Refused(stage, code, text)
    return f"{code} {text.decode(errors='replace')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="sender", required=True, help="envelope sender (MAIL FROM)")
    parser.add_argument("--to", dest="recipients", action="append", required=True, help="recipient (repeatable)")
    parser.add_argument("--host", default="postfix")
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--helo", default="mx.outside.test")
    parser.add_argument("--tls-name", help="name the server certificate must carry (default: --host)")
    parser.add_argument("--ca", default="/run/mailstack/tls/ca.crt")
    parser.add_argument("--no-tls", action="store_true", help="plain SMTP (no STARTTLS)")
    parser.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    message = sys.stdin.buffer.read()
    try:
        with smtplib.SMTP(args.host, args.port, local_hostname=args.helo, timeout=args.timeout) as smtp:
            check("EHLO", smtp.ehlo())
            if not args.no_tls:
                context = ssl.create_default_context(cafile=args.ca)
                # smtplib verifies against the host it connected to: connect by address or service name,
                # verify the certificate's name.
                smtp._host = args.tls_name or args.host
                check("STARTTLS", smtp.starttls(context=context))
                check("EHLO", smtp.ehlo())
            check("MAIL FROM", smtp.mail(args.sender))
            for rcpt in args.recipients:
                check(f"RCPT TO <{rcpt}>", smtp.rcpt(rcpt))
            print(check("DATA", smtp.data(message)))
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 5 if 500 <= exc.code < 600 else 4
    except smtplib.SMTPNotSupportedError as exc:
        print(f"STARTTLS: {exc}", file=sys.stderr)
        return 2
    except smtplib.SMTPResponseException as exc:  # STARTTLS refused, DATA refused before the message
        print(f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}", file=sys.stderr)
        return 5 if 500 <= exc.smtp_code < 600 else 4
    except (OSError, smtplib.SMTPException) as exc:  # refused, reset, timed out, TLS failed
        print(f"connection to {args.host}:{args.port} failed: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
