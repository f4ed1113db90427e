"""Conformance checks that every registered layer type runs.

Each entry of ``CASES`` gives a layer entry of the model-as-dict format
(type and parameters), the input shape(s) without the batch axis and an
independent reference: the same computation written here with plain torch
(explicit sums over kernel offsets, closed forms, index gathers built with
``numpy.pad``), never by calling the layer. Every case then runs the same
checks: forward, conversion through a model dict, the ``to_dict`` round trip
through JSON, the output shape and the input gradient.

A new layer type (or activation) joins by adding a case; the coverage tests
below fail until it has one.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

import innsight as ins
from innsight.layers import ACTIVATIONS, LAYER_TYPES

#: float64 forward and gradient comparisons (different summation orders only).
TOL = {"rtol": 1e-10, "atol": 1e-12}
BATCH = 3

_RNG = np.random.default_rng(20240611)


def _randn(*shape: int, scale: float = 0.5) -> np.ndarray:
    return scale * _RNG.standard_normal(shape)


def _t(value: Any) -> Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


#: A causal mask of 4 tokens (the most negative float32 above the diagonal) and one
#: that masks the last key.
_CAUSAL = np.triu(np.full((4, 4), np.finfo(np.float32).min), 1)
_PADDING = np.array([[0.0, 0.0, 0.0, -1e9]] * 4)
#: The causal mask with its first key masked too (left padding): the first query
#: attends to no key.
_LEFT_PADDED = _CAUSAL.copy()
_LEFT_PADDED[:, 0] = np.finfo(np.float32).min


def _repeated(x: Tensor, group: int) -> Tensor:
    """Key or value heads ``(B, kv_heads, S, E)`` copied for each query head they serve."""
    return x.repeat_interleave(group, dim=1)


def _attention(scores: Tensor, v: Tensor) -> Tensor:
    """``softmax(scores) @ v`` written out."""
    weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
    return torch.einsum("...ij,...je->...ie", weights, v)


@dataclass(frozen=True)
class LayerCase:
    """One layer entry, its input shape(s) and an independent reference ``ref(*xs)``."""

    id: str
    type: str
    params: dict[str, Any]
    in_shapes: tuple[tuple[int, ...], ...]
    ref: Callable[..., Tensor]
    #: Inputs are ``scale * N(0, 1)`` (large enough to reach clamps and thresholds).
    scale: float = 1.0
    #: Inputs are ``|scale * N(0, 1)| + 0.1`` (for square roots and their reciprocals).
    positive: bool = False
    #: Inputs are integer ids in ``[0, ids)`` (token ids; 0: real numbers).
    ids: int = 0

    def inputs(self, batch: int, seed: int, positive: bool = False) -> list[Tensor]:
        """Random inputs of the case's shapes, ``batch`` samples from ``seed``; positive
        ones where the case or the caller asks for them."""
        generator = torch.Generator().manual_seed(seed)
        if self.ids:
            return [torch.randint(self.ids, (batch, *shape), generator=generator)
                    for shape in self.in_shapes]
        xs = [self.scale * torch.randn(batch, *shape, generator=generator, dtype=torch.float64)
              for shape in self.in_shapes]
        return [x.abs() + 0.1 for x in xs] if positive or self.positive else xs


# ---- independent reference implementations ------------------------------------------


def _zero_pad(x: Tensor, pairs: list[tuple[int, int]], fill: float = 0.0) -> Tensor:
    """Pad the trailing ``len(pairs)`` axes of ``x`` with ``fill`` by concatenation."""
    first = x.ndim - len(pairs)
    for k, (before, after) in enumerate(pairs):
        dim = first + k
        parts = []
        for size in (before, None, after):
            if size is None:
                parts.append(x)
            elif size:
                shape = list(x.shape)
                shape[dim] = size
                parts.append(torch.full(shape, fill, dtype=x.dtype))
        x = torch.cat(parts, dim=dim)
    return x


def _windows(
    x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
    out_sizes: tuple[int, ...],
) -> list[tuple[tuple[int, ...], Tensor]]:
    """For each kernel offset, the strided view of the trailing axes it touches."""
    n = len(kernel)
    views = []
    for offs in itertools.product(*(range(k) for k in kernel)):
        index = tuple(
            slice(o * d, o * d + s * (m - 1) + 1, s)
            for o, d, s, m in zip(offs, dilation, stride, out_sizes)
        )
        views.append((offs, x[(Ellipsis, *index)] if n else x))
    return views


def conv_ref(
    weight: np.ndarray, bias: np.ndarray | None, stride: tuple[int, ...],
    pads: list[tuple[int, int]], dilation: tuple[int, ...], groups: int,
) -> Callable[[Tensor], Tensor]:
    """A convolution as a sum over kernel offsets of grouped channel contractions."""
    w = _t(weight)
    n = w.ndim - 2

    def ref(x: Tensor) -> Tensor:
        x = _zero_pad(x, pads)
        batch = x.shape[0]
        c_out, c_in_g = w.shape[:2]
        kernel = tuple(w.shape[2:])
        out_sizes = tuple(
            (x.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
            for i in range(n)
        )
        xg = x.reshape(batch, groups, c_in_g, *x.shape[2:])
        wg = w.reshape(groups, c_out // groups, c_in_g, *kernel)
        out = torch.zeros(batch, groups, c_out // groups, *out_sizes, dtype=x.dtype)
        for offs, view in _windows(xg, kernel, stride, dilation, out_sizes):
            out = out + torch.einsum("bgi...,goi->bgo...", view, wg[(Ellipsis, *offs)])
        out = out.reshape(batch, c_out, *out_sizes)
        if bias is not None:
            out = out + _t(bias).reshape(c_out, *([1] * n))
        return out

    return ref


def _pool_out_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling output size, including the rule that a window must start
    inside the input or the left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _pool_geometry(
    x: Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...],
    dilation: tuple[int, ...], ceil_mode: bool,
) -> tuple[tuple[int, ...], list[tuple[int, int]]]:
    """Output sizes, and per axis (padding, extra right overhang of ceil-mode windows)."""
    sizes = x.shape[2:]
    outs = tuple(
        _pool_out_size(sizes[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
        for i in range(len(kernel))
    )
    extra = [
        max(0, (outs[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1
            - (sizes[i] + 2 * padding[i]))
        for i in range(len(kernel))
    ]
    return outs, [(padding[i], extra[i]) for i in range(len(kernel))]


def max_pool_ref(kernel, stride, padding, dilation, ceil_mode) -> Callable[[Tensor], Tensor]:
    """The maximum over kernel offsets of strided views of the -inf-padded input."""

    def ref(x: Tensor) -> Tensor:
        outs, pads = _pool_geometry(x, kernel, stride, padding, dilation, ceil_mode)
        xp = _zero_pad(x, [(p, p + e) for p, e in pads], fill=-math.inf)
        views = [v for _, v in _windows(xp, kernel, stride, dilation, outs)]
        return torch.stack(views).amax(0)

    return ref


def avg_pool_ref(
    kernel, stride, padding, ceil_mode, count_include_pad
) -> Callable[[Tensor], Tensor]:
    """Window sums divided by the window sums of a mask: ones over the input and
    (with ``count_include_pad``) over the padding, zeros beyond it."""
    ones = (1,) * len(kernel)

    def ref(x: Tensor) -> Tensor:
        outs, pads = _pool_geometry(x, kernel, stride, padding, ones, ceil_mode)
        xp = _zero_pad(x, [(p, p + e) for p, e in pads])
        mask = torch.ones(x.shape[2:], dtype=x.dtype)
        if count_include_pad:
            mask = _zero_pad(mask, [(p, p) for p, _ in pads], fill=1.0)
            mask = _zero_pad(mask, [(0, e) for _, e in pads])
        else:
            mask = _zero_pad(mask, [(p, p + e) for p, e in pads])
        total = sum(v for _, v in _windows(xp, kernel, stride, ones, outs))
        count = sum(v for _, v in _windows(mask, kernel, stride, ones, outs))
        return total / count

    return ref


def adaptive_pool_ref(output_size: tuple[int, ...], kind: str) -> Callable[[Tensor], Tensor]:
    """Window ``i`` of an axis of length ``L`` covers ``floor(i L / o) : ceil((i + 1) L / o)``."""

    def ref(x: Tensor) -> Tensor:
        n = len(output_size)
        sizes = x.shape[2:]
        dims = tuple(range(2, 2 + n))
        cells = []
        for idx in itertools.product(*(range(o) for o in output_size)):
            window = x[(slice(None), slice(None)) + tuple(
                slice((i * s) // o, -((-(i + 1) * s) // o))
                for i, s, o in zip(idx, sizes, output_size)
            )]
            cells.append(window.mean(dims) if kind == "Avg" else window.amax(dims))
        return torch.stack(cells, -1).reshape(*x.shape[:2], *output_size)

    return ref


def pad_ref(pairs: list[list[int]], mode: str, value: float = 0.0) -> Callable[[Tensor], Tensor]:
    """Gather the input at the indices that ``numpy.pad`` assigns to every position."""
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]

    def ref(x: Tensor) -> Tensor:
        shape = tuple(x.shape[1:])
        n = math.prod(shape)
        full = [(0, 0)] * (len(shape) - len(pairs)) + [tuple(p) for p in pairs]
        kwargs = {"constant_values": -1} if mode == "constant" else {}
        index = np.pad(np.arange(n).reshape(shape), full, mode=np_mode, **kwargs)
        index = np.where(index < 0, n, index)  # position n holds the fill value
        flat = torch.cat([x.reshape(x.shape[0], n),
                          torch.full((x.shape[0], 1), value, dtype=x.dtype)], 1)
        return flat[:, torch.as_tensor(index.ravel())].reshape(x.shape[0], *index.shape)

    return ref


def _sigmoid(x: Tensor) -> Tensor:
    return 1 / (1 + torch.exp(-x))


def _softmax(dim: int) -> Callable[[Tensor], Tensor]:
    def ref(x: Tensor) -> Tensor:
        e = torch.exp(x - x.amax(dim, keepdim=True))
        return e / e.sum(dim, keepdim=True)

    return ref


def _gelu_tanh(x: Tensor) -> Tensor:
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _softplus(beta: float, threshold: float) -> Callable[[Tensor], Tensor]:
    return lambda x: torch.where(beta * x > threshold, x, torch.log1p(torch.exp(beta * x)) / beta)


# ---- the cases ------------------------------------------------------------------------


def _dense(id: str, n_in: int, n_out: int, shape: tuple[int, ...], bias: bool) -> LayerCase:
    w, b = _randn(n_out, n_in), (_randn(n_out) if bias else None)
    params = {"weight": w} if b is None else {"weight": w, "bias": b}

    def ref(x: Tensor) -> Tensor:
        out = torch.einsum("...i,oi->...o", x, _t(w))
        return out if b is None else out + _t(b)

    return LayerCase(id, "Dense", params, (shape,), ref)


def _conv(
    id: str, n: int, c_in: int, c_out: int, kernel: tuple[int, ...], spatial: tuple[int, ...],
    *, bias: bool = True, stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
) -> LayerCase:
    w = _randn(c_out, c_in // groups, *kernel)
    b = _randn(c_out) if bias else None
    params: dict[str, Any] = {"weight": w}
    if b is not None:
        params["bias"] = b
    for key, value, default in (("stride", stride, 1), ("padding", padding, 0),
                                ("dilation", dilation, 1), ("groups", groups, 1)):
        if value != default:
            params[key] = value
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * n  # noqa: E731
    if isinstance(padding, (list, tuple)) and isinstance(padding[0], (list, tuple)):
        pads = [tuple(p) for p in padding]
    else:
        pads = [(p, p) for p in as_tuple(padding)]
    ref = conv_ref(w, b, as_tuple(stride), pads, as_tuple(dilation), groups)
    return LayerCase(id, f"Conv{n}D", params, ((c_in, *spatial),), ref)


def _conv_transpose(
    id: str, n: int, c_in: int, c_out: int, kernel: tuple[int, ...], spatial: tuple[int, ...],
    *, bias: bool = True, stride: int = 1, padding: int = 0, output_padding: int = 0,
    dilation: int = 1, groups: int = 1,
) -> LayerCase:
    """A transposed convolution, referenced by its textbook equivalent: zeros inserted
    between the inputs (``stride - 1``), the result padded by ``dilation * (kernel - 1) -
    padding`` (plus ``output_padding`` after), then a convolution with stride 1 and the
    kernel flipped and its channel axes swapped, written out by :func:`conv_ref`."""
    w = _randn(c_in, c_out // groups, *kernel)
    b = _randn(c_out) if bias else None
    params: dict[str, Any] = {"weight": w}
    if b is not None:
        params["bias"] = b
    for key, value, default in (("stride", stride, 1), ("padding", padding, 0),
                                ("output_padding", output_padding, 0),
                                ("dilation", dilation, 1), ("groups", groups, 1)):
        if value != default:
            params[key] = value
    # (C_in, C_out/g, *k) -> (C_out, C_in/g, *k), flipped along the kernel axes
    grouped = w.reshape(groups, c_in // groups, c_out // groups, *kernel).swapaxes(1, 2)
    w_conv = np.flip(grouped.reshape(c_out, c_in // groups, *kernel), axis=tuple(range(2, 2 + n)))
    pads = [(dilation * (k - 1) - padding, dilation * (k - 1) - padding + output_padding)
            for k in kernel]
    convolve = conv_ref(w_conv.copy(), b, (1,) * n, pads, (dilation,) * n, groups)

    def ref(x: Tensor) -> Tensor:
        spread = torch.zeros(*x.shape[:2], *[(m - 1) * stride + 1 for m in x.shape[2:]],
                             dtype=x.dtype)
        spread[(slice(None), slice(None), *[slice(None, None, stride)] * n)] = x
        return convolve(spread)

    return LayerCase(id, f"ConvTranspose{n}D", params, ((c_in, *spatial),), ref)


def _interpolation_matrix(n_in: int, n_out: int, mode: str, align_corners: bool | None,
                          scale: float) -> Tensor:
    """``(n_out, n_in)``: each output position as a combination of inputs, along one axis.
    ``scale`` is the input step per output step (``n_in / n_out``, or ``1 / scale_factor``
    where a scale factor was given)."""
    matrix = torch.zeros(n_out, n_in, dtype=torch.float64)
    for j in range(n_out):
        if mode == "nearest":
            matrix[j, min(math.floor(j * scale), n_in - 1)] = 1.0
        elif mode == "nearest-exact":
            matrix[j, min(math.floor((j + 0.5) * scale), n_in - 1)] = 1.0
        else:
            if align_corners:
                src = j * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
            else:
                src = max((j + 0.5) * scale - 0.5, 0.0)
            low = min(math.floor(src), n_in - 1)
            high, frac = min(low + 1, n_in - 1), src - low
            matrix[j, low] += 1.0 - frac
            matrix[j, high] += frac
    return matrix


def _upsample(id: str, shape: tuple[int, ...], mode: str, *, size: Any = None,
              scale_factor: Any = None, align_corners: bool | None = None) -> LayerCase:
    """Interpolation as one matrix per spatial axis, built from the formulas."""
    n = len(shape) - 1
    sizes = [size] * n if isinstance(size, int) else size
    factors = [scale_factor] * n if isinstance(scale_factor, (int, float)) else scale_factor
    if sizes is None:
        sizes = [math.floor(m * f) for m, f in zip(shape[1:], factors)]
    scales = [1 / f for f in factors] if factors is not None else [
        m / o for m, o in zip(shape[1:], sizes)]
    matrices = [_interpolation_matrix(m, o, mode, align_corners, sc)
                for m, o, sc in zip(shape[1:], sizes, scales)]
    params: dict[str, Any] = {"mode": mode}
    for key, value in (("size", size), ("scale_factor", scale_factor),
                       ("align_corners", align_corners)):
        if value is not None:
            params[key] = value

    def ref(x: Tensor) -> Tensor:
        for axis, matrix in enumerate(matrices, start=2):
            x = torch.movedim(torch.movedim(x, axis, -1) @ matrix.T, -1, axis)
        return x

    return LayerCase(id, "Upsample", params, (shape,), ref)


def _max_pool(id: str, shape: tuple[int, ...], kernel, stride=None, padding=0, dilation=1,
              ceil_mode=False) -> LayerCase:
    n = len(shape) - 1
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * n  # noqa: E731
    params: dict[str, Any] = {"kernel_size": kernel}
    if stride is not None:
        params["stride"] = stride
    if padding:
        params["padding"] = padding
    if dilation != 1:
        params["dilation"] = dilation
    if ceil_mode:
        params["ceil_mode"] = True
    ref = max_pool_ref(as_tuple(kernel), as_tuple(kernel if stride is None else stride),
                       as_tuple(padding), as_tuple(dilation), ceil_mode)
    return LayerCase(id, f"MaxPool{n}D", params, (shape,), ref)


def _avg_pool(id: str, shape: tuple[int, ...], kernel, stride=None, padding=0, ceil_mode=False,
              count_include_pad=True) -> LayerCase:
    n = len(shape) - 1
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else (v,) * n  # noqa: E731
    params: dict[str, Any] = {"kernel_size": kernel, "count_include_pad": count_include_pad}
    if stride is not None:
        params["stride"] = stride
    if padding:
        params["padding"] = padding
    if ceil_mode:
        params["ceil_mode"] = True
    ref = avg_pool_ref(as_tuple(kernel), as_tuple(kernel if stride is None else stride),
                       as_tuple(padding), ceil_mode, count_include_pad)
    return LayerCase(id, f"AvgPool{n}D", params, (shape,), ref)


def _adaptive(id: str, kind: str, shape: tuple[int, ...], output_size: Any) -> LayerCase:
    n = len(shape) - 1
    sizes = tuple(output_size) if isinstance(output_size, list) else (output_size,) * n
    return LayerCase(id, f"Adaptive{kind}Pool{n}D", {"output_size": output_size}, (shape,),
                     adaptive_pool_ref(sizes, kind))


def _batch_norm(id: str, shape: tuple[int, ...], affine: bool, eps: float | None) -> LayerCase:
    c = shape[0]
    mean, var = _randn(c), 0.3 + _RNG.random(c)
    weight, bias = (0.5 + _RNG.random(c), _randn(c)) if affine else (None, None)
    params: dict[str, Any] = {"running_mean": mean, "running_var": var}
    if affine:
        params.update(weight=weight, bias=bias)
    if eps is not None:
        params["eps"] = eps
    eps_value = 1e-5 if eps is None else eps
    tail = (1,) * (len(shape) - 1)

    def ref(x: Tensor) -> Tensor:
        out = (x - _t(mean).reshape(c, *tail)) / torch.sqrt(_t(var).reshape(c, *tail) + eps_value)
        if affine:
            out = out * _t(weight).reshape(c, *tail) + _t(bias).reshape(c, *tail)
        return out

    return LayerCase(id, "BatchNorm", params, (shape,), ref)


def _layer_norm(id: str, shape: tuple[int, ...], axes: list[int], affine: bool,
                eps: float | None = None) -> LayerCase:
    sizes = tuple(shape[a] for a in axes)
    weight, bias = (0.5 + _RNG.random(sizes), _randn(*sizes)) if affine else (None, None)
    params: dict[str, Any] = {"axes": axes}
    if affine:
        params.update(weight=weight, bias=bias)
    if eps is not None:
        params["eps"] = eps
    eps_value = 1e-5 if eps is None else eps
    dims = tuple(a + 1 for a in axes)
    n = math.prod(sizes)
    per_axis = [shape[a] if a in axes else 1 for a in range(len(shape))]

    def ref(x: Tensor) -> Tensor:
        centred = x - x.sum(dims, keepdim=True) / n
        out = centred / torch.sqrt((centred * centred).sum(dims, keepdim=True) / n + eps_value)
        if affine:
            out = out * _t(weight).reshape(per_axis) + _t(bias).reshape(per_axis)
        return out

    return LayerCase(id, "LayerNorm", params, (shape,), ref)


def _act(id: str, name: str, ref: Callable[[Tensor], Tensor], shape: tuple[int, ...] = (2, 3, 4),
         scale: float = 1.0, positive: bool = False, **params: Any) -> LayerCase:
    return LayerCase(id, "Activation", {"act_name": name, **params}, (shape,), ref, scale=scale,
                     positive=positive)


def _affine_case(id: str, shape: tuple[int, ...], scale: Any, shift: Any) -> LayerCase:
    params = {"scale": scale, "shift": shift}
    return LayerCase(id, "Affine", params, (shape,), lambda x: x * _t(scale) + _t(shift))


_SE_GATE = (3, 1, 1)
_EMBEDDING = 0.5 * np.random.default_rng(7).standard_normal((7, 4))  # own stream: the
# cases above draw from _RNG in order

CASES: list[LayerCase] = [
    # dense
    _dense("dense_bias", 5, 4, (5,), bias=True),
    _dense("dense_no_bias", 5, 4, (5,), bias=False),
    _dense("dense_last_axis_of_signal", 6, 3, (2, 6), bias=True),
    # convolution
    _conv("conv1d_plain", 1, 2, 3, (3,), (9,)),
    _conv("conv1d_stride_dilation_pad", 1, 2, 4, (3,), (11,), stride=2, dilation=2, padding=2,
          bias=False),
    _conv("conv1d_asym_pad_groups", 1, 4, 6, (2,), (7,), padding=[[0, 3]], groups=2),
    _conv("conv2d_plain", 2, 3, 4, (3, 3), (6, 7)),
    _conv("conv2d_stride_dilation", 2, 2, 3, (3, 2), (9, 8), stride=[2, 1], dilation=[1, 2],
          padding=[1, 0]),
    _conv("conv2d_groups", 2, 4, 6, (2, 2), (5, 5), groups=2, stride=2),
    _conv("conv2d_depthwise", 2, 3, 3, (3, 3), (5, 6), groups=3, padding=1, bias=False),
    _conv("conv2d_asym_pad", 2, 2, 3, (3, 3), (5, 6), padding=[[0, 1], [2, 1]]),
    _conv("conv3d_plain", 3, 2, 3, (2, 2, 2), (3, 4, 4)),
    _conv("conv3d_stride_pad_asym", 3, 2, 2, (2, 3, 2), (4, 5, 4), stride=[1, 2, 1],
          padding=[[1, 0], [1, 1], [0, 2]], dilation=[1, 1, 2]),
    # transposed convolution
    _conv_transpose("convT1d_plain", 1, 2, 3, (3,), (5,)),
    _conv_transpose("convT1d_stride_pad_outpad", 1, 2, 4, (3,), (6,), stride=2, padding=1,
                    output_padding=1, bias=False),
    _conv_transpose("convT2d_stride2_kernel2", 2, 3, 2, (2, 2), (4, 5), stride=2),
    _conv_transpose("convT2d_groups_dilation", 2, 4, 6, (3, 3), (4, 4), groups=2, dilation=2,
                    padding=1),
    _conv_transpose("convT3d", 3, 2, 2, (2, 2, 2), (3, 3, 2), stride=2, padding=1,
                    output_padding=1),
    # interpolation
    _upsample("upsample_nearest2d_x2", (2, 3, 4), "nearest", scale_factor=2),
    _upsample("upsample_nearest2d_size", (2, 3, 4), "nearest", size=[7, 5]),
    _upsample("upsample_nearest_exact1d", (2, 5), "nearest-exact", size=8),
    _upsample("upsample_linear1d_corners", (2, 4), "linear", size=7, align_corners=True),
    _upsample("upsample_bilinear_x1.5", (2, 4, 3), "linear", scale_factor=1.5,
              align_corners=False),
    _upsample("upsample_bilinear_size_down", (2, 6, 7), "linear", size=[4, 5],
              align_corners=False),
    _upsample("upsample_trilinear_corners", (2, 2, 3, 2), "linear", scale_factor=[2, 1, 2],
              align_corners=True),
    # max pooling
    _max_pool("maxpool1d_plain", (2, 8), 2),
    _max_pool("maxpool1d_overlap_pad_ceil", (2, 10), 3, stride=2, padding=1, ceil_mode=True),
    _max_pool("maxpool1d_dilation", (2, 11), 2, stride=1, dilation=3),
    _max_pool("maxpool2d_plain", (3, 6, 8), 2),
    _max_pool("maxpool2d_overlap", (2, 7, 7), 3, stride=2),
    _max_pool("maxpool2d_pad_ceil", (2, 7, 6), [3, 2], stride=[2, 2], padding=[1, 1],
              ceil_mode=True),
    _max_pool("maxpool2d_ceil_only", (2, 5, 7), 2, ceil_mode=True),
    _max_pool("maxpool3d", (2, 4, 5, 4), 2, stride=[1, 2, 2]),
    # average pooling
    _avg_pool("avgpool1d_plain", (2, 8), 2),
    _avg_pool("avgpool1d_pad_include", (2, 9), 3, stride=2, padding=1, count_include_pad=True),
    _avg_pool("avgpool1d_pad_exclude", (2, 9), 3, stride=2, padding=1, count_include_pad=False),
    _avg_pool("avgpool1d_ceil_include", (2, 10), 3, stride=2, padding=1, ceil_mode=True,
              count_include_pad=True),
    _avg_pool("avgpool2d_plain", (3, 6, 8), 2),
    _avg_pool("avgpool2d_pad_include", (2, 7, 6), 3, stride=2, padding=1, count_include_pad=True),
    _avg_pool("avgpool2d_pad_exclude", (2, 7, 6), 3, stride=2, padding=1,
              count_include_pad=False),
    _avg_pool("avgpool2d_ceil_exclude", (2, 8, 7), [3, 2], stride=[2, 3], padding=[1, 0],
              ceil_mode=True, count_include_pad=False),
    _avg_pool("avgpool2d_ceil_include", (2, 8, 7), [3, 2], stride=[2, 3], padding=[1, 0],
              ceil_mode=True, count_include_pad=True),
    _avg_pool("avgpool3d", (2, 4, 4, 6), [2, 2, 3]),
    # adaptive pooling
    _adaptive("adaptive_avg1d_nondivisible", "Avg", (2, 10), 4),
    _adaptive("adaptive_avg1d_global", "Avg", (2, 7), 1),
    _adaptive("adaptive_avg2d_nondivisible", "Avg", (2, 7, 5), [3, 2]),
    _adaptive("adaptive_avg2d_global", "Avg", (3, 5, 6), 1),
    _adaptive("adaptive_avg2d_upsample", "Avg", (2, 3, 4), [5, 4]),
    _adaptive("adaptive_avg3d", "Avg", (2, 5, 4, 3), [2, 3, 2]),
    _adaptive("adaptive_max1d_nondivisible", "Max", (2, 10), 3),
    _adaptive("adaptive_max2d_nondivisible", "Max", (2, 7, 5), [3, 2]),
    _adaptive("adaptive_max2d_global", "Max", (3, 5, 6), 1),
    _adaptive("adaptive_max3d", "Max", (2, 5, 4, 3), [2, 1, 2]),
    # batch normalisation
    _batch_norm("batchnorm_vector", (4,), affine=True, eps=None),
    _batch_norm("batchnorm_image", (3, 4, 5), affine=True, eps=1e-3),
    _batch_norm("batchnorm_signal_no_affine", (3, 6), affine=False, eps=None),
    # layer normalisation
    _layer_norm("layernorm_vector", (5,), [0], affine=True),
    _layer_norm("layernorm_last_axis_of_signal", (3, 6), [1], affine=True, eps=1e-3),
    _layer_norm("layernorm_image_channels", (3, 4, 5), [0], affine=True, eps=1e-6),
    _layer_norm("layernorm_image_spatial_no_affine", (3, 4, 5), [1, 2], affine=False),
    _layer_norm("layernorm_channels_and_width", (3, 4, 5), [0, 2], affine=True),
    _layer_norm("layernorm_all_axes", (2, 3, 4), [0, 1, 2], affine=True, eps=0.5),
    # activations
    _act("relu", "relu", lambda x: torch.where(x > 0, x, torch.zeros_like(x))),
    _act("relu6", "relu6", lambda x: x.clamp(0, 6), scale=5.0),
    _act("leaky_relu_default", "leaky_relu", lambda x: torch.where(x > 0, x, 0.01 * x)),
    _act("leaky_relu_0.2", "leaky_relu", lambda x: torch.where(x > 0, x, 0.2 * x),
         negative_slope=0.2),
    _act("elu_default", "elu", lambda x: torch.where(x > 0, x, torch.exp(x) - 1)),
    _act("elu_alpha", "elu", lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x) - 1)), alpha=0.5),
    _act("gelu_exact", "gelu", lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))),
    _act("gelu_tanh", "gelu", _gelu_tanh, approximate="tanh"),
    _act("silu", "silu", lambda x: x * _sigmoid(x)),
    _act("softplus_default", "softplus", _softplus(1.0, 20.0)),
    _act("softplus_beta_threshold", "softplus", _softplus(2.0, 5.0), scale=3.0, beta=2.0,
         threshold=5.0),
    _act("sigmoid", "sigmoid", _sigmoid),
    _act("tanh", "tanh", lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1)),
    _act("hardtanh_default", "hardtanh", lambda x: x.clamp(-1, 1), scale=2.0),
    _act("hardtanh_bounds", "hardtanh", lambda x: x.clamp(-0.5, 2.0), scale=2.0, min_val=-0.5,
         max_val=2.0),
    _act("hardsigmoid", "hardsigmoid", lambda x: (x / 6 + 0.5).clamp(0, 1), scale=4.0),
    _act("hardswish", "hardswish", lambda x: x * (x + 3).clamp(0, 6) / 6, scale=4.0),
    _act("softmax_vector", "softmax", _softmax(1), shape=(5,)),
    _act("softmax_axis0_3d", "softmax", _softmax(1), axis=0),
    _act("softmax_axis_last_3d", "softmax", _softmax(-1), axis=-1),
    _act("softmax_axis1_3d", "softmax", _softmax(2), axis=1),
    _act("selu", "selu", lambda x: 1.0507009873554805 * torch.where(
        x > 0, x, 1.6732632423543772 * (torch.exp(x) - 1))),
    _act("celu_alpha", "celu", lambda x: torch.where(x > 0, x, 0.5 * (torch.exp(x / 0.5) - 1)),
         alpha=0.5),
    _act("mish", "mish", lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))),
    _act("softsign", "softsign", lambda x: x / (1 + x.abs())),
    _act("logsigmoid", "logsigmoid", lambda x: -torch.log1p(torch.exp(-x))),
    _act("tanhshrink", "tanhshrink", lambda x: x - (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1)),
    _act("exp", "exp", lambda x: torch.pow(math.e, x)),
    _act("identity", "identity", lambda x: x * 1),
    _act("abs", "abs", lambda x: torch.where(x < 0, -x, x)),
    _act("pow_cube", "pow", lambda x: x * x * x, exponent=3.0),
    _act("pow_half", "pow", lambda x: torch.exp(0.5 * torch.log(x)), exponent=0.5,
         positive=True),
    _act("sqrt", "sqrt", lambda x: torch.exp(0.5 * torch.log(x)), positive=True),
    _act("rsqrt", "rsqrt", lambda x: 1 / torch.exp(0.5 * torch.log(x)), positive=True),
    # shape-only
    LayerCase("flatten", "Flatten", {}, ((2, 3, 4),), lambda x: x.reshape(x.shape[0], 24)),
    LayerCase("reshape", "Reshape", {"shape": [4, 6]}, ((2, 3, 4),),
              lambda x: x.reshape(x.shape[0], 4, 6)),
    LayerCase("reshape_minus_one", "Reshape", {"shape": [3, -1, 2]}, ((12,),),
              lambda x: x.reshape(x.shape[0], 3, 2, 2)),
    LayerCase("permute_channels_last", "Permute", {"perm": [1, 2, 0]}, ((2, 3, 4),),
              lambda x: torch.einsum("bchw->bhwc", x)),
    LayerCase("permute_swap", "Permute", {"perm": [1, 0]}, ((3, 5),),
              lambda x: x.transpose(1, 2)),
    LayerCase("slice_channels", "Slice", {"ranges": [[1, 3, 1], [0, 4, 1]]}, ((4, 4),),
              lambda x: x[:, 1:3, :]),
    LayerCase("slice_steps", "Slice", {"ranges": [[0, 2, 1], [1, 6, 2], [2, 3, 1]]},
              ((2, 6, 4),), lambda x: x[:, :, 1:6:2, 2:3]),
    # padding
    LayerCase("pad_constant", "Padding", {"padding": [[1, 2], [0, 3]], "mode": "constant",
              "value": 1.5}, ((2, 4, 5),), pad_ref([[1, 2], [0, 3]], "constant", 1.5)),
    LayerCase("pad_constant_channels", "Padding", {"padding": [[1, 0], [0, 1], [2, 0]]},
              ((2, 3, 4),), pad_ref([[1, 0], [0, 1], [2, 0]], "constant")),
    LayerCase("pad_reflect", "Padding", {"padding": [[1, 2], [2, 1]], "mode": "reflect"},
              ((2, 4, 5),), pad_ref([[1, 2], [2, 1]], "reflect")),
    LayerCase("pad_reflect_signal", "Padding", {"padding": [[3, 1]], "mode": "reflect"},
              ((2, 6),), pad_ref([[3, 1]], "reflect")),
    LayerCase("pad_replicate", "Padding", {"padding": [[2, 3]], "mode": "replicate"}, ((2, 6),),
              pad_ref([[2, 3]], "replicate")),
    LayerCase("pad_replicate_image", "Padding", {"padding": [[0, 2], [3, 1]],
              "mode": "replicate"}, ((2, 4, 5),), pad_ref([[0, 2], [3, 1]], "replicate")),
    LayerCase("pad_circular", "Padding", {"padding": [[1, 0], [2, 3]], "mode": "circular"},
              ((2, 4, 5),), pad_ref([[1, 0], [2, 3]], "circular")),
    # merging
    LayerCase("add_two", "Add", {}, ((3, 4), (3, 4)), lambda a, b: a + b),
    LayerCase("add_three", "Add", {}, ((2, 3, 4),) * 3, lambda a, b, c: a + b + c),
    LayerCase("add_broadcast", "Add", {}, (_SE_GATE, (3, 4, 5)), lambda a, b: a + b),
    LayerCase("concat_channels", "Concatenate", {"axis": 0}, ((2, 4, 5), (3, 4, 5)),
              lambda a, b: torch.cat([a, b], 1)),
    LayerCase("concat_width_three", "Concatenate", {"axis": 2},
              ((2, 3, 1), (2, 3, 4), (2, 3, 2)), lambda a, b, c: torch.cat([a, b, c], 3)),
    LayerCase("concat_negative_axis", "Concatenate", {"axis": -1}, ((2, 3), (2, 5)),
              lambda a, b: torch.cat([a, b], 2)),
    LayerCase("concat_vectors", "Concatenate", {}, ((4,), (3,)), lambda a, b: torch.cat([a, b], 1)),
    LayerCase("multiply_same", "Multiply", {}, ((3, 4), (3, 4)), lambda a, b: a * b),
    LayerCase("multiply_se_gate", "Multiply", {}, (_SE_GATE, (3, 4, 5)), lambda a, b: a * b),
    LayerCase("multiply_normaliser_broadcast", "Multiply", {"lrp_constant": 1},
              ((3, 4), (3, 1)), lambda a, b: a * b),
    LayerCase("multiply_gate_held_fixed", "Multiply", {"lrp_constant": 0}, ((3, 4), (3, 4)),
              lambda a, b: a * b),
    LayerCase("matmul_heads", "MatMul", {}, ((2, 3, 4), (2, 4, 5)),
              lambda a, b: torch.einsum("bhik,bhkj->bhij", a, b)),
    LayerCase("matmul_lrp_constant", "MatMul", {"lrp_constant": 0}, ((3, 4), (4, 2)),
              lambda a, b: torch.einsum("bik,bkj->bij", a, b)),
    LayerCase("matmul_broadcast", "MatMul", {"lrp_constant": 1}, ((1, 3, 4), (2, 4, 5)),
              lambda a, b: torch.einsum("bik,bhkj->bhij", a[:, 0], b)),
    LayerCase("attention_heads", "ScaledDotProductAttention", {"scale": 0.4},
              ((2, 3, 4), (2, 5, 4), (2, 5, 6)),
              lambda q, k, v: _attention(0.4 * torch.einsum("bhie,bhje->bhij", q, k), v)),
    LayerCase("attention_causal", "ScaledDotProductAttention",
              {"scale": 0.5, "mask": _CAUSAL}, ((4, 3), (4, 3), (4, 2)),
              lambda q, k, v: _attention(0.5 * q @ k.mT + _t(_CAUSAL), v)),
    LayerCase("attention_mask_and_bias", "ScaledDotProductAttention",
              {"scale": 1.0, "mask": _PADDING}, ((4, 3), (4, 3), (4, 2), (4, 4)),
              lambda q, k, v, b: _attention(q @ k.mT + _t(_PADDING) + b, v)),
    # a query attending to no key gets no weights, as in torch's kernel with booleans
    LayerCase("attention_row_attending_no_key", "ScaledDotProductAttention",
              {"scale": 0.5, "mask": _LEFT_PADDED, "masked_rows": "zero"},
              ((2, 4, 3), (2, 4, 3), (2, 4, 2)),
              lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
                  q, k, v, attn_mask=torch.as_tensor(_LEFT_PADDED == 0), scale=0.5)),
    # grouped-query attention: each key and value head serves two query heads in a row
    LayerCase("attention_grouped", "ScaledDotProductAttention", {"scale": 0.4},
              ((4, 3, 2), (2, 5, 2), (2, 5, 3)),
              lambda q, k, v: _attention(0.4 * q @ _repeated(k, 2).mT, _repeated(v, 2))),
    LayerCase("attention_grouped_causal_and_bias", "ScaledDotProductAttention",
              {"scale": 0.5, "mask": _CAUSAL}, ((6, 4, 3), (2, 4, 3), (2, 4, 2), (1, 4, 4)),
              lambda q, k, v, b: _attention(0.5 * q @ _repeated(k, 3).mT + _t(_CAUSAL) + b,
                                            _repeated(v, 3))),
    # reductions
    LayerCase("mean_spatial", "Mean", {"axes": [1, 2]}, ((3, 4, 5),),
              lambda x: x.sum((2, 3)) / 20),
    LayerCase("mean_spatial_keepdims", "Mean", {"axes": [1, 2], "keepdims": True}, ((3, 4, 5),),
              lambda x: (x.sum((2, 3)) / 20).reshape(x.shape[0], 3, 1, 1)),
    LayerCase("mean_channels_int_axis", "Mean", {"axes": 0}, ((3, 4),),
              lambda x: x.sum(1) / 3),
    LayerCase("mean_negative_axis", "Mean", {"axes": [-1], "keepdims": True}, ((3, 4),),
              lambda x: x.sum(2, keepdim=True) / 4),
    # affine
    _affine_case("affine_scalar", (3, 4), 0.5, -1.25),
    _affine_case("affine_per_channel", (3, 4, 5), _randn(3, 1, 1), _randn(3, 1, 1)),
    _affine_case("affine_full_shape", (4,), _randn(4), _randn(4)),
    LayerCase("affine_defaults", "Affine", {}, ((2, 3),), lambda x: x * 1.0 + 0.0),
    # token inputs: an embedding lookup, and helper operations on integers
    LayerCase("embedding", "Embedding", {"weight": _EMBEDDING}, ((5,),),
              lambda ids: _t(_EMBEDDING)[ids], ids=7),
    LayerCase("embedding_grid", "Embedding", {"weight": _EMBEDDING}, ((2, 3),),
              lambda ids: _t(_EMBEDDING)[ids], ids=7),
    LayerCase("helper_not_equal", "Helper", {"op": "aten.ne.Scalar", "args": [{"input": 0}, 1]},
              ((5,),), lambda ids: ids != 1, ids=3),
    LayerCase("helper_positions", "Helper",
              {"op": "aten.cumsum.default", "args": [{"input": 0}, 1],
               "kwargs": {"dtype": {"dtype": "int64"}}},
              ((5,),), lambda mask: torch.stack([mask[:, :k + 1].sum(1) for k in range(5)], 1),
              ids=2),
    LayerCase("helper_batch_expand", "Helper",
              {"op": "aten.expand.default", "args": [{"input": 0}, [{"batch": 1}, 3]]},
              ((3,),), lambda ids: ids * 1, ids=3),
    LayerCase("helper_max_item", "Helper",
              {"op": "aten.max.dim", "args": [{"input": 0}, 2], "item": 0},
              ((2, 5),), lambda ids: ids.amax(2), ids=9),
    # input
    LayerCase("input_token_ids", "Input", {"dtype": "int64"}, ((4,),), lambda x: x * 1, ids=9),
    LayerCase("input_vector", "Input", {}, ((4,),), lambda x: x * 1),
    LayerCase("input_image", "Input", {}, ((2, 3, 4),), lambda x: x * 1),
]

_IDS = [case.id for case in CASES]


# ---- helpers --------------------------------------------------------------------------


def _inputs(case: LayerCase, seed: int = 0, requires_grad: bool = False) -> list[Tensor]:
    return [x.requires_grad_(requires_grad and x.is_floating_point())
            for x in case.inputs(BATCH, seed)]


def _layer(case: LayerCase):
    return LAYER_TYPES[case.type].from_params(case.type, dict(case.params), "case").double()


def model_dict(case: LayerCase) -> dict[str, Any]:
    """Input layer(s) and the case's layer, with every graph key given explicitly."""
    if case.type == "Input":
        return {"input_dim": [list(case.in_shapes[0])], "input_nodes": [0], "output_nodes": [0],
                "layers": [{"type": "Input", "name": "in", "input_layers": [], **case.params}]}
    n = len(case.in_shapes)
    kind = {"dtype": "int64"} if case.ids else {}
    layers = [{"type": "Input", "name": f"in{k}", "input_layers": [], **kind} for k in range(n)]
    layers.append({"type": case.type, "name": "probe", "input_layers": list(range(n)),
                   **case.params})
    return {
        "input_dim": [list(s) for s in case.in_shapes],
        "input_nodes": list(range(n)),
        "output_nodes": [n],
        "layers": layers,
    }


