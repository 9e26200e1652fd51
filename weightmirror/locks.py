"""One run per results folder: a lock file claimed atomically and held for the run's life.

A run (``weightmirror train``, ``train --resume``, ``circuit``, every folder
of ``compare``) claims its folder before it reads or writes anything in it:
:func:`claim` creates ``OUT/.weightmirror.lock`` with an exclusive create
(``os.open(..., O_CREAT | O_EXCL)``), takes an advisory ``flock`` on it,
and writes who holds it (pid, host, start time, command) into it. The claim
is released (the file removed) when the run ends, however it ends: the
callers hold it in a ``with`` block or a ``finally``.

A second writer finds the lock and stops with one line,
``OUT is in use by another run (pid N since T)`` (:class:`FolderInUseError`,
an :class:`~weightmirror.errors.InputError`: exit status 2), before it has
changed anything in the folder.

A lock left behind by a run that cannot release it any more (killed with
SIGKILL, a crash of the machine) is **stale**: nobody holds its ``flock``
(the kernel drops it with the process) and its pid is gone on this host
(or is now another process: the recorded process start time differs, or it
is a zombie). A stale lock is taken over with a note. A lock written on
another host cannot be checked from here: it is refused, and the message
says to remove the file if that run is gone.

Claims are re-entrant within one process (``compare`` claims all its folders
up front, then each ``train`` call claims its own again), and a process
forked while holding a claim (the ImageNet decoding workers) closes its
inherited copy at once, so that only the claiming process keeps the
``flock`` alive.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

from .results import ResultsError, WriteError

__all__ = ["LOCK_NAME", "FolderInUseError", "Claim", "claim", "held", "read_lock"]

#: the lock file in a results folder
LOCK_NAME = ".weightmirror.lock"

_REGISTRY: dict[str, "Claim"] = {}
_REGISTRY_LOCK = threading.Lock()


class FolderInUseError(ResultsError):
    """Another run holds the results folder (its lock file is live)."""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _zombie(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = text[text.rfind(")") + 2:].split()
    return bool(rest) and rest[0] in ("Z", "X")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except OSError:
        return False
    return not _zombie(pid)


def _since(info: dict) -> str:
    started = info.get("started")
    if isinstance(started, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
    return "an unknown time"


def _describe(info: dict) -> str:
    return f"pid {info.get('pid', '?')} since {_since(info)}"


def _read_fd(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode("utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def read_lock(folder: str | Path) -> dict | None:
    """What ``folder``'s lock file says (pid, host, started, command), or None if there is none."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


def _try_flock(fd: int) -> bool:
    """True if this process now holds the lock (or the file system has no flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: rely on the pid alone
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return True  # ENOLCK, EOPNOTSUPP ...: no flock here; the pid decides
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _verdict(info: dict | None) -> str:
    """``stale``, ``alive`` or ``elsewhere`` (another host: cannot be checked) for a lock's content."""
    if info is None:
        return "stale"  # empty or unreadable, and nobody holds its flock
    if info.get("host") != socket.gethostname():
        return "elsewhere"
    pid = info["pid"]
    if pid == os.getpid():
        return "stale"  # this process holds none of its claims without the registry knowing
    if not _pid_alive(pid):
        return "stale"
    recorded, now = info.get("proc_start"), _proc_start(pid)
    if recorded is not None and now is not None and str(recorded) != now:
        return "stale"  # the pid was reused by another process
    return "alive"


def _in_use(folder: Path, info: dict | None, verdict: str = "alive") -> FolderInUseError:
    if info is None:
        return FolderInUseError(f"{folder} is in use by another run (it is starting); "
                                "wait for it or choose another --out")
    if verdict == "elsewhere":
        return FolderInUseError(
            f"{folder} is in use by another run on host {info.get('host', '?')} ({_describe(info)}); "
            f"if that run is gone, remove {folder / LOCK_NAME}, or choose another --out")
    return FolderInUseError(f"{folder} is in use by another run ({_describe(info)})")


