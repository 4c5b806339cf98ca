"""Command line: parses arguments into the config dataclasses and calls one module per verb."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from wanbench import __version__
from wanbench.config import MAX_STEPS, MAX_TIMEOUT_S, OFFICIAL_INSTALL
from wanbench.errors import UserError
from wanbench.presets import PRESETS


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as a UserError (one line, exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def add_generate_arguments(p: argparse.ArgumentParser, mlperf: bool = False) -> None:
    """generate's flags; `mlperf` leaves out those that write files per video and names MLPerf's defaults."""
    default = "MLPerf's reference for a14b, {a14b}; else the preset's" if mlperf else "the preset's; a14b: {a14b}"
    p.add_argument("--model", default="a14b", help=f"model preset: {', '.join(PRESETS)} (default a14b)")
    p.add_argument("--engine", default="wanbench", choices=["wanbench", "official", "diffusers"],
                   help=f"wanbench (default); official: the Wan team's WanT2V.generate, unmodified "
                   f"({OFFICIAL_INSTALL}); diffusers: stock WanPipeline (with --offload model|group or --ulysses N)")
    p.add_argument("--weights", default="random", help="random, or a diffusers / official Wan2.2 folder")
    p.add_argument("--size", default=None,
                   help=f"WIDTH*HEIGHT, e.g. 832*480 (default: {default.format(a14b='1280*720')})")
    p.add_argument("--frames", type=int, default=None, help="4n+1 frames (default: the model preset's; a14b: 81)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (default: {default.format(a14b=20 if mlperf else 40)})")
    p.add_argument("--seed", type=int, default=None, help="noise seed (default 42)")
    p.add_argument("--prompt", default=None, help="text prompt (default: a fixed example prompt)")
    p.add_argument("--negative-prompt", default=None, help="default: the official one; '' for none")
    p.add_argument("--guidance", default=None,
                   help="HIGH,LOW guidance scales, or one for both (default: the preset's; a14b: 4.0,3.0)")
    p.add_argument("--shift", type=float, default=None, help="flow shift (default: the model preset's; a14b: 12.0)")
    p.add_argument("--boundary", type=float, default=None,
                   help="the high-noise expert runs while t >= boundary*1000 (default: the preset's; a14b: 0.875)")
    p.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="experts and text encoder (default bfloat16; the tiny presets float32)")
    p.add_argument("--vae-dtype", default=None, choices=["bfloat16", "float16", "float32"],
                   help="VAE decode (default float32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per rank (default: torch's choice; the same for every run you compare)")
    p.add_argument("--attention", default="auto",
                   help="auto (on a GPU the fastest, timed there; sdpa on a CPU), cudnn, flash, sdpa, efficient, math, "
                   "or fa4 (FlashAttention 4's CuTe kernel, pip install flash-attn-4)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="fused projections + regional torch.compile (default: on for CUDA where measured faster)")
    p.add_argument("--vae-pipeline", action=argparse.BooleanOptionalAction, default=None,
                   help="several GPUs: VAE decode as a layer pipeline over up to 3 ranks (same math; default on)")
    p.add_argument("--cache", default="none", help="APPROXIMATE step caching: none or fbc:THRESHOLD")
    p.add_argument("--fp8", default="none",
                   help="APPROXIMATE: none, linear (block linear layers through torchao, per-row scales; compute "
                   "capability 8.9+; pip install 'wanbench[fp8]'), attention (self-attention through cuDNN's FP8 SDPA; "
                   "Hopper+; 'wanbench[fp8-attention]'; under Ulysses with --ulysses-exchange head-blocks) or all; "
                   "compiled by default (a few minutes, once per process). Numerical error against exact: "
                   "benchmarks/RESULTS.md, 'FP8 modes'")
    if not mlperf:
        p.add_argument("--output", default="none", help="none, or a path ending in .mp4, .gif or .npy")
    off = p.add_argument_group("official engine (--engine official; offload_model is --offload model, t5_cpu "
                               "--t5-cpu, dit_fsdp/t5_fsdp --fsdp, ulysses_size --ulysses)")
    off.add_argument("--convert-model-dtype", action="store_true", default=None,
                     help="convert the experts to the run's dtype, bfloat16 for a14b (generate.py's "
                     "--convert_model_dtype)")
    off.add_argument("--init-on-cpu", action=argparse.BooleanOptionalAction, default=None,
                     help="WanT2V's init_on_cpu: experts start in host memory and swap in at each expert switch "
                     "(default on, as generate.py; the official code turns it off under FSDP or Ulysses)")
    off.add_argument("--official-code", default=None,
                     help="a Wan2.2 checkout (the folder holding wan/) instead of the installed wan22 package")
    if not mlperf:
        p.add_argument("--json", default=None, help="write the RunResult JSON here")
        p.add_argument("--save-latents", default=None, help="write the final latents (.safetensors)")
    p.add_argument("--tag", default="", help="free-form label stored with the result")
    par = p.add_argument_group("parallelism and memory")
    par.add_argument("--gpus", type=int, default=1, help="GPUs (or CPU processes) for one generation (default 1)")
    par.add_argument("--strategy", default="auto",
                     help="auto (default: CFG parallel, then Ulysses), none, cfg, ulysses, ring or hybrid")
    par.add_argument("--cfg-parallel", action="store_true", help="guidance branches on two ranks")
    par.add_argument("--ulysses", type=int, default=1, help="Ulysses sequence-parallel degree")
    par.add_argument("--ring", type=int, default=1, help="ring-attention sequence-parallel degree")
    par.add_argument("--ulysses-exchange", default="all-to-all", choices=["all-to-all", "head-blocks"],
                     help="Ulysses exchange: diffusers' all-to-all (default), or head blocks straight into place "
                          "(fewer copies; the one under which --attention fa4 and FP8 attention run)")
    par.add_argument("--fsdp", default="", help="shard with FSDP2: dit, t5 or dit,t5")
    par.add_argument("--t5-cpu", action="store_true", help="keep the text encoder on the CPU")
    par.add_argument("--offload", default="none", help="single GPU: none, model or group")
    par.add_argument("--max-gpu-memory", dest="max_gpu_memory_gb", type=float, default=None,
                     help="cap device memory (GB)")
    par.add_argument("--nnodes", type=int, default=1, help="nodes; run the same command on each (default 1)")
    par.add_argument("--node-rank", type=int, default=0, help="this node's number, 0 to nnodes-1")
    par.add_argument("--master-addr", default="127.0.0.1", help="node 0's address (default 127.0.0.1)")
    par.add_argument("--master-port", type=int, default=None, help="default: a free port (one node)")
    par.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed")


# generate's flags that are settings, named as a suite file names them (--json, --timeout, ... are not)
SETTING_FLAGS = (
    "model", "engine", "weights", "size", "frames", "steps", "seed", "prompt", "negative_prompt", "guidance", "shift",
    "boundary", "dtype", "vae_dtype", "device", "threads", "attention", "output", "compile", "vae_pipeline", "cache",
    "fp8", "tag", "convert_model_dtype", "init_on_cpu", "official_code", "gpus", "dp", "strategy", "cfg_parallel",
    "ulysses", "ulysses_exchange", "ring", "fsdp", "t5_cpu", "offload", "max_gpu_memory_gb", "nnodes", "node_rank",
    "master_addr", "master_port",
)


def settings_from_args(args: argparse.Namespace) -> dict:
    """The generate flags as flat settings; None where a flag was not given (mlperf alone has --dp)."""
    return {key: getattr(args, key, None) for key in SETTING_FLAGS}


def config_from_args(args: argparse.Namespace):
    from wanbench.settings import config_from_settings

    return config_from_settings(settings_from_args(args))


def check_timeout(seconds: float) -> None:
    if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN and infinity too
        raise UserError(f"bad --timeout {seconds:g}: give a positive number of seconds, up to {MAX_TIMEOUT_S:g}")


def cmd_generate(args: argparse.Namespace, argv: list[str]) -> int:
    from wanbench.outputs import check_output_file

    for flag, path, suffix in (("--json", args.json, ".json"), ("--save-latents", args.save_latents, ".safetensors")):
        if path:
            check_output_file(path, flag)
            if not path.endswith(suffix):  # a typo must not overwrite a suite, a video or a results database
                raise UserError(f"bad {flag} {path}: give a path ending in {suffix}")
    check_timeout(args.timeout)
    config = config_from_args(args)
    from wanbench.launch.process import under_torchrun

    if not under_torchrun():  # in a worker, its session checks (and records the notes)
        check_and_note(config)
        if config.parallel.gpus > 1 or config.parallel.nnodes > 1:
            return launch_generate(args, argv, config)
    from wanbench.engine.generate import generate
    from wanbench.launch.distributed import shutdown_distributed
    from wanbench.launch.process import ends_within

    rank = int(os.environ.get("RANK", "0"))
    generation = None
    # one process: bounded here; under torchrun, the parent kills the worker tree at --timeout
    bound = contextlib.nullcontext() if under_torchrun() else ends_within(args.timeout, "the generation")
    try:
        with bound:
            generation = generate(config, progress=sys.stderr.isatty(), timeout_s=args.timeout)
        if rank == 0:  # before leaving the process group, which may stall after a failure
            write_outputs(generation, args)
    finally:
        shutdown_distributed(clean=generation is not None and generation.result.status == "ok")
    result = generation.result
    if result.status != "ok":
        raise UserError(result.error or "generation failed")
    if rank == 0:
        print_summary(result)
    return 0


def check_and_note(config) -> None:
    """Every rule the run must pass (engine/parallel.py check_runnable), before any worker starts or anything
    loads; what runs but is unofficial is said here once (the record keeps it too)."""
    from wanbench.engine.parallel import check_runnable

    for note in check_runnable(config).notes:
        print(f"wanbench: note: {note}", file=sys.stderr)


def write_outputs(generation, args: argparse.Namespace) -> None:
    """The record (--json) and the final latents (--save-latents), written by rank 0."""
    if args.json:
        generation.result.write_json(args.json)
    if args.save_latents and generation.latents is not None:
        from safetensors.torch import save_file

        save_file({"latents": generation.latents.detach().float().cpu().contiguous()}, args.save_latents)


def launch_generate(args: argparse.Namespace, argv: list[str], config) -> int:
    """Parent of a multi-process generation: torchrun, bounded by --timeout, a record kept either way."""
    import shutil
    import tempfile

    from wanbench.launch.process import describe_exit
    from wanbench.launch.stacks import timeout_error
    from wanbench.launch.torchrun import launch_workers
    from wanbench.result import RunResult

    workdir = Path(tempfile.mkdtemp(prefix="wanbench-"))  # removed after a clean run; kept for its log otherwise
    json_path = Path(args.json) if args.json else workdir / "run.json"
    worker_argv = [*argv, "--json", str(json_path)] if not args.json else list(argv)
    log = workdir / "workers.log"
    try:
        done = launch_workers(worker_argv, config.parallel, args.timeout, log, auto_port=args.master_port is None)
    except KeyboardInterrupt:  # the workers are gone and nothing was measured: their folder goes with them
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    result = RunResult.from_dict(json.loads(json_path.read_text())) if json_path.exists() else None
    if done.returncode == 0 and not done.timed_out and (
            (result is not None and result.status == "ok") or config.parallel.node_rank != 0):
        shutil.rmtree(workdir, ignore_errors=True)
        if config.parallel.node_rank != 0:
            # rank 0, which writes the record and the video, runs on node 0; its workers here ended cleanly
            print(f"ok: node {config.parallel.node_rank}'s workers finished; node 0 writes the record and the video")
        return 0
    result = result or RunResult(config=config.to_dict())
    if done.timed_out:
        result.status, result.error = "timeout", timeout_error("workers", args.timeout, log, workdir / "stacks",
                                                             config.parallel.nnodes)
    elif done.returncode != 0:
        ended = describe_exit(done.returncode, log)
        if result.status != "ok" and result.error:
            # A rank killed by a signal is the cause, and what the survivors recorded its consequence;
            # otherwise the failed rank's own record says best why it failed.
            ended = (f"{ended}; then {result.error[:200]}" if "killed by signal" in ended else
                     f"{result.error}; {ended.split(' (log: ')[0]} (log: {log})")
        result.status = result.status if result.status != "ok" else "failed"
        result.error = ended
    result.write_json(json_path)
    raise UserError(result.error or "generation failed")


def print_summary(result) -> None:
    p = result.phases
    for note in result.notes:  # approximate modes and unofficial settings, said where the user looks
        if note.startswith("APPROXIMATE"):
            print(f"note: {note}")
    print(
        f"ok ({_engine_named(result)}): total {p['total_s']:.2f} s = load {p['load_s']:.2f}"
        + (f" + compile {p['compile_s']:.2f}" if p.get("compile_s") else "")
        + f" + text {p['text_encode_s']:.2f} + denoise "
        f"{p['denoise_s']:.2f} ({len(p['step_s'])} steps) + vae {p['vae_decode_s']:.2f} + save {p['save_s']:.2f}"
        f" + other {p['other_s']:.2f}" + (f"; wrote {result.output}" if result.output else "")
    )


def _engine_named(result) -> str:
    engine = result.env.get("engine") or {}
    return f"{engine.get('name', 'wanbench')} engine: {engine.get('version', 'version unknown')}"


def cmd_env(args: argparse.Namespace, argv: list[str]) -> int:
    from wanbench.measure.env import capture_environment

    env = capture_environment()
    if args.measure_peak:
        from wanbench.measure.peak import measure_matmul_tflops

        env["measured_peak_bf16_tflops"] = measure_matmul_tflops()
    print(json.dumps(env, indent=2))
    return 0


def cmd_report(args: argparse.Namespace, argv: list[str]) -> int:
    from wanbench.report import write_report

    if args.peak_tflops is not None and not args.peak_tflops > 0:
        raise UserError(f"bad --peak-tflops {args.peak_tflops:g}: give the GPU's peak dense bf16 TFLOP/s, e.g. 989")
    paths = write_report(args.results, args.out, peak_tflops=args.peak_tflops,
                         gpu_hour_price=_price(args.gpu_hour_price))
    print("\n".join(str(p) for p in paths))
    return 0


def cmd_compare(args: argparse.Namespace, argv: list[str]) -> int:
    from wanbench.analysis.compare import compare, compare_mlperf
    from wanbench.report.write import load_records
    from wanbench.store import ResultsStore

    base, base_folder = load_records(args.base)
    new, new_folder = load_records(args.new)
    for flag, value in (("--max-slowdown", args.max_slowdown), ("--min-seconds", args.min_seconds),
                        ("--min-memory-gb", args.min_memory_gb)):
        if not value >= 0:
            raise UserError(f"bad {flag} {value:g}: give 0 or more")
    changes = compare(base, new, args.max_slowdown, args.min_seconds, args.max_slowdown, args.min_memory_gb)
    if args.allow_missing:
        changes = [c for c in changes if not c.missing]
    with ResultsStore(base_folder) as b, ResultsStore(new_folder) as n:
        changes += compare_mlperf(b.mlperf_results(), n.mlperf_results(), args.max_slowdown, args.min_seconds)
    if not [c for c in changes if not c.missing]:
        raise UserError("no configuration appears in both result sets: compare runs of the same suite")
    for c in changes:
        t = f"{c.time_change:+.1%}" if c.time_change is not None else "n/a"
        m = f"{c.peak_change:+.1%}" if c.peak_change is not None else "n/a"
        e = f" energy {c.energy_change:+.1%}" if c.energy_change is not None else ""
        print(f"{c.verdict:10s} time {t:>7s} memory {m:>7s}{e}  {c.label}"
              + (f"  ({c.reason})" if c.reason else ""))
    regressions, minor = sum(c.regression and not c.missing for c in changes), sum(c.below_floor for c in changes)
    missing = sum(c.missing for c in changes)
    print(f"{regressions} regression(s) in {len(changes) - missing} compared configuration(s)"
          + (f"; {missing} missing in NEW" if missing else "")
          + (f"; {minor} slower by less than the floor (not counted)" if minor else ""))
    regressions += missing
    return 1 if regressions else 0


def cmd_check(args: argparse.Namespace, argv: list[str]) -> int:
    from wanbench.analysis.check import check_table

    if args.peak_tflops is not None and not (math.isfinite(args.peak_tflops) and args.peak_tflops > 0):
        raise UserError(f"bad --peak-tflops {args.peak_tflops:g}: give the GPU's peak dense bf16 TFLOP/s, e.g. 989")
    if args.json:
        from wanbench.outputs import check_output_file

        check_output_file(args.json, "--json")
    rows = check_table(args.table, peak_override=args.peak_tflops)
    for r in rows:
        mfu = f"{r['implied_mfu']:.0%}" if r["implied_mfu"] is not None else "n/a"
        print(f"line {r['line']}: {r['model']} {r['width']}x{r['height']}x{r['frames']} {r['steps']} steps on "
              f"{r['num_gpus']}x {r['gpu']} in {r['seconds']} s -> {r['flops']:.3e} FLOP, "
              f"{r['implied_tflops_per_gpu']:.0f} TFLOP/s per GPU, MFU {mfu}: {r['verdict'].upper()}")
    if args.json:
        Path(args.json).expanduser().parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).expanduser().write_text(json.dumps(rows, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace, argv: list[str]) -> int:
    import dataclasses
    import time

    from wanbench.bench.runner import check_suite, run_suite
    from wanbench.bench.suite import check_bounds, default_preset, expand, load_suite_file, preset_suite
    from wanbench.outputs import writable_folder

    if args.suite and args.preset:
        raise UserError("give a suite file or --preset, not both")
    suite = load_suite_file(args.suite) if args.suite else preset_suite(args.preset or default_preset())
    overrides = {k: v for k, v in (("warmup", args.warmup), ("warmup_steps", args.warmup_steps),
                                   ("repeats", args.repeats), ("cooldown_s", args.cooldown),
                                   ("timeout_s", args.timeout), ("sample_interval_s", args.sample_interval))
                 if v is not None}
    suite = dataclasses.replace(suite, **overrides)
    check_bounds(suite, as_flags=True)  # the file's own values were checked as it was read
    _price(args.gpu_hour_price)
    check_suite(suite)  # a suite none of whose configurations can run ends here, before any worker starts
    out = Path(args.out) if args.out else Path("wanbench-results") / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (args.resume or args.retry_failed) and not ((out / "results.db").is_file() or (out / "runs.jsonl").is_file()):
        flag = "--retry-failed" if args.retry_failed else "--resume"
        raise UserError(f"{flag} continues a suite, but {out} holds no results: give --out the folder of the run "
                        "to continue")
    writable_folder(out, "results", "--out")
    print(f"suite {suite.name}: results in {out}", file=sys.stderr)
    for note in suite.notes:
        print(f"wanbench: note: {note}", file=sys.stderr)
    try:
        # A SIGTERM (a scheduler ending the job, `kill`) is handled as Ctrl-C: what finished is kept and reported.
        signal.signal(signal.SIGTERM, _interrupt)
        summary = run_suite(suite, out, resume=args.resume or args.retry_failed, retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        again = ["wanbench", *argv] + ([] if args.out else ["--out", str(out)]) + (
            [] if args.resume or args.retry_failed else ["--resume"])
        print(f"wanbench: interrupted; what finished is kept in {out}. Continue with: {shlex.join(again)}",
              file=sys.stderr)
        if not args.no_report and (out / "results.db").exists():
            _report_what_finished(out, f"INTERRUPTED: the suite {suite.name} was stopped before it finished; this "
                                       f"report holds the configurations that ran ({len(expand(suite))} in the "
                                       f"suite). Continue with: {shlex.join(again)}")
        return 130
    rate = summary["success_rate"]
    print(
        f"suite {summary['suite']}: {summary['configs']} configurations run ({summary['configs_skipped']} "
        f"skipped), {summary['runs_ok']}/{summary['runs']} runs ok"
        + (f" ({rate:.0%})" if rate is not None else "")
        + f", wall {summary['wall_s']:.1f} s, cooldown {summary['cooldown_s']:.1f} s, loading "
        f"{summary['load_s']:.1f} s"
    )
    if not args.no_report:
        from wanbench.report import write_report

        paths = write_report(out, gpu_hour_price=args.gpu_hour_price)
        print("report: " + ", ".join(str(p) for p in paths))
    if summary["runs"] and not summary["runs_ok"]:
        print(f"wanbench: no run succeeded; the report's 'Flags and failures' says why ({out})", file=sys.stderr)
        return 1
    return 0


def _price(value: float | None) -> float | None:
    if value is not None and not (value > 0 and value < float("inf")):
        raise UserError(f"bad --gpu-hour-price {value:g}: give the price of one GPU for one hour, e.g. 3.5")
    return value


def _refuse_a_suites_folder(out: Path) -> None:
    """MLPerf runs gather in their own folder (a new loadgen-N each); a bench suite's folder is not theirs."""
    if not ((out / "results.db").is_file() or (out / "runs.jsonl").is_file()):
        return
    from wanbench.store import ResultsStore

    with ResultsStore(out) as store:
        suites = sorted({r.get("suite") for r in store.runs()} - {None})
    others = [s for s in suites if not s.startswith("mlperf-")]
    if others:
        raise UserError(f"{out} holds the results of suite {', '.join(others)} (wanbench bench): give mlperf a "
                        "--out of its own")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _report_what_finished(out, preface: str) -> None:
    from wanbench.report import write_report

    try:
        paths = write_report(out, preface=preface)
    except UserError as exc:  # e.g. nothing finished yet
        print(f"wanbench: no report: {exc}", file=sys.stderr)
        return
    print("report of what finished: " + ", ".join(str(p) for p in paths), file=sys.stderr)


