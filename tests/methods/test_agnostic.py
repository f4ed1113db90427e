"""SHAP and LIME against closed forms and the definition of Shapley values.

References: a linear model (values ``w * (x - ref)``), an additive model
``sum_j g_j(x_j)`` (values ``g_j(x_j) - g_j(ref_j)``, exact for any coalition
sample), and Shapley values enumerated over every coalition by definition.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import innsight as ins


class Additive(nn.Module):
    """``f(x) = sum_j g_j(x_j)`` with ``g_j(t) = a_j tanh(t) + b_j t^2`` per output, plus a bias."""

    def __init__(self, p: int, outputs: int) -> None:
        super().__init__()
        self.out = nn.Linear(2 * p, outputs)  # weights [a | b]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.cat([torch.tanh(x), x * x], dim=1))


def g(model: Additive, x: torch.Tensor) -> np.ndarray:
    """Each feature's term ``(n, p, outputs)``, in float64."""
    weight, x = model.out.weight.detach().double(), x.double()
    a, b = weight[:, :x.shape[1]], weight[:, x.shape[1]:]
    return (torch.tanh(x)[..., None] * a.T + (x * x)[..., None] * b.T).numpy()


def exact_shapley(f, x: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Shapley values of one sample ``x (p,)`` by definition, with the value of a
    coalition S the mean over the references of f(x on S, ref elsewhere): ``(p, outputs)``."""
    p = x.shape[0]

    def value(coalition: tuple[int, ...]) -> np.ndarray:
        rows = refs.copy()
        rows[:, list(coalition)] = x[list(coalition)]
        return f(rows).mean(axis=0)

    phi = 0.0 * value(())[None].repeat(p, axis=0)
    for j in range(p):
        others = [i for i in range(p) if i != j]
        for size in range(p):
            weight = math.factorial(size) * math.factorial(p - size - 1) / math.factorial(p)
            for coalition in itertools.combinations(others, size):
                phi[j] += weight * (value(coalition + (j,)) - value(coalition))
    return phi


@pytest.fixture(scope="module")
def additive():
    torch.manual_seed(0)
    model = Additive(6, 2).eval()
    return model, ins.convert(model, input_dim=[6])


def test_shap_of_a_linear_model_is_w_times_x_minus_mean_ref():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).eval()
    x, refs = torch.randn(4, 5), torch.randn(7, 5)
    result = ins.run_shap(ins.convert(model, input_dim=[5]), x, refs, n=14, dtype="double")
    expected = (x.double() - refs.double().mean(0))[..., None] * model.weight.detach().double().T
    np.testing.assert_allclose(result.get_result(), expected.numpy(), atol=1e-12)


def test_shap_of_an_additive_model_is_exact(additive):
    model, conv = additive
    x, refs = torch.randn(5, 6), torch.randn(4, 6)
    result = ins.run_shap(conv, x, refs, n=8, dtype="double")  # n = 2 x refs: each ref twice
    expected = g(model, x) - g(model, refs).mean(axis=0)
    np.testing.assert_allclose(result.get_result(), expected, atol=1e-12)


def test_shap_sums_to_f_x_minus_mean_f_ref_and_approaches_exact_shapley():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(),
                          nn.Linear(6, 2)).eval().double()
    conv = ins.convert(model, input_dim=[5])
    x, refs = torch.randn(3, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    result = ins.run_shap(conv, x, refs, n=1200, dtype="double", seed=0)
    values = result.get_result()

    def f(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(rows)).numpy()

    goal = f(x.numpy()) - f(refs.numpy()).mean(0)  # n is a multiple of 2 x 6 refs
    np.testing.assert_allclose(values.sum(axis=1), goal, atol=1e-12)
    np.testing.assert_allclose(result.decomp_goal[0].numpy(), goal, atol=1e-12)
    for d in range(3):
        exact = exact_shapley(f, x[d].numpy(), refs.numpy())
        # a Monte Carlo estimate: 600 antithetic pairs leave about 1% of the scale
        np.testing.assert_allclose(values[d], exact, atol=0.03 * np.abs(exact).max())


def test_shap_is_reproducible_and_independent_of_batch_size():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2)).eval()
    conv = ins.convert(model, input_dim=[6])
    x, refs = torch.randn(3, 6), torch.randn(5, 6)
    one = ins.run_shap(conv, x, refs, n=6, seed=3, dtype="double")
    chunked = ins.run_shap(conv, x, refs, n=6, seed=3, dtype="double", batch_size=5)
    np.testing.assert_allclose(one.get_result(), chunked.get_result(), atol=1e-12)


def test_lime_of_a_linear_model_with_one_reference_is_w_times_x_minus_ref():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).eval()
    x, ref = torch.randn(4, 5), torch.randn(1, 5)
    result = ins.run_lime(ins.convert(model, input_dim=[5]), x, ref, n=100, alpha=0.0, dtype="double")
    expected = (x.double() - ref.double())[..., None] * model.weight.detach().double().T
    np.testing.assert_allclose(result.get_result(), expected.numpy(), atol=1e-10)
    assert result.decomp_goal is None


def test_lime_of_an_additive_model_is_exact(additive):
    model, conv = additive
    x, ref = torch.randn(5, 6), torch.randn(1, 6)
    result = ins.run_lime(conv, x, ref, n=60, alpha=0.0, dtype="double", batch_size=70)
    expected = g(model, x) - g(model, ref)
    np.testing.assert_allclose(result.get_result(), expected, atol=1e-10)


def test_lime_ridge_penalty_shrinks_the_weights(additive):
    model, conv = additive
    x, ref = torch.randn(2, 6), torch.randn(1, 6)
    exact = g(model, x) - g(model, ref)
    strong = ins.run_lime(conv, x, ref, n=60, alpha=50.0, dtype="double", seed=0).get_result()
    assert np.abs(strong).sum() < 0.8 * np.abs(exact).sum()


def test_two_inputs_channels_last_and_selected_outputs(two_in_two_out):
    """Image (2, 6, 6) given channels last and tabular (4,); the values of a sample sum
    to f(x) - mean f(ref) of the explained node (pre-softmax with ignore_last_act)."""
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(2, 6, 6, 2, generator=gen), torch.randn(2, 4, generator=gen)]
    refs = [torch.randn(3, 6, 6, 2, generator=gen), torch.randn(3, 4, generator=gen)]
    result = ins.run_shap(conv, data, refs, n=6, channels_first=False, output_idx=[[1], [0]],
                          dtype="double")
    values = result.get_result()
    assert values[0][0].shape == (2, 6, 6, 2, 1) and values[1][1].shape == (2, 4, 1)
    as_first = [torch.movedim(data[0], -1, 1).double(), data[1].double()]
    refs_first = [torch.movedim(refs[0], -1, 1).double(), refs[1].double()]
    model = two_in_two_out.double()
    totals = [values[o][0].reshape(2, -1).sum(1) + values[o][1].reshape(2, -1).sum(1) for o in (0, 1)]
    goals = [result.decomp_goal[o].numpy()[:, 0] for o in (0, 1)]
    np.testing.assert_allclose(totals, goals, atol=1e-10)
    # the regression output has no last activation: its goal is checked against the model
    with torch.no_grad():
        reg_x, reg_ref = model(*as_first)[1][:, 0], model(*refs_first)[1][:, 0]
    np.testing.assert_allclose(goals[1], (reg_x - reg_ref.mean()).numpy(), atol=1e-10)
    lime = ins.run_lime(conv, data, refs, n=50, channels_first=False, output_idx=[[1], [0]])
    assert lime.get_result()[0][0].shape == (2, 6, 6, 2, 1)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"data_ref": None}, ValueError, "`data_ref` must hold reference samples"),
    ({"data_ref": np.zeros((2, 4))}, ValueError, "data_ref"),
    ({"n": 0}, ValueError, "`n` must be a positive int"),
])
def test_errors(additive, kwargs, error, match):
    _, conv = additive
    args = {"data_ref": np.zeros((2, 6)), **kwargs}
    for method in (ins.run_shap, ins.run_lime):
        with pytest.raises(error, match=match):
            method(conv, np.zeros((1, 6)), **args)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kernel_width": 0}, "`kernel_width` must be a positive number or None, got"),
    ({"alpha": -1.0}, "`alpha` must be a number >= 0, got"),
])
def test_lime_argument_errors(additive, kwargs, match):
    _, conv = additive
    with pytest.raises(ValueError, match=match):
        ins.run_lime(conv, np.zeros((1, 6)), np.zeros((2, 6)), **kwargs)


def test_results_plot(additive):
    _, conv = additive
    x, refs = torch.randn(2, 6), torch.randn(3, 6)
    shap = ins.run_shap(conv, x, refs, n=6)
    lime = ins.run_lime(conv, x, refs, n=40)
    assert shap.plot().labels.y == "Shapley value"
    assert lime.plot(show_input=True).labels.y == "LIME weight"


# ---- models that are no Converter: explained through their predictions ------------------


def test_a_torch_module_directly_equals_its_conversion():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval().double()
    x, refs = torch.randn(4, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    converted = ins.run_shap(ins.convert(model, input_dim=[5]), x, refs, n=12, seed=0, dtype="double")
    direct = ins.run_shap(model, x, refs, n=12, seed=0, dtype="double")
    np.testing.assert_allclose(direct.get_result(), converted.get_result(), atol=1e-12)
    with torch.no_grad():
        goal = model(x) - model(refs).mean(0)
    np.testing.assert_allclose(direct.decomp_goal[0].numpy(), goal.numpy(), atol=1e-12)


def test_scikit_learn_estimators():
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    linear = LinearRegression().fit(X, y)
    result = ins.run_shap(linear, X[:3], X[:10], n=20, dtype="double")  # predict: (rows,)
    expected = linear.coef_ * (X[:3] - X[:10].mean(0))
    np.testing.assert_allclose(result.get_result()[..., 0], expected, atol=1e-10)

    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=2000, random_state=0).fit(X, y > 0)
    shap = ins.run_shap(clf, X[:3], X[:8], n=16, dtype="double", output_names=["no", "yes"])
    goal = clf.predict_proba(X[:3]) - clf.predict_proba(X[:8]).mean(0)  # predict_proba is used
    np.testing.assert_allclose(shap.get_result().sum(axis=1), goal, atol=1e-10)
    assert shap.output_labels == [["no", "yes"]]
    lime = ins.run_lime(clf, X[:2], X[:1], n=200, alpha=0.0, dtype="double", output_label="yes",
                        output_names=["no", "yes"])
    assert lime.get_result().shape == (2, 4, 1)



def test_an_estimator_fitted_on_a_data_frame_gets_its_column_names():
    import warnings

    import pandas as pd
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(40, 3)), columns=["age", "dose", "weight"])
    linear = LinearRegression().fit(frame, frame @ np.array([2.0, -1.0, 0.5]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn warns when the names are missing
        result = ins.run_shap(linear, frame[:3], frame[:10], n=20, dtype="double")
    expected = linear.coef_ * (frame[:3] - frame[:10].mean()).to_numpy()
    np.testing.assert_allclose(result.get_result()[..., 0], expected, atol=1e-10)

def test_a_keras_model_channels_last():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 4, 2)), keras.layers.Conv2D(3, 2, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    rng = np.random.default_rng(1)
    x, refs = rng.normal(size=(2, 5, 4, 2)), rng.normal(size=(4, 5, 4, 2))
    result = ins.run_shap(model, x, refs, n=8, channels_first=False, dtype="double")
    assert result.get_result().shape == (2, 5, 4, 2, 2)
    goal = np.asarray(model(x)) - np.asarray(model(refs)).mean(0)
    np.testing.assert_allclose(result.get_result().reshape(2, -1, 2).sum(1), goal, atol=1e-5)


def test_any_object_with_pred_fun_and_two_inputs(two_in_two_out):
    rng = np.random.default_rng(2)
    x, refs = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    squares = ins.run_shap("any model", x, refs, n=10, dtype="double",
                           pred_fun=lambda model, rows: rows[:, :2] ** 2)
    expected = np.zeros((3, 4, 2))
    for j in range(2):
        expected[:, j, j] = x[:, j] ** 2 - (refs[:, j] ** 2).mean()
    np.testing.assert_allclose(squares.get_result(), expected, atol=1e-12)

    model = two_in_two_out.double()
    gen = torch.Generator().manual_seed(0)
    data = [torch.randn(2, 2, 6, 6, generator=gen, dtype=torch.float64),
            torch.randn(2, 4, generator=gen, dtype=torch.float64)]
    refs2 = [torch.randn(3, 2, 6, 6, generator=gen, dtype=torch.float64),
             torch.randn(3, 4, generator=gen, dtype=torch.float64)]
    result = ins.run_shap(model, data, refs2, n=6, dtype="double",
                          pred_fun=lambda m, xs: m(*xs)[1])  # the regression output
    with torch.no_grad():
        goal = model(*data)[1] - model(*refs2)[1].mean(0)
    values = result.get_result()
    total = values[0][0].reshape(2, -1, 2).sum(1) + values[0][1].sum(1)
    np.testing.assert_allclose(total, goal.numpy(), atol=1e-10)


@pytest.mark.parametrize(("model", "kwargs", "error", "match"), [
    ("a string", {}, TypeError, "pass `pred_fun\\(model, x\\)`"),
    ("a string", {"pred_fun": 3}, TypeError, "`pred_fun` must be a callable"),
    ("a string", {"pred_fun": lambda m, x: x[:1]}, ValueError, "one row of predictions per input row"),
    ("a string", {"pred_fun": lambda m, x: (x, x)}, TypeError, "must return one array"),
    ("a string", {"pred_fun": lambda m, x: np.array(["yes"] * len(x))}, TypeError,
     "must return numeric predictions"),
    ("converter", {"pred_fun": lambda m, x: x}, ValueError, "`pred_fun` and `output_names` are for models"),
])
def test_opaque_model_errors(additive, model, kwargs, error, match):
    model = additive[1] if model == "converter" else model
    with pytest.raises(error, match=match):
        ins.run_shap(model, np.zeros((2, 6)), np.zeros((2, 6)), n=2, **kwargs)


def test_a_torch_module_in_training_mode_is_explained_in_eval_mode():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 1)).double().train()
    x, refs = torch.randn(2, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with pytest.warns(UserWarning, match="training mode; it is explained in eval mode"):
        result = ins.run_shap(model, x, refs, n=6, dtype="double")
    assert model.training  # the user's flags are restored
    with torch.no_grad():
        goal = model.eval()(x) - model(refs).mean(0)
    np.testing.assert_allclose(result.get_result().sum(1), goal.numpy(), atol=1e-12)


def test_an_unbatched_sample_for_an_opaque_model_is_refused():
    with pytest.raises(ValueError, match="needs a batch axis"):
        ins.run_shap("model", np.zeros(3), np.zeros((2, 3)), pred_fun=lambda m, x: x)


# ---- feature_groups: players made of several input entries -----------------------------


def patch_ids(height: int, width: int, patch: int) -> np.ndarray:
    """Ids of ``patch x patch`` squares of an ``(height, width)`` image."""
    rows, cols = np.indices((height, width)) // patch
    return rows * (width // patch) + cols


def test_shap_of_patches_of_a_patch_additive_model_channels_last():
    """``f(x) = sum over 2x2 patches P of tanh(sum_{i in P} w_i x_i)``: the value of a
    patch is exactly ``h_P(x) - mean_ref h_P(ref)``, shared by its 2 * 2 * 3 entries."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 4, 3))
    ids = patch_ids(4, 4, 2)

    def per_patch(rows: np.ndarray) -> np.ndarray:  # (n, 4, 4, 3) -> (n, 4 patches)
        weighted = (rows * w).sum(-1)
        return np.tanh(np.stack([weighted[:, ids == q].sum(1) for q in range(4)], axis=1))

    x, refs = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(3, 4, 4, 3))
    result = ins.run_shap("patch model", x, refs, n=6, channels_first=False, dtype="double",
                          feature_groups=ids[..., None], pred_fun=lambda m, r: per_patch(r).sum(1))
    values = result.get_result()[..., 0]  # (2, 4, 4, 3)
    expected = per_patch(x) - per_patch(refs).mean(0)
    for q in range(4):
        inside = values[:, ids == q]  # (2, 4 pixels, 3 channels)
        np.testing.assert_allclose(inside, np.broadcast_to(expected[:, q, None, None] / 12, inside.shape),
                                   atol=1e-12)
    np.testing.assert_allclose(values.reshape(2, -1).sum(1), result.decomp_goal[0][:, 0].numpy(),
                               atol=1e-12)