def _model_input(xs: list[Tensor]) -> Tensor | list[Tensor]:
    return xs[0] if len(xs) == 1 else xs


# ---- coverage: new layer types and activations must add a case ------------------------


def test_every_layer_type_has_a_case() -> None:
    missing = sorted(set(LAYER_TYPES) - {case.type for case in CASES})
    assert not missing, f"layer types without a conformance case: {missing}"


def test_every_activation_has_a_case_with_non_default_params() -> None:
    acts = [case.params for case in CASES if case.type == "Activation"]
    missing = sorted(set(ACTIVATIONS) - {p["act_name"] for p in acts})
    assert not missing, f"activations without a conformance case: {missing}"
    for name, spec in ACTIVATIONS.items():
        for key, default in spec.defaults.items():
            assert any(
                p["act_name"] == name and key in p and p[key] != default for p in acts
            ), f"activation {name!r}: no case sets {key!r} to a non-default value"


def test_case_ids_are_unique() -> None:
    assert len(set(_IDS)) == len(_IDS)


# ---- the checks every case runs -------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_forward_matches_reference(case: LayerCase) -> None:
    xs = _inputs(case)
    with torch.no_grad():
        actual = _layer(case)(*xs)
        expected = case.ref(*xs)
    assert actual.dtype == (expected.dtype if case.ids and case.type != "Embedding"
                            else torch.float64)
    torch.testing.assert_close(actual, expected, **TOL)


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_converted_model_matches_reference(case: LayerCase) -> None:
    conv = ins.convert(model_dict(case), dtype="double")
    xs = _inputs(case, seed=1)
    with torch.no_grad():
        actual = conv.model(_model_input(xs))
        expected = case.ref(*xs)
    torch.testing.assert_close(actual, expected, **TOL)


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_to_dict_round_trip_through_json(case: LayerCase) -> None:
    conv = ins.convert(model_dict(case), dtype="double")
    described = conv.to_dict()
    loaded = json.loads(json.dumps(described))
    assert loaded == described, "to_dict() must hold only JSON-plain values"

    # Array parameters come back exactly (float64 model: no rounding).
    entry = loaded["layers"][-1]
    for key, value in case.params.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(np.asarray(entry[key]), value)

    again = ins.convert(loaded, dtype="double")
    assert again.to_dict() == described
    xs = _inputs(case, seed=2)
    with torch.no_grad():
        assert torch.equal(again.model(_model_input(xs)), conv.model(_model_input(xs)))


