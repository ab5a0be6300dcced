"""The output layer: every file or folder a command writes goes through here (see docs/reliability.md).

- ``write_atomic``: one file, temp + rename (a FIFO or a character device is written through; a symlink's
  target is replaced, never the link; a folder is refused); the mode a plain ``open()`` would give.
- ``refuse_outputs_on_inputs``: an output that is, or would write into, an input of the same command.
- ``atomic_folder``: a folder that appears complete or not at all (built in ``OUT.tmp-<pid>-<rand>``).
- ``output_lock``: one cfx process at a time writes ``OUT``.

Every ``OSError`` on output becomes an ``OutputError`` (exit 7) naming the path; nothing half-written stays.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cfx.errors import OutputError, UsageError, io_error

WRITER_TAG = ".cfx-writer"  # inside OUT.tmp-*: who is building it (pid, host)
_MAX_NAME = 255
_HINTS = {
    errno.ENOSPC: "free some disk space or pick another location",
    errno.EDQUOT: "your disk quota is used up: free some space or pick another location",
    errno.EROFS: "the file system is read-only: pick another location",
    errno.EACCES: "pick a folder you can write to",
    errno.EPERM: "pick a folder you can write to",
    errno.ENAMETOOLONG: "use a shorter file name",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    errno.ENXIO: "cfx cannot write into a socket: give a file name",
    errno.EFBIG: "the file system refuses files this large: pick another location",
}


def output_error(path: Path | str, exc: OSError, what: str = "cannot write") -> OutputError:
    """An ``OutputError`` naming ``path`` and the OS reason, with a hint that fits the errno."""
    reason = exc.strerror or str(exc)
    hint = _HINTS.get(exc.errno or 0, "check free disk space and permissions")
    return OutputError(f"{what} {path}: {reason}", hint)


# --- one file ----------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it (Linux: /proc), else by setting and restoring it."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_stream(mode: int) -> bool:
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def write_atomic(path: Path | str, write: Callable[[str], Any]) -> None:
    """Call ``write(p)`` for a temp file beside ``path``, then rename it into place.

    A FIFO or character device (``/dev/null``, ``/dev/stdout``) is written through: ``write`` gets the
    path itself. A symlink is followed: its target is replaced atomically, the link stays. A new file gets
    ``0666 & ~umask``, a replaced one keeps its mode. A folder, a socket or any OSError → ``OutputError``.
    """
    path = Path(path)
    try:
        st: os.stat_result | None = os.stat(path)  # follows symlinks: the type of what gets written
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise output_error(path, exc) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {path}: it is a folder", "give a file name, e.g. out.parquet")
    if st is not None and stat.S_ISSOCK(st.st_mode):
        raise OutputError(f"cannot write {path}: it is a socket", "give a file name")
    if st is not None and (_is_stream(st.st_mode) or _via_fd_link(path)):
        _write_through(path, write)
        return
    mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~current_umask()
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    _replace(path, target, write, mode)


def _via_fd_link(path: Path) -> bool:
    """Whether ``path`` reaches an open file descriptor (``/dev/stdout`` -> ``/proc/self/fd/1``): then it
    names a stream the caller redirected (``> file``), which is written into, never replaced by a rename."""
    seen = str(path)
    for _ in range(40):
        if re.match(r"^/(proc/[^/]+|dev)/fd/\d+$", os.path.normpath(seen)):
            return True
        if not os.path.islink(seen):
            return False
        link = os.readlink(seen)
        seen = link if os.path.isabs(link) else os.path.join(os.path.dirname(seen), link)
    return False


def _write_through(path: Path, write: Callable[[str], Any]) -> None:
    """Produce the bytes in a private spool file, then stream them into the device or FIFO.

    Writers never see the device path: parquet writers seek (a pipe cannot), and pyarrow deletes the path
    it was writing when it fails — as root, that would remove /dev/null.
    """
    with tempfile.TemporaryDirectory(prefix="cfx-spool-") as folder:
        spool = os.path.join(folder, "out")
        try:
            write(spool)
            with open(spool, "rb") as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except Exception as exc:
            err = io_error(exc)
            if err is None:
                raise
            raise output_error(path, err) from None


def _replace(path: Path, target: Path, write: Callable[[str], Any], mode: int) -> None:
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(
            f"cannot write {path}: folder {parent} does not exist", "create it first or pick another path"
        )
    if len(target.name.encode()) > _MAX_NAME:
        raise output_error(path, OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG)))
    tmp = parent / f".{target.name[:100]}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        write(str(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink(tmp)
        err = io_error(exc)  # also polars' ComputeError and pyarrow's errors that are I/O errors
        if err is None:
            raise
        raise output_error(path, err) from None


def _unlink(path: Path | str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class KeptErrorFile:
    """A binary file for C++ writers that end the process on a failed write.

    pyarrow's parquet writer with content-defined chunking turns a failed write into a C++ ``Check failed``
    (abort, exit 134: the temp folder and lock stay, the disk stays full). Written through
    ``pyarrow.PythonFile(KeptErrorFile(path), mode="w")``, the first error is kept instead of raised, later
    writes are dropped (the position still advances, so the writer goes on undisturbed), and ``check()``
    raises the kept error where Python can handle it (exit 7, temp files removed). That includes the
    KeyboardInterrupt or Terminated of a signal whose handler runs inside a write: raised into the C++
    writer, it would abort the process too.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        self._pos = 0
        self.error: BaseException | None = None
        self.closed = False

    def write(self, data: Any) -> int:
        n = 0
        try:
            view = memoryview(data).cast("B")
            n = view.nbytes
            while view and self.error is None:
                view = view[os.write(self._fd, view) :]
        except BaseException as exc:  # noqa: BLE001 - kept for check(); see the class doc
            self.error = self.error or exc
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                os.close(self._fd)
            except OSError as exc:
                self.error = self.error or exc

    def check(self) -> None:
        """Raise the first error a write met, if any."""
        if self.error is not None:
            raise self.error


