"""Natural distribution shifts of ALE observations: brightness, contrast, blur, rotation, perspective, JPEG.

Each shift maps a batch of frame stacks ``[n, 4, 84, 84]`` (floats in [0, 1]) to the same shape, applied to every
frame of the stack alike, the way a changed screen would look to the agent. Written with torch's ``grid_sample``
and Pillow's JPEG codec so no image library beyond those is needed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from diag.errors import DiagError


def brightness(obs: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    return (obs + delta).clamp(0, 1)


def contrast(obs: torch.Tensor, factor: float = 0.6) -> torch.Tensor:
    mean = obs.mean(dim=(-2, -1), keepdim=True)
    return (mean + factor * (obs - mean)).clamp(0, 1)


def blur(obs: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=obs.dtype, device=obs.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    n, c, h, w = obs.shape
    flat = obs.reshape(n * c, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def _warp(obs: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(obs, grid.expand(obs.shape[0], -1, -1, -1).to(obs.dtype), mode="bilinear",
                         padding_mode="border", align_corners=False)


def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device),
                            torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device), indexing="ij")
    return torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [h, w, 3] homogeneous output coordinates


def rotation(obs: torch.Tensor, degrees: float = 3.0) -> torch.Tensor:
    """Rotate about the screen centre; each output pixel samples the input at the inversely rotated point."""
    t = math.radians(degrees)
    inverse = torch.tensor([[math.cos(t), math.sin(t), 0.0], [-math.sin(t), math.cos(t), 0.0], [0, 0, 1.0]],
                           device=obs.device)
    grid = _pixel_grid(*obs.shape[-2:], obs.device) @ inverse.T
    return _warp(obs, grid[None, ..., :2])


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with H @ [src, 1] proportional to [dst, 1], from four point pairs (direct linear transform)."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    h = np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64))
    return np.append(h, 1.0).reshape(3, 3)


def perspective(obs: torch.Tensor, shift: float = 0.08) -> torch.Tensor:
    """Tilt the screen: the top edge shrinks inwards by ``shift`` (normalised units) on each side."""
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    moved = corners + np.array([[shift, 0], [-shift, 0], [0, 0], [0, 0]])
    output_to_input = torch.tensor(_homography(moved, corners), dtype=torch.float32, device=obs.device)
    grid = _pixel_grid(*obs.shape[-2:], obs.device) @ output_to_input.T
    return _warp(obs, grid[None, ..., :2] / grid[None, ..., 2:])


def jpeg(obs: torch.Tensor, quality: int = 20) -> torch.Tensor:
    """Encode and decode every frame as a greyscale JPEG at ``quality`` (on the host: PIL codes JPEG)."""
    frames = (obs.clamp(0, 1) * 255).round().to(torch.uint8).reshape(-1, *obs.shape[-2:]).cpu().numpy()
    out = np.empty_like(frames)
    for i, frame in enumerate(frames):
        buf = io.BytesIO()
        Image.fromarray(frame, mode="L").save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return torch.from_numpy(out).reshape(obs.shape).to(obs.device, obs.dtype) / 255.0


SHIFTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "brightness": brightness,
    "contrast": contrast,
    "blur": blur,
    "rotation": rotation,
    "perspective": perspective,
    "jpeg": jpeg,
}


def get_shift(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in SHIFTS:
        raise DiagError(f"unknown shift {name!r}: choose from {', '.join(SHIFTS)}")
    return SHIFTS[name]