def test_groups_of_one_entry_each_change_nothing():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    conv = ins.convert(model, input_dim=[6])
    x, refs = torch.randn(3, 6), torch.randn(4, 6)
    plain = ins.run_shap(conv, x, refs, n=8, seed=1, dtype="double").get_result()
    grouped = ins.run_shap(conv, x, refs, n=8, seed=1, dtype="double",
                           feature_groups=np.arange(6) * 7).get_result()
    np.testing.assert_allclose(grouped, plain, atol=1e-12)


def test_lime_of_groups_across_two_inputs():
    """A linear model of two inputs, one reference, groups spanning both inputs: a
    group's coefficient is ``sum_{i in G} w_i (x_i - r_i)``, shared by its entries."""
    rng = np.random.default_rng(1)
    w_a, w_b = rng.normal(size=3), rng.normal(size=2)
    groups = [np.array([0, 0, 1]), np.array([1, 2])]  # group 1 holds a[2] and b[0]
    x = [rng.normal(size=(2, 3)), rng.normal(size=(2, 2))]
    ref = [rng.normal(size=(1, 3)), rng.normal(size=(1, 2))]
    result = ins.run_lime("linear", x, ref, n=30, alpha=0.0, dtype="double", feature_groups=groups,
                          pred_fun=lambda m, r: r[0] @ w_a + r[1] @ w_b)
    a, b = (v[..., 0] for v in result.get_result()[0])
    terms_a, terms_b = (x[0] - ref[0]) * w_a, (x[1] - ref[1]) * w_b
    group = [terms_a[:, :2].sum(1), terms_a[:, 2] + terms_b[:, 0], terms_b[:, 1]]
    np.testing.assert_allclose(a, np.stack([group[0] / 2, group[0] / 2, group[1] / 2], 1), atol=1e-10)
    np.testing.assert_allclose(b, np.stack([group[1] / 2, group[2]], 1), atol=1e-10)


