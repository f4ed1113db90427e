"""Explaining any node and any quantity: per-sample ``targets``, ``target_fun``,
``target_weights``, intermediate nodes (``output_layer``) and ``extra_args``.

References are independent of innsight: ``torch.autograd`` on the original torch
model (intermediate nodes caught with forward hooks on it), ``tf.GradientTape`` on
the Keras model, and closed forms (DeepLift's sum is ``f(x) - f(x_ref)``). The
conformance suite (``method_checks.py``) checks every method's per-sample targets
and linear targets against its own single-output results.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import innsight as ins

TOL = 1e-10  # double precision, relative to the reference's largest magnitude


def assert_close(actual, expected, tol=TOL):
    actual, expected = (torch.tensor(np.array(v)) if not isinstance(v, Tensor) else v.detach()
                        for v in (actual, expected))
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    assert scale > 0, "degenerate reference"
    assert (actual - expected).abs().max().item() <= tol * scale


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def autograd(fn, x: Tensor) -> Tensor:
    """``d sum_rows fn(x) / d x`` for ``fn(x) -> (rows,)``."""
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(fn(x).sum(), x)[0]


def caught(model: nn.Module, module: nn.Module, x: Tensor) -> Tensor:
    """The output of ``module`` inside ``model(x)``, by a forward hook on the original."""
    out = {}
    handle = module.register_forward_hook(lambda m, i, o: out.setdefault("y", o))
    try:
        model(x)
    finally:
        handle.remove()
    return out["y"]


RUN = {"dtype": "double", "verbose": False}


class Logits(nn.Module):
    """The logits of a model with a ``logits`` method, as a module of their own."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.logits(x)


@pytest.fixture
def cnn(softmax_cnn):
    return softmax_cnn.double()


@pytest.fixture
def cnn_conv(cnn):
    return ins.convert(cnn, input_dim=(2, 8, 8), dtype="double")


# ---- per-sample targets ------------------------------------------------------------------


def test_per_sample_gradient_is_autograd_of_each_samples_logit(cnn, cnn_conv):
    x = randn(5, 2, 8, 8)
    nodes = torch.tensor([2, 0, 1, 2, 1])
    expected = autograd(lambda v: cnn.logits(v).gather(1, nodes[:, None])[:, 0], x)
    result = ins.run_grad(cnn_conv, x, targets=nodes.numpy(), **RUN)
    assert result.output_labels == [["targets"]]
    assert_close(result.get_result()[..., 0], expected)
    direct = ins.torch_grad(Logits(cnn).eval(), x, targets=nodes, dtype="double")
    assert_close(direct[..., 0], expected)
    with torch.no_grad():
        assert_close(result.preds[0][:, 0], cnn(x).gather(1, nodes[:, None])[:, 0])


def test_predicted_targets_and_labels(cnn, cnn_conv):
    x = randn(6, 2, 8, 8, seed=1)
    with torch.no_grad():
        top = cnn(x).argmax(1)
    predicted = ins.run_intgrad(cnn_conv, x, targets="predicted", n=8, **RUN)
    assert predicted.output_labels == [["predicted"]]
    assert predicted.sample_nodes == [f"Y{j + 1}" for j in top.tolist()]
    by_label = ins.run_intgrad(cnn_conv, x, targets=[f"Y{j + 1}" for j in top.tolist()], n=8, **RUN)
    np.testing.assert_array_equal(by_label.get_result(), predicted.get_result())
    # IntegratedGradient's goal is each sample's node at x minus at the zero reference
    with torch.no_grad():
        expected = (cnn.logits(x) - cnn.logits(torch.zeros_like(x))).gather(1, top[:, None])
    assert_close(predicted.decomp_goal[0], expected)

    frame = predicted.get_result("data.frame")
    per_sample = frame.groupby("data")["output_node"].unique()
    assert [list(nodes) for nodes in per_sample] == [[f"Y{j + 1}"] for j in top.tolist()]
    assert "each sample's node" in str(predicted)


