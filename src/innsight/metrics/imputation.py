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
  order, so each of its steps is a leading block of one ``L``): steps that remove at
  most half of the pixels follow from the Cholesky factor of the leading block of
  ``L`` in removal order that they need, once per image, and one triangular solve
  each. Steps that keep fewer than half are solved from the kept side: the imputed
  image is harmonic, the Green's function ``L^+`` (pseudo-inverse, the same for every
  image: computed once per image shape in float64 and kept) applied to charges on the
  kept pixels, which follow from the Cholesky factor of ``L^+`` on the kept pixels in
  reverse removal order. Each image thus factorises two matrices of at most half its
  pixels, a quarter of the work of one factor of all of them. The imputed values
  equal a direct sparse solve to about 1e-12 in float64; in float32, on data of unit
  scale, to about 2e-5 for 32x32 images (1e-4 at 2048 pixels).
- Larger images (one dense factor would not fit), and any masks in
  :func:`linear_imputation`: on the CPU, one sparse LU factorisation of each row's
  system (scipy's SuperLU in float64), exact to rounding.
  Conjugate gradients, which need no scipy and batch all rows, converge within tens of
  steps where the removed pixels are scattered but take hundreds for a large hole (the
  connected regions that the relevance of real images removes): half of a 224 x 224
  image removed as one block took 5.6 s for one step's map, against 0.14 s for its LU.
- On other devices, conjugate gradients on all rows of a batch at once, until every
  residual is below ``sqrt(eps(dtype))`` of its right-hand side, starting from the mean
  of each removed pixel's kept neighbours (the image's mean where it has none); maps
  that have converged leave the iteration. In float64 the imputed values then equal a
  direct sparse solve to about 1e-7; in float32, on data of unit scale, to about 5e-3
  where almost every pixel is removed (below the default noise of 0.01; pass float64
  data for more). The neighbour sum is separable: ``[1, 2, 1]`` along each axis minus
  four times the centre, over twelve.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight._threads import one_thread


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
    image) imputed from their neighbours: by sparse direct solves on the CPU
    (:func:`sparse_imputation`), by conjugate gradients elsewhere
    (:func:`iterative_imputation`); see the module docs."""
    if x.device.type == "cpu":
        return sparse_imputation(x, removed)
    return iterative_imputation(x, removed)


def sparse_imputation(x: Tensor, removed: Tensor) -> Tensor:
    """:func:`linear_imputation` on the CPU: one sparse LU factorisation (scipy's SuperLU,
    column minimum-degree order) per row, its channels the right-hand sides, solved in
    float64. Each row's system is a sparse matrix of its own and there is no batched
    sparse solver to hand them to, so the rows are solved one after the other (SuperLU
    holds the GIL: threads gained nothing)."""
    from scipy.sparse.linalg import splu

    r, c, h, w = x.shape
    laplacian = _sparse_laplacian(h, w)
    values = x.detach().reshape(r, c, h * w).transpose(1, 2).double().numpy()  # (r, H W, C)
    masks = removed.reshape(r, h * w).numpy()
    out = values.copy()

    for mask, row, imputed in zip(masks, values, out):
        rows = laplacian[mask]
        if rows.shape[0]:
            rhs = -(rows[:, ~mask] @ row[~mask])
            imputed[mask] = splu(rows[:, mask].tocsc(), permc_spec="COLAMD").solve(rhs)
    return torch.from_numpy(out).to(x.dtype).transpose(1, 2).reshape(r, c, h, w)


@functools.lru_cache(maxsize=4)
def _sparse_laplacian(h: int, w: int) -> Any:
    """``L`` ``(H W, H W)`` (:func:`_laplacian_entries`) as a scipy CSR matrix."""
    from scipy.sparse import csr_matrix

    i, j, value = _laplacian_entries(h, w, torch.device("cpu"))
    return csr_matrix((value.numpy(), (i.numpy(), j.numpy())), shape=(h * w, h * w))


def iterative_imputation(x: Tensor, removed: Tensor) -> Tensor:
    """:func:`linear_imputation` by conjugate gradients on all rows of a batch at once."""
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


#: Images of at most this many pixels are imputed by the dense direct solves
#: (:func:`stepped_imputation`); one factor is then at most 8 MiB in float64.
DENSE_PIXELS = 2048
#: Bytes of factors held at once by the dense solves.
FACTOR_BYTES = 2**27
#: Runs of slots per image on the kept side, each multiplied by as many rows of
#: ``L^+`` as its largest kept count needs.
RUNS = 4


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


@functools.lru_cache(maxsize=4)
def _pseudo_inverse(h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``L^+`` ``(H W, H W)`` in pixel order, computed in float64 once per image shape:
    ``(L + 1/N)^{-1} - 1/N`` (``L`` is the Laplacian of a connected graph)."""
    n = h * w
    i, j, value = _laplacian_entries(h, w, device)
    matrix = torch.full((n, n), 1 / n, dtype=torch.float64, device=device)
    matrix.index_put_((i, j), value, accumulate=True)
    eye = torch.eye(n, dtype=torch.float64, device=device)
    inverse = torch.cholesky_solve(eye, torch.linalg.cholesky(matrix))  # cholesky_inverse is slower
    return (inverse - 1 / n).to(dtype).contiguous()


