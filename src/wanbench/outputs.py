"""Files a run will write, checked before anything is loaded: a mistake in a path must not cost a generation."""

from __future__ import annotations

import os
from pathlib import Path

from wanbench.errors import UserError


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse `path` for `flag` unless it can be written as a file: not a folder, under a folder that exists or can
    be made, and writable."""
    target = Path(path).expanduser()
    if target.is_dir():
        example = Path(path) / ("run.json" if flag == "--json" else "out.safetensors" if flag == "--save-latents"
                                else "out.mp4")
        raise UserError(f"{flag} {path} is a folder: give a file name, e.g. {example}")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is a file, not a folder: give a path in a folder")
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable here: give a path you can write")
    if parent == target.parent:  # the folder exists: write and remove a probe (root passes access(), not /proc)
        probe = target.with_name(f".{target.name}.{os.getpid()}.wanbench-probe")  # ranks probe at once
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or exc}): give a path you can "
                            "write") from None


def writable_folder(target: Path, what: str = "the report", flag: str = "--out") -> Path:
    """`target`, created and known to take files, or a UserError naming the fix (before any work is done)."""
    if target.exists() and not target.is_dir():
        raise UserError(f"cannot write {what} into {target}: it is a file: give a folder with {flag}")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / ".wanbench-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write {what} into {target}: {exc.strerror or exc}: give a writable folder "
                        f"with {flag}") from None
    return target
