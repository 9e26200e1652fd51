"""SIGINT/SIGTERM as a request to stop at the next step, so the run can checkpoint first."""
from __future__ import annotations

import os
import signal

__all__ = ["StopRequests"]


class StopRequests:
    """Turns SIGINT/SIGTERM into a flag (``hit``), so the loop can checkpoint and stop.

    Used as a context manager around the whole run; a second signal raises
    ``KeyboardInterrupt`` at once. Processes forked while the handler is
    installed (the ImageNet decoding workers) inherit it; in them SIGINT is
    ignored (the training process decides when to stop, and a Ctrl-C reaches
    the whole process group) and SIGTERM terminates as by default, so that
    ``Pool.terminate`` still ends them.
    """

    def __init__(self):
        self.hit = False
        self._old = {}
        self._pid = os.getpid()

    def __enter__(self) -> "StopRequests":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def _handler(self, signum, frame):
        if os.getpid() != self._pid:  # a forked worker inherited the handler
            if signum == signal.SIGINT:
                signal.signal(signum, signal.SIG_IGN)
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
            return
        if self.hit:  # second signal: give up at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
