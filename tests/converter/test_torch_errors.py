"""Bad arguments and unsupported models are refused with errors that name the
argument or the operation, where it sits and what to do instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import innsight as ins
from innsight.converter.converter import DRY_RUN_TOLERANCE

pytestmark = pytest.mark.usefixtures("torch_seed")

#: Every refusal of an operation points to the direct torch methods.
WAY_OUT = "torch_grad"


# ---- input_dim -----------------------------------------------------------------------------


def test_missing_input_dim_for_torch_model(cnn2d):
    with pytest.raises(ValueError, match="input_dim"):
        ins.convert(cnn2d)


def test_input_dim_of_wrong_rank_reports_input_dim(cnn2d):
    with pytest.raises(ins.ConversionError, match="input_dim") as info:
        ins.convert(cnn2d, input_dim=[3, 8])
    assert "[2, 3, 8]" in str(info.value)  # the shape it tried, batch axis included


def test_wrong_input_dim_prints_no_framework_traceback_and_keeps_it(cnn2d, capfd):
    """The message comes alone: torch's own error is not chained into the traceback (nor
    printed by fx's shape propagation) but kept on the error for debugging, and no
    other tracer is tried for inputs the model itself refuses."""
    with pytest.raises(ins.ConversionError, match="Check `input_dim`") as info:
        ins.convert(cnn2d, input_dim=[12, 12, 3])
    error = info.value
    assert error.__cause__ is None and error.__suppress_context__
    assert isinstance(error.internal, RuntimeError)
    assert "torch.export" not in str(error)
    assert "Traceback" not in capfd.readouterr().err


def test_input_dim_with_wrong_channels_reports_input_dim(cnn2d):
    with pytest.raises(ins.ConversionError, match="input_dim"):
        ins.convert(cnn2d, input_dim=[12, 12, 3])  # channels last


@pytest.mark.parametrize(
    "input_dim",
    [[[3, 10, 10]], [3, 10, 10], [[3, 10, 10], [4], [2]]],
    ids=["one-of-two", "flat-one-shape", "three-of-two"],
)
def test_input_dim_count_must_match_model_inputs(two_input_net, input_dim):
    with pytest.raises(ValueError, match=r"`input_dim` gives \d input shape") as info:
        ins.convert(two_input_net, input_dim=input_dim)
    assert "image, tabular" in str(info.value)  # names the forward's parameters


@pytest.mark.parametrize(
    "input_dim",
    [[3, 12.5, 12], [3, -12, 12], [3, 0, 12], [3, "12", 12], [3, True, 12], [], "3x12x12",
     [[3, 12, 12], [-4]], 12.0],
    ids=["float", "negative", "zero", "str-entry", "bool", "empty", "str", "nested-negative",
         "scalar-float"],
)
def test_input_dim_entries_must_be_positive_ints(cnn2d, input_dim):
    with pytest.raises(ValueError, match="input_dim"):
        ins.convert(cnn2d, input_dim=input_dim)


# ---- model, dtype and names ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["model.pt", 42, None, [nn.Linear(2, 2)], nn.Linear],
                         ids=["str", "int", "none", "list-of-modules", "class"])
def test_unsupported_model_type(model):
    with pytest.raises(TypeError, match="`model`"):
        ins.convert(model, input_dim=[2])


@pytest.mark.parametrize("dtype", ["half", "float64", torch.float16, 64, None])
def test_invalid_dtype(mlp, dtype):
    with pytest.raises(ValueError, match="`dtype`"):
        ins.convert(mlp, input_dim=[5], dtype=dtype)


@pytest.mark.parametrize(
    ("argument", "names"),
    [
        ("input_names", ["a", "b", "c", "d"]),  # 5 features
        ("input_names", [["a", "b", "c", "d", "e"], ["f"]]),  # one axis too many
        ("output_names", ["y1", "y2"]),  # 3 outputs
        ("output_names", [["y1", "y2", "y3"], ["z"]]),
    ],
    ids=["input-too-few", "input-extra-axis", "output-too-few", "output-extra-axis"],
)
def test_names_of_wrong_length(mlp, argument, names):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ins.convert(mlp, input_dim=[5], **{argument: names})


def test_names_for_wrong_number_of_layers(two_input_net):
    image_names = [[f"c{i}" for i in range(3)], [f"h{i}" for i in range(10)],
                   [f"w{i}" for i in range(10)]]
    with pytest.raises(ValueError, match="`input_names`"):
        ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]], input_names=[image_names])


def test_names_must_be_labels(mlp):
    with pytest.raises(TypeError, match="`output_names`"):
        ins.convert(mlp, input_dim=[5], output_names=[["a", None, "c"]])


def test_unevenly_nested_names(mlp):
    with pytest.raises(ValueError, match="`input_names`.*nested evenly"):
        ins.convert(mlp, input_dim=[5], input_names=["a", ["b", "c"], "d", "e", "f"])


# ---- calling the converted model --------------------------------------------------------------


@pytest.fixture
def converted_cnn(cnn2d):
    return ins.convert(cnn2d, input_dim=[3, 12, 12]).model


@pytest.fixture
def converted_two_inputs(two_input_net):
    return ins.convert(two_input_net, input_dim=[[3, 10, 10], [4]]).model


@pytest.mark.parametrize("shape", [(2, 3, 12), (2, 3, 12, 11), (3, 12, 12), (2, 1, 3, 12, 12)])
def test_call_with_wrong_shape(converted_cnn, shape):
    with pytest.raises(ValueError, match=r"`x`.*\(batch, 3, 12, 12\)"):
        converted_cnn(torch.zeros(shape))


def test_call_with_wrong_number_of_tensors(converted_cnn, converted_two_inputs):
    x = torch.zeros(2, 3, 12, 12)
    with pytest.raises(ValueError, match="`x` must hold 1 tensor"):
        converted_cnn([x, x])
    with pytest.raises(ValueError, match="`x` must hold 2 tensor"):
        converted_two_inputs(torch.zeros(2, 3, 10, 10))
    with pytest.raises(ValueError, match="`x` must hold 2 tensor"):
        converted_two_inputs([torch.zeros(2, 3, 10, 10), torch.zeros(2, 4), torch.zeros(2, 4)])


def test_call_with_tensors_in_wrong_order(converted_two_inputs):
    with pytest.raises(ValueError, match=r"`x` for input 0.*\(batch, 3, 10, 10\)"):
        converted_two_inputs([torch.zeros(2, 4), torch.zeros(2, 3, 10, 10)])


@pytest.mark.parametrize("x", [np.zeros((2, 3, 12, 12), dtype=np.float32), [[0.0]], "x"],
                         ids=["numpy", "nested-list", "str"])
def test_call_with_non_tensor(converted_cnn, x):
    with pytest.raises(TypeError, match="`x`"):
        converted_cnn(x)


def test_call_with_mismatched_batch_sizes(converted_two_inputs):
    with pytest.raises(ValueError, match="`x`.*batch size"):
        converted_two_inputs([torch.zeros(2, 3, 10, 10), torch.zeros(3, 4)])


# ---- unsupported models and operations --------------------------------------------------------


def assert_refused(model, input_dim, *names, tracer="auto"):
    """The conversion raises ConversionError naming ``names`` and the way out."""
    with pytest.raises(ins.ConversionError) as info:
        ins.convert(model.eval(), input_dim=input_dim, tracer=tracer)
    message = str(info.value)
    for name in names:
        assert name in message, message
    return message


def test_lstm_taking_time_first_is_refused_by_name(module_from):
    model = module_from(lambda m, x: m.fc(m.lstm(x)[0][:, -1]),
                        lstm=nn.LSTM(4, 6), fc=nn.Linear(6, 2))
    message = assert_refused(model, [5, 4], "LSTM with batch_first=False", WAY_OUT)
    assert "'lstm'" in message  # where it sits


@pytest.mark.parametrize(("tracer", "names"), [
    ("fx", ["interpolation mode 'bicubic'", "'area'"]),
    ("export", ["aten.upsample_bicubic2d"]),
])
def test_bicubic_interpolation_is_refused_by_name(module_from, tracer, names):
    """Bicubic weights are partly negative: no linear map with fixed positive weights."""
    model = module_from(lambda m, x: F.interpolate(x, scale_factor=2, mode="bicubic"))
    assert_refused(model, [2, 6, 6], *names, WAY_OUT, tracer=tracer)


def test_antialiased_interpolation_is_refused_by_name(module_from):
    model = module_from(lambda m, x: F.interpolate(x, size=(3, 3), mode="bilinear",
                                                   antialias=True))
    assert_refused(model, [2, 6, 6], "antialias=True", WAY_OUT, tracer="fx")


def test_layer_norm_with_weight_computed_in_forward_is_refused(module_from):
    """A weight taken from the data (of the normalised size only at the tracing batch size)."""
    model = module_from(lambda m, x: F.layer_norm(x, (2,), x[:, 0, 0]))
    assert_refused(model, [3, 2], "layer_norm with a weight or bias computed in forward", WAY_OUT)


@pytest.mark.parametrize(("fn", "names"), [
    (lambda m, x: F.batch_norm(x, m.bn.running_mean, m.bn.running_var, training=True),
     ["batch norm with training=True", "batch mates"]),
    # parameters of the size of the tracing batch (2), taken from the data
    (lambda m, x: F.batch_norm(x, m.bn.running_mean, m.bn.running_var, x[:, 0, 0, 0]),
     ["batch norm with `weight` computed in forward"]),
    (lambda m, x: F.conv2d(x, x[:, :, :2, :2]), ["a convolution with `weight` computed in forward"]),
], ids=["training", "weight-from-data", "conv-weight-from-data"])
def test_functional_norm_and_conv_refusals_name_the_reason(module_from, fn, names):
    assert_refused(module_from(fn, bn=nn.BatchNorm2d(2)), [2, 4, 4], *names, WAY_OUT)


def test_layer_norm_over_the_batch_axis_is_refused(module_from):
    model = module_from(lambda m, x: F.layer_norm(x, x.shape))
    assert_refused(model, [3, 4], "layer normalisation over the last 3 axes of a sample with 2",
                   "Samples must be normalised apart", WAY_OUT)


def test_expanding_a_computed_tensor_to_more_axes_is_refused_by_name(module_from):
    """A computed tensor repeats along its own axes of size 1; new leading axes would
    stand before the batch axis."""
    model = module_from(lambda m, x: x.expand(3, -1, -1).transpose(0, 1))
    assert_refused(model, [4], "expand", "batch axis", WAY_OUT)


@pytest.mark.parametrize(
    ("fn", "input_dim", "names"),
    [
        (lambda m, x: m.mha(x, x, x, attn_mask=torch.zeros(3, 3))[0], [3, 4], ("mask",)),
        (lambda m, x: m.mha(x, x, x, None, False, torch.zeros(3, 3))[0], [3, 4], ("mask",)),
        (lambda m, x: m.seq_first(x, x, x)[0], [3, 4], ("batch_first=False",)),
        # Samples of rank 1 would make torch attend over (or multiply along) the batch.
        (lambda m, x: F.scaled_dot_product_attention(x, x, x), [4], ("rank >= 2",)),
        (lambda m, x: x @ x, [2], ("matrix product of vectors",)),
        (lambda m, x: x @ x.unsqueeze(1).transpose(2, 3), [3, 4], ("different rank",)),
    ],
    ids=["mha-mask", "mha-positional-mask", "mha-sequence-first", "sdpa-vectors",
         "matmul-vectors", "matmul-ranks"],
)
def test_unsupported_attention_is_refused_by_name(module_from, fn, input_dim, names):
    model = module_from(fn, mha=nn.MultiheadAttention(4, 2, batch_first=True),
                        seq_first=nn.MultiheadAttention(4, 2))
    assert_refused(model, input_dim, *names, WAY_OUT)


def test_data_dependent_control_flow(module_from):
    def forward(m, x):
        if x.sum() > 0:
            return m.fc(x)
        return -m.fc(x)

    message = assert_refused(module_from(forward, fc=nn.Linear(4, 2)), [4], WAY_OUT)
    assert "trace" in message


@pytest.mark.parametrize(
    "fn",
    [lambda m, x: F.dropout(x, 0.5, training=True), lambda m, x: F.dropout(x, 0.5),
     lambda m, x: F.dropout2d(x, 0.1, True)],
    ids=["training=True", "default-training", "dropout2d-positional"],
)
def test_functional_dropout_in_training(module_from, fn):
    assert_refused(module_from(fn), [3, 4, 4], "training=True", WAY_OUT)


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_dict_outputs_are_its_values_in_order(module_from, tracer):
    """As torchvision's segmentation models return ``{"out": ..., "aux": ...}``."""
    model = module_from(lambda m, x: {"logits": m.fc(x), "hidden": torch.tanh(x)},
                        fc=nn.Linear(4, 2))
    conv = ins.convert(model, input_dim=[4], tracer=tracer)
    assert conv.output_dim == [(2,), (4,)]
    x = torch.randn(3, 4)
    with torch.no_grad():
        expected, actual = model(x), conv.model(x)
    for a, e in zip(actual, expected.values()):
        torch.testing.assert_close(a, e)


