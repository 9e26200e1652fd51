"""The one base class of every input error, and the command's exit statuses.

Every error that means "the user gave something that cannot be used" (a
config key or value, a command-line value, a data file, a results folder, a
device that is not there) derives from :class:`InputError`. The command line
prints its message in one line, ``weightmirror: error: <message>``, and exits
with :data:`EXIT_BAD_INPUT`; a Python caller catches ``InputError`` alone.
Each module keeps its own subclass (``RuleError``, ``SpecError``,
``ConfigError``, ``DataError``, ``ResultsError`` ...), so a message can be
told apart by type as well as by text.

A run that fails on valid input is not an input error: a training run whose
loss or weights stop being finite raises
:class:`weightmirror.sims.training.DivergedError` (a ``RuntimeError``), and
the command line prints one line and exits with :data:`EXIT_DIVERGED`.
"""
from __future__ import annotations

__all__ = ["InputError", "EXIT_OK", "EXIT_BAD_INPUT", "EXIT_DIVERGED", "EXIT_INTERRUPTED"]

#: the command finished
EXIT_OK = 0
#: bad input: one line on stderr, nothing already written is touched
EXIT_BAD_INPUT = 2
#: a training run diverged (non-finite loss or weights): one line on stderr; the
#: metrics so far, the last finite checkpoint and a summary with "status": "diverged" stay
EXIT_DIVERGED = 3
#: SIGINT/SIGTERM: the run checkpointed and stopped (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130


class InputError(ValueError):
    """Something the user gave cannot be used; the message names it and what is allowed."""