def test_per_sample_targets_plot_name_each_samples_node(cnn_conv):
    x = randn(3, 2, 8, 8, seed=2)
    result = ins.run_grad(cnn_conv, x, targets=[2, 0, 1], **RUN)
    figure = result.plot(data_idx=[0, 1])
    assert set(map(str, figure.data["output_node"])) == {"targets"}
    texts = figure.layers[-1]._data["text"].tolist()
    assert texts[0].strip().startswith("node: Y3") and texts[1].strip().startswith("node: Y1")
    plotly = result.plot(data_idx=1, as_plotly=True)
    assert any("node: Y1" in a.text for a in plotly.layout.annotations)
    result.plot_global()


# ---- intermediate nodes ------------------------------------------------------------------


def test_intermediate_node_of_a_torch_model_is_its_autograd(cnn, cnn_conv):
    x = randn(4, 2, 8, 8, seed=3)
    nodes = [0, 5, 15]

    def node(v):
        return caught(cnn, cnn.conv2, v).flatten(1)

    expected = torch.stack([autograd(lambda v, j=j: node(v)[:, j], x) for j in nodes], dim=-1)
    result = ins.run_grad(cnn_conv, x, output_layer="conv2", output_idx=nodes, **RUN)
    # generated names of the (4, 2, 2) feature map, flat indices channels first
    assert result.output_labels[0] == ["Y1_H1_W1", "Y2_H1_W2", "Y4_H2_W2"]
    assert_close(result.get_result(), expected)
    with torch.no_grad():
        assert_close(result.preds[0], node(x)[:, nodes])
    direct = ins.torch_grad(cnn, x, output_layer="conv2", output_idx=nodes, dtype="double")
    assert_close(direct, expected)

    # the decomposition goal follows the node: node(x) - node(x_ref)
    deeplift = ins.run_deeplift(cnn_conv, x, output_layer="conv2", output_idx=nodes, **RUN)
    with torch.no_grad():
        goal = (node(x) - node(torch.zeros_like(x)))[:, nodes]
    assert_close(deeplift.decomp_goal[0], goal)
    assert_close(deeplift.decomp_sum[0], goal, 1e-9)
    intgrad = ins.torch_intgrad(cnn, x, output_layer="conv2", output_idx=nodes, n=500,
                                dtype="double", return_object=True)
    assert_close(intgrad.decomp_goal[0], goal)
    assert_close(intgrad.decomp_sum[0], goal, 2e-2)


def test_intermediate_node_by_position_and_several_layers(cnn, cnn_conv):
    x = randn(2, 2, 8, 8, seed=4)
    names = cnn_conv.model.layer_names
    position = names.index("conv2")
    by_name = ins.run_grad(cnn_conv, x, output_layer="conv2", output_idx=[3], **RUN)
    by_position = ins.run_grad(cnn_conv, x, output_layer=position, output_idx=[3], **RUN)
    np.testing.assert_array_equal(by_name.get_result(), by_position.get_result())
    both = ins.run_grad(cnn_conv, x, output_layer=["conv2", "fc"], output_idx=[[3], [1]], **RUN)
    expected = autograd(lambda v: cnn.logits(v)[:, 1], x)
    assert_close(both.get_result()[1][0][..., 0], expected)


def test_intermediate_node_of_a_keras_model_is_its_tape_gradient():
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    old = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        keras.utils.set_random_seed(0)
        inp = keras.Input((8, 8, 2))
        hidden = keras.layers.Conv2D(3, 3, activation="relu", name="conv_a")(inp)
        flat = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="conv_b")(hidden))
        model = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="head")(flat))
        conv = ins.convert(model, dtype="double")
        x = np.random.default_rng(0).normal(size=(3, 8, 8, 2))
        node = 40  # channels first (3, 6, 6): channel 1, row 0, column 4
        c, h, w = np.unravel_index(node, (3, 6, 6))
        sub = keras.Model(inp, model.get_layer("conv_a").output)
        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            total = tf.reduce_sum(sub(xt)[:, h, w, c])
        expected = np.asarray(tape.gradient(total, xt))
    finally:
        keras.config.set_floatx(old)
    result = ins.run_grad(conv, x, channels_first=False, output_layer="conv_a/relu",
                          output_idx=node, **RUN)
    assert_close(result.get_result()[..., 0], expected)


