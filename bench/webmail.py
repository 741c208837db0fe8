"""The webmail's cost (issue 15), with and without it side by side in one run: a fresh disposable stack's
time to ready, the webmail container's idle RAM after logins (and the whole stack's), its image size, and
the time from pressing "Login" in Debian's headless Chromium to the message list being shown (cold: the
first login of a browser context; warm: later ones), with a plain IMAPS login + SELECT + FETCH of the same
list from Python as the yardstick measured in the same run. Prints figures; asserts nothing.
Usage: python bench/webmail.py [--starts 3] [--logins 10] [--messages 20] [--idle-seconds 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from fixtures import containers_mib, load, ready_side_by_side  # bench/fixtures.py, beside this script
from mailstack import provision
from mailstack.api import MailStack, User
from world import per_container_mib  # bench/world.py

AIMS = "aims: the webmail container's idle RAM <= 40 MiB"


def image_mib(stack: MailStack) -> float:
    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}",
                           f"mailstack-webmail:{stack.stack.tag}"], capture_output=True, text=True, check=True)
    return int(size.stdout.strip()) / 2**20


def login_to_list(browser, stack: MailStack, user: User, logins: int) -> tuple[float, list[float]]:
    """Seconds from the click on "Login" to the list's rows: the first login of a fresh browser context
    (nothing cached), then `logins` more, each in a new context with the browser's cache kept warm."""
    timings = []
    for _ in range(logins + 1):
        context = browser.new_context()
        page = context.new_page()
        page.goto(stack.webmail_url)
        page.fill("#rcmloginuser", user.address)
        page.fill("#rcmloginpwd", user.password)
        started = time.perf_counter()
        page.click("#rcmloginsubmit")
        page.wait_for_selector("#messagelist tbody tr", timeout=30_000)
        timings.append(time.perf_counter() - started)
        context.close()
    return timings[0], timings[1:]


def imap_list(stack: MailStack, user: User, rounds: int) -> float:
    """The same list without a browser or PHP: login, SELECT, FETCH of the envelopes, logout (median s)."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        with stack.imap(user) as client:
            client.select_folder("INBOX", readonly=True)
            client.fetch(client.search(["ALL"]), ["ENVELOPE", "FLAGS", "RFC822.SIZE"])
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - a dev dependency

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3, help="fresh stacks started per variant (interleaved)")
    parser.add_argument("--logins", type=int, default=10)
    parser.add_argument("--messages", type=int, default=20, help="messages in the inbox that is listed")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="settling time before RAM is read")
    args = parser.parse_args()
    chromium = provision.ensure_browser(print)
    print(f"load average before: {load()}")

    ready_side_by_side({"webmail off": {"webmail": False}, "webmail on": {"webmail": True}}, args.starts)

    with MailStack(webmail=False) as off, MailStack(webmail=True) as on:
        user = on.add_user()
        for number in range(args.messages):
            on.send(user, to=user.address, subject=f"listed {number}", body="x" * 1000)
        on.wait_for_message(user, subject=f"listed {args.messages - 1}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium))
            cold, warm = login_to_list(browser, on, user, args.logins)
            browser.close()
        yardstick = imap_list(on, user, args.logins)
        spread = f"{min(warm) * 1000:.0f}-{max(warm) * 1000:.0f}"
        print(f"login to message list ({args.messages} messages): first {cold * 1000:.0f} ms, then "
              f"{statistics.median(warm) * 1000:.0f} ms median ({spread}, {len(warm)} logins); "
              f"the same list over IMAPS from Python (login, select, fetch): {yardstick * 1000:.0f} ms median")
        time.sleep(args.idle_seconds)  # settle: idle RAM after the logins' work is done, not a synchronisation
        parts = per_container_mib(on)
        print(f"webmail container idle RAM after {args.logins + 1} logins: {parts['webmail']:.1f} MiB; "
              f"image {image_mib(on):.0f} MiB")
        for name, stack in (("webmail off", off), ("webmail on", on)):
            print(f"{name}: whole-stack idle RAM {containers_mib(stack):.1f} MiB")
    print(f"load average after: {load()}")
    print(AIMS)


if __name__ == "__main__":
    main()
