"""Random torch networks from the supported layer families, as hypothesis strategies.

A network is a :class:`NetSpec`: an input shape, a tuple of blocks (each a name and
its parameters, chosen so that every shape stays valid) and a linear head. It is drawn
with the shape tracked block by block, and :func:`build` turns it into a float64
``nn.Module`` in eval mode with seeded weights. Specs are plain data, so hypothesis
prints a failing one in full and shrinks it to a small one.

Families: ``tabular`` ``(W,)``, ``signal`` ``(C, L)`` (1D convolutions), ``image``
``(C, H, W)`` (2D convolutions), ``volume`` ``(C, D, H, W)`` (3D convolutions) and
``tokens`` ``(T, D)`` (attention). ``bias_free``
specs have no bias or shift anywhere (dense, convolution, batch and layer norm), so that
LRP epsilon conserves relevance.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import settings
from hypothesis import strategies as st
from torch import Tensor, nn

#: Activations by name; every one maps to a layer of innsight's activation family.
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": lambda: nn.LeakyReLU(0.1),
    "elu": nn.ELU, "selu": nn.SELU, "celu": lambda: nn.CELU(0.7), "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU("tanh"), "silu": nn.SiLU, "mish": nn.Mish,
    "softplus": nn.Softplus, "softsign": nn.Softsign, "sigmoid": nn.Sigmoid,
    "logsigmoid": nn.LogSigmoid, "tanh": nn.Tanh, "tanhshrink": nn.Tanhshrink,
    "hardtanh": nn.Hardtanh, "hardsigmoid": nn.Hardsigmoid, "hardswish": nn.Hardswish,
    "identity": nn.Identity,
}
#: Activations with ``f(0) != 0``: fed an exact 0, LRP has nowhere to send their relevance.
NONZERO_AT_ZERO = (nn.Sigmoid, nn.Softplus, nn.LogSigmoid, nn.Hardsigmoid)

FAMILIES = ("tabular", "signal", "image", "volume", "tokens")
#: The families of convolutional networks.
SPATIAL = ("signal", "image", "volume")
Block = tuple[str, tuple[tuple[str, Any], ...]]


@dataclass(frozen=True)
class NetSpec:
    """One random network: ``blocks`` between the input and a linear head with
    ``n_out`` outputs (after global average pooling over positions when ``pool_head``)."""

    family: str
    input_dim: tuple[int, ...]
    blocks: tuple[Block, ...]
    n_out: int
    pool_head: bool
    bias: bool
    seed: int


def examples(share: float) -> int:
    """``share`` of the active hypothesis profile's ``max_examples`` (at least 1)."""
    return max(1, round(settings.default.max_examples * share))


# ---- drawing ---------------------------------------------------------------------------------


def _block(block_name: str, /, **params: Any) -> Block:
    return block_name, tuple(sorted(params.items()))


