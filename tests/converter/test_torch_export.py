"""Torch models through ``torch.export`` (``ins.convert(..., tracer=...)``).

Every operation form of ``test_torch_ops.py`` is also converted from its
``torch.export`` graph there; here: the choice of tracer (``"auto"`` falling back to
``torch.export``), models that only ``torch.export`` can trace or convert, and a model
zoo network traced both ways.
References: the original module's forward pass and torch autograd.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import innsight as ins
from innsight.converter import torch_ops


class ShapeBranch(nn.Module):
    """Python control flow on the input's shape: ``torch.fx`` cannot trace it, while
    ``torch.export`` follows the branch taken for the given sample shape."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > 8:
            x = F.avg_pool2d(x, 2)
        h = torch.relu(self.bn(self.conv(x)))
        return self.fc((h + F.max_pool2d(h, 3, 1, 1)).mean((2, 3)))


class ValueBranch(nn.Module):
    """Control flow on the input's values: neither tracer can follow it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


def close(actual: torch.Tensor, expected: torch.Tensor, rel_tol: float) -> None:
    """At most ``rel_tol`` apart, relative to the largest expected magnitude."""
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= rel_tol * scale


def _shape_branch() -> nn.Module:
    torch.manual_seed(0)
    model = ShapeBranch().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model


def test_auto_falls_back_to_export_where_fx_cannot_trace(assert_converts):
    model = _shape_branch()
    with pytest.raises(ins.ConversionError, match="torch.fx cannot trace ShapeBranch"):
        ins.convert(model, input_dim=[3, 16, 16], tracer="fx")
    conv = assert_converts(model, [3, 16, 16])  # tracer="auto", float and double
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    reference = model.double()
    xg = x.clone().requires_grad_(True)
    expected = torch.autograd.grad(reference(xg)[:, 1].sum(), xg)[0]
    grad = ins.run_grad(conv, x, output_idx=[1], dtype="double").get_result("torch_tensor")
    close(grad[..., 0], expected, 1e-10)


def test_auto_names_both_reasons_where_neither_tracer_converts():
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(ValueBranch().eval(), input_dim=[4])
    message = str(info.value)
    assert "Traced with torch.fx (tracer='fx'): torch.fx cannot trace ValueBranch" in message
    assert "Traced with torch.export instead (tracer='export'): torch.export cannot export" \
        in message
    assert "ins.torch_grad" in message  # the way out


def _hooked(hook) -> nn.Sequential:
    """A small MLP whose first layer has the forward hook ``hook``: ``torch.fx`` traces
    modules without their hooks (its graph converts, but computes something else than
    the model), ``torch.export`` runs them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    model[0].register_forward_hook(hook)
    return model


def test_auto_falls_back_to_export_where_the_fx_conversion_fails_its_dry_run(assert_converts):
    model = _hooked(lambda module, inputs, output: 2 * output + 1)
    with pytest.raises(ins.ConversionError, match="output 0 differs from the original's"):
        ins.convert(model, input_dim=[4], tracer="fx")
    assert_converts(model, [4])  # tracer="auto", float and double


def test_auto_names_both_failures_where_fx_fails_its_dry_run_and_export_cannot_export():
    model = _hooked(lambda module, inputs, output: output + 1 if output.sum() > 0 else output - 1)
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(model, input_dim=[4])
    message = str(info.value)
    assert "Traced with torch.fx (tracer='fx'): The converted model's output 0 differs" \
        in message
    assert "Traced with torch.export instead (tracer='export'): torch.export cannot export" \
        in message
    assert "ins.torch_grad" in message  # the way out


def test_export_and_fx_agree_on_a_zoo_network():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    by_fx = ins.convert(model, input_dim=[3, 32, 32], tracer="fx", dtype="double")
    by_export = ins.convert(model, input_dim=[3, 32, 32], tracer="export", dtype="double")
    assert ([layer.type_name for layer in by_fx.model.layers]
            == [layer.type_name for layer in by_export.model.layers])
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        close(by_export.model(x), model.double()(x), 1e-10)
    grads = [ins.run_grad(conv, x, dtype="double").get_result("torch_tensor")
             for conv in (by_fx, by_export)]
    close(grads[1], grads[0], 1e-10)


