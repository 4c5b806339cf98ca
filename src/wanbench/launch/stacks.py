"""Where a killed worker was: at a timeout the launcher asks each worker for its Python stacks (SIGUSR1, which
faulthandler answers even while the thread is stuck in C, e.g. a collective or a device barrier), waits for the
dumps, and only then kills the tree; it names each rank's innermost wanbench frame in the one-line error.

The dump has a signal of its own because a dump on SIGTERM races with death: torchrun forwards the launcher's
SIGTERM, and faulthandler drops a second signal that arrives mid-dump and lets it kill the worker, leaving an
empty file. Launchers set WANBENCH_STACKS_DIR in the workers' environment (`stacks_env`); workers call
`dump_stacks_on_request` at start, which also leaves their pid there for `request_stacks`. (Without it, a hang
leaves nothing but torchrun's own shutdown in the workers' log.)
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import shutil
import signal
import time
from pathlib import Path
from typing import TextIO

STACKS_DIR_ENV = "WANBENCH_STACKS_DIR"
_open_files: list[TextIO] = []  # faulthandler writes to the descriptor: keep the file open for the process's life
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def stacks_env(folder: Path) -> dict[str, str]:
    """The environment entry that makes the workers started with it dump their stacks into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    return {STACKS_DIR_ENV: str(folder)}


def keep_stacks_if(timed_out: bool, folder: Path) -> None:
    """The dumps matter only after a timeout (the one time they are asked for); otherwise the folder goes."""
    if not timed_out:
        shutil.rmtree(folder, ignore_errors=True)


def dump_stacks_on_request() -> None:
    """In a worker started with `stacks_env`: on SIGUSR1 write every thread's stack to stacks-rank<RANK>.txt and
    go on; the worker's pid goes to rank<RANK>.pid for the launcher."""
    folder = os.environ.get(STACKS_DIR_ENV)
    if not folder or not hasattr(faulthandler, "register"):
        return
    rank = int(os.environ.get("RANK", "0"))
    stacks = open(Path(folder) / f"stacks-rank{rank}.txt", "w")  # noqa: SIM115
    _open_files.append(stacks)
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True, chain=False)
    (Path(folder) / f"rank{rank}.pid").write_text(str(os.getpid()))


def request_stacks(folder: Path, wait_s: float = 3.0) -> None:
    """Ask every worker that left its pid in `folder` for its stacks, and wait (at most wait_s) until each
    has written them: call before killing the workers."""
    asked = []
    for pid_file in folder.glob("rank*.pid"):
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError, OSError):
            os.kill(int(pid_file.read_text()), signal.SIGUSR1)
            asked.append(folder / f"stacks-{pid_file.stem}.txt")
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not all(_written(path) for path in asked):
        time.sleep(0.05)
    time.sleep(0.1)  # a dump is several writes: let the last ones land


def _written(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def main_thread_frames(dump: str) -> list[tuple[str, int, str]]:
    """(path, line, function) of the main thread's frames, innermost first, from one faulthandler dump (the
    main thread is the one whose outermost frame is a module's top level)."""
    threads: list[list[tuple[str, int, str]]] = []
    for line in dump.splitlines():
        if line.startswith(("Thread ", "Current thread ")):
            if threads and threads[-1] and _is_main(threads[-1]):
                break  # a second dump after the first
            threads.append([])
        elif (frame := _FRAME.match(line)) and threads:
            threads[-1].append((frame["path"], int(frame["line"]), frame["func"]))
    main = [t for t in threads if t and _is_main(t)]
    return main[0] if main else next((t for t in threads if t), [])


def _is_main(frames: list[tuple[str, int, str]]) -> bool:
    return frames[-1][2] in ("<module>", "_run_module_as_main")


def where(frames: list[tuple[str, int, str]]) -> str:
    """`file.py:LINE func` of the innermost wanbench frame, with the innermost frame of all after it when that
    lies outside wanbench (the library call it waited in)."""
    if not frames:
        return "no stack"
    ours = next((f for f in frames if f"{os.sep}wanbench{os.sep}" in f[0]), None)
    if ours is None or ours == frames[0]:
        return _short(ours or frames[0])
    return f"{_short(ours)} (in {_short(frames[0])})"


def _short(frame: tuple[str, int, str]) -> str:
    return f"{Path(frame[0]).name}:{frame[1]} {frame[2]}"


def where_stuck(folder: Path) -> str:
    """'rank 0 at X; rank 1 at Y' from the dumps in `folder`, '' when no worker wrote one."""
    ranks = sorted(int(p.stem.removeprefix("stacks-rank")) for p in folder.glob("stacks-rank*.txt"))
    parts = []
    for rank in ranks:
        frames = main_thread_frames((folder / f"stacks-rank{rank}.txt").read_text(errors="replace"))
        if frames:
            parts.append(f"rank {rank} at {where(frames)}")
    return "; ".join(parts)


def timeout_error(who: str, timeout_s: float, log: Path, stacks: Path, nnodes: int = 1,
                  fix: str = "give a larger --timeout") -> str:
    """The one line of a run killed at its timeout: what was killed, where each rank was, the fix, the log."""
    at = where_stuck(stacks) if stacks.is_dir() else ""
    if not at and nnodes > 1:  # no worker left a stack: torchrun never started them
        at = (f"no worker started: the rendezvous was still waiting for all {nnodes} nodes (run the same command "
              "on each node with its --node-rank, and check --master-addr and --master-port)")
        fix = ""
    where, fix = ("; " + at if at else ""), (": " + fix if fix else "")
    return f"{who} killed after the {timeout_s:g} s timeout{where}{fix} (log: {log})"
