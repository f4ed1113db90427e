"""In-place updates of tensors that are read afterwards (``converter/mutations.py``).

A converted layer computes a new tensor, so a node reading a tensor after an in-place
update of it (or of a view of it) must read the updated one. MViTv2 (timm) adds its
relative position terms in place, ``attn[:, :, sp:, sp:] = attn[:, :, sp:, sp:] + rel``,
which ``torch.export`` records as ``copy_`` into a slice of ``attn``; the conversion
once dropped that update silently (the dry run caught it; with ``check=False`` the
conversion was wrong). References: the original module's forward, torch autograd,
DeepLift's sum against ``f(x) - f(0)``.
"""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins
from innsight.converter.mutations import UpdatingTracer

pytestmark = pytest.mark.usefixtures("torch_seed")

TRACERS = ["fx", "export"]


class RelPosAttention(nn.Module):
    """MViTv2's pooling attention (timm's ``MultiScaleAttention``) on ``(batch, tokens,
    dim)`` (flattened output), tokens a ``size x size`` grid after ``cls`` class tokens: queries, keys and
    values per head, keys and values pooled by a strided depthwise convolution, scores ``q k^T`` to whose grid block the decomposed relative position
    terms are added in place (position tables gathered by index arithmetic, two
    einsums), softmax, the product with the values and the residual queries. (Separate
    projections and the pooling keep the batch axis first, which ``torch.fx`` graphs
    need; timm's fused projection and pooling over batch and heads are in
    ``test_mvitv2_converts_and_reproduces_the_original``.)"""

    def __init__(self, cls: int, dim: int = 8, heads: int = 2, size: int = 4,
                 stride: int = 2) -> None:
        super().__init__()
        self.cls, self.heads, self.size, self.head_dim = cls, heads, size, dim // heads
        self.pooled = size // stride
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.pool_k, self.pool_v = (nn.Conv2d(dim, dim, 3, stride, 1, groups=dim, bias=False)
                                    for _ in range(2))
        self.rel_h, self.rel_w = (nn.Parameter(torch.randn(2 * size - 1, self.head_dim))
                                  for _ in range(2))

    def _pool(self, t: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        tokens, grid = t[:, :, :self.cls], t[:, :, self.cls:]
        grid = grid.transpose(2, 3).reshape(-1, self.heads * self.head_dim, self.size,
                                            self.size)
        grid = conv(grid).reshape(-1, self.heads, self.head_dim, self.pooled ** 2)
        return torch.cat([tokens, grid.transpose(2, 3)], dim=2)

    def _distances(self, device: torch.device) -> torch.Tensor:
        """Index of the table row per (query row, key row): queries at full, keys at
        pooled resolution, the keys' positions scaled up (timm's ``cal_rel_pos_type``)."""
        ratio = self.size / self.pooled
        dist = (torch.arange(self.size, device=device).unsqueeze(-1) * 1.0
                - torch.arange(self.pooled, device=device).unsqueeze(0) * ratio)
        dist += (self.pooled - 1) * ratio
        return dist.long()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.cls + self.size ** 2
        q, k, v = (f(x).reshape(-1, n, self.heads, self.head_dim).transpose(1, 2)
                   for f in (self.q, self.k, self.v))
        k, v = self._pool(k, self.pool_k), self._pool(v, self.pool_v)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        dist = self._distances(x.device)
        r_q = q[:, :, self.cls:].reshape(-1, self.heads, self.size, self.size, self.head_dim)
        rel_h = torch.einsum("byhwc,hkc->byhwk", r_q, self.rel_h[dist])
        rel_w = torch.einsum("byhwc,wkc->byhwk", r_q, self.rel_w[dist])
        s, p = self.size, self.pooled
        attn[:, :, self.cls:, self.cls:] = (
            attn[:, :, self.cls:, self.cls:].view(-1, self.heads, s, s, p, p)
            + rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2)).view(-1, self.heads, s * s, p * p)
        out = attn.softmax(dim=-1) @ v + q
        return out.transpose(1, 2).reshape(-1, n * self.heads * self.head_dim)