@pytest.mark.parametrize(("model", "kwargs", "error", "match"), [
    (nn.Linear(4, 2), {"tracer": "jit"}, ValueError,
     r"`tracer` must be one of \['auto', 'fx', 'export'\], got 'jit'"),
    (nn.Linear(4, 2), {"tracer": None}, ValueError, "`tracer` must be one of"),
    ({"input_dim": [[4]], "input_nodes": [0], "output_nodes": [1], "layers": [
        {"type": "Input", "input_layers": []},
        {"type": "Dense", "input_layers": [0], "weight": [[1.0] * 4], "bias": [0.0]}]},
     {"tracer": "export"}, ValueError, "`tracer` chooses how a torch nn.Module is traced; "
                                       "leave it 'auto' for dict, got 'export'"),
])
def test_bad_tracer_is_refused_by_name(model, kwargs, error, match):
    input_dim = [4] if isinstance(model, nn.Module) else None
    with pytest.raises(error, match=match):
        ins.convert(model.eval() if isinstance(model, nn.Module) else model,
                    input_dim=input_dim, **kwargs)


class ShapePadding(nn.Module):
    """Padding computed from the input's shape, as Swin pads to whole windows: torch.fx
    records the sizes as graph nodes, torch.export as numbers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (4 - x.shape[-1] % 4) % 4
        return 2 * F.pad(x, (0, pad, 0, pad))


def test_padding_computed_from_the_input_shape_converts_with_both_tracers(assert_converts):
    for tracer in ("fx", "export"):
        conv = assert_converts(ShapePadding(), [3, 6, 6], tracer=tracer)
        assert conv.output_dim == [(3, 8, 8)]


def test_a_handler_failure_is_a_conversion_error_and_export_takes_over(assert_converts,
                                                                        monkeypatch):
    """A handler that fails on a form it did not foresee (here: made to fail under fx
    only) gives a ConversionError naming the call, its cause kept for debugging."""
    real = torch_ops.FUNCTIONS[F.pad]

    def fails_under_fx(t, node):
        if "val" not in node.meta:  # no torch.export fake tensor: a torch.fx graph
            raise TypeError("an unforeseen form")
        return real(t, node)

    monkeypatch.setitem(torch_ops.FUNCTIONS, F.pad, fails_under_fx)
    with pytest.raises(ins.ConversionError, match=r"node 'pad': this call of "
                       r"torch.nn.functional.pad is not supported.*TypeError") as info:
        ins.convert(ShapePadding(), input_dim=[3, 6, 6], tracer="fx")
    assert isinstance(info.value.__cause__, TypeError)
    assert_converts(ShapePadding(), [3, 6, 6])


class AutocastOff(nn.Module):
    """A region computed in the model's own precision (EfficientViT's linear attention):
    ``torch.export`` wraps it in a higher-order call, which the converter inlines."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        with torch.autocast("cpu", enabled=False):
            h = torch.tanh(h) * h
        return self.out(h + x.sum(-1, keepdim=True))


def test_a_region_with_autocast_disabled_is_inlined(explained_exactly, assert_converts):
    torch.manual_seed(0)
    model = AutocastOff().eval()
    wrapped = torch.export.export(model, (torch.randn(2, 4),)).module()
    assert any("wrap_with_autocast" in str(node.target) for node in wrapped.graph.nodes)
    assert_converts(model, [4], tracer="export")
    explained_exactly(model, [4], tracer="export")


class DefaultArguments(nn.Module):
    """Attention whose forward takes more arguments than the model inputs, left at their
    defaults (as timm's VitaMin): ``torch.fx`` keeps a placeholder for each of them."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False, scale: float = 0.5, *rest: torch.Tensor,
                **options: float) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        out = nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
        return out.flatten(1)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_arguments_left_at_their_defaults_are_bound_to_them(tracer, assert_converts,
                                                             explained_exactly):
    torch.manual_seed(0)
    model = DefaultArguments().eval()
    if tracer == "fx":  # the pattern: placeholders beyond the model input
        traced = torch.fx.symbolic_trace(
            model, concrete_args={"attn_mask": None, "is_causal": False, "scale": 0.5})
        assert sum(node.op == "placeholder" for node in traced.graph.nodes) > 1
    conv = assert_converts(model, [4, 8], tracer=tracer)
    assert len(conv.model.input_dim) == 1
    explained_exactly(model, [4, 8], tracer=tracer)