def check_free_space(folder: Path | str, need: int) -> None:
    """``OSError(ENOSPC)`` when ``folder``'s file system has fewer than ``need`` bytes free (unknown: pass)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if need > free:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (needs {need:,} bytes, {free:,} free)")


def ensure_folder(folder: Path | str, hint: str = "pick a folder you can write to") -> Path:
    """Create ``folder`` (and parents); an OSError becomes an OutputError naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {folder}: {exc.strerror or exc}", hint) from None
    return folder


# --- outputs must not be inputs ----------------------------------------------------------------------
def _real(path: Path | str) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Input:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.real = _real(path)
        self.inode = _inode(self.real)


def _clash(out: Path, out_inode: tuple[int, int] | None, inp: _Input, within: bool) -> str | None:
    """How writing ``out`` (resolved) would touch ``inp``, or None."""
    if out == inp.real or (out_inode is not None and out_inode == inp.inode):
        return "is the input"
    if not within:
        return None
    if out in inp.real.parents:
        return "contains the input"
    if inp.real in out.parents:
        return "is inside the input folder"
    return None


def refuse_outputs_on_inputs(
    outputs: dict[str, Path | str | None], inputs: Iterable[Path | str], *, within: bool = True
) -> None:
    """Refuse (UsageError, exit 2) an output that is, contains or sits inside an input of the same command.

    ``outputs`` maps an option name (``-o``, ``--report``) to its path (None: not given). Paths are
    compared after resolving symlinks, and by inode (a hard link is the same file). A FIFO or character
    device output (``-o /dev/null``) is written through and never refused. ``within=False`` counts only
    an output that *is* an input (``cfx download --out`` is a folder that holds its own inputs). ``--overwrite``
    does not lift this: it would replace the data being read.
    """
    given = {opt: Path(p) for opt, p in outputs.items() if p is not None}
    real_inputs = [_Input(p) for p in inputs] if given else []
    for opt, out in given.items():
        if _is_special(out):
            continue
        real_out = _real(out)
        out_inode = _inode(real_out)
        clashes = (_clash(real_out, out_inode, inp, within) for inp in real_inputs)
        pairs = zip(clashes, real_inputs, strict=True)
        found = sorted(((how, inp.path) for how, inp in pairs if how), key=_exact_first)
        if found:
            how, path = found[0]
            raise UsageError(
                f"{opt} {out} {how} {path}",
                "write the output somewhere else: cfx never writes over or into what it reads",
            )
    _refuse_same_outputs(given)


_WORST_FIRST = {"is the input": 0, "contains the input": 1, "is inside the input folder": 2}


def _exact_first(clash: tuple[str, Path]) -> int:
    """The clash to name: replacing an input, then replacing a folder of inputs, then writing into one."""
    return _WORST_FIRST[clash[0]]


def _is_special(path: Path) -> bool:
    try:
        return _is_stream(os.stat(path).st_mode)
    except OSError:
        return False


def _refuse_same_outputs(given: dict[str, Path]) -> None:
    seen: dict[Path, str] = {}
    for opt, out in given.items():
        if _is_special(out):
            continue
        real = _real(out)
        if real in seen:
            raise UsageError(
                f"{seen[real]} and {opt} are the same path {out}", "give each output its own path"
            )
        seen[real] = opt


def metadata_folders(root: Path) -> list[Path]:
    """Where a dataset keeps its metadata tables (as cfx.licenses.find_metadata_tables looks for them)."""
    return [root / "data" / "metadata", root / "metadata"]


# --- one folder, all at once -------------------------------------------------------------------------
_TMP_RE = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_of(tmp: Path) -> tuple[int, str] | None:
    """(pid, host) of the process that builds ``tmp``: from its tag, else from its name (this host)."""
    try:
        tag = json.loads((tmp / WRITER_TAG).read_text())
        return int(tag.get("pid", 0)), str(tag.get("host", ""))
    except (OSError, ValueError, AttributeError):
        pass
    m = _TMP_RE.search(tmp.name)
    return (int(m.group(1)), socket.gethostname()) if m else None


