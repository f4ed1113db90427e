"""Batch axes that shape operations move or merge, and input-independent subgraphs.

``torch.export`` graphs say where the batch axis is (a symbolic size), so the
converter follows it through permutations (timm's fused ``qkv`` attention:
``reshape(B, N, 3, heads, d).permute(2, 0, 3, 1, 4)``), reshapes that merge it
with the windows of each sample (Swin) and indexing, while elementwise and
last-axis operations run on it wherever it is. Tensors that do not depend on the
inputs (``arange`` position tables, attention masks built with ``new_zeros``)
fold into constants under both tracers. References: the original module's
forward pass, torch autograd, and DeepLift's summation to ``f(x) - f(0)``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import innsight as ins


class FusedQKVAttention(nn.Module):
    """A pre-norm transformer block with timm's fused projection: the batch axis is
    second between the permutation and ``unbind``; written-out attention or SDPA."""

    def __init__(self, width: int = 12, heads: int = 3, sdpa: bool = True) -> None:
        super().__init__()
        self.heads, self.sdpa = heads, sdpa
        self.norm = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if self.sdpa:
            attended = F.scaled_dot_product_attention(q, k, v)
        else:
            attended = (q @ k.transpose(-2, -1) / math.sqrt(c // self.heads)).softmax(-1) @ v
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, c))
        return self.head(x.mean(1))


class WindowAttention(nn.Module):
    """Windows of each sample merged into the batch axis (``view(B * windows, ...)``),
    attention per window, a relative position bias from an ``arange`` table, and back."""

    def __init__(self, width: int = 8, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.qkv = nn.Linear(width, 3 * width)
        self.bias_table = nn.Parameter(torch.randn(2 * window - 1))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        s = self.window
        windows = x.view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, s * s, c)  # (B * windows, tokens, c)
        q, k, v = self.qkv(windows).chunk(3, dim=-1)
        positions = torch.arange(s * s) % s
        bias = self.bias_table[positions[:, None] - positions[None, :] + s - 1]
        scores = (q @ k.transpose(1, 2)) / math.sqrt(c) + bias
        out = scores.softmax(-1) @ v
        out = out.view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head(out.mean((1, 2)))


class SinusoidalPositions(nn.Module):
    """A sin/cos table computed in forward from ``arange``: a constant under both tracers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(5, dtype=x.dtype)[:, None]
        frequencies = torch.exp(torch.arange(0, 6, 2, dtype=x.dtype) * -0.5)
        table = torch.cat([torch.sin(positions * frequencies),
                           torch.cos(positions * frequencies)], dim=-1)
        return self.fc(x + table).mean(1)


class ShapeGrid(nn.Module):
    """A coordinate grid from the input's height and width (``meshgrid`` of ``arange``s,
    a list of tensors) added to the features: a constant, as the sizes are fixed."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        rows, cols = torch.meshgrid(torch.arange(h, dtype=x.dtype),
                                    torch.arange(w, dtype=x.dtype), indexing="ij")
        return self.fc(x.permute(0, 2, 3, 1) + torch.stack([rows, cols], -1)).flatten(1)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_tables_from_the_input_shape_fold_into_constants(assert_converts, tracer):
    torch.manual_seed(0)
    conv = assert_converts(ShapeGrid().eval(), [2, 3, 4], tracer=tracer)
    assert [layer.type_name for layer in conv.model.layers] == ["Input", "Permute", "Affine",
                                                                "Dense", "Flatten"]


class Rolled(nn.Module):
    """Shifted windows: ``torch.roll`` of the spatial axes of a channels-last map."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.roll(x, shifts=(-2, 1), dims=(1, 2))).flatten(1)


def small_swin() -> nn.Module:
    """torchvision's Swin with two stages of two blocks (so shifted windows, their masks
    and patch merging), window 4 on a 6 x 6 patch grid (so padding to the windows)."""
    torch.manual_seed(0)
    return torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
        num_classes=5).eval()


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "written-out"])
def test_fused_qkv_attention_follows_the_moved_batch_axis(explained_exactly, assert_converts,
                                                          sdpa):
    torch.manual_seed(0)
    model = FusedQKVAttention(sdpa=sdpa).eval()
    with pytest.raises(ins.ConversionError, match="tracer=.export."):
        ins.convert(model, input_dim=[5, 12], tracer="fx")  # fx has no symbolic batch size
    assert_converts(model, [5, 12])
    explained_exactly(model, [5, 12])


