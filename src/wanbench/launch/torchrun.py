"""Start `wanbench <verb>` as N torchrun workers (one per GPU, or gloo processes on the CPU)."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from wanbench.config import ParallelConfig
from wanbench.errors import UserError
from wanbench.launch.process import Finished, child_env, free_port, run_with_timeout
from wanbench.launch.stacks import keep_stacks_if, request_stacks, stacks_env


def torchrun_command(
    argv: list[str], parallel: ParallelConfig, log_dir: Path, port: int | None = None, module: str = "wanbench.cli"
) -> list[str]:
    """torchrun with our rendezvous settings, running `python -m module argv` in each worker; its own files go to
    `log_dir` (by default it leaves a torchelastic_* folder in the temporary directory per run), which the caller
    removes."""
    nproc = parallel.gpus // parallel.nnodes
    master_port = port if port is not None else parallel.master_port
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", f"--nnodes={parallel.nnodes}", f"--node-rank={parallel.node_rank}",
        f"--master-addr={parallel.master_addr}", f"--master-port={master_port}", "--max-restarts=0",
        f"--log-dir={log_dir}", "-m", module, *argv,
    ]


def check_rendezvous(parallel: ParallelConfig, port_given: bool = True) -> None:
    """Refuse a rendezvous that cannot form before torchrun starts (it would wait until --timeout): a
    --master-addr that does not resolve, or node 0's --master-port, where it is the one used, taken on this host."""
    try:
        socket.getaddrinfo(parallel.master_addr, parallel.master_port)
    except (OSError, UnicodeError):
        raise UserError(f"--master-addr {parallel.master_addr}: no such host from here; give node 0's address or "
                        "host name") from None
    if parallel.node_rank != 0 or not port_given:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as torch's store binds: TIME_WAIT is fine
        try:
            probe.bind(("", parallel.master_port))
        except OSError:
            raise UserError(f"--master-port {parallel.master_port} is taken on this node, where node 0 serves the "
                            "rendezvous: give a free port (the same on every node)") from None


def launch_workers(
    argv: list[str], parallel: ParallelConfig, timeout_s: float | None, log_path: Path, auto_port: bool
) -> Finished:
    """Run the workers to completion or timeout; their stderr goes to log_path, stdout passes through, and
    killed workers leave their stacks in log_path's folder/stacks (launch/stacks.py)."""
    port = free_port() if auto_port and parallel.nnodes == 1 else None
    check_rendezvous(parallel, port_given=port is None)
    own = log_path.parent / "torchrun"
    cmd = torchrun_command(argv, parallel, own, port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stacks = log_path.parent / "stacks"
    try:
        with open(log_path, "w") as log:
            done = run_with_timeout(cmd, timeout_s, env=child_env({"OMP_NUM_THREADS": "1", **stacks_env(stacks)}),
                                    stderr=log, before_kill=lambda: request_stacks(stacks))
    finally:
        shutil.rmtree(own, ignore_errors=True)
    keep_stacks_if(done.timed_out, stacks)
    return done