def test_intermediate_node_of_an_onnx_model_is_the_autograd_of_its_source(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnx2torch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(model, (torch.randn(2, 2, 8, 8),), str(path), dynamo=False,
                      input_names=["x0"], output_names=["y0"], opset_version=17,
                      dynamic_axes={"x0": {0: "batch"}, "y0": {0: "batch"}})
    conv = ins.convert(str(path), dtype="double")
    x = randn(3, 2, 8, 8, seed=5)
    result = ins.run_grad(conv, x, output_layer="/1/Relu", output_idx=[7, 50], **RUN)
    source = model.double()[:2]
    expected = torch.stack([autograd(lambda v, j=j: source(v).flatten(1)[:, j], x)
                            for j in (7, 50)], dim=-1)
    assert_close(result.get_result(), expected)


# ---- custom targets ----------------------------------------------------------------------


def test_logit_difference_as_function_and_as_weights(cnn, cnn_conv):
    x = randn(4, 2, 8, 8, seed=6)
    expected = autograd(lambda v: cnn.logits(v)[:, 0] - cnn.logits(v)[:, 2], x)
    fun = ins.run_grad(cnn_conv, x, target_fun=lambda outs: outs[0][:, 0] - outs[0][:, 2], **RUN)
    assert fun.output_labels == [["target_fun"]]
    assert_close(fun.get_result()[..., 0], expected)
    weights = ins.run_grad(cnn_conv, x, target_weights=[1.0, 0.0, -1.0], **RUN)
    assert_close(weights.get_result()[..., 0], expected)
    direct = ins.torch_grad(Logits(cnn).eval(), x, target_fun=lambda outs: outs[0][:, 0] - outs[0][:, 2],
                            dtype="double")
    assert_close(direct[..., 0], expected)

    singles = ins.run_lrp(cnn_conv, x, output_idx=[0, 2], rule_name="epsilon", **RUN).get_result()
    lrp = ins.run_lrp(cnn_conv, x, target_weights=np.array([1.0, 0.0, -1.0]), rule_name="epsilon",
                      **RUN)
    assert_close(lrp.get_result()[..., 0], singles[..., 0] - singles[..., 1])
    deeplift = ins.run_deeplift(cnn_conv, x, target_weights=[1.0, 0.0, -1.0], **RUN)
    with torch.no_grad():
        diff = cnn.logits(x)[:, 0] - cnn.logits(x)[:, 2]
        zero = torch.zeros_like(x)
        goal = diff - (cnn.logits(zero)[:, 0] - cnn.logits(zero)[:, 2])
    assert_close(deeplift.decomp_sum[0][:, 0], goal, 1e-9)
    assert_close(lrp.decomp_goal[0][:, 0], diff)  # LRP starts from the weighted value


class SegNet(nn.Module):
    """A small segmentation net: (3, 8, 8) -> class scores (4, 8, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.tanh(self.conv2(F.relu(self.conv1(x)))))


def test_region_target_of_a_segmentation_net_is_the_autograd_of_the_masked_sum(seeded):
    model = seeded(SegNet).double()
    conv = ins.convert(model, input_dim=(3, 8, 8), dtype="double")
    x = randn(3, 3, 8, 8, seed=7)
    mask = torch.zeros(8, 8, dtype=torch.float64)
    mask[2:5, 3:7] = 1

    def region(outs):
        return (outs[0][:, 1] * mask).sum((1, 2))

    expected = autograd(lambda v: region([model(v)]), x)
    assert_close(ins.run_grad(conv, x, target_fun=region, **RUN).get_result()[..., 0], expected)
    assert_close(ins.torch_grad(model, x, target_fun=region, dtype="double")[..., 0], expected)
    weights = torch.zeros(4, 8, 8, dtype=torch.float64)
    weights[1] = mask
    assert_close(ins.run_grad(conv, x, target_weights=weights, **RUN).get_result()[..., 0],
                 expected)
    deeplift = ins.run_deeplift(conv, x, target_weights=weights, **RUN)
    with torch.no_grad():
        goal = region([model(x)]) - region([model(torch.zeros_like(x))])
    assert_close(deeplift.decomp_sum[0][:, 0], goal, 1e-9)

    # one column per class: the region's sum of every class
    per_class = ins.run_grad(conv, x, target_fun=lambda outs: (outs[0] * mask).sum((2, 3)), **RUN)
    assert per_class.output_labels == [[f"target_fun_{k}" for k in range(1, 5)]]
    assert_close(per_class.get_result()[..., 1], expected)
    per_class.plot(data_idx=0)


@pytest.mark.parametrize("run", [ins.run_grad, ins.run_intgrad, ins.run_lrp, ins.run_deeplift,
                                 ins.run_deepshap])
def test_sparse_weights_equal_the_dense_ones(seeded, run):
    # The dense weights are checked against autograd and DeepLift's sum above; the sparse
    # ones (which start the walk from their entries only) must give the same numbers.
    model = seeded(SegNet).double()
    conv = ins.convert(model, input_dim=(3, 8, 8), dtype="double")
    x = randn(3, 3, 8, 8, seed=10)
    dense = torch.zeros(2, 4 * 8 * 8, dtype=torch.float64)
    dense[0, [70, 71, 200]] = torch.tensor([1.0, 0.5, -2.0], dtype=torch.float64)
    dense[1, 130] = 1.0
    args = {**RUN, "n": 4} if run is ins.run_intgrad else RUN
    expected = run(conv, x, target_weights=dense, **args)
    for sparse in (dense.to_sparse(), dense[1].to_sparse()):
        result = run(conv, x, target_weights=sparse, **args)
        k = slice(None) if sparse.ndim == 2 else slice(1, 2)
        assert_close(result.get_result(), expected.get_result()[..., k], 1e-12)
        if expected.decomp_goal is not None:
            assert_close(result.decomp_goal[0], expected.decomp_goal[0][:, k], 1e-12)
        assert result.output_labels == [["target_weights"] if sparse.ndim == 1
                                        else ["target_weights_1", "target_weights_2"]]


@pytest.mark.parametrize("run", [ins.run_grad, ins.run_lrp, ins.run_deeplift, ins.run_cw])
def test_sparse_weights_through_a_dense_output_layer_equal_the_dense_ones(seeded, run):
    # A dense output layer is walked back through its picked weight rows only (the
    # LM-head path of `innsight.methods.heads`, here on a plain converted MLP taking real
    # inputs); dense weights go through the whole layer.
    model = seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 30))).double()
    conv = ins.convert(model, input_dim=[5], dtype="double")
    x = randn(4, 5, seed=3)
    dense = torch.zeros(2, 30, dtype=torch.float64)
    dense[0, [3, 17]] = torch.tensor([1.0, -2.0], dtype=torch.float64)
    dense[1, 17] = 0.5
    expected = run(conv, x, target_weights=dense, **RUN)
    result = run(conv, x, target_weights=dense.to_sparse(), **RUN)
    assert_close(result.get_result(), expected.get_result(), 1e-12)
    if run is ins.run_grad:  # and the dense weights are autograd's
        assert_close(expected.get_result()[..., 0],
                     autograd(lambda v: model(v) @ dense[0], x))
    # Two explained layers, the first read by the second: it stays whole (the walk from
    # the second passes through it), and the results still agree.
    names = conv.model.layer_names
    layers = [names[i] for i, layer in enumerate(conv.model.layers) if layer.type_name == "Dense"]
    both = [torch.zeros(8, dtype=torch.float64), dense[0]]
    both[0][[1, 6]] = torch.tensor([1.0, 3.0], dtype=torch.float64)
    expected = run(conv, x, output_layer=layers, target_weights=both, **RUN)
    result = run(conv, x, output_layer=layers, target_weights=[w.to_sparse() for w in both],
                 **RUN)
    assert_close(result.get_result()[0][0], expected.get_result()[0][0], 1e-12)


def test_a_head_with_every_unit_picked_is_not_restricted(seeded):
    # `sparse_heads` restricts a dense output layer to the units the targets pick; where
    # they pick every unit it starts densely (no restriction, no picks), and both ways
    # give autograd's gradients.
    from innsight.methods.heads import sparse_heads
    from innsight.methods.targets import NodeTargets, PerSampleTargets
    from innsight.outputs import Target

    model = seeded(lambda: nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))).double()
    conv = ins.convert(model, input_dim=[5], dtype="double")
    explained, sample = conv.model.explained_nodes(True), torch.arange(4)
    every = NodeTargets(tuple(Target(0, j) for j in (2, 0, 1)))
    assert not sparse_heads(conv.model, explained, every, sample)
    some = NodeTargets((Target(0, 2), Target(0, 0)))
    head = sparse_heads(conv.model, explained, some, sample)[0]
    assert head.layer.output_dim == (2,)
    per_sample = PerSampleTargets(0, torch.tensor([0, 1, 2, 1]))
    assert not sparse_heads(conv.model, explained, per_sample, sample)
    assert len(sparse_heads(conv.model, explained, per_sample, sample[:2])[0].picks.node) == 2

    x = randn(4, 5, seed=4)
    for idx in ([2, 0, 1], [2, 0]):
        result = ins.run_grad(conv, x, output_idx=idx, **RUN).get_result()
        for t, j in enumerate(idx):
            assert_close(result[..., t], autograd(lambda v, j=j: model(v)[:, j], x))
    result = ins.run_grad(conv, x, targets=[0, 1, 2, 1], **RUN).get_result()
    assert_close(result[..., 0], autograd(
        lambda v: model(v).gather(1, torch.tensor([[0], [1], [2], [1]]))[:, 0], x))


def test_weights_per_output_layer(two_in_two_out):
    model = two_in_two_out.double()
    conv = ins.convert(model, input_dim=[(2, 6, 6), (4,)], dtype="double")
    xs = [randn(3, 2, 6, 6, seed=8), randn(3, 4, seed=9)]
    w_cls, w_reg = torch.tensor([0.5, -1.0, 2.0]), torch.tensor([1.5, -0.5])
    result = ins.run_grad(conv, xs, target_weights=[w_cls.numpy(), w_reg.numpy()], **RUN)
    leaves = [x.clone().requires_grad_(True) for x in xs]
    logits, reg = model.heads(*leaves)
    total = (logits @ w_cls.double() + reg @ w_reg.double()).sum()
    expected = torch.autograd.grad(total, leaves)
    got = result.get_result()
    assert got[1] is None  # the columns live in the first output layer
    for actual, e in zip(got[0], expected):
        assert_close(actual[..., 0], e)
    only_reg = ins.run_grad(conv, xs, target_weights=[None, w_reg], **RUN)
    assert only_reg.get_result()[0] is None and only_reg.output_labels[1] == ["target_weights"]


# ---- extra forward arguments -------------------------------------------------------------


class Masked(nn.Module):
    """``forward(x, mask, scale=1.0)``: an MLP on the masked input, times ``scale``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: Tensor, mask: Tensor, scale: float = 1.0) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x * mask))) * scale


