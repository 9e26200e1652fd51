"""SIGINT/SIGTERM as a request to stop at the next step, so the run can checkpoint first."""
from __future__ import annotations

import os
import signal

__all__ = ["StopRequests", "StoppedBeforeStart"]


class StoppedBeforeStart(KeyboardInterrupt):
    """SIGINT/SIGTERM arrived before the run had a checkpoint to continue from.

    ``str(exc)`` says what the results folder holds and what to run next (the
    command line prints it). A ``KeyboardInterrupt``, so that code that does
    not know it treats it as any interruption.
    """


class StopRequests:
    """Turns SIGINT/SIGTERM into a flag (``hit``), so the loop can checkpoint and stop.

    Used as a context manager around the whole run. While ``immediate`` is
    true (a run that has no checkpoint yet: the data loading, the initial
    mirror phase, the epoch-0 evaluation) a signal raises
    :class:`StoppedBeforeStart` at once, since there is nothing to checkpoint
    and a long evaluation should not delay the stop; afterwards it sets
    ``hit`` and the loop stops at the next step. A second signal raises
    ``KeyboardInterrupt`` at once. Processes forked while the handler is
    installed (ImageNet decoding workers started with ``fork``; by default
    they come from a fork server and do not) inherit it; in them SIGINT is
    ignored (the training process decides when to stop, and a Ctrl-C reaches
    the whole process group) and SIGTERM terminates as by default, so that
    ``Pool.terminate`` still ends them.

    Parameters
    ----------
    immediate : start in the raise-at-once mode.
    message : the text of :class:`StoppedBeforeStart` (what the folder holds, what to run).
    """

    def __init__(self, immediate: bool = False, message: str = "interrupted"):
        self.hit = False
        self.immediate = immediate
        self.message = message
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
        if self.immediate:
            self.hit = True
            raise StoppedBeforeStart(self.message)
        if self.hit:  # second signal: give up at once
            raise KeyboardInterrupt
        self.hit = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
