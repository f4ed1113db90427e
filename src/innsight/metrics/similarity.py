"""Similarities of two explanations, batched over samples and output nodes.

- :func:`spearman`: the Spearman rank correlation over all input entries (average
  ranks for ties).
- :func:`ssim`: the mean structural similarity (Wang et al. 2004) over the spatial
  axes, as ``skimage.metrics.structural_similarity`` computes it by default: means,
  variances (sample, ``N / (N - 1)``) and covariance in every ``win_size`` window
  (uniform weights) that lies wholly inside the map,
  ``((2 mu_a mu_b + C1)(2 s_ab + C2)) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2))``
  with ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``, averaged over the windows and the
  channels. ``R`` is the range of the two maps together (per pair, as Quantus
  passes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.metrics.faithfulness import pearson

#: skimage's constants of the SSIM terms.
K1, K2 = 0.01, 0.03
POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def average_ranks(a: Tensor) -> Tensor:
    """Ranks ``0..p-1`` of ``a`` ``(n, p, k)`` along axis 1, ties sharing their mean rank."""
    rows = a.movedim(1, -1).contiguous()
    ordered = rows.sort(dim=-1).values
    lower = torch.searchsorted(ordered, rows, right=False)
    upper = torch.searchsorted(ordered, rows, right=True)
    return ((lower + upper - 1).to(a.dtype) / 2).movedim(-1, 1)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of ``a`` and ``b`` ``(n, p, k)`` along axis 1: ``(n, k)``."""
    return pearson(average_ranks(a), average_ranks(b), dim=1)


def ssim(a: Tensor, b: Tensor, win_size: int = 7) -> Tensor:
    """Mean SSIM of maps ``a`` and ``b`` ``(m, C, *spatial)`` (1 to 3 spatial axes, each at
    least ``win_size``): ``(m,)``. See the module docs."""
    pool = POOLS[a.ndim - 2]
    both = torch.cat([a.flatten(1), b.flatten(1)], dim=1)
    data_range = both.amax(1) - both.amin(1)
    shape = (-1, *[1] * (a.ndim - 1))
    c1, c2 = ((K1 * data_range) ** 2).view(shape), ((K2 * data_range) ** 2).view(shape)
    m, channels = a.shape[:2]
    # every channel a map of its own; the five window means from one pooling call
    stacked = torch.stack([a, b, a * a, b * b, a * b], dim=2).flatten(0, 2)[:, None]
    pooled = pool(stacked, win_size, stride=1)
    means = pooled.view(m, channels, 5, *pooled.shape[2:])
    mu_a, mu_b, aa, bb, ab = means.unbind(2)
    n = win_size ** (a.ndim - 2)
    norm = n / (n - 1)
    var_a, var_b = norm * (aa - mu_a * mu_a), norm * (bb - mu_b * mu_b)
    cov = norm * (ab - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1)
                                                      * (var_a + var_b + c2))
    return s.flatten(1).mean(1)