def _conv_out(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


@st.composite
def _conv_block(draw: Any, shape: tuple[int, ...], bias: bool) -> tuple[Block, tuple[int, ...]]:
    c_in, spatial = shape[0], shape[1:]
    groups = draw(st.sampled_from([g for g in (1, 2, 3) if c_in % g == 0]))
    c_out = groups * draw(st.integers(1, 6 // groups))
    k, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    stride, pad = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    modes = ["zeros"] + (["reflect", "replicate", "circular"] if pad < min(spatial) else [])
    mode = draw(st.sampled_from(modes))
    if min(_conv_out(s, k, stride, pad, dilation) for s in spatial) < 1:
        k = dilation = 1
    out = tuple(_conv_out(s, k, stride, pad, dilation) for s in spatial)
    block = _block("conv", c_in=c_in, c_out=c_out, k=k, stride=stride, pad=pad,
                   dilation=dilation, groups=groups, mode=mode, bias=bias)
    return block, (c_out, *out)


@st.composite
def _pool_block(draw: Any, shape: tuple[int, ...],
                adaptive: bool) -> tuple[Block, tuple[int, ...]]:
    spatial = shape[1:]
    if adaptive and draw(st.booleans()):
        size = tuple(draw(st.integers(1, s)) for s in spatial)
        return _block("adaptive_pool", kind=draw(st.sampled_from(["avg", "max"])),
                      size=size), (shape[0], *size)
    k = draw(st.integers(1, min(3, min(spatial))))
    stride, pad = draw(st.integers(1, k)), draw(st.integers(0, k // 2))
    out = tuple(_conv_out(s, k, stride, pad, 1) for s in spatial)
    return _block("pool", kind=draw(st.sampled_from(["avg", "max"])), k=k, stride=stride,
                  pad=pad), (shape[0], *out)


@st.composite
def _pad_block(draw: Any, shape: tuple[int, ...]) -> tuple[Block, tuple[int, ...]]:
    spatial = shape[1:]
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    limit = {"reflect": min(spatial) - 1, "circular": min(spatial)}.get(mode, 2)
    pads = tuple(draw(st.integers(0, min(2, limit))) for _ in range(2 * len(spatial)))
    # torch orders pads from the last axis: (left, right) for W, then (top, bottom) for H
    out = tuple(s + pads[2 * (len(spatial) - 1 - i)] + pads[2 * (len(spatial) - 1 - i) + 1]
                for i, s in enumerate(spatial))
    return _block("pad", mode=mode, pads=pads), (shape[0], *out)


@st.composite
def _spatial_block(draw: Any, shape: tuple[int, ...], bias: bool, acts: Sequence[str],
                   adaptive: bool) -> tuple[Block, tuple[int, ...]]:
    """One block of a convolutional network on ``shape`` ``(C, *spatial)``; adaptive
    pooling only with ``adaptive``."""
    c = shape[0]
    kind = draw(st.sampled_from(["conv", "conv", "act", "pool", "pad", "bn", "ln",
                                 "residual", "concat", "se"]))
    if kind == "conv":
        return draw(_conv_block(shape, bias))
    if kind == "pool":
        return draw(_pool_block(shape, adaptive))
    if kind == "pad":
        return draw(_pad_block(shape))
    if kind == "act":
        return _block("act", name=draw(st.sampled_from(acts))), shape
    if kind == "bn":
        return _block("bn", c=c, bias=bias), shape
    if kind == "ln":  # over channels at each position (ConvNeXt) or over the whole sample
        return _block("ln", shape=shape, channels=draw(st.booleans()), bias=bias), shape
    if kind == "residual":
        dilation = draw(st.integers(1, 2))
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0]))
        return _block("residual", c=c, dilation=dilation, groups=groups,
                      act=draw(st.sampled_from(acts)), bias=bias), shape
    if kind == "concat":
        widths = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        return _block("concat", c=c, widths=widths, bias=bias), (sum(widths), *shape[1:])
    return _block("se", c=c, hidden=draw(st.integers(1, 3)), bias=bias), shape


@st.composite
def _dense_block(draw: Any, shape: tuple[int, ...], bias: bool,
                 acts: Sequence[str]) -> tuple[Block, tuple[int, ...]]:
    """One block of a tabular network on ``(W,)`` or a token network on ``(T, D)``
    (acting on the last axis; attention only for tokens)."""
    width = shape[-1]
    kinds = ["dense", "dense", "act", "ln", "residual", "concat", "se"]
    kinds += ["attention", "attention"] if len(shape) == 2 else ["bn"]
    kind = draw(st.sampled_from(kinds))
    if kind == "dense":
        out = 2 * draw(st.integers(1, 3)) if len(shape) == 2 else draw(st.integers(1, 6))
        return _block("dense", w_in=width, w_out=out, bias=bias), (*shape[:-1], out)
    if kind == "act":
        return _block("act", name=draw(st.sampled_from(acts))), shape
    if kind == "bn":
        return _block("bn1d", c=width, bias=bias), shape
    if kind == "ln":
        return _block("ln_last", w=width, bias=bias), shape
    if kind == "residual":
        return _block("dense_residual", w=width, act=draw(st.sampled_from(acts)),
                      bias=bias), shape
    if kind == "concat":
        halves = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        if len(shape) == 2:  # token widths stay even for the heads of attention
            halves = (2 * halves[0], 2 * halves[1])
        return _block("dense_concat", w=width, widths=halves, bias=bias), (
            *shape[:-1], sum(halves))
    if kind == "se":
        return _block("dense_se", w=width, bias=bias), shape
    heads = draw(st.sampled_from([h for h in (1, 2) if width % h == 0]))
    return _block("attention", d=width, heads=heads, pre_norm=draw(st.booleans()),
                  bias=bias), shape


@st.composite
def nets(draw: Any, families: Sequence[str] = FAMILIES, bias_free: bool = False,
         max_blocks: int = 4, adaptive_pooling: bool = True) -> NetSpec:
    """A random :class:`NetSpec` of one of ``families`` (``adaptive_pooling=False``: none,
    as torch.onnx.export refuses most)."""
    acts = tuple(ACTIVATIONS)
    family = draw(st.sampled_from(list(families)))
    if family == "tabular":
        shape: tuple[int, ...] = (draw(st.integers(1, 6)),)
    elif family == "signal":
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 12)))
    elif family == "image":
        shape = (draw(st.integers(1, 3)), draw(st.integers(3, 7)), draw(st.integers(3, 7)))
    elif family == "volume":
        shape = (draw(st.integers(1, 2)), *(draw(st.integers(3, 5)) for _ in range(3)))
    else:
        shape = (draw(st.integers(2, 5)), 2 * draw(st.integers(1, 3)))
    input_dim, bias = shape, not bias_free
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        if family in SPATIAL:
            block, shape = draw(_spatial_block(shape, bias, acts, adaptive_pooling))
        else:
            block, shape = draw(_dense_block(shape, bias, acts))
        blocks.append(block)
    return NetSpec(family, input_dim, tuple(blocks), n_out=draw(st.integers(1, 4)),
                   pool_head=len(shape) > 1 and draw(st.booleans()), bias=bias,
                   seed=draw(st.integers(0, 2**16)))


