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
``sqrt(eps(dtype))`` of its right-hand side, starting from the mean of each removed
pixel's kept neighbours (the image's mean where it has none); maps that have converged
leave the iteration. In float64 the imputed values then equal a direct sparse solve to
about 1e-7; in float32, on data of unit scale, to about 5e-3 where almost every pixel is
removed (below the default noise of 0.01; pass float64 data for more). The neighbour
sum is separable:
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
    known = 1 - unknown
    rhs = unknown * _neighbours(known * maps)
    near = _neighbours(known.expand_as(maps))
    mean = (known * maps).sum((1, 2), keepdim=True) / known.sum((1, 2), keepdim=True)
    start = unknown * torch.where(near > 0, rhs / near.clamp_min(1e-3), mean)
    v = _conjugate_gradients(unknown, rhs, start, h * w)
    if noise:
        v = v + noise * torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    return torch.where(unknown.bool(), v, maps).view(r, c, h, w)


def _conjugate_gradients(unknown: Tensor, rhs: Tensor, v: Tensor, max_steps: int) -> Tensor:
    """The solutions ``(m, H, W)`` of the imputation systems of the maps ``unknown`` (1 at
    the removed pixels) and right-hand sides ``rhs``, from the start ``v`` (0 where
    ``unknown`` is 0).

    Maps with few removed pixels converge in a few steps, those with most removed in
    tens: once half of the maps still iterating have converged, the others go on alone
    (the converged ones are written to the solution and dropped).
    """
    weight = _neighbours(torch.ones_like(v[:1]))  # s_i, (1, H, W)
    tiny = torch.finfo(v.dtype).tiny
    solution = v.clone()
    rows = torch.arange(len(v), device=v.device)  # the maps still iterating

    def operator(d: Tensor) -> Tensor:  # d is 0 at the kept pixels
        return unknown * (weight * d - _neighbours(d))

    residual = rhs - operator(v)
    direction = residual.clone()
    squared = residual.square().sum((1, 2), keepdim=True)
    tolerance = torch.finfo(v.dtype).eps * rhs.square().sum((1, 2), keepdim=True)
    for _ in range(max_steps):  # CG ends within as many steps as there are unknowns
        going = (squared > tolerance).flatten()
        n_going = int(going.sum())
        if n_going == 0:
            break
        if n_going <= len(rows) // 2:
            solution[rows] = v
            keep = going.nonzero().flatten()
            rows, unknown, v, residual, direction, squared, tolerance = (
                t.index_select(0, keep)
                for t in (rows, unknown, v, residual, direction, squared, tolerance))
        step = operator(direction)
        curvature = (direction * step).sum((1, 2), keepdim=True)
        alpha = torch.where(curvature > 0, squared / curvature.clamp_min(tiny), 0.0)
        v.addcmul_(alpha, direction)
        residual.addcmul_(alpha, step, value=-1)
        new_squared = residual.square().sum((1, 2), keepdim=True)
        beta = torch.where(squared > 0, new_squared / squared.clamp_min(tiny), 0.0)
        direction = residual + beta * direction
        squared = new_squared
    solution[rows] = v
    return solution
