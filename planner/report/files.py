"""Every file the planner writes goes through here: atomic, all or nothing, never over a file unasked.
What is written is rendered elsewhere (planner.report.emit, planner.report.plot; planner.report.outputs puts the CLI's
requests together); this module knows only paths and bytes.

:func:`write_files` renders nothing itself: it gets every file's bytes first, checks every target
(its folder exists and is a folder, the target is not a folder, it does not exist unless
``force``), writes each file to a temporary file in its own folder and moves it into place with
``os.replace`` (a new file is linked into place, which fails if one appeared meanwhile). When
anything fails, the files this run wrote are removed, the files it replaced are put back, the
folders it created are removed, and the error is one :class:`~planner.errors.OutputError` line
naming the path.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingDependencyError, OutputError

# formats the plot is written in (matplotlib's Agg canvas writes each without LaTeX or a display)
PLOT_FORMATS = ("png", "pdf", "svg")
DEFAULT_PLOT_FORMAT = "png"
FORCE_HINT = "pass --force (force=True) to replace it"


@dataclass(frozen=True)
class FileOut:
    """One file to write: where, its bytes, and whether it is a script (mode 0o777 less the umask)."""

    path: Path
    data: bytes
    executable: bool = False


# -- checks (no file is touched) ----------------------------------------------------------------

def plot_path(path) -> Path:
    """The file ``--plot path`` writes: ``path`` itself for a supported extension, ``path.png`` for
    a name without one; OutputError for any other extension."""
    p = Path(path)
    if p.name.endswith(".") or not p.name:
        raise OutputError(f"cannot write the plot to {path}: give a file name ending in "
                          f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    if not p.suffix:
        return p.with_name(p.name + "." + DEFAULT_PLOT_FORMAT)
    if p.suffix[1:].lower() not in PLOT_FORMATS:
        raise OutputError(f"cannot write the plot to {path}: unsupported format '{p.suffix}' "
                          f"(supported: {', '.join('.' + f for f in PLOT_FORMATS)})")
    return p


def plot_format(path) -> str:
    return plot_path(path).suffix[1:].lower()


def _require_module(module: str, what: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"{what} needs the '{module}' package: {hint}")


def _first_existing_ancestor(path: Path) -> Path:
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def check_target(path, force: bool = False, new_dirs=()) -> Path:
    """Why ``path`` cannot be written, as an OutputError; else ``path``. ``new_dirs``: folders
    this run will create (a target inside one needs no existing folder)."""
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise OutputError(f"cannot write {path}: not a file name")
    parent = path.parent
    if any(_same(parent, d) or _inside(parent, d) for d in new_dirs):
        return path
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a folder")
    if not os.path.isdir(parent):
        found = _first_existing_ancestor(parent)
        if os.path.lexists(found) and not os.path.isdir(found):
            raise OutputError(f"cannot write {path}: {found} is a file, not a folder")
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if os.path.lexists(path) and not force:
        raise OutputError(f"{path} exists: {FORCE_HINT}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: folder {parent} is not writable")
    return path


def check_dir(path) -> Path:
    """An output folder: it may be missing (it is created), not a file."""
    path = Path(path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputError(f"cannot write into {path}: it is a file, not a folder")
    found = _first_existing_ancestor(path)
    if os.path.lexists(found) and not os.path.isdir(found):
        raise OutputError(f"cannot write into {path}: {found} is a file, not a folder")
    return path


# -- writing ------------------------------------------------------------------------------------

def _same(a, b) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def _inside(a, b) -> bool:
    a, b = os.path.abspath(a), os.path.abspath(b)
    return a.startswith(b.rstrip(os.sep) + os.sep)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _error(path, e: OSError) -> OutputError:
    if e.errno == errno.EEXIST:
        return OutputError(f"{path} exists: {FORCE_HINT}")
    if e.errno == errno.EISDIR:
        return OutputError(f"cannot write {path}: it is a folder")
    return OutputError(f"cannot write {path}: {e.strerror or e}")


def _dedupe(files) -> list[FileOut]:
    out: list[FileOut] = []
    for f in files:
        twin = next((g for g in out if _same(g.path, f.path)), None)
        if twin is None:
            out.append(FileOut(Path(f.path), bytes(f.data), bool(f.executable)))
        elif twin.data != f.data:
            raise OutputError(f"cannot write {f.path}: two different files were asked to go there")
    return out


def _stage(f: FileOut, mode: int) -> str:
    """Write ``f`` to a temporary file beside its target; return the temporary path."""
    fd, tmp = tempfile.mkstemp(dir=f.path.parent, prefix=f".{f.path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(f.data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _backup(path: Path) -> str:
    """A hard link (else a copy) of the file about to be replaced, to put back on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".bak")
    os.close(fd)
    os.unlink(tmp)
    try:
        os.link(path, tmp, follow_symlinks=False)
    except OSError:
        import shutil

        shutil.copy2(path, tmp, follow_symlinks=False)
    return tmp