def stepped_imputation(x: Tensor, turn: Tensor, owner: Tensor, count: Tensor) -> Tensor:
    """Imputed images ``(r, C, H, W)`` of nested removals, without noise: row ``k`` is the
    image ``x[owner[k]]`` (``x`` ``(q, C, H, W)``) with the pixels whose ``turn``
    ``(q, H W)`` (a permutation of ``0..H W-1`` per image) is below ``count[k]`` (less
    than ``H W``) imputed; see the module docs.

    Rows that remove at most half of the pixels are solved from the removed side
    (:func:`_few_removed`), the others from the kept side (:func:`_few_kept`): each
    factorises one matrix of at most half the pixels per image for all its rows.

    On the CPU, groups of images go to as many Python threads as torch has threads,
    each running torch on one thread: no thread waits for another inside a call (on a shared two-core
    machine under load, two torch threads stalled in every LAPACK call and ROAD's
    imputation took four to seven times as long).
    """
    q, c, h, w = x.shape
    n, half = h * w, h * w // 2
    out = x.index_select(0, owner).view(-1, c, n)  # rows start as their images
    order = turn.argsort(dim=1)  # the pixel at each position
    workers = min(torch.get_num_threads(), q) if x.device.type == "cpu" else 1
    group = max(1, min(FACTOR_BYTES // (workers * n * n * x.element_size()), -(-q // workers)))

    def impute(start: int) -> None:  # the images from start on, a group of bounded memory
        torch.set_num_threads(1)  # a new thread starts with the default
        stop = min(start + group, q)
        mine = (owner >= start) & (owner < stop)
        for rows, size, side in ((mine & (count > 0) & (count <= half), count, _few_removed),
                                 (mine & (count > half), n - count, _few_kept)):
            rows = rows.nonzero().flatten()
            if len(rows):
                slot, sizes = _slots(owner[rows] - start, size[rows], stop - start)
                images = side(x[start:stop], turn[start:stop], order[start:stop],
                              sizes)  # (images, slots, C, N)
                out[rows] = images.flatten(0, 1)[(owner[rows] - start) * sizes.shape[1] + slot]

    with one_thread():  # see the docs
        if workers == 1:
            for start in range(0, q, group):
                impute(start)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(impute, range(0, q, group)))
    return out.view(-1, c, h, w)


def _slots(owner: Tensor, size: Tensor, q: int) -> tuple[Tensor, Tensor]:
    """Each row's slot among its image's rows, in the order of their ``size`` ``(r,)``,
    and the size at each ``(image, slot)`` ``(q, slots)``, 0 where an image has fewer
    rows."""
    size = size.long()
    by_owner = (owner * (int(size.max()) + 1) + size).argsort()
    per_image = torch.bincount(owner, minlength=q)
    first = per_image.cumsum(0) - per_image
    slot = torch.empty_like(owner)
    slot[by_owner] = torch.arange(len(owner), device=owner.device) - first[owner[by_owner]]
    return slot, size.new_zeros(q, int(per_image.max())).index_put_((owner, slot), size)


def _leading_solve(upper: Tensor, rhs: Tensor, sizes: Tensor) -> Tensor:
    """``(U_k^{-1} b_k)^T`` ``(q, slots, C, e)`` for the slots of each image: ``U_k`` the
    leading ``sizes`` ``(q, slots)`` block of the image's upper factor ``upper``
    ``(q, e, e)``, ``b_k`` as many leading entries of ``rhs`` ``(q, slots or 1, C, e)``;
    0 beyond.

    Back substitution keeps the zeros below a leading block: one solve of the whole
    factor per image serves all its slots, ``slots C`` right-hand sides, solved from the
    right (``X U^T = B^T``: faster than from the left for that many).
    """
    q, _, c, e = rhs.shape
    inside = torch.arange(e, device=rhs.device) < sizes[:, :, None, None]
    rhs = torch.where(inside, rhs, 0.0).reshape(q, -1, e)
    return torch.linalg.solve_triangular(upper.mT, rhs, upper=False, left=False).view(
        q, -1, c, e)


def _leading_product(rows: Tensor, solution: Tensor, sizes: Tensor) -> Tensor:
    """``s_k^T rows_k`` ``(q, slots, C, N)`` for the slots of each image: ``rows_k`` the
    leading ``sizes`` ``(q, slots)`` rows of ``rows`` ``(q, e, N)``, ``s_k`` the
    solution of that slot ``(q, slots, C, e)``, 0 beyond its size. In :data:`RUNS` runs
    of slots, each multiplied by as many rows as its largest size needs."""
    q, slots, c, _ = solution.shape
    largest = sizes.amax(0).tolist()
    step = -(-slots // RUNS)
    return torch.cat([solution[:, a:a + step, :, :max(largest[a:a + step])].flatten(1, 2)
                      @ rows[:, :max(largest[a:a + step])] for a in range(0, slots, step)],
                     1).view(q, slots, c, -1)


def _few_removed(x: Tensor, turn: Tensor, order: Tensor, sizes: Tensor) -> Tensor:
    """Imputed images ``(q, slots, C, N)`` of ``x`` ``(q, C, H, W)`` (``turn`` and its
    ``order`` ``(q, N)``) with the first ``sizes`` ``(q, slots)`` (at most half) of the
    pixels in removal order removed, from the Cholesky factor of the leading block of
    ``L`` in removal order.

    With ``L = U^T U`` over all pixels in removal order, the removed values of a slot
    are ``x_R - U_RR^{-1} h_R`` for ``h = U x = U^{-T} L x``. Up to the largest size
    ``m`` this needs only the factor ``U_m`` of the leading ``m`` block of ``L``: one
    factor and one small solve per image, and a solve of a leading block per slot.
    """
    q, c, h, w = x.shape
    n = h * w
    m = int(sizes.max())
    i, j, value = _laplacian_entries(h, w, x.device)
    ti, tj = turn[:, i].long(), turn[:, j].long()
    index = torch.where((ti < m) & (tj < m), ti * m + tj, m * m)  # the rest to a spare entry
    matrix = torch.zeros(q, m * m + 1, dtype=x.dtype, device=x.device).scatter_(
        1, index, value.to(x.dtype).expand(q, -1))
    upper = torch.linalg.cholesky(matrix[:, :-1].view(q, m, m)).mT
    leading = order[:, None, :m].expand(-1, c, -1)
    maps = x.reshape(-1, h, w)
    flat = maps.view(q, c, n)
    laplacian = (_neighbours(torch.ones_like(maps[:1])) * maps - _neighbours(maps)).view(
        q, c, n).gather(2, leading)  # (L x) in removal order, (q, C, m)
    h_vector = torch.linalg.solve_triangular(upper.mT, laplacian.neg().mT, upper=False).mT
    solved = _leading_solve(upper, h_vector[:, None], sizes)  # -U_RR^{-1} h_R, (q, S, C, m)
    slots = sizes.shape[1]
    return flat[:, None].repeat(1, slots, 1, 1).scatter_add_(
        3, leading[:, None].expand(-1, slots, -1, -1), solved)


def _few_kept(x: Tensor, turn: Tensor, order: Tensor, sizes: Tensor) -> Tensor:
    """Imputed images ``(q, slots, C, N)`` of ``x`` ``(q, C, H, W)`` (``turn`` and its
    ``order`` ``(q, N)``) with the last ``sizes`` ``(q, slots)`` (fewer than half) of the
    pixels in removal order kept, from the pseudo-inverse ``G = L^+`` (the same for every
    image).

    A harmonic image is ``G f + mu`` for charges ``f`` on the kept pixels ``K`` that sum
    to 0: ``f = G_KK^{-1} (x_K - mu)``, ``mu = 1^T G_KK^{-1} x_K / 1^T G_KK^{-1} 1``
    (``G_KK`` is positive definite while some pixel is removed). In reverse removal
    order ``G_KK`` is a leading block; with ``G = V^T V`` there, ``a = V^{-T} x`` and
    ``b = V^{-T} 1`` (one solve per image) give ``mu`` from prefix sums of ``a b`` and
    ``b b`` and ``f = V_KK^{-1} (a - mu b)_K`` (a solve of a leading block per slot);
    then one product with the leading rows of ``G`` per slot.
    """
    q, c, h, w = x.shape
    n = h * w
    flat = x.reshape(q, c, n)
    m = int(sizes.max())
    pixels = order.flip(1)[:, :m]  # (q, m): the kept pixels, last removed first
    inverse = _pseudo_inverse(h, w, x.device, x.dtype)
    green = inverse.index_select(0, pixels.flatten()).view(q, m, n)  # its rows at the kept pixels
    kept = pixels.int()  # G_KK from G (in cache) rather than from its rows just gathered
    upper = torch.linalg.cholesky(inverse.view(-1).index_select(
        0, (kept[:, :, None] * n + kept[:, None, :]).view(-1)).view(q, m, m)).mT
    values = flat.gather(2, pixels[:, None].expand(-1, c, -1))  # (q, C, m)
    ab = torch.linalg.solve_triangular(upper.mT, torch.cat([values, torch.ones_like(
        values[:, :1])], 1).mT, upper=False).mT  # (q, C + 1, m)
    a, b = ab[:, :-1], ab[:, -1:]
    last = (sizes - 1).clamp_min(0)[:, None]  # (q, 1, slots)
    mu = ((a * b).cumsum(2).gather(2, last.expand(-1, c, -1))
          / b.square().cumsum(2).gather(2, last)).mT  # (q, slots, C)
    charge = _leading_solve(upper, a[:, None] - mu[..., None] * b[:, None], sizes)
    potential = _leading_product(green, charge, sizes).add_(mu[..., None])
    removed = turn[:, None, None] < (n - sizes)[:, :, None, None]  # (q, slots, 1, N)
    return torch.where(removed, potential, flat[:, None])