@pytest.mark.parametrize("case", CASES, ids=_IDS)
def test_output_dim_matches_reference_shape(case: LayerCase) -> None:
    conv = ins.convert(model_dict(case), dtype="double")
    with torch.no_grad():
        expected = tuple(case.ref(*_inputs(case)).shape[1:])
    assert conv.output_dim == [expected]
    assert conv.input_dim == list(case.in_shapes)
    layer = conv.model.layers[-1]
    assert layer.output_dim == expected
    assert layer.input_dim == list(case.in_shapes)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_input_gradient_matches_reference(case: LayerCase) -> None:
    xs = _inputs(case, seed=3, requires_grad=True)
    out = _layer(case)(*xs)
    if case.ids:  # integers take no gradient: nothing flows back to them
        assert not out.requires_grad
        return
    generator = torch.Generator().manual_seed(4)
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    actual = torch.autograd.grad((out * weights).sum(), xs)

    ref_xs = _inputs(case, seed=3, requires_grad=True)
    expected = torch.autograd.grad((case.ref(*ref_xs) * weights).sum(), ref_xs)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOL)


# ---- error branches of layer parameters -----------------------------------------------

_W24 = np.ones((2, 4))
_W_CONV = np.ones((4, 3, 3, 3))


def _where(type_name: str, index: int = 1) -> str:
    return re.escape(f"layers[{index}] ('probe') of type '{type_name}'")


