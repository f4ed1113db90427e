"""What a removed feature is replaced with: the baseline of the perturbation metrics.

``baseline`` is one of

- ``"zeros"``: 0;
- ``"mean"``: the mean of the sample's entries, per input layer (Quantus' ``"mean"``);
- ``"min"``: the smallest entry of the sample, per input layer (Quantus' ``"black"``);
- ``"blur"``: the sample blurred by a Gaussian of standard deviation ``blur_sigma``
  (default a tenth of the largest spatial size) along its spatial axes, channel by
  channel (inputs with a channel axis and spatial axes only);
- a number: that value everywhere;
- an array or tensor: a reference sample, or one per data sample, in the layout of
  the data (a list with one per input layer for several).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight._validation import describe, is_number
from innsight.methods.agnostic import as_features
from innsight.methods.base import Setup
from innsight.methods.data import is_array_like, prepare_like

NAMED = ("zeros", "mean", "min", "blur")


def check_baseline(baseline: Any) -> None:
    """Refuse a baseline that is none of the accepted kinds, naming them."""
    if isinstance(baseline, str) and baseline in NAMED:
        return
    if is_number(baseline) or is_array_like(baseline) or (
            isinstance(baseline, (list, tuple)) and all(map(is_array_like, baseline))):
        return
    raise ValueError(f"`baseline` must be one of {list(NAMED)}, a number, or a reference sample "
                     f"(array or tensor in the layout of the data), got {describe(baseline)}.")


def baseline_features(baseline: Any, setup: Setup, blur_sigma: float | None = None) -> Tensor:
    """The baseline as features: ``(1, p)`` where every sample shares it (``"zeros"``, a
    number, one reference sample), else ``(n_data, p)``."""
    data = setup.data
    p = sum(x[0].numel() for x in data)
    if isinstance(baseline, str) and baseline == "zeros":
        return data[0].new_zeros(1, p)
    if isinstance(baseline, str):
        per_layer = {
            "mean": lambda x: x.flatten(1).mean(1).view(-1, *[1] * (x.ndim - 1)).expand_as(x),
            "min": lambda x: x.flatten(1).amin(1).view(-1, *[1] * (x.ndim - 1)).expand_as(x),
            "blur": lambda x: gaussian_blur(x, blur_sigma),
        }[baseline]
        return as_features([per_layer(x) for x in data])
    if is_number(baseline):
        return data[0].new_full((1, p), float(baseline))
    refs = as_features(prepare_like(baseline, data, setup.channels_first, "baseline"))
    if refs.shape[0] not in (1, data[0].shape[0]):
        raise ValueError(f"`baseline` must hold one reference sample or one per data sample "
                         f"({data[0].shape[0]}), got {refs.shape[0]}.")
    return refs


def gaussian_blur(x: Tensor, sigma: float | None) -> Tensor:
    """``x`` ``(n, C, *spatial)`` blurred along each spatial axis by a Gaussian of standard
    deviation ``sigma`` (default: a tenth of the largest spatial size), edges replicated."""
    if x.ndim < 3:
        raise ValueError("`baseline='blur'` needs inputs with a channel axis and spatial axes "
                         f"(signals, images), got samples of shape {tuple(x.shape[1:])}.")
    sigma = sigma if sigma is not None else max(x.shape[2:]) / 10
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    for axis in range(2, x.ndim):
        moved = x.movedim(axis, -1)
        rows = moved.reshape(-1, 1, moved.shape[-1])
        blurred = F.conv1d(F.pad(rows, (radius, radius), mode="replicate"), kernel)
        x = blurred.reshape(moved.shape).movedim(-1, axis)
    return x