def test_nested_tuple_output_is_refused(module_from):
    model = module_from(lambda m, x: ((m.fc(x), x), x), fc=nn.Linear(4, 2))
    assert_refused(model, [4])


@pytest.mark.parametrize(
    ("fn", "input_dim", "names"),
    [
        (lambda m, x: x.sum(), [4], ("sum over all axes",)),
        (lambda m, x: torch.cumsum(x, 1), [4], ("cumsum",)),
        (lambda m, x: m.w.T @ x.unsqueeze(-1), [4], ("matmul",)),
        (lambda m, x: torch.clamp(x, min=x.mean(-1, keepdim=True)), [4], ("clamp",)),
        (lambda m, x: x.mean(), [4], ("mean over all axes",)),
        (lambda m, x: torch.cat([x, x], 0), [4], ("batch axis",)),
        (lambda m, x: x[0], [3, 4], ("batch axis",)),
        (lambda m, x: x[1:], [4], ("batch axis",)),
        (lambda m, x: x[:, [[0, 2], [1, 3]]], [4], ("advanced indexing",)),
        (lambda m, x: x.transpose(0, 1), [4], ("batch axis",)),
        (lambda m, x: torch.add(x, x, alpha=2), [4], ("alpha",)),
        (lambda m, x: torch.sub(x, 1, alpha=2), [4], ("alpha",)),
        (lambda m, x: 1 / x, [4], ("division",)),
        (lambda m, x: torch.div(x, 2, rounding_mode="floor"), [4], ("division",)),
        (lambda m, x: torch.cat([x, m.c], 1), [4], ("nor a constant expanded to the batch",)),
        (lambda m, x: torch.flatten(x), [4], ("batch axis",)),
        (lambda m, x: F.max_pool2d(x, 2, return_indices=True)[0], [3, 4, 4], ("max_pool2d",)),
        (lambda m, x: F.avg_pool2d(x, 2, divisor_override=3), [3, 4, 4], ("divisor_override",)),
        (lambda m, x: F.softmax(x, dim=0), [4], ("batch axis",)),
        (lambda m, x: m.bn(x), [4], ("running statistics",)),
    ],
    ids=["sum-all", "cumsum", "matmul", "clamp-computed-bound", "mean-all",
         "cat-batch", "index-batch", "slice-batch", "advanced-index", "transpose-batch",
         "add-alpha", "sub-alpha", "constant-over-tensor",
         "floor-division", "constant-tensor-concatenated", "flatten-batch", "max-pool-indices",
         "divisor-override", "softmax-batch", "batch-norm-batch-statistics"],
)
def test_unsupported_operation_is_refused_by_name(module_from, fn, input_dim, names):
    model = module_from(fn, w=nn.Parameter(torch.randn(4, 2)), low=nn.Parameter(torch.zeros(4)),
                        c=nn.Parameter(torch.zeros(2, 1)),
                        bn=nn.BatchNorm1d(4, track_running_stats=False))
    assert_refused(model, input_dim, *names, WAY_OUT)


