"""SIGTERM as a clean stop: what a cluster sends on scancel, preemption or a node drain.

The run raises `Terminated` where it stands, so its claims are released and no write is left half-done
(every store write is atomic); the sweep's re-run, or submitit's requeue, resumes the key.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(SystemExit):
    """SIGTERM arrived (scancel, a preemption, a node drain): the run stops, exit status 128 + 15."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` raised in the run. A handler someone else set is kept: submitit ignores
    SIGTERM and requeues the job on its own preemption signal (USR2), which exits through SystemExit too."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def stop(signum: int, frame: object) -> None:
        print("[stop] SIGTERM: stopping this run; nothing of it is stored, a re-run resumes it", flush=True)
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