class Baked(nn.Module):
    """``Masked`` with one sample's mask and a scale fixed: the reference for that sample."""

    def __init__(self, model: Masked, mask: Tensor, scale: float) -> None:
        super().__init__()
        self.model, self.mask, self.scale = model, mask, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x, self.mask, self.scale)


@pytest.fixture
def masked(seeded):
    return seeded(Masked).double()


def _mask(n):
    return (torch.rand(n, 5, generator=torch.Generator().manual_seed(1)) > 0.3).double()


def test_extra_args_gradient_is_autograd(masked):
    x, mask = randn(4, 5, seed=10), _mask(4)
    expected = autograd(lambda v: masked(v, mask, 2.0)[:, 1], x)
    actual = ins.torch_grad(masked, x, output_idx=[1], dtype="double",
                            extra_args={"mask": mask, "scale": 2.0})
    assert_close(actual[..., 0], expected)
    positional = ins.torch_grad(masked, x, output_idx=[1], dtype="double", extra_args=(mask, 2.0))
    assert_close(positional[..., 0], expected)


def test_extra_args_go_with_their_sample(masked):
    """Path points, noisy copies and references of a sample get that sample's arguments:
    all samples together equal each sample alone with its arguments fixed in the model."""
    x, mask = randn(4, 5, seed=11), _mask(4)
    together = ins.torch_intgrad(masked, x, extra_args=(mask, 3.0), n=7, dtype="double",
                                 return_object=True)
    for i in range(4):
        alone = ins.torch_intgrad(Baked(masked, mask[i:i + 1], 3.0).eval(), x[i:i + 1], n=7,
                                  dtype="double", return_object=True)
        assert_close(together.get_result()[i], alone.get_result()[0])
        assert_close(together.decomp_goal[0][i], alone.decomp_goal[0][0])
    with torch.no_grad():
        goal = masked(x, mask, 3.0) - masked(torch.zeros_like(x), mask, 3.0)
    assert_close(together.decomp_goal[0], goal)

    smooth = ins.torch_smoothgrad(masked, x[2:3], extra_args=(mask[2:3],), n=20, seed=3,
                                  dtype="double")
    baked = ins.torch_smoothgrad(Baked(masked, mask[2:3], 1.0).eval(), x[2:3], n=20, seed=3,
                                 dtype="double")
    assert_close(smooth, baked)

    refs = randn(6, 5, seed=12)
    expgrad = ins.torch_expgrad(masked, x, data_ref=refs, extra_args=(mask,), n=10, seed=0,
                                dtype="double", return_object=True)
    with torch.no_grad():
        mean_ref = torch.stack([masked(refs, mask[i].expand(6, 5)).mean(0) for i in range(4)])
        goal = masked(x, mask) - mean_ref
    assert_close(expgrad.decomp_goal[0], goal)