def test_softmax_without_dim_is_refused_by_fx_and_resolved_by_export(module_from,
                                                                     assert_converts):
    """torch.fx sees no axis; torch.export records the one torch picks (warning about it),
    which ``tracer="auto"`` converts, unless it is the batch axis (3D inputs)."""
    model = module_from(lambda m, x: F.softmax(x))
    with pytest.warns(UserWarning, match="Implicit dimension"):  # torch's own, while tracing
        assert_refused(model, [4], "softmax", "dim", WAY_OUT, tracer="fx")
    with pytest.warns(UserWarning, match="Implicit dimension"):
        assert_converts(model, [4])
    with pytest.warns(UserWarning, match="Implicit dimension"):
        assert_refused(model, [3, 4], "softmax without `dim`", "along the batch axis", WAY_OUT)


def test_model_failing_on_another_batch_size(module_from):
    """The trace uses one batch size, the dry run another: fixed batch sizes are caught."""
    model = module_from(lambda m, x: x.view(2, 2, 2))
    assert_refused(model, [4], "any batch size")


def test_model_whose_output_shape_depends_on_batch_size(module_from):
    """Shapes that only differ on the dry run's batch size are caught too."""
    model = module_from(lambda m, x: x.view(2, -1))  # (1, 4) -> (2, 2) on the dry run
    message = assert_refused(model, [4], "differs", WAY_OUT)
    assert "[2, 2]" in message


