"""Writing the decoded frames: .mp4 (H.264 via imageio-ffmpeg), .gif, or .npy (the raw float array)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wanbench.errors import UserError


def save_frames(frames: np.ndarray, path: str, fps: int) -> str | None:
    """Write frames [F, H, W, 3] in [0, 1]; returns the path written, or None for 'none'."""
    if path == "none":
        return None
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder for --output {path} ({exc}): choose a writable path") from None
    if target.suffix == ".npy":
        np.save(target, frames.astype(np.float32))
        return str(target)
    import imageio.v2 as imageio

    uint8 = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    if target.suffix == ".gif":
        imageio.mimsave(target, list(uint8), duration=1000.0 / fps, loop=0)
    else:
        imageio.mimsave(target, list(uint8), fps=fps, codec="libx264", quality=8, macro_block_size=1)
    return str(target)
