"""scikit-learn MLPs: the converted forward equals ``predict_proba``/``predict``
(1e-6 in float64), names come from ``feature_names_in_`` and ``classes_``, and
Gradient equals the closed-form gradient of a one-hidden-layer network."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import torch

import innsight as ins

pd = pytest.importorskip("pandas")
pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402

DOUBLE_TOL = 1e-6
FLOAT_TOL = 1e-5


def fitted(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(X, y)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    labels = np.array(["setosa", "versicolor", "virginica"])
    y = labels[(X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.8).astype(int)]
    return X, y


def forward(conv, X, dtype=torch.float64):
    with torch.no_grad():
        return conv.model(torch.as_tensor(X, dtype=dtype)).numpy()


def assert_close(actual, expected, tol):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    error = np.abs(actual - expected).max()
    assert error <= tol * max(1.0, np.abs(expected).max()), f"max abs difference {error:.3g}"


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_multiclass_classifier_matches_predict_proba(data, activation):
    X, y = data
    model = fitted(MLPClassifier((7, 5), activation=activation, max_iter=50, random_state=0), X, y)
    conv = ins.convert(model, dtype="double")
    assert conv.input_dim == [(4,)] and conv.output_dim == [(3,)]
    assert conv.output_names == [[["setosa", "versicolor", "virginica"]]]
    assert conv.input_names == [[["X1", "X2", "X3", "X4"]]]
    assert_close(forward(conv, X), model.predict_proba(X), DOUBLE_TOL)
    # float precision, and an explicit input_dim
    conv32 = ins.convert(model, input_dim=[4])
    assert_close(forward(conv32, X, torch.float32), model.predict_proba(X), FLOAT_TOL)


def test_binary_classifier_has_one_logistic_output_for_the_positive_class(data):
    X, y = data
    y = np.where(y == "setosa", "no", "yes")
    model = fitted(MLPClassifier((6,), activation="tanh", max_iter=50, random_state=1), X, y)
    assert model.out_activation_ == "logistic"
    conv = ins.convert(model, dtype="double")
    assert conv.output_dim == [(1,)]
    assert conv.output_names == [[["yes"]]]  # classes_[1]: the probability of "yes"
    assert_close(forward(conv, X), model.predict_proba(X)[:, 1:], DOUBLE_TOL)


def test_multilabel_classifier_matches_predict_proba(data):
    X, _ = data
    Y = np.stack([X[:, 0] > 0, X[:, 1] > 0.3, X[:, 2] + X[:, 3] > 0], axis=1).astype(int)
    model = fitted(MLPClassifier((8,), max_iter=50, random_state=2), X, Y)
    conv = ins.convert(model, dtype="double")
    assert conv.output_dim == [(3,)]
    assert_close(forward(conv, X), model.predict_proba(X), DOUBLE_TOL)


@pytest.mark.parametrize("n_targets", [1, 2])
def test_regressor_matches_predict(data, n_targets):
    X, _ = data
    y = X[:, :n_targets] * 2.0 + X[:, 1:n_targets + 1] ** 2
    y = y[:, 0] if n_targets == 1 else y
    model = fitted(MLPRegressor(hidden_layer_sizes=(6, 4), activation="relu", max_iter=100, random_state=0), X, y)
    conv = ins.convert(model, dtype="double")
    assert conv.output_dim == [(n_targets,)]
    assert conv.model.layers[conv.model.output_nodes[0]].type_name == "Dense"
    assert_close(forward(conv, X), model.predict(X).reshape(len(X), n_targets), DOUBLE_TOL)


def test_names_from_data_frame_and_classes(data):
    X, y = data
    frame = pd.DataFrame(X, columns=["sepal_length", "sepal_width", "petal_length", "petal_width"])
    model = fitted(MLPClassifier((5,), max_iter=30, random_state=0), frame, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names" in the dry run
        conv = ins.convert(model, dtype="double")
    assert conv.input_names == [[list(frame.columns)]]
    res = ins.run_grad(conv, frame.iloc[:3], output_label=["virginica"])
    table = res.get_result("data.frame")
    assert set(table["feature"]) == set(frame.columns)
    assert set(table["output_node"]) == {"virginica"}


def test_gradient_equals_closed_form_of_one_hidden_layer(data):
    """logits z = W2 tanh(W1 x + b1) + b2, so dz/dx = W2 diag(1 - tanh(h)^2) W1;
    the softmax output p adds the factor diag(p) - p p^T."""
    X, y = data
    model = fitted(MLPClassifier((5,), activation="tanh", max_iter=50, random_state=3), X, y)
    (W1, W2), (b1, b2) = model.coefs_, model.intercepts_  # (in, hidden), (hidden, out)
    conv = ins.convert(model, dtype="double")
    x = X[:4]
    h = x @ W1 + b1
    dz = np.einsum("hk,nh,ih->nik", W2, 1 - np.tanh(h) ** 2, W1)  # (n, in, out)
    res = ins.run_grad(conv, x, output_idx=[0, 1, 2], dtype="double")
    assert_close(res.get_result(), dz, 1e-10)

    p = model.predict_proba(x)
    jac = np.einsum("nk,kj->nkj", p, np.eye(3)) - np.einsum("nk,nj->nkj", p, p)  # dp_j/dz_k
    dp = np.einsum("nik,nkj->nij", dz, jac)
    res = ins.run_grad(conv, x, output_idx=[0, 1, 2], dtype="double", ignore_last_act=False)
    assert_close(res.get_result(), dp, 1e-10)


# ---- refused ------------------------------------------------------------------------------------------


def test_unfitted_model_is_refused():
    with pytest.raises(ValueError, match="not fitted"):
        ins.convert(MLPClassifier())


def test_poisson_regressor_is_refused_by_its_output_activation(data):
    X, _ = data
    model = fitted(MLPRegressor(hidden_layer_sizes=(3,), loss="poisson", max_iter=5,
                                random_state=0), X, np.exp(X[:, 0]))
    if model.out_activation_ != "exp":
        pytest.skip(f"this scikit-learn uses {model.out_activation_!r} for the poisson loss")
    with pytest.raises(ValueError, match="'exp'"):
        ins.convert(model)


def test_input_dim_must_match_n_features(data):
    X, y = data
    model = fitted(MLPClassifier((3,), max_iter=5, random_state=0), X, y)
    with pytest.raises(ValueError, match=r"`input_dim` must be \[4\]"):
        ins.convert(model, input_dim=[5])


def test_missing_sklearn_names_the_install_command(data, monkeypatch):
    X, y = data
    model = fitted(MLPClassifier((3,), max_iter=5, random_state=0), X, y)
    monkeypatch.setitem(sys.modules, "sklearn.utils.validation", None)
    with pytest.raises(ImportError, match=r"pip install innsight\[sklearn\]"):
        ins.convert(model)


def test_other_estimators_are_not_accepted(data):
    from sklearn.linear_model import LogisticRegression

    X, y = data
    with pytest.raises(TypeError, match="MLPClassifier"):
        ins.convert(LogisticRegression().fit(X, y))