def _shape_error(type_name: str, shapes: str, index: int = 1) -> str:
    return re.escape(
        f"layers[{index}] ('probe', type '{type_name}') cannot take input shape(s) {shapes}"
    )


def _one_layer(entry: dict[str, Any], *shapes: tuple[int, ...]) -> dict[str, Any]:
    n = len(shapes)
    layers = [{"type": "Input", "input_layers": []} for _ in shapes]
    layers.append({"name": "probe", "input_layers": list(range(n)), **entry})
    return {"input_dim": [list(s) for s in shapes], "input_nodes": list(range(n)),
            "output_nodes": [n], "layers": layers}


_NAN_W = np.ones((2, 4))
_NAN_W[1, 2] = np.nan

LAYER_ERRORS = [
    # unknown and missing parameters
    ("unknown_param", {"type": "Dense", "weight": _W24, "bais": [0, 0]}, [(4,)],
     _where("Dense") + r" has unknown entries \['bais'\]; required: \['weight'\]"),
    ("unknown_param_input", {"type": "Input", "shape": [4]}, [],
     re.escape("has unknown entries ['shape']")),
    ("missing_weight", {"type": "Conv2D", "bias": np.zeros(4)}, [(3, 5, 5)],
     _where("Conv2D") + r" misses \['weight'\]"),
    ("missing_running_var", {"type": "BatchNorm", "running_mean": np.zeros(3)}, [(3,)],
     _where("BatchNorm") + r" misses \['running_var'\]"),
    ("missing_and_unknown", {"type": "Mean", "axis": 0}, [(3,)],
     _where("Mean") + r" misses \['axes'\] and has unknown entries \['axis'\]"),
    ("missing_kernel_size", {"type": "MaxPool2D", "stride": 2}, [(1, 4, 4)],
     _where("MaxPool2D") + r" misses \['kernel_size'\]"),
    ("missing_output_size", {"type": "AdaptiveAvgPool1D"}, [(1, 4)],
     _where("AdaptiveAvgPool1D") + r" misses \['output_size'\]"),
    ("missing_padding", {"type": "Padding", "mode": "reflect"}, [(1, 4)],
     _where("Padding") + r" misses \['padding'\]"),
    # weight rank and bias shape
    ("dense_weight_rank", {"type": "Dense", "weight": np.ones((2, 4, 1))}, [(4,)],
     _where("Dense") + r": `weight` must have shape \(out, in\), got \(2, 4, 1\)"),
    ("conv2d_weight_rank", {"type": "Conv2D", "weight": np.ones((4, 3, 3))}, [(3, 5, 5)],
     _where("Conv2D") + r": `weight` must have shape \(C_out, C_in / groups, 2 kernel sizes\), "
     r"got \(4, 3, 3\)"),
    ("conv1d_weight_rank", {"type": "Conv1D", "weight": _W_CONV}, [(3, 5)],
     _where("Conv1D") + r": `weight` must have shape .*1 kernel sizes\), got \(4, 3, 3, 3\)"),
    ("dense_bias_shape", {"type": "Dense", "weight": _W24, "bias": np.zeros(3)}, [(4,)],
     _where("Dense") + r": `bias` must have shape \(2,\) to match `weight`, got \(3,\)"),
    ("conv_bias_shape", {"type": "Conv2D", "weight": _W_CONV, "bias": np.zeros((4, 1))},
     [(3, 5, 5)], _where("Conv2D") + r": `bias` must have shape \(4,\), got \(4, 1\)"),
    ("batchnorm_param_shape", {"type": "BatchNorm", "running_mean": np.zeros(3),
                               "running_var": np.ones(3), "weight": np.ones(4)}, [(3,)],
     _where("BatchNorm") + r": `weight` must have the shape of `running_mean` \(3,\), got \(4,\)"),
    ("batchnorm_negative_var", {"type": "BatchNorm", "running_mean": np.zeros(2),
                                "running_var": np.array([1.0, -0.5])}, [(2,)],
     _where("BatchNorm") + r": `running_var` must not be negative"),
    # groups
    ("groups_not_dividing_c_out", {"type": "Conv2D", "weight": _W_CONV, "groups": 3},
     [(9, 5, 5)], _where("Conv2D") + r": `groups` must divide C_out = 4, got 3"),
    ("groups_zero", {"type": "Conv1D", "weight": np.ones((2, 1, 3)), "groups": 0}, [(2, 5)],
     _where("Conv1D") + r": `groups` must divide C_out = 2, got 0"),
    ("groups_negative", {"type": "Conv1D", "weight": np.ones((2, 1, 3)), "groups": -2},
     [(2, 5)], _where("Conv1D") + r": `groups` must divide C_out = 2, got -2"),
    ("groups_not_matching_c_in", {"type": "Conv2D", "weight": np.ones((4, 2, 3, 3)),
                                  "groups": 2}, [(3, 5, 5)],
     _shape_error("Conv2D", "[[3, 5, 5]]")),
    # other conv and pooling parameters
    ("conv_stride_length", {"type": "Conv2D", "weight": _W_CONV, "stride": [1, 1, 1]},
     [(3, 5, 5)], _where("Conv2D") + r": `stride` must be an int or 2 ints, got \[1, 1, 1\]"),
    ("conv_padding_pairs", {"type": "Conv2D", "weight": _W_CONV, "padding": [[1, 1]]},
     [(3, 5, 5)],
     _where("Conv2D") + r": `padding` must hold one \[before, after\] pair per axis \(2\)"),
    ("conv_padding_negative", {"type": "Conv1D", "weight": np.ones((1, 1, 2)),
                               "padding": [[1, -1]]}, [(1, 5)],
     _where("Conv1D") + r": `padding` must not be negative"),
    ("conv_in_channels", {"type": "Conv2D", "weight": _W_CONV}, [(2, 5, 5)],
     _shape_error("Conv2D", "[[2, 5, 5]]")),
    ("conv_kernel_larger_than_input", {"type": "Conv1D", "weight": np.ones((1, 1, 6))},
     [(1, 5)], _shape_error("Conv1D", "[[1, 5]]")),
    ("pool_kernel_length", {"type": "MaxPool2D", "kernel_size": [2, 2, 2]}, [(1, 4, 4)],
     _where("MaxPool2D") + r": `kernel_size` must be an int or 2 ints"),
    ("pool_stride_zero", {"type": "AvgPool1D", "kernel_size": 2, "stride": 0}, [(1, 4)],
     _shape_error("AvgPool1D", "[[1, 4]]")),
    ("adaptive_output_size_zero", {"type": "AdaptiveMaxPool2D", "output_size": [2, 0]},
     [(1, 4, 4)], _where("AdaptiveMaxPool2D") + r": `output_size` must be positive"),
    ("batchnorm_channels", {"type": "BatchNorm", "running_mean": np.zeros(3),
                            "running_var": np.ones(3)}, [(4, 2)],
     _shape_error("BatchNorm", "[[4, 2]]")),
    ("dense_in_size", {"type": "Dense", "weight": np.ones((2, 5))}, [(4,)],
     _shape_error("Dense", "[[4]]")),
    # activations
    ("unknown_act_name", {"type": "Activation", "act_name": "rleu"}, [(4,)],
     re.escape("layers[1] ('probe'): unknown `act_name` 'rleu'; expected one of ['abs', 'celu'")),
    ("missing_act_name", {"type": "Activation"}, [(4,)],
     re.escape("layers[1] ('probe'): unknown `act_name` None")),
    ("unknown_act_param", {"type": "Activation", "act_name": "relu", "negative_slope": 0.1},
     [(4,)],
     re.escape("layers[1] ('probe'): activation 'relu' has unknown entries ['negative_slope']; "
               "it takes no parameters")),
    ("act_param_of_other_act", {"type": "Activation", "act_name": "leaky_relu", "alpha": 0.1},
     [(4,)], re.escape("activation 'leaky_relu' has unknown entries ['alpha']; "
                       "it takes ['negative_slope']")),
    ("softmax_axis_out_of_range", {"type": "Activation", "act_name": "softmax", "axis": 2},
     [(3, 4)], _shape_error("Activation", "[[3, 4]]")),
    # shape-only layers
    ("perm_repeated", {"type": "Permute", "perm": [0, 0, 1]}, [(2, 3, 4)],
     _where("Permute") + r": `perm` must be a permutation of 0..n-1, got \[0, 0, 1\]"),
    ("perm_not_from_zero", {"type": "Permute", "perm": [1, 2]}, [(2, 3)],
     _where("Permute") + r": `perm` must be a permutation of 0..n-1, got \[1, 2\]"),
    ("perm_wrong_rank", {"type": "Permute", "perm": [1, 0]}, [(2, 3, 4)],
     _shape_error("Permute", "[[2, 3, 4]]")
     + r".*`perm` \[1, 0\] has 2 axes but the input has 3 sample axes"),
    ("slice_stop_before_start", {"type": "Slice", "ranges": [[3, 1, 1]]}, [(4,)],
     _where("Slice") + r": `ranges` must hold \[start, stop, step\] .*got \[3, 1, 1\]"),
    ("slice_step_zero", {"type": "Slice", "ranges": [[0, 2, 0]]}, [(4,)],
     _where("Slice") + r": `ranges` must hold .*got \[0, 2, 0\]"),
    ("slice_negative_start", {"type": "Slice", "ranges": [[-1, 2, 1]]}, [(4,)],
     _where("Slice") + r": `ranges` must hold .*got \[-1, 2, 1\]"),
    ("slice_wrong_rank", {"type": "Slice", "ranges": [[0, 2, 1]]}, [(4, 3)],
     _shape_error("Slice", "[[4, 3]]") + r".*`ranges` \[\[0, 2, 1\]\] do not fit"),
    ("reshape_two_free_sizes", {"type": "Reshape", "shape": [-1, 2, -1]}, [(4,)],
     _where("Reshape") + r": `shape` must hold positive sizes and at most one -1"),
    ("reshape_zero_size", {"type": "Reshape", "shape": [0, 4]}, [(4,)],
     _where("Reshape") + r": `shape` must hold positive sizes"),
    ("reshape_wrong_total", {"type": "Reshape", "shape": [3, 3]}, [(2, 4)],
     _shape_error("Reshape", "[[2, 4]]")),
    ("mean_no_axes", {"type": "Mean", "axes": []}, [(3, 4)],
     _where("Mean") + r": `axes` must name at least one sample axis"),
    # layer normalisation
    ("layernorm_missing_axes", {"type": "LayerNorm", "eps": 1e-3}, [(3, 4)],
     _where("LayerNorm") + r" misses \['axes'\]"),
    ("layernorm_axes_unordered", {"type": "LayerNorm", "axes": [1, 0]}, [(3, 4)],
     _where("LayerNorm") + r": `axes` must name distinct sample axes \(0 = channels\) in "
     r"increasing order, got \[1, 0\]"),
    ("layernorm_axes_repeated", {"type": "LayerNorm", "axes": [1, 1]}, [(3, 4)],
     _where("LayerNorm") + r": `axes` must name distinct sample axes .*got \[1, 1\]"),
    ("layernorm_axes_negative", {"type": "LayerNorm", "axes": [-1]}, [(3, 4)],
     _where("LayerNorm") + r": `axes` must name distinct sample axes .*got \[-1\]"),
    ("layernorm_axes_empty", {"type": "LayerNorm", "axes": []}, [(3, 4)],
     _where("LayerNorm") + r": `axes` must name distinct sample axes .*got \[\]"),
    ("layernorm_axes_beyond_rank", {"type": "LayerNorm", "axes": [2]}, [(3, 4)],
     _shape_error("LayerNorm", "[[3, 4]]")
     + r".*`axes` \[2\] do not fit the input's sample shape \[3, 4\]"),
    ("layernorm_weight_shape", {"type": "LayerNorm", "axes": [1], "weight": np.ones(3)},
     [(3, 4)], _shape_error("LayerNorm", "[[3, 4]]")
     + r".*`weight` must have the sizes \(4,\) of the normalised axes \[1\], got \(3,\)"),
    ("layernorm_bias_shape", {"type": "LayerNorm", "axes": [0, 1], "bias": np.ones(12)},
     [(3, 4)], _shape_error("LayerNorm", "[[3, 4]]")
     + r".*`bias` must have the sizes \(3, 4\) of the normalised axes \[0, 1\], got \(12,\)"),
    ("layernorm_negative_eps", {"type": "LayerNorm", "axes": [0], "eps": -1e-5}, [(3,)],
     _where("LayerNorm") + r": `eps` must be >= 0, got -1e-05"),
    # padding
    ("pad_unknown_mode", {"type": "Padding", "padding": [[1, 1]], "mode": "zeros"}, [(2, 4)],
     _where("Padding") + r": `mode` must be one of \['constant', 'reflect', 'replicate', "
     r"'circular'\], got 'zeros'"),
    ("pad_empty", {"type": "Padding", "padding": []}, [(2, 4)],
     _where("Padding") + r": `padding` must be a list of \[before, after\] pairs, got \[\]"),
    ("pad_negative", {"type": "Padding", "padding": [[1, -2]]}, [(2, 4)],
     _where("Padding") + r": `padding` must not be negative"),
    ("pad_bad_pair", {"type": "Padding", "padding": [[1, 2, 3]]}, [(2, 4)],
     _where("Padding") + r": `padding` must hold one \[before, after\] pair per axis"),
    ("pad_reflect_too_wide", {"type": "Padding", "padding": [[4, 0]], "mode": "reflect"},
     [(2, 4)], _shape_error("Padding", "[[2, 4]]")),
    # merging
    ("add_incompatible", {"type": "Add"}, [(3,), (4,)], _shape_error("Add", "[[3], [4]]", 2)),
    ("concat_mismatch", {"type": "Concatenate", "axis": 0}, [(2, 3), (2, 4)],
     _shape_error("Concatenate", "[[2, 3], [2, 4]]", 2)),
    ("multiply_incompatible", {"type": "Multiply"}, [(2, 3), (3, 2)],
     _shape_error("Multiply", "[[2, 3], [3, 2]]", 2)),
    ("matmul_inner_sizes", {"type": "MatMul"}, [(2, 3), (2, 3)],
     _shape_error("MatMul", "[[2, 3], [2, 3]]", 2) + r".*\(\.\.\., n, k\) and \(\.\.\., k, m\)"),
    ("matmul_vectors", {"type": "MatMul"}, [(3,), (3,)],
     _shape_error("MatMul", "[[3], [3]]", 2) + r".*got \[3\] and \[3\]"),
    ("matmul_ranks", {"type": "MatMul"}, [(2, 3), (1, 3, 2)],
     _shape_error("MatMul", "[[2, 3], [1, 3, 2]]", 2) + r".*of the same rank"),
    ("matmul_lrp_constant", {"type": "MatMul", "lrp_constant": 2}, [(2, 3), (3, 2)],
     _where("MatMul", 2) + r": `lrp_constant` must be 0, 1 or None, got 2"),
    ("attention_reads_two", {"type": "ScaledDotProductAttention", "scale": 1.0},
     [(2, 3), (2, 3)], r"reads 2 layer\(s\), expected 3 to 4"),
    ("attention_key_width", {"type": "ScaledDotProductAttention", "scale": 1.0},
     [(2, 3), (2, 4), (2, 4)],
     _shape_error("ScaledDotProductAttention", "[[2, 3], [2, 4], [2, 4]]", 3)),
    ("attention_masked_rows", {"type": "ScaledDotProductAttention", "scale": 1.0,
                               "masked_rows": "uniform"}, [(2, 3), (2, 3), (2, 3)],
     _where("ScaledDotProductAttention", 3)
     + r": `masked_rows` must be one of \['softmax', 'zero'\], got 'uniform'"),
    ("attention_heads_not_grouped", {"type": "ScaledDotProductAttention", "scale": 1.0},
     [(3, 2, 4), (2, 5, 4), (2, 5, 4)],
     _shape_error("ScaledDotProductAttention", "[[3, 2, 4], [2, 5, 4], [2, 5, 4]]", 3)
     + r".*heads a multiple of kv_heads"),
    ("attention_key_value_heads", {"type": "ScaledDotProductAttention", "scale": 1.0},
     [(4, 2, 4), (2, 5, 4), (1, 5, 4)],
     _shape_error("ScaledDotProductAttention", "[[4, 2, 4], [2, 5, 4], [1, 5, 4]]", 3)),
    ("attention_scale", {"type": "ScaledDotProductAttention", "scale": "big"},
     [(2, 3), (2, 3), (2, 3)],
     _where("ScaledDotProductAttention", 3) + r": `scale` must be a finite number"),
    # NaN and infinite weights
    ("nan_weight", {"type": "Dense", "weight": _NAN_W}, [(4,)],
     _where("Dense") + r": `weight` contains NaN or infinite values"),
    ("inf_bias", {"type": "Conv2D", "weight": _W_CONV,
                  "bias": np.array([0.0, np.inf, 0.0, 0.0])}, [(3, 5, 5)],
     _where("Conv2D") + r": `bias` contains NaN or infinite values"),
    ("nan_running_mean", {"type": "BatchNorm", "running_mean": [0.0, float("nan")],
                          "running_var": [1.0, 1.0]}, [(2,)],
     _where("BatchNorm") + r": `running_mean` contains NaN or infinite values"),
    ("nan_affine_scale", {"type": "Affine", "scale": float("nan")}, [(2,)],
     _where("Affine") + r": `scale` contains NaN or infinite values"),
    ("inf_affine_shift", {"type": "Affine", "shift": [0.0, -np.inf]}, [(2,)],
     _where("Affine") + r": `shift` contains NaN or infinite values"),
    ("nan_layernorm_bias", {"type": "LayerNorm", "axes": [0], "bias": [0.0, np.nan]}, [(2,)],
     _where("LayerNorm") + r": `bias` contains NaN or infinite values"),
]