class Claim:
    """A held claim on a results folder (see the module docstring); release it once.

    Attributes
    ----------
    folder : the results folder.
    created : whether the claim created the folder (an empty folder it
        created is removed again on release).
    note : what happened to a stale lock that was taken over, else None.
    """

    def __init__(self, folder: Path, fd: int, created: bool, note: str | None, key: str):
        self.folder = folder
        self.created = created
        self.note = note
        self._fd: int | None = fd
        self._key = key
        self._depth = 1

    @property
    def lock_path(self) -> Path:
        return self.folder / LOCK_NAME

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the folder up: the lock file is removed (and the folder, if the claim made it and it is empty)."""
        with _REGISTRY_LOCK:
            if self._fd is None:
                return
            self._depth -= 1
            if self._depth > 0:
                return
            fd, self._fd = self._fd, None
            _REGISTRY.pop(self._key, None)
        try:
            if _same_file(fd, self.lock_path):
                os.unlink(self.lock_path)
        except OSError:
            pass
        finally:
            os.close(fd)
        if self.created:
            try:
                self.folder.rmdir()  # only if nothing was written into it
            except OSError:
                pass

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<Claim {self.folder} {'held' if self.held else 'released'}>"


def held(folder: str | Path) -> Claim | None:
    """This process's claim on ``folder``, if it holds one."""
    with _REGISTRY_LOCK:
        return _REGISTRY.get(_key(Path(folder)))


def _key(folder: Path) -> str:
    return os.path.realpath(folder)


def claim(folder: str | Path, command: str = "run", hint: str = "choose another --out") -> Claim:
    """Claim ``folder`` for one run (creating it if needed); see the module docstring.

    Re-entrant within a process: a folder this process already holds is
    returned again (and released only by the outermost release).

    Raises
    ------
    FolderInUseError
        another live run holds it (one line: who, since when).
    ResultsError
        ``folder`` is a file.
    WriteError
        the folder or its lock file cannot be created (read-only, full, no permission).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ResultsError(f"{folder}: a file, not a folder; {hint}")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ResultsError(f"{folder}: a file, not a folder; {hint}") from None
    except OSError as exc:
        raise WriteError(f"{folder}: cannot be created ({exc.strerror or exc}); {hint}") from None
    key = _key(folder)
    with _REGISTRY_LOCK:
        mine = _REGISTRY.get(key)
        if mine is not None and mine.held:
            mine._depth += 1
            return mine
    lock = folder / LOCK_NAME
    try:
        for _ in range(50):
            made = False
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                made = True
            except FileExistsError:
                try:
                    fd = os.open(lock, os.O_RDWR)
                except FileNotFoundError:
                    continue  # released meanwhile: try again
            except OSError as exc:
                raise WriteError(f"{folder}: cannot be written ({exc.strerror or exc}); {hint}") from None
            try:
                if not _try_flock(fd):
                    info = _read_fd(fd)
                    if not _same_file(fd, lock):
                        os.close(fd)
                        continue  # its holder released it meanwhile
                    os.close(fd)
                    raise _in_use(folder, info)
                if not _same_file(fd, lock):
                    os.close(fd)
                    continue  # we locked a file that was removed meanwhile
                note = None
                if not made:
                    info = _read_fd(fd)
                    verdict = _verdict(info)
                    if verdict != "stale":
                        os.close(fd)
                        raise _in_use(folder, info, verdict)
                    note = (f"{folder}: took over the lock of a run that is gone ({_describe(info)})"
                            if info else f"{folder}: took over an unreadable lock file of a run that is gone")
                data = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                   "proc_start": _proc_start(os.getpid()), "command": command}).encode()
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, data, 0)
                    os.fsync(fd)
                except OSError as exc:
                    if made:
                        try:
                            os.unlink(lock)
                        except OSError:
                            pass
                    os.close(fd)
                    raise WriteError(f"{lock}: cannot be written ({exc.strerror or exc}); {hint}") from None
            except FolderInUseError:
                raise
            except WriteError:
                raise
            except BaseException:
                try:
                    os.close(fd)
                except OSError:
                    pass
                raise
            c = Claim(folder, fd, created, note, key)
            with _REGISTRY_LOCK:
                _REGISTRY[key] = c
            return c
        raise FolderInUseError(f"{folder} is in use by another run (its lock file keeps changing)")
    except BaseException:
        if created:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise


def _after_fork_in_child() -> None:
    """A forked child does not hold its parent's claims: close its copies of the lock files."""
    for c in list(_REGISTRY.values()):
        fd, c._fd = c._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
    _REGISTRY.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
