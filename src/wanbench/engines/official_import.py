"""Import the Wan team's text-to-video code (the `wan` package) as it is published, on any machine.

The one place that bridges what the official code assumes and a machine may lack; no official file is edited:
- `wan/__init__.py` imports every pipeline (animate, speech: decord, librosa, cv2), which text-to-video never
  uses, so `wan` is registered as a bare package and only `wan.text2video` is imported.
- On a torch without CUDA, `wan.modules.t5` evaluates `torch.cuda.current_device()` as a default argument when
  it loads: that call answers 0 during the import only.
- Without FlashAttention 2 or 3 (`flash_attn`; FlashAttention 4's package of that name is not it), the model's
  `flash_attention` asserts; the official SDPA fallback (`wan.modules.attention.attention`, no padding mask)
  stands in for it (`bridge_attention`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from wanbench.config import OFFICIAL_INSTALL
from wanbench.errors import UserError


def import_official(checkout: str = "") -> ModuleType:
    """`wan.text2video`, from the checkout folder given (one holding wan/) or the installed wan22 package."""
    if checkout:
        root = Path(checkout).expanduser()
        if not (root / "wan" / "text2video.py").is_file():
            raise UserError(f"--official-code {checkout}: no wan/text2video.py there; give the folder of a Wan2.2 "
                            "checkout (the one holding generate.py and wan/)")
        if "wan" in sys.modules and not str(getattr(sys.modules["wan"], "__path__", [""])[0]).startswith(str(root)):
            raise UserError("--official-code: another copy of the official code is already imported in this process")
        sys.path.insert(0, str(root))
    if "wan" not in sys.modules:
        spec = importlib.util.find_spec("wan")
        if spec is None or not spec.submodule_search_locations:
            raise UserError(f"--engine official needs the Wan team's code: {OFFICIAL_INSTALL} (or --official-code "
                            "CHECKOUT)")
        package = importlib.util.module_from_spec(spec)  # not executed: its __init__ imports every pipeline
        sys.modules["wan"] = package
    missing_cuda = not torch.cuda.is_available()
    original = torch.cuda.current_device
    if missing_cuda:
        torch.cuda.current_device = lambda: 0  # type: ignore[assignment]
    try:
        return importlib.import_module("wan.text2video")
    except ModuleNotFoundError as exc:
        raise UserError(f"the official code needs {exc.name!r}, which is not installed: "
                        f"pip install 'wanbench[official]'") from None
    finally:
        torch.cuda.current_device = original  # type: ignore[assignment]


@functools.cache
def official_version(checkout: str = "") -> str:
    """'wan22 2.2.11', or 'checkout PATH at REVISION' for a checkout."""
    if checkout:
        try:
            revision = subprocess.run(["git", "-C", checkout, "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            revision = ""
        return f"checkout {checkout}" + (f" at {revision}" if revision else "")
    try:
        return f"wan22 {importlib.metadata.version('wan22')}"
    except importlib.metadata.PackageNotFoundError:
        return "wan (version unknown)"


def bridge_attention(dtype: torch.dtype) -> str | None:
    """Without flash_attn, route the official model's attention to the official SDPA fallback; returns a note.

    The flash path computes in bfloat16 (its only types besides float16); a float32 run (the tiny preset on a
    CPU) keeps float32, which that path cannot do.
    """
    attention = importlib.import_module("wan.modules.attention")
    if attention.FLASH_ATTN_2_AVAILABLE and not hasattr(attention.flash_attn, "flash_attn_varlen_func"):
        # FlashAttention 4 (flash-attn-4) installs a `flash_attn` package too, without FlashAttention 2's API
        attention.FLASH_ATTN_2_AVAILABLE = False
    if attention.FLASH_ATTN_2_AVAILABLE or attention.FLASH_ATTN_3_AVAILABLE:
        return None
    fallback = attention.attention
    compute = dtype if dtype == torch.float32 else torch.bfloat16

    def flash_attention(*args: Any, **kwargs: Any) -> torch.Tensor:
        kwargs.pop("version", None)
        kwargs["dtype"] = compute
        return fallback(*args, **kwargs)

    for name in ("wan.modules.model", "wan.distributed.ulysses"):
        module = importlib.import_module(name)
        module.flash_attention = flash_attention
    return ("official engine: flash_attn is not installed, so attention runs the official code's own SDPA fallback "
            "(no padding mask over the text tokens); the Wan team's published figures used FlashAttention")
