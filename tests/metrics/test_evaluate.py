"""``ins.evaluate``: the frame, the kinds of results and models it takes, invariances
(batch size, batch mates, seed), the blur baseline, and every refused argument."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import innsight as ins
from innsight.methods.result import Result

FAST = [ins.metrics.Deletion(features_in_step=16), ins.metrics.Insertion(features_in_step=16),
        "sparseness", "complexity", "completeness"]


@pytest.fixture
def conv(small_cnn):
    return ins.convert(small_cnn, input_dim=[3, 8, 8])


def test_frame_has_a_row_per_result_metric_sample_and_node(conv, images):
    results = {"grad": ins.run_grad(conv, images, output_idx=[0, 2]),
               "ig": ins.run_intgrad(conv, images, output_idx=[0, 2], n=4)}
    scores = ins.evaluate(results, FAST)
    assert list(scores.columns) == ["method", "metric", "data", "output_node", "value"]
    counts = scores.groupby(["method", "metric"]).size()
    assert set(counts) == {5 * 2}  # samples x nodes, for every pair that applies
    assert ("grad", "completeness") not in counts and ("ig", "completeness") in counts
    assert set(scores["output_node"]) == {"Y1", "Y3"}
    assert scores.attrs["higher_is_better"] == {"deletion": False, "insertion": True,
                                                "sparseness": True, "complexity": False,
                                                "completeness": False}
    curves = scores.attrs["curves"]
    assert set(curves["metric"]) == {"deletion", "insertion"}
    # a deletion curve starts at the explained logit and ends at the baseline's (zeros)
    with torch.no_grad():
        logits = conv.model(images)[:, [0, 2]].numpy()
        at_zero = conv.model(torch.zeros(1, 3, 8, 8))[0, [0, 2]].numpy()
    deletion = curves[(curves["method"] == "grad") & (curves["metric"] == "deletion")]
    first = deletion[deletion["step"] == 0].sort_values(["data", "output_node"])
    last = deletion[deletion["step"] == deletion["step"].max()].sort_values(["data", "output_node"])
    np.testing.assert_allclose(first["value"], logits.ravel(), atol=1e-5)
    np.testing.assert_allclose(last["value"], np.tile(at_zero, 5), atol=1e-5)


def test_lists_and_comparisons(small_cnn, images):
    c1 = ins.convert(small_cnn, input_dim=[3, 8, 8])
    c2 = ins.convert(small_cnn, input_dim=[3, 8, 8])
    listed = ins.evaluate([ins.run_grad(c1, images, output_idx=0),
                           ins.run_lrp(c1, images, output_idx=0)], ["sparseness"])
    assert set(listed["method"]) == {"Gradient", "LRP"}
    compared = ins.evaluate(ins.compare_models({"a": c1, "b": c2}, images, output_idx=0),
                            ["sparseness"])
    assert list(compared.columns)[:2] == ["model", "method"]
    a, b = (compared[compared["model"] == m]["value"].to_numpy() for m in "ab")
    np.testing.assert_allclose(a, b)  # the same model twice


def test_two_inputs_and_two_outputs(two_in_two_out):
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    data = [torch.randn(3, 2, 6, 6), torch.randn(3, 4)]
    res = ins.run_grad(conv, data, output_idx=[[1], [0]], times_input=True)
    scores = ins.evaluate(res, [ins.metrics.Deletion(features_in_step=10)])
    assert list(scores["output_node"].unique()) == ["Y2", "Y1"]
    curves = scores.attrs["curves"]
    with torch.no_grad():  # explained: the logits (before softmax) and the regression head
        logits, reg = two_in_two_out.heads(*data)
    first = curves[curves["step"] == 0]
    np.testing.assert_allclose(first[first["output_node"] == "Y2"]["value"], logits[:, 1], atol=1e-5)
    np.testing.assert_allclose(first[first["output_node"] == "Y1"]["value"], reg[:, 0], atol=1e-5)
    assert curves["x"].max() == 1.0 and curves["step"].max() == 8  # 76 entries, 10 per step


def test_models_that_are_not_converted(small_cnn, images):
    direct = ins.torch_grad(small_cnn, images, output_idx=[1], return_object=True)
    converted = ins.run_grad(ins.convert(small_cnn, input_dim=[3, 8, 8]), images, output_idx=1)
    metrics = [ins.metrics.Deletion(features_in_step=16), "sensitivity_max"]
    a = ins.evaluate(direct, metrics, seed=3)
    b = ins.evaluate(converted, metrics, seed=3)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-5)
    groups = np.arange(4).repeat(16).reshape(1, 8, 8)
    shap = ins.run_shap(small_cnn, images[:2], images, n=4, output_idx=1, feature_groups=groups)
    scores = ins.evaluate(shap, [ins.metrics.Deletion(feature_groups=groups), "sensitivity_avg"],
                          seed=0)
    assert scores["value"].notna().all() and len(scores) == 4


def test_invariant_to_batch_size_and_batch_mates(conv, images):
    """The same values with other chunks and without the other samples, up to float32
    round-off of the differently batched forwards (random draws shared by all samples)."""
    res = ins.run_grad(conv, images, output_idx=[0, 1], times_input=True)
    some = ins.run_grad(conv, images[:2], output_idx=[0, 1], times_input=True)
    metrics = [ins.metrics.Deletion(features_in_step=7), ins.metrics.Insertion(baseline="mean"),
               ins.metrics.FaithfulnessCorrelation(n=9), ins.metrics.Infidelity(n=6),
               ins.metrics.ROAD(noise=0.0)]
    whole = ins.evaluate(res, metrics, batch_size=1000, seed=0)
    chunked = ins.evaluate(res, metrics, batch_size=9, seed=0)
    alone = ins.evaluate(some, metrics, seed=0)
    keys = ["metric", "output_node", "data"]
    for frame, expected in ((chunked, whole), (alone, whole[whole["data"] < 2])):
        np.testing.assert_allclose(frame.sort_values(keys)["value"],
                                   expected.sort_values(keys)["value"], rtol=1e-3, atol=1e-6)


def test_one_node_per_sample_scores_each_samples_node(conv, images):
    """``targets=`` (one node per sample): every metric scores sample i at its node, as
    the same node explained among all nodes does (the perturbed rows follow their
    samples; the draws do not depend on the nodes)."""
    nodes = [2, 0, 3, 1, 2]
    metrics = [ins.metrics.Deletion(features_in_step=16), ins.metrics.Insertion(baseline="mean"),
               ins.metrics.FaithfulnessCorrelation(n=9), ins.metrics.Infidelity(n=6),
               ins.metrics.ROAD(noise=0.0), "sensitivity_max", "sensitivity_avg", "sparseness"]
    per_sample = ins.evaluate(ins.run_grad(conv, images, targets=nodes, times_input=True),
                              metrics, seed=0).sort_values(["metric", "data"])
    every = ins.evaluate(ins.run_grad(conv, images, output_idx=[0, 1, 2, 3], times_input=True),
                         metrics, seed=0)
    picked = every[every["output_node"] == every["data"].map(lambda i: f"Y{nodes[i] + 1}")]
    picked = picked.sort_values(["metric", "data"])
    assert len(per_sample) == len(metrics) * 5 and set(per_sample["output_node"]) == {"targets"}
    np.testing.assert_array_equal(per_sample["metric"], picked["metric"])
    np.testing.assert_allclose(per_sample["value"], picked["value"], rtol=1e-4, atol=1e-6)


def test_random_logit_of_one_node_per_sample_draws_another_node():
    """A linear model's gradient of node k is its weight row k: the random-logit score of
    sample i is the rank correlation of row ``targets[i]`` with another row, never with
    itself; targets that are no nodes have no other node to draw."""
    torch.manual_seed(0)
    model = nn.Linear(12, 5).eval()
    conv = ins.convert(model, input_dim=[12])
    x, nodes = torch.randn(6, 12), [4, 4, 0, 1, 3, 2]
    scores = ins.evaluate(ins.run_grad(conv, x, targets=nodes),
                          [ins.metrics.RandomLogit(absolute=False)], seed=0)
    rank = model.weight.detach().argsort(1).argsort(1).double()
    rank = rank - rank.mean(1, keepdim=True)
    correlation = (rank @ rank.T) / (rank.norm(dim=1)[:, None] * rank.norm(dim=1)[None])
    for i, value in enumerate(scores["value"]):
        others = [correlation[nodes[i], j].item() for j in range(5) if j != nodes[i]]
        assert min(abs(value - c) for c in others) < 1e-6
    with pytest.raises(ValueError, match="'random_logit' compares.*target_weights"):
        ins.evaluate(ins.run_grad(conv, x, target_weights=torch.ones(5)), ["random_logit"])


def test_model_arguments_per_sample_follow_the_perturbed_rows():
    """A torch module with a per-sample argument (``extra_args``): each perturbed row runs
    with its sample's argument. f_i(x) = s_i w.x: deletion with baseline 0 removes s_i w_j
    x_j per step, and the gradient s_i w does not change under noise (sensitivity 0)."""
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, generator=torch.Generator().manual_seed(0)))

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return (x @ self.w * scale)[:, None]

    model = Scaled().eval()
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    scale = torch.tensor([1.0, -2.0, 3.0, 0.5])
    grad = ins.torch_grad(model, x, return_object=True, extra_args=(scale,))
    scores = ins.evaluate(grad, [ins.metrics.Deletion(features_in_step=1), "sensitivity_max"],
                          seed=0)
    assert (scores[scores["metric"] == "sensitivity_max"]["value"].abs() < 1e-6).all()
    curves = scores.attrs["curves"].sort_values(["data", "step"])
    terms = (scale[:, None] * model.w.detach() * x)  # each feature's part of f_i
    order = (scale[:, None] * model.w.detach()).argsort(dim=1, descending=True, stable=True)
    removed = terms.gather(1, order).cumsum(1)
    expected = torch.cat([terms.sum(1, keepdim=True), terms.sum(1, keepdim=True) - removed], 1)
    np.testing.assert_allclose(curves["value"], expected.flatten().numpy(), atol=1e-5)


def test_seed_reproduces_and_methods_share_draws(conv, images):
    res = ins.run_grad(conv, images, output_idx=0)
    metrics = ["faithfulness_correlation", "infidelity", "sensitivity_avg"]
    first = ins.evaluate({"a": res, "b": res}, metrics, seed=7)
    np.testing.assert_array_equal(first["value"], ins.evaluate({"a": res, "b": res}, metrics,
                                                               seed=7)["value"])
    np.testing.assert_array_equal(first[first["method"] == "a"]["value"],
                                  first[first["method"] == "b"]["value"])
    assert not np.allclose(first[first["method"] == "a"]["value"],
                           ins.evaluate(res, metrics, seed=8)["value"])


def test_blur_baseline_equals_scipy(conv, images):
    res = ins.run_grad(conv, images[:1], output_idx=0)
    blurred = ndimage.gaussian_filter(images[:1].numpy(), sigma=(0, 0, 1.0, 1.0), mode="nearest",
                                      truncate=3.0)
    with torch.no_grad():
        expected = conv.model(torch.from_numpy(blurred))[0, 0].item()
    curves = ins.evaluate(res, [ins.metrics.Deletion(baseline="blur", blur_sigma=1.0)]
                          ).attrs["curves"]
    assert curves["value"].iloc[-1] == pytest.approx(expected, abs=1e-5)


def test_device_cpu(conv, images):
    res = ins.run_grad(conv, images, output_idx=0)
    np.testing.assert_allclose(ins.evaluate(res, FAST[:1], device="cpu")["value"],
                               ins.evaluate(res, FAST[:1])["value"])


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda r: ins.evaluate(r, ["flipping"]), ValueError, "`metrics` must hold metric names"),
    (lambda r: ins.evaluate(r, []), TypeError, "`metrics` must be a non-empty list"),
    (lambda r: ins.evaluate(r, ["deletion", ins.metrics.Deletion()]), ValueError,
     r"names \['deletion'\] more than once"),
    (lambda r: ins.evaluate("grad", ["deletion"]), TypeError, "`results` must be a result"),
    (lambda r: ins.evaluate({1: r}, ["deletion"]), TypeError, "keyed by names"),
    (lambda r: ins.evaluate([r, r], ["deletion"]), ValueError, "several results of"),
    (lambda r: ins.evaluate({"a": 3}, ["deletion"]), TypeError, "got 3 for 'a'"),
    (lambda r: ins.evaluate(r, seed=1.5), TypeError, "`seed` must be an int"),
    (lambda r: ins.evaluate(r, batch_size=0), ValueError, "`batch_size` must be a positive int"),
    (lambda r: ins.evaluate(r, device="nowhere"), ValueError, "`device` must name"),
    (lambda r: ins.metrics.Deletion(baseline="black"), ValueError,
     r"`baseline` must be one of \['zeros', 'mean', 'min', 'blur'\].*got 'black'"),
    (lambda r: ins.metrics.Insertion(order="random"), ValueError, "`order` must be one of"),
    (lambda r: ins.metrics.Deletion(features_in_step=0), ValueError,
     "`features_in_step` must be a positive int, got 0"),
    (lambda r: ins.metrics.Deletion(blur_sigma=-1), ValueError, "`blur_sigma` must be a positive"),
    (lambda r: ins.metrics.FaithfulnessCorrelation(n=2.5), ValueError, "`n` must be a positive"),
    (lambda r: ins.evaluate(r, [ins.metrics.FaithfulnessCorrelation(subset_size=500)]),
     ValueError, r"`subset_size` must be at most the number of players \(192\), got 500"),
    (lambda r: ins.evaluate(r, [ins.metrics.Deletion(baseline=torch.zeros(2, 3, 8, 8))]),
     ValueError, r"one reference sample or one per data sample \(5\), got 2"),
    (lambda r: ins.evaluate(r, [ins.metrics.Deletion(baseline=torch.zeros(1, 4, 8, 8))]),
     ValueError, "baseline"),
    (lambda r: ins.metrics.Infidelity(noise=0), ValueError, "`noise` must be a positive number"),
    (lambda r: ins.metrics.Sensitivity("median"), ValueError, "`aggregate` must be one of"),
    (lambda r: ins.metrics.Sensitivity(radius="big"), ValueError, "`radius` must be a positive"),
    (lambda r: ins.metrics.Randomization(absolute=1), TypeError, "`absolute` must be True or"),
])
def test_bad_arguments(conv, images, call, error, match):
    with pytest.raises(error, match=match):
        call(ins.run_grad(conv, images, output_idx=0))


def test_results_the_metrics_cannot_use(conv, images):
    res = ins.run_grad(conv, images, output_idx=0)
    plain = Result(**{f.name: getattr(res, f.name) for f in dataclasses.fields(Result) if f.init})
    assert ins.evaluate(plain, ["sparseness"])["value"].notna().all()  # values suffice
    with pytest.raises(ValueError, match="'deletion' evaluates the model.*carries none"):
        ins.evaluate(plain, ["deletion"])
    without_data = ins.run_cw(conv)
    with pytest.raises(ValueError, match="'deletion' perturbs the data.*without data"):
        ins.evaluate(without_data, ["deletion"])
    dense = ins.convert(nn.Sequential(nn.Flatten(), nn.ReLU()).eval(), input_dim=[4])
    with pytest.raises(ValueError, match="no dense or convolution layer"):
        ins.evaluate(ins.run_grad(dense, torch.randn(2, 4)), ["randomization"])
    with pytest.raises(ValueError, match="'blur'.*channel axis and spatial axes"):
        ins.evaluate(ins.run_grad(dense, torch.randn(2, 4)), [ins.metrics.Deletion(baseline="blur")])
