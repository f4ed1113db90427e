"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels from their neighbours.

Every removed pixel of an image becomes the weighted mean of its eight neighbours
inside the image (weight 1/6 for the four direct ones, 1/12 for the diagonal ones,
divided by the weight of the neighbours that exist), known neighbours with their
values and removed ones with their own imputed values; then Gaussian noise of
standard deviation ``noise`` is added to the removed pixels. Channels are imputed
apart, the same pixels removed in each.

The imputed values solve, per image and channel, the sparse linear system
``s_i v_i - sum_{j removed} w_ij v_j = sum_{j kept} w_ij x_j`` over the removed pixels
``i`` (``s_i`` the weight of ``i``'s neighbours in the image), a leading block of the
matrix ``L`` of all pixels once they are put in the order of their removal. The system
is symmetric and positive definite while some pixel is kept.

- Images of up to :data:`DENSE_PIXELS` pixels (a ROAD curve removes pixels in a fixed
  order, so each of its steps is a leading block of one ``L``): ``L`` in removal order
  is factorised once per image by Cholesky, and every step's removed values follow
  from the factor by one product and one triangular solve, all steps at once. The
  imputed values equal a direct sparse solve to about 1e-7 in float64; in float32, on
  data of unit scale, to about 1e-5 (1e-4 where all but one pixel are removed).
- Larger images (one dense factor would not fit), and any masks in
  :func:`linear_imputation`: conjugate gradients on all rows of a batch at once, until
  every residual is below ``sqrt(eps(dtype))`` of its right-hand side, starting from
  the mean of each removed pixel's kept neighbours (the image's mean where it has
  none); maps that have converged leave the iteration. In float64 the imputed values
  then equal a direct sparse solve to about 1e-7; in float32, on data of unit scale, to
  about 5e-3 where almost every pixel is removed (below the default noise of 0.01; pass
  float64 data for more). The neighbour sum is separable: ``[1, 2, 1]`` along each
  axis minus four times the centre, over twelve.
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


def noisy_imputation(x: Tensor, turn: Tensor, owner: Tensor, count: Tensor, noise: float = 0.0,
                     generator: torch.Generator | None = None) -> Tensor:
    """Rows ``(r, C, H, W)``: row ``k`` is ``x[owner[k]]`` (``x`` ``(q, C, H, W)``) with the
    pixels whose ``turn`` ``(q, H W)`` (a permutation of ``0..H W-1`` per image) is below
    ``count[k]`` (less than ``H W``) imputed, plus ``N(0, noise^2)`` there: by
    :func:`stepped_imputation` up to :data:`DENSE_PIXELS` pixels, else by
    :func:`linear_imputation`."""
    removed = turn.index_select(0, owner) < count[:, None]  # (r, H W)
    if turn.shape[1] <= DENSE_PIXELS:
        imputed = stepped_imputation(x, turn, owner, count)
    else:
        imputed = linear_imputation(x.index_select(0, owner), removed.view(-1, *x.shape[2:]))
    if not noise:
        return imputed
    draws = torch.randn(imputed.shape, generator=generator, device=x.device, dtype=x.dtype)
    return imputed.addcmul_(removed.view(len(owner), 1, *x.shape[2:]).to(x.dtype), draws,
                            value=noise)


def linear_imputation(x: Tensor, removed: Tensor) -> Tensor:
    """``x`` ``(r, C, H, W)`` with the pixels ``removed`` ``(r, H, W)`` (bool, not all of an
    image) imputed from their neighbours by conjugate gradients; see the module docs."""
    r, c, h, w = x.shape
    unknown = removed[:, None].expand(r, c, h, w).reshape(r * c, h, w).to(x.dtype)
    maps = x.reshape(r * c, h, w)
    known = 1 - unknown
    rhs = unknown * _neighbours(known * maps)
    near = _neighbours(known.expand_as(maps))
    mean = (known * maps).sum((1, 2), keepdim=True) / known.sum((1, 2), keepdim=True)
    start = unknown * torch.where(near > 0, rhs / near.clamp_min(1e-3), mean)
    v = _conjugate_gradients(unknown, rhs, start, h * w)
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


#: Images of at most this many pixels are imputed by the dense direct solve
#: (:func:`stepped_imputation`); one factor is then at most 32 MiB in float64.
DENSE_PIXELS = 2048
#: Bytes of factors held at once by the dense solve.
FACTOR_BYTES = 2**27