def test_windows_merged_into_the_batch_axis_convert(explained_exactly, assert_converts):
    torch.manual_seed(0)
    model = WindowAttention().eval()
    conv = assert_converts(model, [4, 4, 8], tracer="export")
    # The relative position bias is folded: a constant added to the scores.
    positions = torch.arange(4) % 2
    bias = model.bias_table.detach()[positions[:, None] - positions[None, :] + 1]
    shifts = [layer.shift for layer in conv.model.layers if layer.type_name == "Affine"]
    assert any(s.shape[-2:] == bias.shape and torch.allclose(s.expand(*s.shape[:-2], 4, 4),
                                                             bias.expand(*s.shape[:-2], 4, 4))
               for s in shifts)
    explained_exactly(model, [4, 4, 8], tracer="export")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_input_independent_tables_fold_into_constants(outputs_match, tracer, dtype):
    """The table is computed once, at the precision of the conversion (of a float32
    model too: see ``test_double_conversion_folds_constants_in_float64``)."""
    torch.manual_seed(0)
    model = SinusoidalPositions().eval().to(dtype)
    conv = ins.convert(model, input_dim=[5, 6], tracer=tracer,
                       dtype="double" if dtype == torch.float64 else "float")
    assert [layer.type_name for layer in conv.model.layers] == ["Input", "Affine", "Dense",
                                                                "Mean"]
    x = torch.randn(3, 5, 6, dtype=dtype)
    with torch.no_grad():
        outputs_match(conv.model(x), model(x), 1e-6 if dtype == torch.float32 else 1e-12)


class MaskedAttention(nn.Module):
    """Attention as Hugging Face decoders write it: key and value heads repeated for
    grouped queries (``expand`` of a computed tensor, or ``enable_gqa``), and a causal
    mask (``is_causal``, or a boolean mask built from ``arange`` and expanded to the
    batch)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.form = form
        self.q, self.kv = nn.Linear(8, 8), nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q(x).view(b, n, 4, 2).transpose(1, 2)  # 4 query heads
        k, v = self.kv(x).view(b, n, 2, 4).transpose(1, 2).chunk(2, dim=-1)  # 2 kv heads
        if self.form == "enable_gqa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = (t[:, :, None].expand(b, 2, 2, n, 2).reshape(b, 4, n, 2) for t in (k, v))
            positions = torch.arange(n)
            mask = (positions[None, :] <= positions[:, None]).expand(b, 1, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.head(out.transpose(1, 2).reshape(b, n, 8)).flatten(1)


@pytest.mark.parametrize("form", ["enable_gqa", "repeated-heads-and-mask"])
def test_causal_grouped_query_attention_converts(explained_exactly, assert_converts, form):
    torch.manual_seed(0)
    model = MaskedAttention(form).eval()
    x = torch.randn(2, 5, 8)
    first = model(x[:, :1])  # causal: the first token sees only itself
    assert torch.allclose(model(x)[:, :3], first, atol=1e-6)
    assert_converts(model, [5, 8])
    explained_exactly(model, [5, 8], outputs=(0, 4))


class AttentionWeights(nn.Module):
    """``nn.MultiheadAttention``'s head-averaged attention weights: torch.fx keeps the
    module whole (its weights do not convert); torch.export writes them out with the
    heads merged into the batch axis."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x)[1].flatten(1)


def test_attention_weights_convert_with_the_heads_merged_into_the_batch(explained_exactly,
                                                                        assert_converts):
    torch.manual_seed(0)
    with pytest.raises(ins.ConversionError, match="element 1"):
        ins.convert(AttentionWeights().eval(), input_dim=[3, 8], tracer="fx")
    assert_converts(AttentionWeights().eval(), [3, 8])
    explained_exactly(AttentionWeights().eval(), [3, 8])


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_roll_is_a_permutation_of_entries(explained_exactly, assert_converts, tracer):
    torch.manual_seed(0)
    assert_converts(Rolled().eval(), [4, 5, 3], tracer=tracer)
    explained_exactly(Rolled().eval(), [4, 5, 3], tracer=tracer)


def test_swin_transformer_converts_and_is_explained_exactly(explained_exactly, assert_converts):
    conv = assert_converts(small_swin(), [3, 24, 24], batch=2)
    assert conv.output_dim == [(5,)]
    explained_exactly(small_swin(), [3, 24, 24])


def test_stacking_before_the_batch_axis_moves_it(assert_converts):
    """``torch.stack(xs, 0)`` puts the new axis before the batch axis (EfficientViM)."""
    model = Rolled().eval()
    model.forward = lambda x: torch.stack([x, -2 * x, x * x], 0).transpose(0, 1).flatten(1)
    assert_converts(model, [4, 5, 3], tracer="export")
    model.forward = lambda x: torch.stack([x, -2 * x, x * x], 0).sum(0).flatten(1)
    assert_converts(model, [4, 5, 3], tracer="export")  # the sum moves it back


