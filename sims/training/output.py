"""Where a training run's files go: a results folder, or nowhere (a run kept in memory).

A results folder (see :mod:`weightmirror.results`) holds ``config.toml``,
``metrics.jsonl``, ``checkpoint.npz`` and, once every epoch ran,
``summary.json``. Only rank 0 of a data-parallel run writes; the others
(and an in-memory run, ``path=None``) write nothing.
"""
from __future__ import annotations

from pathlib import Path

from ... import results
from ...results import RunExistsError
from .checkpoint import TrainState, save_checkpoint

__all__ = ["RunExistsError", "RunOutput", "check_out_dir"]


def check_out_dir(out: Path, resume: bool) -> bool:
    """Refuse a folder that holds a run (or, with ``resume``, one that holds none to continue).

    Call it while holding the folder's claim (:func:`weightmirror.locks.claim`),
    so that no other run starts in it between the check and the first write.

    Returns
    -------
    bool
        True when ``out`` holds only the start of a run that recorded nothing
        (interrupted or failed before its first checkpoint): a new run reuses
        it (:func:`weightmirror.results.clear_unstarted`).

    Raises
    ------
    RunExistsError
        ``out`` is a file; it holds a run (not ``resume``); with ``resume``,
        it holds no run, or only the start of one (then the message says to
        run the same command again without ``--resume``).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out}: a file, not a folder; choose another --out")
    if resume:
        state, _ = results.folder_state(out)
        if state == results.UNSTARTED and not (out / results.CHECKPOINT).exists():
            raise RunExistsError(
                f"--resume: {out} holds no checkpoint (the run was stopped before its first one, so nothing "
                f"was trained); start it again without --resume (the folder is reused)")
        for name in (results.CONFIG, results.CHECKPOINT):
            if not (out / name).is_file():
                raise RunExistsError(f"--resume: {out / name} not found; nothing to resume in {out}")
        return False
    return results.refuse_existing_run(out, "give --resume to continue it or another --out")


class RunOutput:
    """The files of one run; every method is a no-op where this process does not write.

    Parameters
    ----------
    path : the results folder, or None to keep the run in memory only.
    writes : False on ranks other than 0.
    """

    def __init__(self, path: Path | None, writes: bool = True):
        self.path = None if path is None else Path(path)
        self.writes = writes and self.path is not None

    def start(self, cfg) -> None:
        """A new run: the resolved config and an empty metrics file."""
        if self.writes:
            results.write_config(self.path / results.CONFIG, cfg.to_dict())
            results.write_metrics(self.path / results.METRICS, [])

    def config(self, cfg) -> None:
        """Rewrite ``config.toml`` (a resumed run whose ``epochs`` changed)."""
        if self.writes:
            results.write_config(self.path / results.CONFIG, cfg.to_dict())

    def rewrite_metrics(self, rows: list[dict]) -> None:
        """Metrics as the checkpoint has them (a resumed run drops rows written after it)."""
        if self.writes:
            results.write_metrics(self.path / results.METRICS, rows)

    def append(self, row: dict) -> None:
        if self.writes:
            results.append_metrics(self.path / results.METRICS, row)

    def checkpoint(self, net, opt, state: TrainState) -> None:
        if self.writes:
            save_checkpoint(self.path / results.CHECKPOINT, net, opt, state)

    def arrays(self, name: str, arrays: dict) -> None:
        """``<name>.npz`` in the results folder (atomically)."""
        if self.writes:
            results.save_arrays(self.path / f"{name}.npz", arrays)

    def summary(self, summary: dict) -> None:
        if self.writes:
            results.write_json(self.path / results.SUMMARY, summary)

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.path is None else self.path / results.CHECKPOINT

    def resume_hint(self) -> str:
        """What the user runs to continue (or why an in-memory run cannot be)."""
        if self.path is None:
            return "an in-memory run (out=None) cannot be resumed"
        return f"checkpoint written to {self.checkpoint_path}; continue with: weightmirror train --resume --out {self.path}"