def test_extra_args_that_are_no_per_sample_tensors_pass_unchanged(seeded):
    class Shifted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 2)

        def forward(self, x: Tensor, shift: Tensor) -> Tensor:
            return self.fc(x + shift)  # shift (5,): one for all samples

    model = seeded(Shifted).double()
    x, shift = randn(3, 5, seed=13), randn(5, seed=14)
    expected = autograd(lambda v: torch.tanh(model(v, shift)[:, 0]), x)
    actual = ins.torch_grad(model, x, target_fun=lambda outs: torch.tanh(outs[0][:, 0]),
                            extra_args=(shift,), dtype="double")
    assert_close(actual[..., 0], expected)


# ---- bad arguments -----------------------------------------------------------------------


class ReusedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 4), nn.Linear(4, 2), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.act(x))))


BAD = [
    ({"targets": [0, 1, 2], "output_idx": 1}, ValueError, "`targets`.*`output_idx`"),
    ({"target_fun": lambda o: o[0][:, 0], "output_label": "Y1"}, ValueError,
     "`target_fun`.*`output_label`"),
    ({"targets": "predicted", "target_weights": [1, 0, 0]}, ValueError, "at most one of"),
    ({"targets": [0, 1]}, ValueError, "one output node per sample \\(3\\)"),
    ({"targets": ["Y1", "Y9", "Y2"]}, ValueError, "`targets` has labels \\['Y9'\\]"),
    ({"targets": [0, 3, 1]}, ValueError, "`targets` has node indices \\[3\\] out of range"),
    ({"targets": [0.5, 1, 2]}, TypeError, "`targets` must be 'predicted' or an array of ints"),
    ({"targets": "best"}, ValueError, "`targets` must be 'predicted'"),
    ({"output_layer": "conv9"}, ValueError, "`output_layer` 'conv9' is no layer.*conv2"),
    ({"output_layer": 99}, ValueError, "`output_layer` 99 is no layer position"),
    ({"output_layer": []}, ValueError, "`output_layer` must name at least one"),
    ({"output_layer": 1.5}, TypeError, "`output_layer` must be a layer name"),
    ({"target_fun": "logits"}, TypeError, "`target_fun` must be a callable"),
    ({"target_fun": lambda o: o[0][:2, 0]}, ValueError,
     r"`target_fun` must return a tensor of shape \(3,\) or \(3, k\)"),
    ({"target_fun": lambda o: 1.0}, TypeError, "`target_fun` must return a torch tensor"),
    ({"target_weights": [1.0, 0.0]}, ValueError, "`target_weights` must have shape \\(3,\\)"),
    ({"target_weights": [1.0, np.nan, 0.0]}, ValueError, "`target_weights` contains NaN"),
    ({"target_weights": [np.ones(3), np.ones(2)]}, ValueError, "2 entries, one per output layer"),
    ({"target_weights": [None]}, ValueError, "no weights for any output layer"),
    ({"target_weights": "w"}, TypeError, "`target_weights` must be"),
    ({"target_weights": torch.ones(2).to_sparse()}, ValueError,
     r"`target_weights` is sparse and must have shape \(3,\) or \(k, 3\) .* got shape \(2,\)"),
    ({"target_weights": torch.tensor([1.0, np.inf, 0.0]).to_sparse()}, ValueError,
     "`target_weights` contains NaN or infinite"),
    ({"target_weights": torch.ones(3, dtype=torch.complex64).to_sparse()}, TypeError,
     "`target_weights` must hold real numbers"),
]