# ---- building ----------------------------------------------------------------------------------

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
POOL = {("avg", 1): nn.AvgPool1d, ("avg", 2): nn.AvgPool2d, ("avg", 3): nn.AvgPool3d,
        ("max", 1): nn.MaxPool1d, ("max", 2): nn.MaxPool2d, ("max", 3): nn.MaxPool3d}
ADAPTIVE = {("avg", 1): nn.AdaptiveAvgPool1d, ("avg", 2): nn.AdaptiveAvgPool2d,
            ("avg", 3): nn.AdaptiveAvgPool3d, ("max", 1): nn.AdaptiveMaxPool1d,
            ("max", 2): nn.AdaptiveMaxPool2d, ("max", 3): nn.AdaptiveMaxPool3d}
BATCH_NORM = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
PADS = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


class Residual(nn.Module):
    """``x + body(x)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Concat(nn.Module):
    """``cat([a(x), b(x)], axis)``."""

    def __init__(self, a: nn.Module, b: nn.Module, axis: int) -> None:
        super().__init__()
        self.a, self.b, self.axis = a, b, axis

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.a(x), self.b(x)], self.axis)


class Gate(nn.Module):
    """Squeeze-excitation: ``x * sigmoid(excite(squeeze(x)))``; squeezing is the mean over
    positions for convolutional inputs and nothing for vectors."""

    def __init__(self, excite: nn.Module, n_spatial: int) -> None:
        super().__init__()
        self.excite, self.axes = excite, tuple(range(2, 2 + n_spatial))

    def forward(self, x: Tensor) -> Tensor:
        squeezed = x.mean(self.axes, keepdim=True) if self.axes else x
        return x * torch.sigmoid(self.excite(squeezed))


class Pad(nn.Module):
    """``F.pad`` in a mode (zeros as "constant")."""

    def __init__(self, mode: str, pads: tuple[int, ...]) -> None:
        super().__init__()
        self.mode, self.pads = mode, pads

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x, self.pads, mode=PADS.get(self.mode, "constant"))


class ChannelNorm(nn.Module):
    """Layer norm over the channels at each position, ConvNeXt's way: move channels
    last, normalise, move them back."""

    def __init__(self, c: int, n_spatial: int, bias: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c, bias=bias)
        self.order = (0, *range(2, 2 + n_spatial), 1)  # (.movedim is refused by the converter)
        self.back = (0, 1 + n_spatial, *range(1, 1 + n_spatial))

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(self.order)).permute(self.back)


class Attention(nn.Module):
    """Multi-head self-attention with ``F.scaled_dot_product_attention`` and a residual
    connection (pre-norm optional)."""

    def __init__(self, d: int, heads: int, pre_norm: bool, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(d, bias=bias) if pre_norm else nn.Identity()
        self.qkv = nn.Linear(d, 3 * d, bias=bias)
        self.out = nn.Linear(d, d, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(y.transpose(1, 2).reshape(n, t, d))


class Head(nn.Module):
    """The body, then (optionally) the mean over positions, flatten and a dense layer."""

    def __init__(self, body: nn.Sequential, pool_axes: tuple[int, ...], fc: nn.Linear) -> None:
        super().__init__()
        self.body, self.pool_axes, self.fc = body, pool_axes, fc

    def forward(self, x: Tensor) -> Tensor:
        x = self.body(x)
        if self.pool_axes:
            x = x.mean(self.pool_axes)
        return self.fc(torch.flatten(x, 1))


def _make(name: str, p: dict[str, Any], n_spatial: int) -> nn.Module:
    conv = CONV.get(n_spatial)
    if name == "conv":
        return conv(p["c_in"], p["c_out"], p["k"], stride=p["stride"], padding=p["pad"],
                    dilation=p["dilation"], groups=p["groups"], bias=p["bias"],
                    padding_mode=p["mode"])
    if name == "pool":
        return POOL[p["kind"], n_spatial](p["k"], stride=p["stride"], padding=p["pad"])
    if name == "adaptive_pool":
        return ADAPTIVE[p["kind"], n_spatial](p["size"])
    if name == "pad":
        return Pad(p["mode"], p["pads"])
    if name == "act":
        return ACTIVATIONS[p["name"]]()
    if name in ("bn", "bn1d"):
        return BATCH_NORM[0 if name == "bn1d" else n_spatial](p["c"])
    if name == "ln":
        return ChannelNorm(p["shape"][0], n_spatial, p["bias"]) if p["channels"] else (
            nn.LayerNorm(list(p["shape"]), bias=p["bias"]))
    if name == "residual":
        c, d = p["c"], p["dilation"]
        return Residual(nn.Sequential(
            conv(c, c, 3, padding=d, dilation=d, groups=p["groups"], bias=p["bias"]),
            ACTIVATIONS[p["act"]](), conv(c, c, 1, bias=p["bias"])))
    if name == "concat":
        c, (a, b) = p["c"], p["widths"]
        return Concat(conv(p["c"], a, 1, bias=p["bias"]),
                      conv(c, b, 3, padding=1, bias=p["bias"]), 1)
    if name == "se":
        c, h = p["c"], p["hidden"]
        return Gate(nn.Sequential(conv(c, h, 1, bias=p["bias"]), nn.ReLU(),
                                  conv(h, c, 1, bias=p["bias"])), n_spatial)
    if name == "dense":
        return nn.Linear(p["w_in"], p["w_out"], bias=p["bias"])
    if name == "ln_last":
        return nn.LayerNorm(p["w"], bias=p["bias"])
    if name == "dense_residual":
        return Residual(nn.Sequential(nn.Linear(p["w"], p["w"], bias=p["bias"]),
                                      ACTIVATIONS[p["act"]]()))
    if name == "dense_concat":
        w, (a, b) = p["w"], p["widths"]
        return Concat(nn.Linear(w, a, bias=p["bias"]), nn.Linear(w, b, bias=p["bias"]), -1)
    if name == "dense_se":
        return Gate(nn.Linear(p["w"], p["w"], bias=p["bias"]), 0)
    if name == "attention":
        return Attention(p["d"], p["heads"], p["pre_norm"], p["bias"])
    raise ValueError(f"unknown block {name!r}")


def _randomise_norms(model: nn.Module, bias: bool) -> None:
    """Batch norm statistics and affine parameters away from the identity (means and
    shifts 0 without ``bias``: then batch norm is a diagonal scaling); layer norm
    weights random too."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_var.copy_(0.5 + torch.rand(n, dtype=m.running_var.dtype))
                m.weight.copy_(0.5 + torch.rand(n, dtype=m.weight.dtype))
                if bias:
                    m.running_mean.normal_(0, 0.3)
                    m.bias.normal_(0, 0.3)
                else:
                    m.running_mean.zero_()
                    m.bias.zero_()
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                if m.bias is not None:
                    m.bias.normal_(0, 0.3)