@pytest.mark.parametrize(("groups", "error", "match"), [
    (np.zeros(6) + 0.5, TypeError, "`feature_groups` must hold integer group ids"),
    (np.zeros(4, dtype=int), ValueError, "does not broadcast to a sample of shape \\(6,\\)"),
])
def test_feature_groups_errors(additive, groups, error, match):
    _, conv = additive
    with pytest.raises(error, match=match):
        ins.run_shap(conv, np.zeros((1, 6)), np.zeros((2, 6)), feature_groups=groups)


def test_feature_groups_of_two_inputs_need_one_array_each(two_in_two_out):
    conv = ins.convert(two_in_two_out, input_dim=[[2, 6, 6], [4]])
    data = [np.zeros((1, 2, 6, 6)), np.zeros((1, 4))]
    with pytest.raises(ValueError, match="`feature_groups` must hold one array per input layer \\(2\\)"):
        ins.run_lime(conv, data, data, feature_groups=np.zeros((6, 6), dtype=int))


def test_patch_values_equal_captums_shapley_value_sampling_shared_by_the_patch():
    """A CNN additive over 2x2 patches (a stride-2 conv, tanh, dense): Captum's
    ShapleyValueSampling with the patches as feature mask and one baseline gives
    each entry its patch's full value; innsight shares it among the 12 entries."""
    from captum.attr import ShapleyValueSampling

    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 1, 2, stride=2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(16, 2)).eval().double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    ref = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    ids = patch_ids(8, 8, 2)
    result = ins.run_shap(ins.convert(model, input_dim=[3, 8, 8]), x, ref, n=4, dtype="double",
                          feature_groups=ids)
    captum = ShapleyValueSampling(model)
    for j in range(2):
        theirs = captum.attribute(x, baselines=ref, target=j, n_samples=3,
                                  feature_mask=torch.as_tensor(ids)[None, None])
        np.testing.assert_allclose(result.get_result()[..., j] * 12, theirs.numpy(), atol=1e-10)


