"""SIGTERM handled like Ctrl-C, and workers that never outlive their launcher. Standard library only.

SIGTERM is how everything but a terminal asks a program to stop: `kill PID`, `timeout`, a batch scheduler,
`docker stop`, a Kubernetes eviction (SIGTERM, then SIGKILL after `terminationGracePeriodSeconds`). Python's
default is to die at once, skipping every `except KeyboardInterrupt` that stops children and says what was
left (pytorch/pytorch#49305: a launcher killed this way leaves its workers training as orphans). `install`
turns SIGTERM into `Terminated`, a `KeyboardInterrupt`, so each command's Ctrl-C path runs for both.

Exit codes follow the shell's 128 + signal number: 130 after Ctrl-C (SIGINT, 2), 143 after SIGTERM (15), what
Kubernetes and `timeout` report for a process that ended on that signal.
"""

from __future__ import annotations

import os
import signal
import threading

PARENT_PID_VARIABLE = "PIPELINE_PARENT_PID"  # set by `launch` for its workers: see watch_parent
PARENT_POLL_SECONDS = 1.0
ORPHAN_GRACE_SECONDS = 10.0  # after its SIGTERM, an orphaned worker (stuck in a collective op) is killed


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where Ctrl-C raises KeyboardInterrupt, so the same clean-up runs."""


def exit_status(interrupt: BaseException) -> int:
    """143 for `Terminated` (SIGTERM), 130 for any other KeyboardInterrupt (SIGINT): 128 + signal number."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)


def describe(interrupt: BaseException) -> str:
    """'terminated (SIGTERM)' or 'interrupted (Ctrl-C)', the start of the line a stopped command prints."""
    return "terminated (SIGTERM)" if isinstance(interrupt, Terminated) else "interrupted (Ctrl-C)"


def install():
    """Makes SIGTERM raise `Terminated` in the main thread (once: a second SIGTERM during the clean-up is
    ignored, so stopping children is not cut short; SIGKILL still ends everything). Returns the previous
    handler for `restore`, or None when called outside the main thread (signals cannot be set there)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def restore(previous) -> None:
    """Puts back the SIGTERM handler `install` returned (tests call the CLI in one process)."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, previous)


def watch_parent() -> None:
    """In a process started by `launch` (PIPELINE_PARENT_PID set): sends itself SIGTERM as soon as that
    parent is gone, so even a launcher killed by SIGKILL (which it cannot handle) leaves no worker running.
    A daemon thread polls the parent pid once a second; elsewhere this does nothing."""
    expected = os.environ.get(PARENT_PID_VARIABLE)
    if not expected or not expected.isdigit():
        return

    def poll():
        while os.getppid() == int(expected):
            threading.Event().wait(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)
        # A worker waiting in a collective op for a dead peer never runs Python again to see the signal.
        threading.Event().wait(ORPHAN_GRACE_SECONDS)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=poll, name="watch-parent", daemon=True).start()
