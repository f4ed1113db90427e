"""``ins.recommend`` and the ranking behind it.

On a linear model ``f(x) = w.x + b`` every number is known: gradient x input,
IntegratedGradient and DeepLift (zero reference) are all exactly ``w * x``, the plain
gradient is ``w``, and every deletion or insertion curve follows from ``w``, ``b``,
``x`` and the order of the values. The references below are written with numpy and
scipy from those alone, ranked with ``scipy.stats.rankdata``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import innsight as ins
from innsight.metrics import recommender
from innsight.metrics.search import settings

P = 6
W = np.array([1.5, -2.0, 0.5, 3.0, -0.25, 1.0])
B = 0.3
X = np.array([[1.0, 0.5, -2.0, 0.2, 4.0, -1.0],
              [-0.5, 1.5, 1.0, -1.0, 2.0, 0.25],
              [2.0, -1.0, 0.5, 0.3, -3.0, 1.5]])
CANDIDATES = {"Gradient": "Gradient", "Gradient x input": ("Gradient", {"times_input": True}),
              "IntegratedGradient": ("IntegratedGradient", {"n": 7}), "DeepLift": "DeepLift"}


@pytest.fixture
def conv():
    model = nn.Linear(P, 1).double().eval()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(W)[None])
        model.bias.fill_(B)
    return ins.convert(model, input_dim=[P], dtype="double")


def _area(values: np.ndarray, x: np.ndarray, inserting: bool) -> float:
    """Area under the deletion (or insertion) curve of one sample, one feature per step,
    most relevant first, baseline zeros."""
    order = np.argsort(-values, kind="stable")
    curve = []
    for k in range(P + 1):
        changed = np.zeros(P, bool)
        changed[order[:k]] = True
        inputs = np.where(changed, x, 0.0) if inserting else np.where(changed, 0.0, x)
        curve.append(W @ inputs + B)
    return np.trapezoid(curve, np.arange(P + 1) / P)


def _gini(values: np.ndarray) -> float:
    a = np.sort(np.abs(values))
    return np.sum((2 * np.arange(1, P + 1) - P - 1) * a) / (P * a.sum())


def test_linear_model_ranking_is_the_closed_forms(conv):
    metrics = [ins.metrics.Deletion(features_in_step=1), ins.metrics.Insertion(features_in_step=1),
               "sparseness"]
    ranking, best = ins.recommend(conv, X, methods=CANDIDATES, metrics=metrics, seed=0,
                                  dtype="double")
    attributions = {"Gradient": np.tile(W, (len(X), 1)), "Gradient x input": W * X,
                    "IntegratedGradient": W * X, "DeepLift": W * X}
    expected = {
        name: {"deletion": np.mean([_area(v, x, False) for v, x in zip(a, X)]),
               "insertion": np.mean([_area(v, x, True) for v, x in zip(a, X)]),
               "sparseness": np.mean([_gini(v) for v in a])}
        for name, a in attributions.items()}
    labels = list(attributions)
    ranks = {"deletion": stats.rankdata([expected[n]["deletion"] for n in labels]),
             "insertion": stats.rankdata([-expected[n]["insertion"] for n in labels]),
             "sparseness": stats.rankdata([-expected[n]["sparseness"] for n in labels])}
    mean_rank = np.mean([ranks[m] for m in ranks], axis=0)
    # the exact methods tie, the gradient is behind them on every faithfulness metric
    assert mean_rank[0] > mean_rank[1] == mean_rank[2] == mean_rank[3]
    table = ranking.set_index("method")
    for metric in ranks:
        np.testing.assert_allclose(table.loc[labels, metric],
                                   [expected[n][metric] for n in labels], atol=1e-12)
    np.testing.assert_allclose(table.loc[labels, "mean_rank"], mean_rank)
    assert list(ranking["rank"]) == [1, 2, 3, 4]
    assert list(ranking["method"]) == ["Gradient x input", "IntegratedGradient", "DeepLift",
                                       "Gradient"]  # ties keep the candidates' order
    assert ranking["params"].iloc[0] == {"times_input": True}
    # the best result is a real result, the one the method gives when run directly
    assert isinstance(best, ins.Result) and best.method == "Gradient"
    np.testing.assert_allclose(best.get_result()[..., 0], W * X, atol=1e-12)
    assert ranking.attrs["higher_is_better"] == {"deletion": False, "insertion": True,
                                                 "sparseness": True}
    per_metric = ranking.attrs["ranks"].set_index("method")
    for metric, expected_ranks in ranks.items():
        np.testing.assert_allclose(per_metric.loc[labels, metric], expected_ranks)
    scores = ranking.attrs["scores"]
    assert set(scores["method"]) == set(labels)
    assert set(scores.attrs["curves"]["method"]) == set(labels)
    ins.metrics.plot_table(scores)  # the scores are an evaluate frame


def test_targets_reach_every_candidate():
    """``targets="predicted"`` is passed on: each candidate's scores are those of the
    method run with it and evaluated."""
    torch.manual_seed(0)
    conv = ins.convert(nn.Linear(P, 3).double().eval(), input_dim=[P], dtype="double")
    metrics = [ins.metrics.Deletion(features_in_step=1), "sparseness"]
    ranking, best = ins.recommend(conv, X, methods=["Gradient", "DeepLift"], metrics=metrics,
                                  seed=0, dtype="double", targets="predicted")
    assert best.get_result().shape[-1] == 1
    table = ranking.set_index("method")
    for name, run in (("Gradient", ins.run_grad), ("DeepLift", ins.run_deeplift)):
        scores = ins.evaluate(run(conv, X, targets="predicted", dtype="double"), metrics, seed=0)
        for metric in ("deletion", "sparseness"):
            expected = scores[scores["metric"] == metric]["value"].mean()
            assert table.loc[name, metric] == pytest.approx(expected, abs=1e-12)


def test_default_methods_and_metrics(conv):
    ranking, best = ins.recommend(conv, X, seed=1)
    assert set(ranking["method"]) == set(recommender.DEFAULT_METHODS)
    assert list(ranking.columns) == ["rank", "method", "params",
                                     *recommender.RECOMMEND_METRICS, "mean_rank"]
    assert ranking["mean_rank"].is_monotonic_increasing
    assert best.method == recommender.DEFAULT_METHODS[ranking["method"].iloc[0]][0].method_name
    # the plain gradient of a linear model does not move with the input: sensitivity 0
    gradient = ranking.set_index("method").loc["Gradient"]
    assert gradient["sensitivity_max"] == 0


def test_tuning_picks_the_exact_setting_and_is_seeded(conv):
    kwargs = {"methods": ["Gradient", "SmoothGrad"], "metrics": ["deletion", "insertion"],
              "tune": True, "n_trials": 3, "seed": 3}
    ranking, best = ins.recommend(conv, X, **kwargs)
    trials = ranking.attrs["trials"]
    gradient = trials[trials["method"] == "Gradient"]
    # times_input has two choices: both are tried (a grid), the exact one wins
    assert sorted(p["times_input"] for p in gradient["params"]) == [False, True]
    assert ranking.set_index("method").loc["Gradient", "params"] == {"times_input": True}
    smooth = trials[trials["method"] == "SmoothGrad"]
    assert sorted(smooth["trial"]) == [0, 1, 2]
    assert smooth.set_index("trial").loc[0, "params"] == {"n": 50, "noise_level": 0.1,
                                                          "times_input": False}
    ranges = ins.SmoothGrad.get_tunables()
    for params in smooth["params"]:
        assert ranges["n"][1] <= params["n"] <= ranges["n"][2]
        assert ranges["noise_level"][1] <= params["noise_level"] <= ranges["noise_level"][2]
    again, _ = ins.recommend(conv, X, **kwargs)
    assert list(again.attrs["trials"]["params"]) == list(trials["params"])
    # the best result was run with the chosen parameters
    chosen = ranking["params"].iloc[0]
    assert all(best.args[k] == v for k, v in chosen.items())


def test_time_budget_keeps_the_defaults_only(conv):
    ranking, _ = ins.recommend(conv, X, methods=["Gradient", "SmoothGrad"], metrics=["deletion"],
                               tune=True, time_budget=1e-9, seed=0)
    assert list(ranking.attrs["trials"]["trial"]) == [0, 0]


def test_lrp_rule_params_follow_their_rule():
    rng = np.random.default_rng(0)
    tunables = ins.LRP.get_tunables()
    drawn = settings(ins.LRP, {}, 40, rng)
    assert drawn[0] == {"rule_name": "simple", "rule_param": None, "winner_takes_all": True}
    assert len({str(s) for s in drawn}) == len(drawn) > 10
    for setting in drawn[1:]:
        ranges = tunables["rule_param"]
        if setting["rule_name"] in ranges:
            _, low, high = ranges[setting["rule_name"]]
            assert low <= setting["rule_param"] <= high
        else:
            assert setting["rule_param"] is None
    fixed = settings(ins.LRP, {"rule_name": "epsilon"}, 5, rng)
    assert all(s["rule_name"] == "epsilon" and s["rule_param"] is not None for s in fixed[1:])


def test_a_refused_setting_is_left_out():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2, dilation=2),
                          nn.Flatten(), nn.Linear(2 * 2 * 2, 2)).eval()
    conv = ins.convert(model, input_dim=[1, 8, 8])
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="winner_takes_all=True"):
        ranking, _ = ins.recommend(conv, x, methods={"LRP": ("LRP", {"rule_name": "epsilon"})},
                                   metrics=["sparseness"], tune=True, n_trials=4, seed=0)
    refused = ranking.attrs["left_out"]
    assert refused and all("winner_takes_all" in reason for reason in refused.values())
    assert all(p["winner_takes_all"] for p in ranking.attrs["trials"]["params"])


def test_a_default_candidate_the_model_refuses_is_left_out(conv, monkeypatch):
    monkeypatch.setattr(recommender, "DEFAULT_METHODS",
                        {"Gradient": (ins.Gradient, {}), "LRP pass": (ins.LRP, {"rule_name": "pass"})})
    with pytest.warns(UserWarning, match="leaves out LRP pass"):
        ranking, _ = ins.recommend(conv, X, metrics=["sparseness"], seed=0)
    assert list(ranking["method"]) == ["Gradient"]
    assert "shape-preserving" in ranking.attrs["left_out"]["LRP pass #0"]
    with pytest.raises(ValueError, match="shape-preserving"):  # asked for by name: raised
        ins.recommend(conv, X, methods={"LRP pass": ("LRP", {"rule_name": "pass"})},
                      metrics=["sparseness"])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"methods": "Gradient"}, TypeError, "`methods` must be a list"),
    ({"methods": []}, ValueError, "`methods` must hold at least one"),
    ({"methods": ["Nope"]}, ValueError, "`methods` must hold method names"),
    ({"methods": [nn.Linear]}, ValueError, "`methods` must hold method names"),
    ({"methods": ["Gradient", "Gradient"]}, ValueError, r"names \['Gradient'\] more than once"),
    ({"methods": {1: "Gradient"}}, TypeError, "keyed by labels"),
    ({"methods": {"g": ("Gradient", 3)}}, TypeError, r"`methods\['g'\]` must pair"),
    ({"metrics": ["nope"]}, ValueError, "`metrics` must hold metric names"),
    ({"tune": "yes"}, TypeError, "`tune`"),
    ({"n_trials": 0}, ValueError, "`n_trials` must be a positive int"),
    ({"time_budget": -1}, ValueError, "`time_budget` must be a positive number"),
    ({"seed": "a"}, TypeError, "`seed` must be an int"),
    ({"n": 5}, TypeError, r"unexpected argument\(s\) \['n'\]"),
    ({"output_idx": 7}, ValueError, "output_idx"),
])
def test_bad_arguments_are_refused_by_name(conv, kwargs, error, match):
    with pytest.raises(error, match=match):
        ins.recommend(conv, X, **{"methods": ["Gradient"], **kwargs})


def test_conv_must_be_a_converter():
    with pytest.raises(TypeError, match="`conv` must be an innsight Converter"):
        ins.recommend(nn.Linear(P, 1), X)


def test_recommend_is_exported():
    assert "recommend" in ins.__all__ and ins.recommend is ins.metrics.recommend
