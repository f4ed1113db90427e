"""Keras ``Embedding`` on token ids: the conversion reproduces ``model(ids)`` (float64,
1e-10), methods explain the ids through the embedding output as ``tf.GradientTape``
(the gradient w.r.t. that output) and the axioms say (DeepLift sums to ``f(x) - f(zero
embeddings)``), and the same embedding + LSTM built in torch with the same weights
explains alike; inputs that are no token ids are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from keras_reference import DOUBLE_TOL, float64, keras, max_rel_error, tf
from torch import nn

import innsight as ins

layers = keras.layers
VOCAB, TOKENS, DIM = 11, 6, 4
ARGS = {"dtype": "double", "verbose": False}

#: The layers after the embedding, one architecture per case.
HEADS = {
    "lstm": lambda: [layers.LSTM(5), layers.Dense(3)],
    "gru": lambda: [layers.GRU(5, return_sequences=True), layers.GlobalAveragePooling1D(),
                    layers.Dense(3)],
    "dense": lambda: [layers.Dense(5, activation="tanh"), layers.GlobalAveragePooling1D(),
                      layers.Dense(3)],
}


def _model(head: str, id_dtype: str = "int32") -> tuple[keras.Model, list]:
    """A float64 Keras model ids ``(TOKENS,)`` -> Embedding -> ``HEADS[head]``, and its
    layers after the Input (the embedding first)."""
    with float64():
        parts = [layers.Embedding(VOCAB, DIM), *HEADS[head]()]
        model = keras.Sequential([keras.Input((TOKENS,), dtype=id_dtype), *parts])
    return model, parts


def _ids(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (n, TOKENS))


def _tail(parts: list, embedded: tf.Tensor) -> tf.Tensor:
    """The Keras model from the embedding output on."""
    for layer in parts[1:]:
        embedded = layer(embedded)
    return embedded


def _tape_gradients(parts: list, ids: np.ndarray) -> np.ndarray:
    """``d y_j / d embedding`` ``(n, TOKENS, DIM, 3)`` by ``tf.GradientTape``."""
    embedded = tf.constant(np.asarray(parts[0](ids)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(embedded)
        y = _tail(parts, embedded)
        sums = [tf.reduce_sum(y[:, j]) for j in range(3)]
    return np.stack([np.asarray(tape.gradient(s, embedded)) for s in sums], -1)


@pytest.mark.parametrize("head", list(HEADS))
def test_forward_and_gradient_match_keras(head):
    model, parts = _model(head)
    ids = _ids()
    conv = ins.convert(model, dtype="double")
    assert conv.model.layers[conv.model.input_nodes[0]].kind == "int64"
    with torch.no_grad():
        actual = conv.model(torch.as_tensor(ids))
    assert max_rel_error(actual, np.asarray(model(ids))) < DOUBLE_TOL
    grads = _tape_gradients(parts, ids)
    for channels_first in (True, False):  # token ids have no channels axis to move
        per_dim = ins.run_grad(conv, ids, keep_embedding_dim=True,
                               channels_first=channels_first, **ARGS)
        assert max_rel_error(per_dim.get_result("array"), grads) < DOUBLE_TOL
    norms = ins.run_grad(conv, ids, **ARGS).get_result("array")
    assert max_rel_error(norms, np.linalg.norm(grads, axis=2)) < DOUBLE_TOL


def test_deeplift_sums_to_the_difference_from_zero_embeddings():
    model, parts = _model("lstm")
    ids = _ids()
    conv = ins.convert(model, dtype="double")
    res = ins.run_deeplift(conv, ids, output_idx=[0, 1, 2], ignore_last_act=False, **ARGS)
    totals = res.get_result("array").sum(1)  # (n, 3): summed over tokens
    zero = np.asarray(_tail(parts, tf.zeros((1, TOKENS, DIM), dtype=tf.float64)))
    expected = np.asarray(model(ids)) - zero
    assert max_rel_error(totals, expected) < DOUBLE_TOL


def test_float_keras_input_read_by_embedding_holds_token_ids():
    """Keras casts float ids to integers in Embedding; the input converts as token ids."""
    model, _ = _model("dense", id_dtype="float64")
    ids = _ids()
    conv = ins.convert(model, dtype="double")
    assert conv.model.layers[conv.model.input_nodes[0]].kind == "int64"
    with torch.no_grad():
        actual = conv.model(torch.as_tensor(ids))
    assert max_rel_error(actual, np.asarray(model(ids.astype("float64")))) < DOUBLE_TOL


def _torch(value) -> torch.Tensor:
    """A Keras variable as a torch tensor."""
    return torch.as_tensor(np.asarray(value))


class TorchLSTM(nn.Module):
    """The torch twin of ``_model("lstm")``: embedding, LSTM (its last state), dense."""

    def __init__(self, parts: list) -> None:
        super().__init__()
        emb, lstm, dense = parts
        self.emb = nn.Embedding(VOCAB, DIM)
        self.lstm = nn.LSTM(DIM, 5, batch_first=True)
        self.lin = nn.Linear(5, 3)
        self.double()  # before copying, so that the Keras weights stay exact
        with torch.no_grad():  # Keras' gate order (i, f, c, o) is torch's (i, f, g, o)
            self.emb.weight.copy_(_torch(emb.embeddings))
            self.lstm.weight_ih_l0.copy_(_torch(lstm.cell.kernel).T)
            self.lstm.weight_hh_l0.copy_(_torch(lstm.cell.recurrent_kernel).T)
            self.lstm.bias_ih_l0.copy_(_torch(lstm.cell.bias))
            self.lstm.bias_hh_l0.zero_()
            self.lin.weight.copy_(_torch(dense.kernel).T)
            self.lin.bias.copy_(_torch(dense.bias))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lin(self.lstm(self.emb(ids))[0][:, -1])


@pytest.mark.parametrize("method, kwargs", [
    (ins.run_grad, {"keep_embedding_dim": True}),
    (ins.run_lrp, {"rule_name": "epsilon"}),
])
def test_keras_and_torch_conversions_agree(method, kwargs):
    model, parts = _model("lstm")
    twin = TorchLSTM(parts).eval()
    ids = _ids()
    with torch.no_grad():
        assert max_rel_error(twin(torch.as_tensor(ids)), np.asarray(model(ids))) < DOUBLE_TOL
    from_keras = ins.convert(model, dtype="double")
    from_torch = ins.convert(twin, input_dim=[[TOKENS]], input_kinds=["ids"], dtype="double")
    keras_res = method(from_keras, ids, output_idx=[0, 2], **kwargs, **ARGS)
    torch_res = method(from_torch, ids, output_idx=[0, 2], **kwargs, **ARGS)
    assert max_rel_error(keras_res.get_result("array"), torch_res.get_result("array")) < 1e-8


def test_ids_that_are_no_token_ids_are_refused():
    conv = ins.convert(_model("dense")[0], dtype="double")
    with pytest.raises(TypeError, match="must hold integers"):
        ins.run_grad(conv, _ids().astype("float64"), **ARGS)
    with pytest.raises(ValueError, match=f"vocabulary is 0..{VOCAB - 1}"):
        ins.run_grad(conv, _ids() + VOCAB, **ARGS)


def test_mask_zero_is_refused_by_name():
    with float64():
        model = keras.Sequential([keras.Input((TOKENS,), dtype="int32"),
                                  layers.Embedding(VOCAB, DIM, mask_zero=True),
                                  layers.GlobalAveragePooling1D()])
    with pytest.raises(ins.ConversionError, match=r"Embedding with mask_zero=True"):
        ins.convert(model, dtype="double")


def test_integer_input_read_by_other_layers_is_refused_by_name():
    with float64():
        ids = keras.Input((TOKENS,), dtype="int32", name="ids")
        embedded = layers.GlobalAveragePooling1D()(layers.Embedding(VOCAB, DIM)(ids))
        model = keras.Model(ids, layers.Concatenate(name="concatenate")(
            [embedded, layers.Identity()(ids)]))
    with pytest.raises(ins.ConversionError,
                       match=r"input 'ids' holds integers or token ids \(int32\), but is read "
                             r"by 'concatenate'"):
        ins.convert(model, dtype="double")