def build(spec: NetSpec) -> nn.Module:
    """The float64 torch module of ``spec`` in eval mode, weights from ``spec.seed``
    (without touching the global random state)."""
    n_spatial = len(spec.input_dim) - 1 if spec.family in SPATIAL else 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        body = nn.Sequential(*(_make(name, dict(params), n_spatial)
                               for name, params in spec.blocks))
        with torch.no_grad():
            out = body.eval()(torch.zeros(1, *spec.input_dim))
        # positions: the spatial axes of convolutional networks, the tokens of attention
        positions = (1,) if spec.family == "tokens" else tuple(range(2, out.ndim))
        pool_axes = positions if spec.pool_head else ()
        features = out.mean(pool_axes).flatten(1).shape[1] if pool_axes else out[0].numel()
        model = Head(body, pool_axes, nn.Linear(features, spec.n_out, bias=spec.bias))
        _randomise_norms(model, spec.bias)
    return model.double().eval()


class ClosedFormHardsigmoid(nn.Module):
    """``clamp(x / 6 + 1/2, 0, 1)``, times ``x`` for hardswish: torch's fused kernels
    differentiate with a float32 1/6 even in float64 (a relative error of 1e-8)."""

    def __init__(self, swish: bool) -> None:
        super().__init__()
        self.swish = swish

    def forward(self, x: Tensor) -> Tensor:
        gate = (x / 6 + 0.5).clamp(0, 1)
        return x * gate if self.swish else gate


def autograd_reference(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose autograd is exact in float64: hardsigmoid and hardswish
    in closed form."""
    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, (nn.Hardsigmoid, nn.Hardswish)):
            model.set_submodule(name, ClosedFormHardsigmoid(isinstance(m, nn.Hardswish)))
    return model


def zero_fed_offset_activations(model: nn.Module, x: Tensor) -> list[str]:
    """Names of the activations with ``f(0) != 0`` (and sigmoid gates) that receive an
    exact 0 at ``x``: there LRP leaves relevance with nowhere to go, so conservation
    is undefined."""
    hit: list[str] = []
    handles = [m.register_forward_hook(
        lambda mod, inputs, out, name=name: hit.extend([name] if (inputs[0] == 0).any() else []))
        for name, m in model.named_modules() if isinstance(m, NONZERO_AT_ZERO)]
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    handles += [g.excite.register_forward_hook(
        lambda mod, inputs, out: hit.extend(["gate"] if (out == 0).any() else []))
        for g in gates]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return hit
