"""Every strategy gives the single-process result (tiny, CPU, gloo); failures end cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import torch
from safetensors.torch import load_file

from wanbench.cli import main

BASE = ["generate", "--model", "tiny", "--steps", "3", "--device", "cpu"]


def run_cli(args: list[str], tmp_path, name: str, env: dict | None = None, timeout: float = 300):
    latents, record = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "wanbench.cli", *BASE, *args, "--save-latents", str(latents), "--json", str(record)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    return proc, latents, record


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    proc, latents, _ = run_cli([], tmp, "single")
    assert proc.returncode == 0, proc.stderr
    return load_file(latents)["latents"]


@pytest.mark.parametrize(
    "flags",
    [
        "--gpus 2 --cfg-parallel",
        "--gpus 2 --ulysses 2",
        "--gpus 2 --ulysses 2 --compile",
        "--gpus 2 --ulysses 2 --ulysses-exchange head-blocks",
        "--gpus 2 --ring 2",
        "--gpus 2 --ring 2 --compile",  # compiled graphs check the LSE strides of the attention op
        "--gpus 2 --ulysses 2 --fsdp dit,t5",
    ],
)
def test_strategy_matches_single_process(reference, tmp_path, flags):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc, latents, record = run_cli(flags.split(), tmp_path, "run", env={"TMPDIR": str(scratch)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = [p.name for p in scratch.iterdir() if p.name.startswith(("wanbench-", "torchelastic_"))]
    assert left == [], "a clean multi-process run leaves no temporary folder of its own or torchrun's"
    ours = load_file(latents)["latents"]
    rel = ((ours - reference).norm() / reference.norm()).item()
    assert rel < 1e-5, f"{flags}: relative latent error {rel:.2e}"
    result = json.loads(record.read_text())
    gpus = int(flags.split()[1]) if flags.startswith("--gpus") else 1
    assert len(result["memory"]["ranks"]) == gpus
    if gpus > 1:
        assert [r["rank"] for r in result["per_rank_phases"]] == list(range(gpus))
    head_blocks = any(n.startswith("Ulysses exchanges head blocks") for n in result["notes"])
    assert head_blocks == ("head-blocks" in flags)


def test_two_nodes_on_one_host_match_single_process(reference, tmp_path):
    """--nnodes 2: each node's wanbench starts its torchrun share; node 0's rank 0 writes the one record."""
    from wanbench.launch.process import free_port

    port = str(free_port())
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "wanbench.cli", *BASE, "--gpus", "2", "--cfg-parallel", "--nnodes", "2",
         "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", port,
         "--json", str(tmp_path / f"node{node}.json"), "--save-latents", str(tmp_path / f"node{node}.safetensors")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for node in (0, 1)]
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "node 0 writes the record" in outputs[1][0]
    assert not (tmp_path / "node1.json").exists()
    result = json.loads((tmp_path / "node0.json").read_text())
    assert [r["rank"] for r in result["per_rank_phases"]] == [0, 1]
    ours = load_file(tmp_path / "node0.safetensors")["latents"]
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-5


def test_a_node_whose_peers_never_come_ends_at_the_timeout_naming_the_rendezvous(tmp_path):
    from wanbench.launch.process import free_port

    proc, _, record = run_cli(["--gpus", "2", "--nnodes", "2", "--master-port", str(free_port()), "--timeout", "8"],
                              tmp_path, "alone", timeout=120)
    assert proc.returncode == 2
    assert "rendezvous was still waiting for all 2 nodes" in proc.stderr.strip().splitlines()[-1]
    assert json.loads(record.read_text())["status"] == "timeout"


@pytest.mark.parametrize("mode", ["group", "model"])
def test_offload_matches_single_process(reference, tmp_path, mode):
    latents = tmp_path / "offload.safetensors"
    assert main([*BASE, "--offload", mode, "--save-latents", str(latents)]) == 0
    ours = load_file(latents)["latents"]
    assert ((ours - reference).norm() / reference.norm()).item() < 1e-6


def test_group_offload_on_cuda_asks_diffusers_for_streams(monkeypatch, tiny_components):
    """What --offload group asks of diffusers on a GPU (not callable here): streams; on the CPU, whose backend has
    none, no streams (test_offload_matches_single_process runs that)."""
    import diffusers.hooks

    from wanbench.engine.offload import apply_offload

    calls = []
    monkeypatch.setattr(type(tiny_components.transformer), "enable_group_offload",
                        lambda self, **kw: calls.append(("expert", kw)))
    monkeypatch.setattr(diffusers.hooks, "apply_group_offloading", lambda module, **kw: calls.append(("leaf", kw)))
    apply_offload(tiny_components, "group", torch.device("cuda"))
    assert [c[0] for c in calls] == ["expert", "expert", "leaf", "leaf"]
    assert all(kw["use_stream"] and "record_stream" not in kw for _, kw in calls)
    calls.clear()
    apply_offload(tiny_components, "group", torch.device("cpu"))
    assert not any(kw["use_stream"] for _, kw in calls)


def test_offload_packs_host_tensors_into_slabs_keeping_values_keys_and_ties(monkeypatch, tiny_components):
    """--offload group on CUDA page-locks each module in a few slabs (registered in place: not callable here);
    the packing itself is checked on pageable slabs: same parameter objects, keys, values and tied embedding."""
    from wanbench.engine import offload

    encoder = tiny_components.text_encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    params = list(encoder.parameters())
    monkeypatch.setattr(offload, "SLAB_BYTES", 64 << 10)
    slabs = offload.pack_into_slabs(encoder)
    after = encoder.state_dict()
    assert len(slabs) > 1 and after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(a is b for a, b in zip(params, encoder.parameters(), strict=True))
    assert encoder.encoder.embed_tokens.weight is encoder.shared.weight
    starts = {s.data_ptr() for s in slabs}
    assert all(t.untyped_storage().data_ptr() in starts for t in encoder.parameters())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--gpus 2 --ulysses 3", "make the product equal --gpus"),
        ("--gpus 3 --strategy ulysses", "must divide the 4 attention heads"),
        ("--gpus 2 --ulysses 2 --offload group", "--offload is for one GPU"),
        ("--gpus 2 --nnodes 3", "make it a multiple of --nnodes"),
        ("--gpus 4 --nnodes 3", "make it a multiple of --nnodes"),
        ("--gpus 2 --node-rank 1", "number the nodes 0 to 0"),
        ("--nnodes 0", "bad --nnodes 0: use 1 or more"),
        ("--gpus 2 --ulysses 2 --attention math", "--attention math does not run under diffusers' sequence-parallel"),
        ("--gpus 2 --ulysses 2 --cache fbc:0.1", "--cache does not combine with Ulysses/ring yet"),
        ("--attention cudnn", "--attention cudnn needs a CUDA device: use --attention sdpa on cpu"),
        ("--max-gpu-memory 5", "--max-gpu-memory caps a CUDA GPU's memory, and this run is on the cpu"),
        ("--threads 100000", "bad --threads 100000: use 0 (torch's choice) or a number of threads per rank up to"),
        ("--weights /nonexistent-wanbench-weights", "no such folder; give 'random' or a Wan2.2 checkpoint folder"),
        ("--gpus 2 --cfg-parallel --master-port 70000", "bad --master-port 70000: give a port from 1 to 65535"),
        ("--gpus 2 --cfg-parallel --nnodes 2 --node-rank 1 --master-addr nosuchhost.invalid",
         "--master-addr nosuchhost.invalid: no such host from here"),
        ("--seed -1", "bad --seed -1: use a fixed seed"),
        ("--fsdp dit", "--fsdp shards across GPUs"),
        ("--offload model --offload-record-stream", "unrecognized arguments: --offload-record-stream"),
        ("--gpus 2 --strategy none", "--strategy none runs on one rank"),
        ("--gpus 2 --cfg-parallel --guidance 1", "needs classifier-free guidance"),
        ("--gpus 2 --strategy sideways", "bad --strategy"),
        ("--gpus 2 --cfg-batch", "unrecognized arguments: --cfg-batch"),
        ("--gpus 2 --ulysses 2 --ulysses-chunks 2", "unrecognized arguments: --ulysses-chunks"),
        ("--gpus 2 --cfg-parallel --ulysses-exchange head-blocks", "use it with --ulysses 2 or more"),
        ("--gpus 2 --ring 2 --ulysses-exchange head-blocks", "use it with --ulysses 2 or more and no --ring"),
        ("--gpus 2 --ulysses 2 --ulysses-exchange copy-engine", "invalid choice: 'copy-engine'"),
    ],
)
def test_impossible_parallel_settings_are_refused_up_front(capsys, flags, message):
    assert main([*BASE, *flags.split()]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_master_port_taken_on_node_0_is_refused_before_torchrun_starts(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main([*BASE, "--gpus", "2", "--cfg-parallel", "--master-port", port]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--master-port {port} is taken on this node" in err, err


def wanbench_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.parametrize(("fault", "status", "message"), [
    ("die:1", "failed", "rank 1 was killed by signal 9 (SIGKILL"),
    # the hung rank is named where it hangs (its stack asked for before the kill), the other where it waits for it
    ("hang:1", "timeout", "workers killed after the 25 s timeout; rank 0 at "),
])
def test_a_dying_or_hanging_rank_ends_the_run_cleanly(tmp_path, fault, status, message):
    marker = f"--tag fault-{fault.replace(':', '-')}-{time.time_ns()}"
    start = time.perf_counter()
    proc, _, record = run_cli(
        ["--gpus", "2", "--cfg-parallel", "--timeout", "25", *marker.split()], tmp_path, "fault",
        env={"WANBENCH_FAULT": fault},
    )
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and message in err[0], proc.stderr[-2000:]
    assert time.perf_counter() - start < 120
    result = json.loads(record.read_text())
    assert result["status"] == status and message in result["error"]
    if status == "timeout":
        assert "rank 1 at generate.py:" in result["error"] and " inject_fault" in result["error"], result["error"]
        assert ": give a larger --timeout (log: " in result["error"], result["error"]
    time.sleep(1.0)
    assert wanbench_processes(marker.split()[1]) == [], "orphan worker processes left behind"


def test_a_worker_writes_its_stacks_when_asked_and_goes_on(tmp_path):
    # asked (SIGUSR1) rather than killed: a dump on SIGTERM raced with torchrun's forwarded second SIGTERM
    from wanbench.launch.stacks import request_stacks, stacks_env, where_stuck

    env = {**os.environ, **stacks_env(tmp_path), "RANK": "3"}
    code = "from wanbench.launch.stacks import dump_stacks_on_request as d; d(); import time; time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "rank3.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        request_stacks(tmp_path)
        assert where_stuck(tmp_path) == "rank 3 at <string>:1 <module>"
        assert worker.poll() is None, "asking for the stacks must not end the worker"
    finally:
        worker.kill()
        worker.wait()


def test_a_killed_rank_is_named_at_its_innermost_wanbench_frame(tmp_path):
    # faulthandler's dump of a worker asked twice: a helper thread listed first, the main thread waiting in a
    # collective under wanbench's code, then the second dump.
    from wanbench.launch.stacks import where_stuck

    dump = """Thread 0x00007f01 (most recent call first):
  File "/usr/lib/python3.12/threading.py", line 359 in wait
  File "/usr/lib/python3.12/threading.py", line 1012 in _bootstrap