def _relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("cls", [0, 1], ids=["whole-scores", "grid-block"])
def test_relative_position_terms_added_in_place(tracer, cls, assert_converts,
                                                explained_exactly):
    """The in-place update of the scores (all of them without a class token, the grid
    block with one) reaches the softmax: the output, the Gradient (against autograd),
    DeepLift's sum and LRP in float64; and without the dry run (``check=False``)."""
    model = RelPosAttention(cls).eval()
    dims = [cls + 16, 8]
    assert_converts(model, dims, tracer=tracer)
    unchecked = ins.convert(model, input_dim=dims, tracer=tracer, check=False)
    x = torch.randn(3, *dims)
    with torch.no_grad():
        assert _relative_error(unchecked.model(x), model(x)) < 1e-5
    explained_exactly(model, dims, tracer=tracer, outputs=(0, 37))


def _reused(update):
    """A model whose tensor ``h = fc(x)`` is updated in place by ``update(h, g, m)`` with
    values ``g = g(x)`` of another branch (its result unused) and read afterwards."""

    def forward(m, x):
        h = m.fc(x)
        update(h, m.g(x), m)
        return h * 3.0 + m.fc2(h)

    return forward


#: In-place updates of a tensor read afterwards, one per form of the update: the
#: converted model must read the updated tensor.
UPDATES = {
    "x.relu_()": lambda h, g, m: h.relu_(),
    "F.relu(inplace=True)": lambda h, g, m: F.relu(h, inplace=True),
    "nn.ReLU(inplace=True)": lambda h, g, m: m.act(h),
    "x += y": lambda h, g, m: operator.iadd(h, g),
    "x *= c": lambda h, g, m: operator.imul(h, 2.0),
    "x[:, 1:4].mul_(2)": lambda h, g, m: h[:, 1:4].mul_(2.0),
    "x[:, 2:].copy_(y)": lambda h, g, m: h[:, 2:].copy_(g[:, :4]),
    "x[:, 0].sub_(y)": lambda h, g, m: h[:, 0].sub_(g[:, 3]),
    "x[:, 1:3][:, 1:].add_(y)": lambda h, g, m: h[:, 1:3][:, 1:].add_(g[:, :1]),
    "x[:, 1:3] = y": lambda h, g, m: operator.setitem(h, (slice(None), slice(1, 3)),
                                                      g[:, 4:]),
}


def _one_item_of_a_split(m, x):
    """``q, k = x.chunk(2, 1); q *= 2``: ``k`` is read afterwards but does not overlap
    with ``q`` (``q`` itself is read through its own node)."""
    q, k = m.fc(x).chunk(2, 1)
    q *= 2.0
    return q * k + k


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("name", list(UPDATES))
def test_update_of_a_tensor_read_afterwards(tracer, name, module_from, assert_converts,
                                            explained_exactly):
    model = module_from(_reused(UPDATES[name]), fc=nn.Linear(5, 6), g=nn.Linear(5, 6),
                        fc2=nn.Linear(6, 6), act=nn.ReLU(inplace=True))
    assert_converts(model, [5], tracer=tracer)
    unchecked = ins.convert(model, input_dim=[5], tracer=tracer, check=False)
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert _relative_error(unchecked.model(x), model(x)) < 1e-6
    explained_exactly(model, [5], tracer=tracer)


def _earlier_view_read_later(m, x):
    h = m.fc(x)
    view = h[:, :2]
    h.relu_()
    return view * 2.0