@pytest.mark.parametrize(
    ("entry", "shapes", "pattern"),
    [case[1:] for case in LAYER_ERRORS],
    ids=[case[0] for case in LAYER_ERRORS],
)
def test_bad_layer_params_are_refused_by_name(
    entry: dict[str, Any], shapes: list[tuple[int, ...]], pattern: str
) -> None:
    if entry["type"] == "Input":
        description = {"input_dim": [[4]], "input_nodes": [0], "output_nodes": [0],
                       "layers": [{"name": "probe", "input_layers": [], **entry}]}
        pattern = re.escape("layers[0] ('probe') of type 'Input' ") + pattern
    else:
        description = _one_layer(entry, *shapes)
    with pytest.raises(ValueError, match=pattern):
        ins.convert(description)


def test_bad_params_are_refused_when_building_a_layer_directly() -> None:
    with pytest.raises(ValueError, match=r"^here of type 'Dense' misses \['weight'\]"):
        LAYER_TYPES["Dense"].from_params("Dense", {}, "here")
    with pytest.raises(ValueError, match=r"^here: unknown `act_name` 'nope'"):
        LAYER_TYPES["Activation"].from_params("Activation", {"act_name": "nope"}, "here")


# ---- edge cases found while writing this suite -------------------------------------


@pytest.mark.parametrize(
    ("entry", "shapes", "name"),
    [
        ({"type": "Conv1D", "weight": np.ones((2, 1, 3)), "groups": 1.5}, [(1, 5)], "groups"),
        ({"type": "Reshape", "shape": [2.5, 2]}, [(4,)], "shape"),
        ({"type": "Concatenate", "axis": 0.5}, [(2,), (3,)], "axis"),
        ({"type": "Mean", "axes": [0.5], "keepdims": True}, [(2, 3)], "axes"),
        ({"type": "LayerNorm", "axes": [1.0]}, [(2, 3)], "axes"),
    ],
    ids=["conv_groups", "reshape_shape", "concat_axis", "mean_axes", "layernorm_axes"],
)
def test_non_integer_int_params_are_refused(
    entry: dict[str, Any], shapes: list[tuple[int, ...]], name: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=rf"layers\[\d\].*`{name}`"):
        ins.convert(_one_layer(entry, *shapes))


def test_slice_beyond_the_axis_is_refused() -> None:
    with pytest.raises(ValueError, match=r"layers\[1\].*`ranges`"):
        ins.convert(_one_layer({"type": "Slice", "ranges": [[0, 10, 1]]}, (4,)))


def test_unhashable_act_name_is_refused_by_name() -> None:
    with pytest.raises((ValueError, TypeError), match=r"layers\[1\].*act_name"):
        ins.convert(_one_layer({"type": "Activation", "act_name": ["relu"]}, (4,)))