def _laplacian_entries(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """The nonzero entries ``(i, j, value)`` of the ``(H W, H W)`` matrix ``L`` with
    ``(L v)_i = s_i v_i - sum_j w_ij v_j``: one per pixel and neighbour inside the image,
    and the diagonal ``s_i``."""
    pixel = torch.arange(h * w, device=device).view(h, w)
    rows, cols, values = [], [], []
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if (di, dj) == (0, 0):
                continue
            inner = pixel[max(0, -di):h - max(0, di), max(0, -dj):w - max(0, dj)]
            rows.append(inner.flatten())
            cols.append((inner + di * w + dj).flatten())
            values.append(torch.full((inner.numel(),), -1 / 12 if di and dj else -1 / 6,
                                     dtype=torch.float64, device=device))
    i, j, value = torch.cat(rows), torch.cat(cols), torch.cat(values)
    diagonal = torch.zeros(h * w, dtype=torch.float64, device=device).index_add_(0, i, -value)
    return (torch.cat([i, pixel.flatten()]), torch.cat([j, pixel.flatten()]),
            torch.cat([value, diagonal]))


def stepped_imputation(x: Tensor, turn: Tensor, owner: Tensor, count: Tensor) -> Tensor:
    """Imputed images ``(r, C, H, W)`` of nested removals, without noise: row ``k`` is the
    image ``x[owner[k]]`` (``x`` ``(q, C, H, W)``) with the pixels whose ``turn``
    ``(q, H W)`` (a permutation of ``0..H W-1`` per image) is below ``count[k]`` (less
    than ``H W``) imputed; see the module docs.

    Each image's pixels are put in turn order, so that every row's system is a leading
    block of one matrix, factorised once per image (Cholesky ``L = R R^T``, ``U = R^T``);
    the removed values of a row are then ``-U11^{-1} U12 x_known``, one product with
    ``U`` and one triangular solve for all rows of the image at once.
    """
    q, c, h, w = x.shape
    n_pixels = h * w
    i, j, value = _laplacian_entries(h, w, x.device)
    order = turn.argsort(dim=1)  # the pixel at each position
    # each row's slot among its image's rows: (q, slots) columns of one product
    by_owner = owner.argsort(stable=True)
    per_image = torch.bincount(owner, minlength=q)
    first = per_image.cumsum(0) - per_image
    slot = torch.empty_like(owner)
    slot[by_owner] = torch.arange(len(owner), device=x.device) - first[owner[by_owner]]
    slots = int(per_image.max())
    # counts per (image, slot); empty slots remove nothing
    counts = torch.full((q, slots), n_pixels, device=x.device, dtype=count.dtype).index_put_(
        (owner, slot), count)
    out = torch.empty(len(owner), c, n_pixels, dtype=x.dtype, device=x.device)
    group = max(1, FACTOR_BYTES // (n_pixels**2 * x.element_size()))
    position = torch.arange(n_pixels, device=x.device)
    for start in range(0, q, group):  # images in groups of bounded memory
        stop = min(start + group, q)
        t = turn[start:stop].long()
        matrix = torch.zeros(stop - start, n_pixels * n_pixels, dtype=x.dtype, device=x.device)
        matrix.scatter_(1, t[:, i] * n_pixels + t[:, j], value.to(x.dtype).expand(len(t), -1))
        matrix = matrix.view(-1, n_pixels, n_pixels)
        matrix[:, -1, -1] += 1  # only the last pivot, never used: L itself is singular
        upper = torch.linalg.cholesky(matrix).transpose(1, 2)
        ordered = x[start:stop].reshape(-1, c, n_pixels).gather(
            2, order[start:stop, None].expand(-1, c, -1))  # (g, C, N)
        kept = position[None, :, None] >= counts[start:stop, None, :]  # (g, N, slots)
        known = torch.where(kept[:, :, :, None], ordered.transpose(1, 2)[:, :, None], 0.0)
        known = known.view(len(t), n_pixels, slots * c)
        unknown = ~kept[:, :, :, None].expand(-1, -1, -1, c).reshape(len(t), n_pixels, -1)
        solved = torch.linalg.solve_triangular(upper, (upper @ known) * unknown, upper=True)
        images = torch.where(unknown, -solved, known).view(len(t), n_pixels, slots, c)
        images = torch.empty_like(images).scatter_(
            1, order[start:stop, :, None, None].expand_as(images), images)  # pixel order
        rows = (owner >= start) & (owner < stop)
        out[rows] = images[owner[rows] - start, :, slot[rows]].transpose(1, 2)
    return out.view(-1, c, h, w)
