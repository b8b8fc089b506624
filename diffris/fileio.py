"""File helpers shared by every step: checksums, atomic writes and the folders commands own.

Every command that writes a folder marks it with ``.diffris-out.json``, naming the command and
the files it wrote. A command replaces an existing ``--out`` only when that marker names the same
command and the folder holds nothing the command did not write; an ``--out`` that equals,
contains or lies inside one of the command's inputs is refused before anything is written.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from diffris.errors import DiffrisError

MARKER = ".diffris-out.json"


class OutputError(DiffrisError):
    """An --out that the command may not write: another's folder, an input, or not a folder."""


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def allocated_memmap(path: Path, dtype, shape: tuple[int, ...]):
    """A new ``.npy`` file opened as a writable memmap, its blocks reserved at once: a full disk
    is an OSError here, not a SIGBUS when a page is written later."""
    import numpy as np

    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
    return array


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys, fixed indent), written atomically."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: Path, what: str) -> Any:
    """A JSON file, or a DiffrisError naming it and what it should hold."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DiffrisError(f"{path}: missing; expected {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DiffrisError(f"{path}: not valid JSON ({err}); expected {what}") from None


# --- folders a command owns ------------------------------------------------------------------


def absolute(path: Path) -> Path:
    """``path`` made absolute without following links, so ``..`` names the real parent."""
    return Path(os.path.abspath(path))


def check_inputs(out: Path, inputs: Iterable[Path | None], flag: str = "--out") -> None:
    """Refuse an ``out`` that equals, contains or lies inside one of ``inputs``."""
    target = absolute(out).resolve()
    for given in inputs:
        if given is None:
            continue
        source = absolute(given).resolve()
        if target == source or source in target.parents or target in source.parents:
            relation = "is" if target == source else "lies inside" if source in target.parents else "contains"
            raise OutputError(f"{flag} {out} {relation} the input {given}; write to a folder of its own")


def check_out(out: Path, command: str, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse an ``out`` that ``command`` may not (re)write: see the module docstring."""
    check_inputs(out, inputs)
    out = absolute(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"--out {out}: exists and is not a folder")
    owned_by(out, command)


def owned_by(folder: Path, command: str) -> None:
    """Raise unless ``folder`` is empty or was written by ``command`` and holds only its files."""
    if not any(folder.iterdir()):
        return
    marker = folder / MARKER
    try:
        record = json.loads(marker.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        raise OutputError(
            f"{folder}: exists and was not written by `diffris {command}` (no {MARKER}); "
            "refusing to overwrite it: choose another --out or delete it yourself"
        ) from None
    if record.get("command") != command:
        raise OutputError(
            f"{folder}: written by `diffris {record.get('command')}`, not `diffris {command}`; refusing to overwrite it"
        )
    foreign = next(foreign_files(folder, record.get("files", [])), None)
    if foreign is not None:
        raise OutputError(
            f"{foreign}: not written by `diffris {command}`; refusing to replace {folder} (move the file out first)"
        )


def foreign_files(folder: Path, patterns: list[str]):
    """Files under ``folder`` that match none of ``patterns`` (paths relative to ``folder``)."""
    known = set(patterns)
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_dir() or rel == MARKER or rel in known:
            continue
        if not any(fnmatch.fnmatchcase(rel, p) for p in patterns):
            yield path


def mark(folder: Path, command: str, files: list[str] | None = None) -> None:
    """Write the marker: ``files`` are patterns of what ``command`` writes (default: all there now)."""
    if files is None:
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    write_json(folder / MARKER, {"command": command, "files": files})


def partial_folder(out: Path, command: str) -> Path:
    """``<out>.partial``, cleared if a previous attempt of ``command`` left it (and only then)."""
    tmp = absolute(out).with_name(absolute(out).name + ".partial")
    if tmp.exists():
        if not tmp.is_dir():
            raise OutputError(f"{tmp}: exists and is not a folder; refusing to replace it")
        owned_by(tmp, command)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    mark(tmp, command, ["*"])  # claimed at once, so a failed attempt can be cleared by the next
    return tmp


def swap_in(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` to ``out``; the old ``out`` is removed only once ``tmp`` is there."""
    out = absolute(out)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def atomic_folder(out: Path, write: Callable[[Path], None], command: str, inputs: Iterable[Path | None] = ()) -> Path:
    """Call ``write(tmp)`` on a fresh folder next to ``out`` and move it in place only when
    complete; on any error the partial folder is removed and ``out`` is left as it was.
    ``out`` must be new, empty or an earlier output of ``command`` (see ``check_out``)."""
    check_out(out, command, inputs)
    tmp = partial_folder(out, command)
    try:
        write(tmp)
        mark(tmp, command)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return swap_in(tmp, out)