def test_graph_that_computes_something_else_is_caught_by_dry_run(module_from,
                                                                 converts_wrongly):
    model = module_from(lambda m, x: converts_wrongly(m.fc(x)), fc=nn.Linear(4, 4))
    assert_refused(model, [4], "differs", WAY_OUT, tracer="fx")


def cancelling_fc() -> nn.Linear:
    """A float64 linear map whose two outputs, about 1e5, differ by about 10: their
    difference loses about 1e-3 relative to rounding in float32."""
    torch.manual_seed(0)
    fc = nn.Linear(64, 2, bias=False).double()
    u = torch.randn(64, dtype=torch.float64)
    with torch.no_grad():
        fc.weight.copy_(torch.stack([1e4 * u, 1e4 * u + torch.randn(64, dtype=torch.float64)]))
    return fc


def test_dry_run_accepts_a_deviation_within_the_models_own_float32_noise(module_from):
    """A model that computes in float64 and returns float32 is more accurate than its
    float32 conversion, by more than the dry run's tolerance: in float64 the conversion
    reproduces the original, so it converts."""
    model = module_from(lambda m, x: (m.fc(x)[:, :1] - m.fc(x)[:, 1:]).float(),
                        fc=cancelling_fc())
    conv = ins.convert(model, input_dim=[64])
    x = torch.randn(3, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, actual = model(x), conv.model(x.float())
        exact = ins.convert(model, input_dim=[64], dtype="double").model(x)
    scale = expected.abs().max()
    assert (actual - expected).abs().max() > DRY_RUN_TOLERANCE * scale  # the fixed test fails
    assert (exact - expected).abs().max() < 1e-6 * scale


def test_dry_run_refuses_a_wrong_conversion_of_a_noisy_model(module_from, converts_wrongly):
    def forward(m, x):
        return converts_wrongly(m.fc(x)[:, :1] - m.fc(x)[:, 1:]).float()

    message = assert_refused(module_from(forward, fc=cancelling_fc()), [64], "differs",
                             "in float64", WAY_OUT, tracer="fx")
    assert "the tolerance is 0.0001" in message


def chaotic_mlp(depth: int = 30, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """``depth`` layers ``tanh(W h)`` of width 16 with gain 4 (``W`` ~ N(0, 1), 8
    outputs): a chaotic map that amplifies rounding about 1e6-fold, so its float32
    output lies about 1e-2 from its float64 output, while float64 rounding stays below
    1e-9."""
    g = torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        fc = nn.Linear(16, 16, bias=False)
        with torch.no_grad():
            fc.weight.copy_(torch.randn(16, 16, generator=g))  # gain sqrt(16) * 1
        layers += [fc, nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(16, 8)).eval().to(dtype)


def _chaos_input() -> torch.Tensor:
    return torch.randn(2, 16, generator=torch.Generator().manual_seed(1))


def test_dry_run_accepts_a_chaotic_model_that_agrees_in_float64(module_from):
    """A chaotic map computed in float64 that returns float32: the float32 conversion
    (its weights rounded to float32) lies far outside the tolerance of the original's
    accurate output, yet in float64 it reproduces the original, so it converts."""
    chaos = chaotic_mlp(dtype=torch.float64)
    model = module_from(lambda m, x: m.chaos(x.double()).float(), chaos=chaos)
    conv = ins.convert(model, input_dim=[16])
    x = _chaos_input()
    with torch.no_grad():
        single, expected = conv.model(x), model(x)
        exact = ins.convert(model, input_dim=[16], dtype="double").model(x.double())
    scale = expected.abs().max()
    assert (single - expected).abs().max() > 10 * DRY_RUN_TOLERANCE * scale
    assert (exact - chaos(x.double())).abs().max() < 1e-9 * scale


def test_dry_run_runs_a_float32_original_in_float64_and_restores_it(module_from):
    """A float32 chaotic map after a division that the conversion rounds differently
    (it multiplies by the reciprocal): the converted float32 output lies outside the
    tolerance; the original is run in float64 for the check (its parameters cast for
    the run, then the same objects given back in float32) and agrees there."""
    chaos = chaotic_mlp()
    model = module_from(lambda m, x: m.chaos(x / 3.0), chaos=chaos)
    weight = chaos[0].weight
    conv = ins.convert(model, input_dim=[16])
    assert chaos[0].weight is weight and weight.dtype == torch.float32
    x = _chaos_input()
    with torch.no_grad():
        single, expected = conv.model(x), model(x)
    assert (single - expected).abs().max() > DRY_RUN_TOLERANCE * expected.abs().max()


def test_dry_run_refuses_a_wrong_conversion_of_a_chaotic_model(module_from, converts_wrongly):
    """A graph that computes something else than the model, at the end of a chaotic
    model: its deviation lies within ten times the model's own float32 noise (so a rule
    that accepted deviations within the float32 noise would accept it), and it is
    refused because the conversion deviates in float64 as much."""
    chaos = chaotic_mlp()
    model = module_from(lambda m, x: converts_wrongly(m.chaos(x)), chaos=chaos)
    x = _chaos_input()
    with torch.no_grad():
        exact = chaotic_mlp().double()(x.double())
        noise = (chaos(x).double() - exact).abs().max()
        right = 2 * exact.relu()  # what the model computes
        wrong = exact + exact.relu()  # what the traced graph computes
    assert (right - wrong).abs().max() < 10 * noise
    assert_refused(model, [16], "differs", "in float64", WAY_OUT, tracer="fx")


def test_dry_run_refuses_a_wrong_conversion_of_a_model_with_small_outputs(module_from,
                                                                          converts_wrongly):
    """Outputs of about 1e-6 are compared relative to their own magnitude, not to 1."""
    model = module_from(lambda m, x: converts_wrongly(1e-6 * m.fc(x)), fc=nn.Linear(4, 4))
    assert_refused(model, [4], "differs", WAY_OUT, tracer="fx")