@pytest.mark.parametrize("kwargs, error, match", BAD)
def test_bad_target_arguments_are_refused_by_name(cnn_conv, kwargs, error, match):
    with pytest.raises(error, match=match):
        ins.run_grad(cnn_conv, randn(3, 2, 8, 8), **kwargs, **RUN)


@pytest.mark.parametrize("run", [ins.run_lrp, ins.run_deeplift, ins.run_deepshap, ins.run_cw])
def test_rule_based_methods_refuse_a_callable_and_point_to_weights(cnn_conv, run):
    with pytest.raises(TypeError, match="target_weights="):
        run(cnn_conv, randn(3, 2, 8, 8), target_fun=lambda o: o[0][:, 0], **RUN)


def test_other_refusals(cnn, cnn_conv, seeded):
    x = randn(3, 2, 8, 8)
    with pytest.raises(ValueError, match="`targets` selects an output node per sample and "
                                         "needs data"):
        ins.run_cw(cnn_conv, targets=[0, 1, 2])
    with pytest.raises(ValueError, match="must name submodules.*close names: \\['conv2'"):
        ins.torch_grad(cnn, x, output_layer="conv22")
    with pytest.raises(TypeError, match="`extra_args` must be a tuple"):
        ins.torch_grad(cnn, x, extra_args=torch.ones(3))
    with pytest.raises(ValueError, match="`output_layer` needs a Converter"):
        ins.run_shap(cnn, x, x, output_layer="conv2", n=2)
    reused = seeded(ReusedReLU)
    with pytest.raises(ValueError, match="runs more than once"):
        ins.torch_grad(reused, torch.randn(2, 4), output_layer="act")
    # converted, the second call of a module gets its own name; a hand-written dict
    # may still give two layers one name
    described = ins.convert(reused, input_dim=(4,)).to_dict()
    names = [layer["name"] for layer in described["layers"]]
    assert [name for name in names if name.startswith("act")] == ["act", "act_1"]
    described["layers"][names.index("act_1")]["name"] = "act"
    with pytest.raises(ValueError, match="names 2 layers.*pass the position"):
        ins.run_grad(ins.convert(described), torch.randn(2, 4), output_layer="act")
