"""Small filesystem helpers: atomic writes, JSON in and out."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def _previous_copy_pattern(path: Path) -> re.Pattern[str]:
    """The name :func:`atomic_path` gives a folder's previous copy during its two renames."""
    return re.compile(rf"^\.{re.escape(path.name)}\.old-(\d+)$")


def interrupted_swap(path: str | os.PathLike) -> Path | None:
    """The previous copy of the folder ``path`` that a writer killed between the two renames of
    :func:`atomic_path` left aside as ``.NAME.old-PID`` (``path`` missing, the writer dead), or None."""
    path = Path(path)
    if path.exists() or path.is_symlink() or not path.parent.is_dir():
        return None
    previous = _previous_copy_pattern(path)
    for entry in sorted(path.parent.iterdir()):
        m = previous.match(entry.name)
        if m is not None and not _pid_alive(int(m.group(1))):
            return entry
    return None


def restore_interrupted_swap(path: str | os.PathLike) -> Path | None:
    """Put back the folder ``path`` where a writer was killed between the two renames of
    :func:`atomic_path` (the previous copy moved aside as ``.NAME.old-PID``, the new one not yet
    in place, the writer dead): ``path`` is then missing and that copy is its only content.
    Returns the copy's old name when it was put back (a warning says so), else None. Called before
    anything creates ``path`` again (a training's checkpoints, a resume), and by the next writer."""
    entry = interrupted_swap(path)
    if entry is not None:
        try:
            os.replace(entry, path)
        except FileNotFoundError:  # another process put it back first
            return None
        logger.warning("%s was missing: a writer was killed while replacing it; its previous content (%s) is put back",
                       path, entry.name)
    return entry


def remove_stale_temporaries(path: str | os.PathLike) -> int:
    """Remove the temporary siblings of ``path`` left by writers that died (``kill -9`` during
    an atomic write): ``.NAME.PID.*.tmp`` and ``.NAME.old-PID`` whose PID is not running.
    Returns how many were removed."""
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        return 0
    removed = 0
    restore_interrupted_swap(path)  # the only copy of the folder, if its writer died between the renames
    temporary = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")  # what atomic_path makes
    previous = _previous_copy_pattern(path)
    for entry in parent.iterdir():
        m = temporary.match(entry.name) or previous.match(entry.name)
        if m is None or _pid_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


#: targets whose dead writers' temporaries this process has removed already
_CLEANED: set[str] = set()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    Works for files and for directories (the caller creates what it wants at the
    yielded path). On error the temporary is removed and ``path`` is untouched. The
    temporary's name carries this process's id, so that the next writer of ``path`` removes
    what a killed writer left behind (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path.absolute()) not in _CLEANED:  # once per target and process: debris is a dead writer's
        remove_stale_temporaries(path)
        _CLEANED.add(str(path.absolute()))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    target = tmp / "x"
    try:
        yield target
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(target, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_writable(path: str | os.PathLike, what: str = "output") -> None:
    """Refuse (ConfigError, before any work is done) an output path that cannot be written:
    its nearest existing folder must accept a new file (tried, then removed)."""
    from q2pt.errors import ConfigError

    p = Path(path).expanduser()
    if p.exists() and not p.is_dir() and not os.access(p, os.W_OK):
        raise ConfigError(f"cannot write the {what} {path}: permission denied")
    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write the {what} {path}: {folder} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".q2pt-write-test-", dir=folder)
    except OSError as exc:
        raise ConfigError(f"cannot write the {what} {path}: {exc.strerror or exc} (in {folder})") from None
    os.close(fd)
    os.unlink(probe)


#: (resolved folder, thread) -> [open lock file, depth]: the write locks this process holds
_HELD_LOCKS: dict[str, list[Any]] = {}


@contextmanager
def folder_lock(path: str | os.PathLike, what: str = "folder") -> Iterator[None]:
    """Hold the write lock of the folder ``path`` for the block: an OS file lock (``flock``) on
    ``.NAME.lock`` beside it (beside, not inside: the folder itself is replaced atomically
    when it is saved). A second writer gets ConfigError naming the folder and the holder's
    pid; the lock dies with its process. Re-entrant within one process."""
    import fcntl

    from q2pt.errors import ConfigError

    p = Path(path).expanduser().resolve()
    key = f"{p}\x00{threading.get_ident()}"  # re-entrant in one thread; another thread is another writer
    held = _HELD_LOCKS.get(key)
    if held is not None:
        held[1] += 1
        try:
            yield
        finally:
            held[1] -= 1
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    lock_file = p.parent / f".{p.name}.lock"
    while True:
        fh = open(lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held for the block
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise ConfigError(
                f"the {what} {path} is being written by another q2pt process (pid {holder}); "
                "wait for it to finish, or write somewhere else"
            ) from None
        try:  # the holder before us unlinks the file when it is done: lock the file that is there
            if os.stat(lock_file).st_ino == os.fstat(fh.fileno()).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    _HELD_LOCKS[key] = [fh, 1]
    try:
        yield
    finally:
        del _HELD_LOCKS[key]
        lock_file.unlink(missing_ok=True)  # while still locked: no lock files are left behind
        fh.close()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_text_file(path: str | os.PathLike, what: str, error: type[Exception] | None = None) -> str:
    """A small text file a user wrote (a config file, a label map), as UTF-8 with or without a
    byte-order mark; ``error`` (default ConfigError) naming the file and ``what`` it is when it
    cannot be read or is not UTF-8 (a UTF-16 file saved by Notepad or PowerShell, Latin-1 from
    Excel)."""
    from q2pt.errors import ConfigError

    error = error or ConfigError
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise error(f"{what} {path} is not UTF-8 text ({'UTF-16, by its byte-order mark' if utf16 else exc.reason}"
                    f" at byte {exc.start}): save it as UTF-8") from None


def sha256_of_file(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read now (no cache: for integrity checks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_of_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file, cached per (path, size, mtime): large package weights are read
    once per process. Raises OSError when the file cannot be read."""
    st = os.stat(path)
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)