def _place(tmp: str, path: Path, force: bool) -> str | None:
    """Move ``tmp`` to ``path``; returns the backup of what it replaced. Without ``force`` the
    file is linked into place, which fails if ``path`` exists (no window between check and write)."""
    if force:
        backup = _backup(path) if os.path.lexists(path) and not os.path.isdir(path) else None
        try:
            os.replace(tmp, path)
        except BaseException:
            if backup is not None:
                os.unlink(backup)
            raise
        return backup
    try:
        os.link(tmp, path)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):  # a file system without hard links: check, then move
            raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return None
    os.unlink(tmp)
    return None


def _make_dirs(d: Path, created: list[Path]) -> None:
    missing = []
    p = Path(os.path.abspath(d))
    while not os.path.lexists(p):
        missing.append(p)
        p = p.parent
    for m in reversed(missing):
        os.mkdir(m)
        created.append(m)


def write_files(files, *, force: bool = False, make_dirs=()) -> list[Path]:
    """Write every :class:`FileOut`, or none of them. ``make_dirs``: folders to create first if
    missing (removed again on failure). Returns the paths, in order."""
    files = _dedupe(files)
    make_dirs = [Path(d) for d in make_dirs]
    for d in make_dirs:
        check_dir(d)
    new_dirs = [d for d in make_dirs if not os.path.isdir(d)]
    for f in files:
        check_target(f.path, force, new_dirs)
    mask = _umask()
    created: list[Path] = []
    staged: dict[int, str] = {}
    placed: list[tuple[Path, str | None]] = []
    current = files[0].path if files else None
    try:
        for d in make_dirs:
            current = d
            _make_dirs(d, created)
        for i, f in enumerate(files):  # every byte on disk before any target changes
            current = f.path
            staged[i] = _stage(f, (0o777 if f.executable else 0o666) & ~mask)
        for i, f in enumerate(files):
            current = f.path
            backup = _place(staged[i], f.path, force)
            staged.pop(i)
            placed.append((f.path, backup))
    except OSError as e:
        _roll_back(staged, placed, created)
        raise _error(current, e) from None
    except BaseException:
        _roll_back(staged, placed, created)
        raise
    for _, backup in placed:
        if backup is not None:
            _quiet_unlink(backup)
    return [f.path for f in files]


def _quiet_unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _roll_back(staged: dict, placed: list, created: list) -> None:
    for tmp in staged.values():
        _quiet_unlink(tmp)
    for path, backup in reversed(placed):
        try:
            if backup is None:
                os.unlink(path)
            else:
                os.replace(backup, path)
        except OSError:
            pass
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            pass


def write_file(path, data: str | bytes, *, force: bool = False, executable: bool = False) -> Path:
    """One file, atomically (see :func:`write_files`)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return write_files([FileOut(Path(path), raw, executable)], force=force)[0]