#: Updates read afterwards that the converter cannot write back, with the operation its
#: refusal names: a view through a reshape, a view taken before the update and read
#: after it, an update that no layer computes (a mask fill), a broadcast copy, an
#: assignment at tensor indices.
REFUSED = {
    "reshaped view": (_reused(lambda h, g, m: h.unsqueeze(1).mul_(2.0)), "mul_"),
    "earlier view read later": (_earlier_view_read_later, "relu_"),
    "masked_fill_": (_reused(lambda h, g, m: h.masked_fill_(m.mask, 0.0)), "masked_fill_"),
    "broadcast copy_": (_reused(lambda h, g, m: h[:, 2:].copy_(g[:, :1])), "copy"),
    "x[:, i] = y": (_reused(lambda h, g, m: operator.setitem(h, (slice(None), m.index),
                                                             g[:, :2])), "index"),
}


def test_update_of_one_item_of_a_split_leaves_the_others(module_from, assert_converts):
    """Under torch.fx (torch.export runs the model with autograd, which refuses in-place
    updates of a split's items)."""
    assert_converts(module_from(_one_item_of_a_split, fc=nn.Linear(5, 6)), [5], tracer="fx")


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("name", list(REFUSED))
def test_update_that_cannot_be_followed_is_refused(tracer, name, module_from):
    forward, op = REFUSED[name]
    model = module_from(forward, fc=nn.Linear(5, 6), g=nn.Linear(5, 6), fc2=nn.Linear(6, 6),
                        mask=torch.tensor([True, False, True, False, False, True]),
                        index=torch.tensor([4, 1]))
    for check in (True, False):
        with pytest.raises(ins.ConversionError, match=op) as info:
            ins.convert(model, input_dim=[5], tracer=tracer, check=check)
        assert "torch_grad" in str(info.value)


def test_update_of_a_tensor_nothing_reads_again_changes_no_graph(module_from):
    """``x += y`` and an in-place activation on tensors nobody reads again (ResNet's
    blocks) convert to the same layers as their out-of-place forms."""
    def in_place(m, x):
        h = m.fc(x)
        h += m.fc2(h)
        return m.act(h)

    def out_of_place(m, x):
        h = m.fc(x)
        return torch.relu(h + m.fc2(h))

    layers = {}
    for name, forward in (("in", in_place), ("out", out_of_place)):
        model = module_from(forward, fc=nn.Linear(5, 6), fc2=nn.Linear(6, 6),
                            act=nn.ReLU(inplace=True))
        layers[name] = [type(layer).__name__ for layer in ins.convert(
            model, input_dim=[5], tracer="fx").model.layers]
    assert layers["in"] == layers["out"]


def test_traced_augmented_and_item_assignments_are_recorded_in_place():
    """``torch.fx`` records ``y += 1`` as ``y = y + 1`` (other names of ``y`` keep the
    old values) and cannot trace ``x[i] = y``; the converter's tracer records both as
    the in-place ``operator.iadd`` and ``operator.setitem``."""
    def forward(x):
        y = x
        y += 1.0
        x[:, 0] = y[:, 1]
        return x

    graph = UpdatingTracer().trace(forward)
    targets = [n.target for n in graph.nodes if n.op == "call_function"]
    assert operator.iadd in targets and operator.setitem in targets
    with pytest.raises(TypeError, match="item assignment"):
        torch.fx.symbolic_trace(forward)


@pytest.mark.slow
def test_mvitv2_converts_and_reproduces_the_original():
    """timm's ``mvitv2_tiny`` (random weights, 64 x 64): pooling attention with residual
    pooling and relative position terms added in place; the float32 conversion against
    the original's forward and the Gradient against autograd, both to 1e-4 relative."""
    timm = pytest.importorskip("timm")
    model = timm.create_model("mvitv2_tiny", pretrained=False, img_size=64).eval()
    conv = ins.convert(model, input_dim=[3, 64, 64])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _relative_error(conv.model(x), model(x)) < 1e-4
    x_grad = x[:1].clone().requires_grad_(True)
    model(x_grad)[:, 7].sum().backward()
    gradient = ins.run_grad(conv, x[:1], output_idx=[7], ignore_last_act=False, verbose=False)
    assert _relative_error(gradient.get_result("torch_tensor")[..., 0], x_grad.grad) < 1e-4
