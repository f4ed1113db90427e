"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels from their neighbours.

Every removed pixel of an image becomes the weighted mean of its eight neighbours
inside the image (weight 1/6 for the four direct ones, 1/12 for the diagonal ones,
divided by the weight of the neighbours that exist), known neighbours with their
values and removed ones with their own imputed values; then Gaussian noise of
standard deviation ``noise`` is added to the removed pixels. Channels are imputed
apart, the same pixels removed in each.

The imputed values solve, per image and channel, the sparse linear system
``s_i v_i - sum_{j removed} w_ij v_j = sum_{j kept} w_ij x_j`` over the removed pixels
``i`` (``s_i`` the weight of ``i``'s neighbours in the image). The system is
symmetric and positive definite while some pixel is kept, and is solved for all rows
of a batch at once by conjugate gradients, until every residual is below
``sqrt(eps(dtype))`` of its right-hand side (far below the noise), starting from the
mean of each removed pixel's kept neighbours (the image's mean where it has none). The neighbour sum is separable:
``[1, 2, 1]`` along each axis minus four times the centre, over twelve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _neighbours(maps: Tensor) -> Tensor:
    """``sum_j w_ij maps_j`` over each pixel's neighbours inside the image: ``(m, H, W)``."""
    padded = F.pad(maps, (1, 1, 1, 1))
    rows = padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]  # (m, H, W + 2)
    return (rows[..., :-2] + 2 * rows[..., 1:-1] + rows[..., 2:] - 4 * maps) / 12


def linear_imputation(x: Tensor, removed: Tensor, noise: float = 0.0,
                      generator: torch.Generator | None = None) -> Tensor:
    """``x`` ``(r, C, H, W)`` with the pixels ``removed`` ``(r, H, W)`` (bool, not all of an
    image) imputed from their neighbours, plus ``N(0, noise^2)`` there; see the module docs."""
    r, c, h, w = x.shape
    unknown = removed[:, None].expand(r, c, h, w).reshape(r * c, h, w).to(x.dtype)
    maps = x.reshape(r * c, h, w)
    weight = _neighbours(torch.ones_like(maps[:1]))  # s_i, (1, H, W)

    def operator(v: Tensor) -> Tensor:
        return unknown * (weight * v - _neighbours(unknown * v))

    known = 1 - unknown
    rhs = unknown * _neighbours(known * maps)
    near = _neighbours(known.expand_as(maps))
    mean = (known * maps).sum((1, 2), keepdim=True) / known.sum((1, 2), keepdim=True)
    v = unknown * torch.where(near > 0, rhs / near.clamp_min(1e-3), mean)
    residual = rhs - operator(v)
    direction = residual.clone()
    squared = residual.square().sum((1, 2), keepdim=True)
    tolerance = torch.finfo(x.dtype).eps * rhs.square().sum((1, 2), keepdim=True)
    for _ in range(h * w):  # CG ends within as many steps as there are unknowns
        if bool((squared <= tolerance).all()):
            break
        step = operator(direction)
        curvature = (direction * step).sum((1, 2), keepdim=True)
        alpha = torch.where(curvature > 0, squared / curvature.clamp_min(torch.finfo(x.dtype).tiny),
                            0.0)
        v.addcmul_(alpha, direction)
        residual.addcmul_(alpha, step, value=-1)
        new_squared = residual.square().sum((1, 2), keepdim=True)
        beta = torch.where(squared > 0, new_squared / squared.clamp_min(torch.finfo(x.dtype).tiny),
                           0.0)
        direction = residual + beta * direction
        squared = new_squared
    if noise:
        v = v + noise * torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    return torch.where(unknown.bool(), v, maps).view(r, c, h, w)