def clean_stale(out: Path, warn: Callable[[str], None] | None = None) -> list[Path]:
    """Remove ``OUT.tmp-*`` folders whose writer (a cfx on this host) is dead; name each one via ``warn``."""
    out = Path(os.path.abspath(out))
    removed = []
    for tmp in sorted(out.parent.glob(f"{out.name}.tmp-*")):
        writer = _writer_of(tmp) if tmp.is_dir() and not tmp.is_symlink() else None
        if writer is None or writer[1] != socket.gethostname() or _pid_alive(writer[0]):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
        if warn is not None:
            warn(f"removed {tmp}, left by an interrupted earlier run (pid {writer[0]})")
    return removed


def check_folder_output(out: Path, overwrite: bool, option: str = "--out") -> Path:
    """The absolute ``out``; refuses a non-folder and, without ``overwrite``, a non-empty folder."""
    out_abs = Path(os.path.abspath(Path(out).expanduser()))
    if out_abs.exists() or out_abs.is_symlink():
        if not out_abs.is_dir():
            raise OutputError(f"{out} exists and is not a folder", f"pick another {option}")
        if not overwrite and any(out_abs.iterdir()):
            raise OutputError(
                f"{out} already exists", f"pass --overwrite to replace it, or pick another {option}"
            )
    return out_abs


@contextlib.contextmanager
def atomic_folder(
    out: Path | str,
    *,
    overwrite: bool = False,
    option: str = "--out",
    warn: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Build a folder in ``OUT.tmp-<pid>-<rand>`` (yielded) and rename it to ``OUT`` once, at the end.

    Holds ``output_lock(OUT)`` throughout; first removes stale ``OUT.tmp-*`` of dead cfx runs (named via
    ``warn``). An existing ``OUT`` is replaced as a whole, only with ``overwrite``. On any error the temp
    folder goes and ``OUT`` is untouched.
    """
    out_abs = check_folder_output(Path(out), overwrite, option)
    parent = out_abs.parent
    ensure_folder(parent, "check the path and permissions")
    with output_lock(out_abs):
        clean_stale(out_abs, warn)
        tmp = parent / f"{out_abs.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            (tmp / WRITER_TAG).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise output_error(parent, exc, "cannot write into") from None
        try:
            yield tmp
            check_folder_output(out_abs, overwrite, option)  # nobody made it meanwhile
            try:
                (tmp / WRITER_TAG).unlink()
                _swap_into_place(tmp, out_abs)
            except OSError as exc:
                raise output_error(out, exc, "cannot finish") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _swap_into_place(tmp: Path, out_abs: Path) -> None:
    """Rename ``tmp`` to ``out_abs``. An existing ``out_abs`` is exchanged with ``tmp`` in one step where the
    kernel can (Linux ``renameat2(RENAME_EXCHANGE)``), else moved aside first; the old one is removed after."""
    if not (out_abs.exists() or out_abs.is_symlink()):
        os.rename(tmp, out_abs)
        return
    if _exchange(tmp, out_abs):
        old = tmp  # now holds what was at out_abs; a kill before its removal leaves a stale OUT.tmp-*
    else:
        old = out_abs.parent / f"{out_abs.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out_abs, old)
        try:
            os.rename(tmp, out_abs)
        except OSError:
            os.rename(old, out_abs)
            raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        _unlink(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux >= 3.15); False where not supported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


# --- one writer at a time ----------------------------------------------------------------------------
def lock_path(out: Path | str) -> Path:
    out_abs = Path(os.path.abspath(out))
    return out_abs.parent / f"{out_abs.name}.lock"


@contextlib.contextmanager
def output_lock(out: Path | str) -> Iterator[None]:
    """An exclusive, non-blocking ``flock`` on ``OUT.lock`` while ``OUT`` is written; removed after.

    A second cfx writing the same ``OUT`` fails at once with exit 7, naming the holder's pid.
    """
    path = lock_path(out)
    fd = _acquire(path, out)
    try:
        with contextlib.suppress(OSError):  # the pid is for the message of a second writer only
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        _unlink(path)
        os.close(fd)


def _acquire(path: Path, out: Path | str) -> int:
    """Open and lock ``path``; retry when the file was removed by its last holder while we waited."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            raise output_error(path.parent, exc, "cannot write into") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise OutputError(
                f"{out} is being written by another cfx process" + (f" (pid {holder})" if holder else ""),
                "wait for it to finish, or pick another output",
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the file we locked was unlinked by the previous holder: lock the new one
    raise OutputError(f"cannot lock {path}", "another process keeps re-creating it; try again")


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    return None


__all__ = [
    "WRITER_TAG",
    "atomic_folder",
    "check_folder_output",
    "clean_stale",
    "ensure_folder",
    "lock_path",
    "output_error",
    "output_lock",
    "KeptErrorFile",
    "check_free_space",
    "metadata_folders",
    "refuse_outputs_on_inputs",
    "write_atomic",
]