def test_einsum_on_heads_merged_into_the_batch_axis(module_from, explained_exactly):
    """SAM's attention: heads merged into the batch axis, then einsums with a relative
    position table (a constant) and between two computed tensors."""
    def attention(m, x):  # x (B, 6, 8): 2 heads of width 4
        heads = x.view(x.shape[0], 6, 2, 4).transpose(1, 2).reshape(-1, 6, 4)
        relative = torch.einsum("bqd,qkd->bqk", heads, m.table)
        scores = torch.einsum("bqd,bkd->bqk", heads, heads.tanh()) + relative
        out = torch.einsum("bqk,bkd->bqd", scores.softmax(-1), heads)
        return out.view(x.shape[0], 2, 6, 4).flatten(1)

    model = module_from(attention, table=nn.Parameter(torch.randn(6, 6, 4)))
    explained_exactly(model, [6, 8], tracer="export")


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_attention_with_a_bias_computed_from_the_inputs(module_from, explained_exactly, tracer):
    """SAM passes its relative position term (computed from the queries) as attn_mask."""
    def attention(m, x):  # x (B, 6, 4)
        bias = torch.einsum("bqd,qkd->bqk", x, m.table)
        return F.scaled_dot_product_attention(x, x.tanh(), x, attn_mask=bias).flatten(1)

    model = module_from(attention, table=nn.Parameter(torch.randn(6, 6, 4)))
    explained_exactly(model, [6, 4], tracer=tracer)


def test_padding_after_a_moved_or_merged_batch_axis(module_from, explained_exactly):
    """Halo attention pads windows merged into the batch axis; trailing axes pad wherever
    the batch axis is."""
    def padded(m, x):
        windows = F.pad(x.view(x.shape[0] * 2, 2, 6), (1, 2, 0, 1))
        moved = F.pad(x.transpose(0, 1), (1, 1))
        return torch.cat([windows.reshape(x.shape[0], -1),
                          moved.transpose(0, 1).reshape(x.shape[0], -1)], 1)

    explained_exactly(module_from(padded), [4, 6], tracer="export")


@pytest.mark.parametrize(
    ("fn", "what"),
    [
        (lambda x: F.pad(x.transpose(0, 1), (1, 1, 1, 1)).transpose(0, 1).flatten(1),
         "batch axis is at position 1"),
        (lambda x: x.transpose(0, 1).softmax(1).transpose(0, 1), "along the batch axis"),
        (lambda x: F.avg_pool1d(x.transpose(0, 1), 2).transpose(0, 1), "batch axis is at "
                                                                        "position 1"),
        (lambda x: F.interpolate(x.reshape(-1, 1, 6), scale_factor=2).reshape(x.shape[0], -1),
         "merged with 5 entries"),
        (lambda x: x.transpose(0, 1), "output whose batch axis is not first"),
        (lambda x: (x.flatten(1) @ x.flatten(1).transpose(0, 1)).softmax(-1) @ x.flatten(1),
         "batch axis is at position 1"),
    ],
    ids=["pad-batch-axis", "softmax-over-batch", "pool-batch-second", "upsample-batch-merged",
         "output", "product-over-samples"],
)
def test_operations_on_a_moved_batch_axis_are_refused_by_name(module_from, fn, what):
    with pytest.raises(ins.ConversionError, match=what):
        ins.convert(module_from(lambda m, x: fn(x)), input_dim=[5, 6], tracer="export")


class PooledWindows(nn.Module):
    """Channels-first operations on windows merged into the batch axis (TNT's pixel
    embedding, MViT's pooled attention, LeViT's ``BatchNorm1d`` on ``(B * N, C)``): each
    runs on ``(C, windows, ...)`` with a kernel of 1 along the windows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, stride=2, groups=1)
        self.depthwise = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.bn = nn.BatchNorm2d(4)
        self.bn1d = nn.BatchNorm1d(4)
        self.head = nn.Linear(4 * 4 * 2 + 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, 12, 8, 8)
        b = x.shape[0]
        w = torch.relu(self.bn(self.conv(x.reshape(b * 4, 3, 8, 8))))  # (4B, 4, 4, 4)
        pooled = F.max_pool2d(w, 2) + F.avg_pool2d(w, 3, 2, 1) + F.adaptive_avg_pool2d(w, 2)
        signal = self.depthwise(pooled.flatten(2)).reshape(b, 4, 4, 4)  # (B, 4, 4, 4)
        tokens = self.bn1d(pooled.mean((2, 3))).reshape(b, 16)
        return self.head(torch.cat([signal[..., :2].reshape(b, -1), tokens], 1))


def test_channels_first_operations_on_windows_merged_into_the_batch_axis(explained_exactly,
                                                                       assert_converts):
    torch.manual_seed(0)
    model = PooledWindows().eval()
    with torch.no_grad():
        for bn in (model.bn, model.bn1d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    assert_converts(model, [12, 8, 8], tracer="export")
    explained_exactly(model, [12, 8, 8], tracer="export")


def test_repeat_interleave_along_the_batch_axis_merges_copies_into_it(module_from,
                                                                      explained_exactly):
    """GCViT's global query: one per sample, repeated for each window of its sample."""
    def global_query(m, x):  # x (B, 6, 4): 3 windows of 2 tokens
        windows = x.reshape(x.shape[0] * 3, 2, 4)
        query = m.fc(x.mean(1)).repeat_interleave(windows.shape[0] // x.shape[0], dim=0)
        scores = (windows * query.unsqueeze(1)).sum(-1, keepdim=True).softmax(1)
        return (scores * windows).reshape(x.shape[0], -1)

    explained_exactly(module_from(global_query, fc=nn.Linear(4, 4)), [6, 4], tracer="export")