def cmd_mlperf(args: argparse.Namespace, argv: list[str]) -> int:
    import time

    from wanbench.launch.distributed import shutdown_distributed, under_torchrun
    from wanbench.launch.process import ends_within
    from wanbench.mlperf.run import load_prompts, require_loadgen, run_mlperf, store_result
    from wanbench.mlperf.settings import FLAGS, check_scenario, loadgen_settings
    from wanbench.outputs import writable_folder

    require_loadgen()
    if args.accuracy:
        raise UserError("accuracy mode needs the trained Wan2.2 weights and VBench, which wanbench does not carry: "
                        "run --performance-only (the default)")
    loadgen = loadgen_settings({key: getattr(args, flag[2:].replace("-", "_")) for key, flag in FLAGS.items()},
                               as_flags=True)
    check_timeout(args.timeout)
    for flag, value, ok, wanted in (("--warmup-steps", args.warmup_steps, 0 <= args.warmup_steps <= MAX_STEPS,
                                     f"0 to {MAX_STEPS}"), ("--dp", args.dp, args.dp >= 1, "1 or more")):
        if not ok:
            raise UserError(f"bad {flag} {value:g}: give {wanted}")
    if args.model == "a14b":  # MLPerf's reference settings, where a flag does not say otherwise
        for name, value in MLPERF_REFERENCE.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    config = config_from_args(args)
    if not under_torchrun():
        check_and_note(config)
    check_scenario(config, loadgen)
    prompts = load_prompts(loadgen.prompts)
    out = Path(args.out or f"wanbench-results/mlperf-{loadgen.scenario.lower()}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not under_torchrun():  # the parent checked it for its workers
        writable_folder(out, "MLPerf results", "--out")
        _refuse_a_suites_folder(out)
    if (config.parallel.gpus > 1 or config.parallel.nnodes > 1) and not under_torchrun():
        from wanbench.launch.process import describe_exit
        from wanbench.launch.stacks import timeout_error
        from wanbench.launch.torchrun import launch_workers

        out.mkdir(parents=True, exist_ok=True)
        done = launch_workers(list(argv) + ([] if args.out else ["--out", str(out)]), config.parallel,
                              args.timeout, out / "workers.log", auto_port=args.master_port is None)
        if done.timed_out:
            raise UserError(timeout_error("mlperf workers", args.timeout, out / "workers.log", out / "stacks",
                                          config.parallel.nnodes))
        if done.returncode != 0:
            raise UserError(f"an mlperf worker failed: {describe_exit(done.returncode, out / 'workers.log')}")
        return 0
    # each run keeps its own LoadGen logs (rank 0 runs LoadGen); the store and report gather them all
    logs = loadgen_folder(out) if int(os.environ.get("RANK", "0")) == 0 else out
    started = time.time()
    result = None
    # one process: bounded here; under torchrun, the parent kills the worker tree at --timeout
    bound = contextlib.nullcontext() if under_torchrun() else ends_within(args.timeout, "the mlperf run")
    try:
        with bound:
            result = run_mlperf(config, loadgen, prompts, logs, args.timeout, args.warmup_steps)
    finally:
        shutdown_distributed(clean=result is not None)
    if not result:
        return 0  # a non-zero rank
    from wanbench.bench.suite import label
    from wanbench.store import ResultsStore

    name = f"mlperf {loadgen.scenario} | {label(config)}"
    with ResultsStore(out) as store:
        store_result(store, f"mlperf-{loadgen.scenario}", name, result, started, str(logs))
    (logs / "mlperf_result.json").write_text(json.dumps({k: v for k, v in result.items() if k != "records"},
                                                        indent=2))
    from wanbench.mlperf.summary import headline_text

    print(f"mlperf {loadgen.scenario} ({result['settings']['mode']}): {headline_text(result['loadgen'])}; "
          f"LoadGen logs in {logs}; report: wanbench report {shlex.quote(str(out))}")
    return 0


def loadgen_folder(out: Path) -> Path:
    """out/loadgen-N, the first N not taken: where one run's LoadGen logs and mlperf_result.json go (made when
    LoadGen starts, so that a run refused while loading leaves none)."""
    n = 1
    while (out / f"loadgen-{n}").exists():
        n += 1
    return out / f"loadgen-{n}"


# MLPerf Inference text-to-video's reference settings for Wan2.2-T2V-A14B (the others are the preset's own).
MLPERF_REFERENCE = {"size": "1280*720", "steps": 20, "vae_dtype": "float32"}


def build_parser() -> argparse.ArgumentParser:
    from wanbench.mlperf.settings import LoadGenSettings

    parser = _Parser(prog="wanbench", description="Run and benchmark Wan 2.2 text-to-video generation: "
                     "fast, measured, trustworthy numbers.")
    parser.add_argument("--version", action="version", version=f"wanbench {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    gen = sub.add_parser("generate", help="make one video and record where time and memory went")
    add_generate_arguments(gen)
    gen.set_defaults(func=cmd_generate)
    bench = sub.add_parser("bench", help="run a suite of configurations and keep every result")
    bench.add_argument("suite", nargs="?", default=None, help="suite TOML file (default: --preset)")
    bench.add_argument("--preset", default=None,
                       help="smoke, seed, scaling or mlperf (default: seed on GPUs, else smoke)")
    bench.add_argument("--out", default=None, help="results folder (default: wanbench-results/<suite>-<time>)")
    bench.add_argument("--resume", action="store_true", help="continue the suite in --out, skipping finished runs")
    bench.add_argument("--retry-failed", action="store_true",
                       help="with the suite in --out: run again the repeats that failed (implies --resume)")
    suite_default = "(default: the suite's"
    bench.add_argument("--warmup", type=int, default=None,
                       help=f"uncounted runs per configuration {suite_default}; presets 1)")
    bench.add_argument("--warmup-steps", type=int, default=None, help="steps per warm-up run (0 = all)")
    bench.add_argument("--repeats", type=int, default=None,
                       help=f"counted runs per configuration {suite_default}; smoke 5, seed 2)")
    bench.add_argument("--cooldown", type=float, default=None, help=f"seconds between configurations {suite_default})")
    bench.add_argument("--timeout", type=float, default=None,
                       help=f"seconds per configuration before it is killed {suite_default}; seed 1800)")
    bench.add_argument("--sample-interval", type=float, default=None,
                       help=f"memory sampling period (s); 0 = off {suite_default}; 0.5)")
    bench.add_argument("--no-report", action="store_true", help="skip the report at the end")
    bench.add_argument("--gpu-hour-price", type=float, default=None,
                       help="price of one GPU-hour (any currency) for the report's cost per video")
    bench.set_defaults(func=cmd_bench)
    ml = sub.add_parser("mlperf", help="the MLPerf text-to-video scenario through the real LoadGen",
                        description="LoadGen issues the queries, wanbench's engine answers them. A SingleStream result "
                        "is VALID only once LoadGen's early stopping is met (64 queries or more, hours at 720p), an "
                        "Offline one once --min-duration is (--expected-latency near the seconds per sample sizes "
                        "its query); shorter runs measure the same figures but are INVALID for a submission.")
    add_generate_arguments(ml, mlperf=True)
    ml.set_defaults(func=cmd_mlperf, model="a14b", seed=42)
    lg = LoadGenSettings()
    ml.add_argument("--scenario", choices=["SingleStream", "Offline"], default=lg.scenario,
                    help="SingleStream (default): one video at a time, p90 latency; Offline: all at once, "
                    "samples per second")
    ml.add_argument("--dp", type=int, default=1, help="Offline: data-parallel replicas (gpus/dp GPUs each)")
    ml.add_argument("--prompts", default=None, help="prompt file, one a line (default: a built-in list)")
    ml.add_argument("--min-duration", type=float, default=lg.min_duration_s,
                    help=f"LoadGen's minimum duration in seconds (default {lg.min_duration_s:g})")
    ml.add_argument("--min-query-count", type=int, default=lg.min_query_count,
                    help=f"LoadGen's minimum number of queries (default {lg.min_query_count})")
    ml.add_argument("--warmup-steps", type=int, default=2,
                    help="steps of one untimed warm-up generation before LoadGen starts (default 2; 0 = none)")
    ml.add_argument("--expected-latency", type=float, default=None, help="seconds per sample, a hint to LoadGen")
    ml.add_argument("--performance-only", action="store_true", default=True, help="the only mode (default)")
    ml.add_argument("--accuracy", action="store_true", help="refused: needs trained weights and VBench")
    ml.add_argument("--out", default=None,
                    help="results folder: results.db, and each run's LoadGen logs in loadgen-N/ "
                    "(default: wanbench-results/mlperf-<scenario>-<time>)")
    env = sub.add_parser("env", help="print the environment capture")
    env.add_argument("--measure-peak", action="store_true", help="time a large bf16 matmul on this GPU")
    env.set_defaults(func=cmd_env)
    report = sub.add_parser("report", help="Markdown + HTML report with plots from a results folder")
    report.add_argument("results", help="a results folder (or its results.db)")
    report.add_argument("--out", default=None, help="report folder (default: RESULTS/report)")
    report.add_argument("--peak-tflops", type=float, default=None, help="use this peak (e.g. measured) for MFU")
    report.add_argument("--gpu-hour-price", type=float, default=None,
                        help="price of one GPU-hour (any currency): adds cost per video and per 1,000 videos")
    report.set_defaults(func=cmd_report)
    comp = sub.add_parser("compare", help="regressions of NEW against BASE (exit 1 if any)")
    comp.add_argument("base", help="the results folder to compare against (written by bench or mlperf)")
    comp.add_argument("new", help="the results folder to judge: its configurations are matched to BASE's")
    comp.add_argument("--max-slowdown", type=float, default=0.08, help="fraction (default 0.08)")
    comp.add_argument("--min-seconds", type=float, default=0.5, help="and at least this many seconds (default 0.5)")
    comp.add_argument("--min-memory-gb", type=float, default=0.5, help="memory growth floor in GB (default 0.5)")
    comp.add_argument("--allow-missing", action="store_true",
                      help="compare only the configurations both hold (default: one missing in NEW fails)")
    comp.set_defaults(func=cmd_compare)
    check = sub.add_parser("check", help="plausibility of published numbers (CSV)")
    check.add_argument("table", help="CSV: model,gpu,num_gpus,width,height,frames,steps,seconds[,cfg]")
    check.add_argument("--json", default=None, help="also write the verdicts as JSON")
    check.add_argument("--peak-tflops", type=float, default=None, help="use this peak instead of the table")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)  # before any heavy import: --help and bad usage answer at once
        from wanbench.launch.process import die_with_parent, quiet_libraries, under_torchrun

        if under_torchrun():
            die_with_parent()  # a worker outlives neither torchrun nor the wanbench that started it
        from wanbench.launch.stacks import dump_stacks_on_request

        dump_stacks_on_request()
        quiet_libraries()
        return args.func(args, argv)
    except UserError as exc:
        print(f"wanbench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("wanbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    from wanbench.launch.process import exit_process

    exit_process(main())
