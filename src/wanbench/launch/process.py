"""Child processes that always end: a timeout, and the whole process tree killed with them."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


def under_torchrun() -> bool:
    """True inside a worker started by torchrun or a scheduler that set the rendezvous variables."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def exit_process(code: int) -> None:
    """sys.exit, but a torchrun worker that finished cleanly ends without the interpreter's finalization: its
    results are written and its process group destroyed by then, and gloo's threads, still holding tensors, can
    abort that finalization ("terminate called without an active exception", SIGABRT: pytorch/pytorch#179291),
    turning a finished run into a crashed rank. A failed worker exits as usual, so that torchrun still sees the
    rank that failed first end first."""
    if code != 0 or not under_torchrun():
        sys.exit(code)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so a crashed runner leaves no orphans."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def kill_tree(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process and all its descendants, then SIGKILL whatever is left after grace_s."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)


@contextlib.contextmanager
def ends_within(timeout_s: float, who: str):
    """A single-process run bounded by --timeout as a worker tree is: past it, one line naming where the main
    thread was, and exit status 2 (the main thread may be inside a kernel or LoadGen, which no exception stops)."""
    import threading
    import traceback

    def expire() -> None:
        frame = sys._current_frames().get(threading.main_thread().ident)
        stack = traceback.extract_stack(frame) if frame else []
        ours = [f for f in stack if f"{os.sep}wanbench{os.sep}" in f.filename]
        at = (ours or stack or [None])[-1]
        where = f"; it was at {Path(at.filename).name}:{at.lineno} in {at.name}" if at else ""
        print(f"wanbench: error: {who} was killed after the {timeout_s:g} s timeout{where}: give a larger --timeout",
              file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(timeout_s, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@dataclass(frozen=True)
class Finished:
    returncode: int
    timed_out: bool
    elapsed_s: float


def run_with_timeout(
    cmd: list[str], timeout_s: float | None, env: dict[str, str] | None = None, stdout=None, stderr=None,
    on_start: Callable[[int], None] | None = None, on_tick: Callable[[float], None] | None = None,
    before_kill: Callable[[], None] | None = None,
) -> Finished:
    """Run cmd in its own session; past timeout_s kill its whole tree. Ctrl-C also kills the tree.

    on_start(pid) runs once the process exists; on_tick(elapsed_s) about once a second while it runs;
    before_kill() at the timeout, before the tree is killed (to ask the workers where they are).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        if on_start is not None:
            on_start(proc.pid)
        while True:
            elapsed = time.perf_counter() - start
            if timeout_s is not None and elapsed >= timeout_s:
                if before_kill is not None:
                    before_kill()
                kill_tree(proc.pid)
                proc.wait()
                return Finished(proc.returncode, True, time.perf_counter() - start)
            wait_s = 1.0 if timeout_s is None else max(0.01, min(1.0, timeout_s - elapsed))
            try:
                returncode = proc.wait(timeout=wait_s)
                return Finished(returncode, False, time.perf_counter() - start)
            except subprocess.TimeoutExpired:
                if on_tick is not None:
                    on_tick(time.perf_counter() - start)
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait()


def last_error_line(log: Path) -> str:
    """The most telling line of a worker log: a wanbench error if any, else the last error line, else the last."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    lines = [line for line in lines if "ChildFailedError" not in line]  # torchrun's wrapper says nothing
    for marker in ("wanbench: error:", "Error:", "error:"):
        hits = [line for line in lines if marker in line]
        if hits:
            return hits[-1][:300]
    return (lines[-1] if lines else "no output")[:300]


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def exit_words(returncode: int) -> str:
    """'was killed by signal 9 (SIGKILL; often the host's out-of-memory killer)' or 'exited with code 1'."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = "unknown signal"
    why = "; often the host's out-of-memory killer" if -returncode == signal.SIGKILL else ""
    return f"was killed by signal {-returncode} ({name}{why})"


def torchrun_root_cause(log: Path) -> str | None:
    """torchrun's first failed rank in words, from its failure summary in `log`: 'rank 1 was killed by signal 9
    (SIGKILL...)' or 'rank 0 exited with code 1'; None where the log has no summary."""
    try:
        match = _ROOT_CAUSE.search(log.read_text(errors="replace"))
    except OSError:
        return None
    return f"rank {match[1]} {exit_words(int(match[2]))}" if match else None


def describe_exit(returncode: int, log: Path) -> str:
    """How a worker (or torchrun's group of them) ended, with the most telling line of its log."""
    root = torchrun_root_cause(log)
    if root and "killed by signal" in root:
        return f"{root} (log: {log})"
    return f"{root or 'the worker ' + exit_words(returncode)} (log: {log}): {last_error_line(log)}"


def quiet_libraries() -> None:
    """Library chatter (experimental-API notices, dtype hints) is not for our users' terminals. Set through the
    libraries' own variables, so that nothing is imported for it and worker processes inherit it."""
    import logging

    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # diffusers and transformers read their variables when first imported; where they already are, their loggers
    # decide. torchao (which diffusers imports where installed) warns of kernels built for other GPUs and of
    # types torch now calls deprecated.
    for name in ("torch.utils._pytree", "torchao", "diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for workers: ours, NVLink multicast off (shared hosts), no tokenizer threads."""
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")
    env.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    env.setdefault("NVSHMEM_DISABLE_NVLS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env