Current thread 0x00007f00 (most recent call first):
  File "/site/torch/distributed/distributed_c10d.py", line 4394 in all_gather
  File "/src/wanbench/engine/ulysses_heads.py", line 63 in ready
  File "/src/wanbench/engine/denoise.py", line 51 in denoise
  File "/src/wanbench/cli.py", line 428 in <module>
  File "<frozen runpy>", line 198 in _run_module_as_main
Current thread 0x00007f00 (most recent call first):
  File "/site/torch/other.py", line 1 in elsewhere
  File "<frozen runpy>", line 198 in _run_module_as_main
"""
    (tmp_path / "stacks-rank1.txt").write_text(dump)
    (tmp_path / "stacks-rank0.txt").write_text(
        'Current thread 0x1 (most recent call first):\n  File "/src/wanbench/engine/generate.py", line 297 in '
        'inject_fault\n  File "<frozen runpy>", line 198 in _run_module_as_main\n')
    (tmp_path / "stacks-rank2.txt").write_text("")  # a rank that was never signalled
    assert where_stuck(tmp_path) == ("rank 0 at generate.py:297 inject_fault; "
                                     "rank 1 at ulysses_heads.py:63 ready (in distributed_c10d.py:4394 all_gather)")


def test_a_failure_on_rank_0_alone_ends_the_run_with_its_record(tmp_path):
    # Rank 0 fails saving the video (its output folder is a file) while rank 1 waits to gather: the run
    # must end at once with the failure and what was measured, not stall until --timeout.
    start = time.perf_counter()
    proc, _, record = run_cli(["--gpus", "2", "--ulysses", "2", "--timeout", "100", "--output",
                               str(tmp_path / "video.mp4")], tmp_path, "save-fails",
                              env={"WANBENCH_FAULT": "fail-save:0"})
    assert proc.returncode == 2 and "injected failure while saving on rank 0" in proc.stderr.strip().splitlines()[-1]
    assert time.perf_counter() - start < 90
    result = json.loads(record.read_text())
    assert result["status"] == "failed" and result["phases"]["denoise_s"] > 0


def test_shutdown_after_a_failure_aborts_nccl_instead_of_waiting_for_peers(monkeypatch):
    from wanbench.launch import distributed

    calls = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "get_backend", lambda: "nccl")
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.dist.distributed_c10d, "_abort_process_group", lambda: calls.append("abort"))
    distributed.shutdown_distributed(clean=False)
    assert calls == ["abort"]
    calls.clear()
    distributed.shutdown_distributed(clean=True)
    assert calls == ["barrier", "destroy"]


def test_torch_device_count_untouched_in_single_process():
    # The CPU context-parallel shim is applied only inside gloo workers.
    assert torch.accelerator.device_count() == 0


def test_fsdp_loads_a_checkpoint_into_host_memory_and_matches_single_process(tmp_path, tiny_components):
    # Under --fsdp dit the experts are read into host memory and fully_shard moves them to the device
    # block by block; the result must be the single-process one from the same folder.
    from checkpoints import write_official_folder

    folder = str(write_official_folder(tiny_components, tmp_path / "official"))
    proc, single, _ = run_cli(["--weights", folder], tmp_path, "single")
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc, sharded, _ = run_cli(["--weights", folder, "--gpus", "2", "--ulysses", "2", "--fsdp", "dit"], tmp_path,
                               "fsdp")
    assert proc.returncode == 0, proc.stderr[-2000:]
    ref, ours = load_file(single)["latents"], load_file(sharded)["latents"]
    assert ((ours - ref).norm() / ref.norm()).item() < 1e-5


@pytest.mark.parametrize("n_stages", [2, 3])
def test_vae_stage_views_compose_to_the_whole_decoder(tiny_components, n_stages):
    from wanbench.engine.decode import decode_latents, normalised_to_vae_input
    from wanbench.engine.vae_pipeline import stage_decoder

    vae = tiny_components.vae
    latents = torch.randn(1, vae.config.z_dim, 3, 4, 6, generator=torch.Generator().manual_seed(0))
    reference = decode_latents(vae, latents)
    stages = [stage_decoder(vae.decoder, s, n_stages) for s in range(n_stages)]
    caches = [[None] * vae._cached_conv_counts["decoder"] for _ in stages]
    x = vae.post_quant_conv(normalised_to_vae_input(vae, latents))
    with torch.no_grad():
        chunks = []
        for i in range(latents.shape[2]):
            h = x[:, :, i:i + 1]
            for stage, cache in zip(stages, caches, strict=True):
                h = stage(h, feat_cache=cache, feat_idx=[0], first_chunk=i == 0)
            chunks.append(h)
    assert torch.equal(torch.clamp(torch.cat(chunks, 2), -1.0, 1.0), reference)
    assert sum(len(s.up_blocks) for s in stages) == len(vae.decoder.up_blocks)
    assert [len(s.up_blocks) for s in stages[1:]] == [1] * (n_stages - 1)  # later (costlier) blocks alone


def test_hybrid_with_vae_pipeline_matches_single_process_latents_and_frames(reference, tmp_path):
    """CFG 2 x Ulysses 2 on four ranks (the hybrid strategy) with the VAE decode pipelined over three of them."""
    import numpy as np

    frames, latents = {}, {}
    for name, flags in (("single", []), ("pipelined", ["--gpus", "4", "--strategy", "hybrid", "--vae-pipeline"])):
        out = tmp_path / f"{name}.npy"
        proc, saved, record = run_cli([*flags, "--output", str(out)], tmp_path, name)
        assert proc.returncode == 0, proc.stderr[-2000:]
        frames[name], latents[name] = np.load(out), load_file(saved)["latents"]
    rel = ((latents["pipelined"] - reference).norm() / reference.norm()).item()
    assert rel < 1e-5, f"hybrid: relative latent error {rel:.2e}"
    assert np.array_equal(frames["single"], frames["pipelined"])
    ranks = json.loads(record.read_text())["per_rank_phases"]
    # three stages on ranks 0-2 (without the flag only rank 0 decodes); rank 3 has no stage
    assert [r["vae_decode_s"] > 0 for r in ranks] == [True, True, True, False]