def test_compare_models_runs_shap_with_the_same_draws_for_every_model():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    conv = ins.convert(model, input_dim=[4])
    comparison = ins.compare_models({"torch": conv, "dict": ins.convert(conv.to_dict())},
                                    torch.randn(3, 4), method="shap", data_ref=torch.randn(5, 4), n=10)
    assert comparison.method == "SHAP"
    assert comparison.differences()["max_abs_diff"].tolist() == [0.0]  # same seed, same walks
    with pytest.raises(ValueError, match="`method` must be an interpretation method"):
        ins.compare_models([conv, conv], torch.randn(3, 4), method="AgnosticMethod")


# ---- many players: a warning before the work starts ----------------------------------------


@pytest.mark.parametrize("method", ["SHAP", "LIME"])
def test_many_players_warn_before_starting_and_name_feature_groups(method):
    """300 input entries as players on 50 permutations or coalitions: the warning names
    `feature_groups` and points to the caller's line; 30 groups of 10 entries do not warn."""
    import warnings

    conv = ins.convert(nn.Linear(300, 1).eval(), input_dim=[300])
    x, background = torch.randn(1, 300), torch.randn(4, 300)
    run = ins.run_shap if method == "SHAP" else ins.run_lime
    with pytest.warns(UserWarning, match=rf"{method} of 1 sample\(s\) with n=50 and 300 players "
                                         r"\(input entries.*`feature_groups`") as record:
        run(conv, x, background, n=50)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(conv, x, background, n=50, feature_groups=np.arange(300) // 10)   # 30 players
        run(conv, x, background, n=20)   # 300 players, little work
