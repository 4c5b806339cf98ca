"""Every pair of saved latents (`wanbench generate --save-latents`): bit-identical or not, and the relative error.

Usage: python3 benchmarks/compare_latents.py A.safetensors B.safetensors ... --out check-latents.json
Each file is named by its stem; a file that is missing or unreadable is recorded as such, not compared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from wanbench.analysis.fidelity import relative_error


def load(paths: list[Path]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    latents, unreadable = {}, {}
    for path in paths:
        try:
            latents[path.stem] = load_file(path)["latents"]
        except Exception as exc:  # a run that failed leaves no file: record it and compare the rest
            unreadable[path.stem] = f"{type(exc).__name__}: {exc}"[:300]
    return latents, unreadable


def compare(latents: dict[str, torch.Tensor]) -> list[dict]:
    return [{"a": a, "b": b, "identical": bool(torch.equal(latents[a], latents[b])),
             "rel_error": relative_error(latents[b], latents[a])}
            for a, b in itertools.combinations(latents, 2)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    latents, unreadable = load(args.files)
    result = {"pairs": compare(latents), "unreadable": unreadable}
    for pair in result["pairs"]:
        print(f"{pair['a']} vs {pair['b']}: identical {pair['identical']}, relative error {pair['rel_error']:.3e}")
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
