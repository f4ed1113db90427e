"""Explaining a causal language model token by token: :func:`explain_tokens`.

A causal LM converts as the function of its token ids ``(tokens,)`` (explained through
the output of its embedding layer) or, for a Hugging Face model with
``text_input="embeddings"``, of its input embeddings ``(tokens, hidden)``; either way
it returns its logits ``(tokens, vocab)`` per sample (output node ``p * vocab + v`` is
the logit of token ``v`` following position ``p``). The helper turns what is asked for
(the top-1 prediction at the last position, given next tokens at given positions, or
the sum over a span of tokens already in the sequence) into the targets of the
existing machinery (``targets=``, sparse ``target_weights=`` or, for
log-probabilities, ``target_fun=``), runs the method once for all of them, and sums
each embedding's values over the hidden axis: one value per token and target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from innsight._validation import describe, is_int
from innsight.methods.gradient import run_grad
from innsight.methods.lrp import run_lrp
from innsight.methods.model_inputs import ModelInputs

#: ``method`` of :func:`explain_tokens` -> the run function and its arguments.
TOKEN_METHODS: dict[str, tuple[Any, dict[str, Any]]] = {
    "attnlrp": (run_lrp, {"rule_name": "attnlrp"}),
    "lrp": (run_lrp, {}),
    "grad_x_input": (run_grad, {"times_input": True}),
}
#: What is explained of each target: its logit, or its log-probability (not linear in
#: the logits: gradient methods only).
SCORES = ("logit", "logprob")


@dataclass(frozen=True)
class TokenExplanation:
    """Per-token values of :func:`explain_tokens`.

    ``relevance`` ``(n_data, n_targets, tokens)``: each input token's value (summed over
    the embedding's hidden axis) for each target; ``tokens`` the token strings per
    sample; ``target_names`` one name per target; ``target_tokens`` ``(n_data,
    n_targets)`` the token id each target explains (``-1`` for a span); ``scores``
    ``(n_data, n_targets)`` the explained values at the data; ``result`` the method's
    result object (per embedding entry).
    """

    relevance: np.ndarray
    tokens: list[list[str]]
    target_names: list[str]
    target_tokens: np.ndarray
    scores: np.ndarray
    result: Any

    def frame(self) -> pd.DataFrame:
        """One row per (sample, target, input position): ``data``, ``target``,
        ``target_token``, ``score``, ``position``, ``token``, ``relevance``."""
        n_data, n_targets, n_tokens = self.relevance.shape
        data, target, position = np.meshgrid(range(n_data), range(n_targets), range(n_tokens),
                                             indexing="ij")
        return pd.DataFrame({
            "data": data.ravel(),
            "target": np.asarray(self.target_names, dtype=object)[target.ravel()],
            "target_token": self.target_tokens[data.ravel(), target.ravel()],
            "score": self.scores[data.ravel(), target.ravel()],
            "position": position.ravel(),
            "token": np.asarray(self.tokens, dtype=object)[data.ravel(), position.ravel()],
            "relevance": self.relevance.ravel(),
        })

    def _check_data_idx(self, data_idx: Any) -> int:
        if not is_int(data_idx) or not 0 <= data_idx < len(self.tokens):
            raise ValueError(f"`data_idx` must be a sample index in 0..{len(self.tokens) - 1}, "
                             f"got {describe(data_idx)}.")
        return int(data_idx)

    def plot(self, data_idx: int = 0, **kwargs: Any) -> Any:
        """The tokens of sample ``data_idx`` as coloured text, one row per target
        (:func:`innsight.plot_tokens`; ``kwargs`` go there, e.g. ``as_plotly=True``)."""
        from innsight.plotting import plot_tokens

        i = self._check_data_idx(data_idx)
        return plot_tokens(self.relevance[i], self.tokens[i], self.target_names, **kwargs)

    def html(self, data_idx: int = 0, **kwargs: Any) -> Any:
        """:meth:`plot` as plain HTML (:func:`innsight.tokens_html`)."""
        from innsight.plotting import tokens_html

        i = self._check_data_idx(data_idx)
        return tokens_html(self.relevance[i], self.tokens[i], self.target_names, **kwargs)


def _as_ids(input_ids: Any) -> Tensor:
    ids = torch.as_tensor(np.asarray(input_ids.cpu() if isinstance(input_ids, Tensor)
                                     else input_ids))
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise TypeError(f"`input_ids` must be integer token ids (tokens,) or (n_data, tokens), "
                        f"got {describe(input_ids)}.")
    return ids.long()


def _token_strings(tokens: Any, ids: Tensor) -> list[list[str]]:
    if tokens is None:
        return [[str(t) for t in row] for row in ids.tolist()]
    rows = [tokens] if all(isinstance(t, str) for t in tokens) else list(tokens)
    if len(rows) == 1 and ids.shape[0] > 1:
        rows = rows * ids.shape[0]
    if len(rows) != ids.shape[0] or any(len(r) != ids.shape[1] or not all(
            isinstance(t, str) for t in r) for r in rows):
        raise ValueError(f"`tokens` must hold {ids.shape[1]} strings (one per token), or such "
                         f"a list per sample ({ids.shape[0]}), got {describe(tokens)}.")
    return [list(r) for r in rows]


def _pairs(targets: Any, n_tokens: int, vocab: int) -> list[tuple[int, int]]:
    """``targets`` as checked ``(position, token id)`` pairs."""
    if not isinstance(targets, (list, tuple)) or not targets or not all(
            isinstance(t, (list, tuple)) and len(t) == 2 and is_int(t[0]) and is_int(t[1])
            for t in targets):
        raise TypeError(f"`targets` must be 'top1', 'span' or a list of (position, token id) "
                        f"pairs, got {describe(targets)}.")
    for position, token in targets:
        if not (-n_tokens <= position < n_tokens and 0 <= token < vocab):
            raise ValueError(f"`targets` pair ({position}, {token}) is out of range: positions "
                             f"0..{n_tokens - 1} (or negative from the end), token ids "
                             f"0..{vocab - 1}.")
    return [(int(p) % n_tokens, int(t)) for p, t in targets]


def _span_pairs(span: Any, ids: Tensor) -> list[tuple[int, int]]:
    """The ``(position, token)`` pairs of a span ``(start, stop)`` of tokens in the
    sequence: token ``t`` is predicted at position ``t - 1``."""
    n_tokens = ids.shape[1]
    if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(is_int(v) for v in span)
            and 1 <= span[0] < span[1] <= n_tokens):
        raise ValueError(f"`span` must be (start, stop) with 1 <= start < stop <= {n_tokens} "
                         f"(tokens start..stop-1 of the sequence, each predicted at the "
                         f"position before it), got {describe(span)}.")
    part = ids[:, span[0]:span[1]]
    if (part != part[:1]).any():
        raise ValueError("`span` sums the scores of the span's tokens, which must be the same "
                         "in every sample (explain sequences with different spans apart).")
    return [(t - 1, int(part[0, t - span[0]])) for t in range(span[0], span[1])]


def explain_tokens(model: Any, input_ids: Any, targets: Any = "top1", *,
                   span: tuple[int, int] | None = None, score: str = "logit",
                   method: str = "attnlrp", tokens: Sequence[Any] | None = None,
                   converter: Any = None, dtype: str = "float",
                   **method_args: Any) -> TokenExplanation:
    """Per-token relevance of a causal language model's predictions.

    Parameters
    ----------
    model : transformers.PreTrainedModel, torch.nn.Module or innsight.Converter
        A causal LM (logits ``(tokens, vocab)`` per sample): a Hugging Face model
        taking ``input_ids``; a torch module taking token ids ``(batch, tokens)``
        (converted with ``input_kinds=["ids"]``); or a conversion of either that
        takes token ids (``ins.convert(model, input_dim=[tokens])``).
    input_ids : array-like of int, (tokens,) or (n_data, tokens)
        The token ids of each sequence (all of the same length).
    targets : "top1", "span" or list of (int, int)
        ``"top1"``: each sample's top-1 next token after the last position;
        ``[(position, token_id), ...]``: the score of ``token_id`` following
        ``position`` (negative positions count from the end), one target each;
        ``"span"``: the sum of the scores of the tokens ``span`` of the sequence,
        each at the position before it (e.g. a generated continuation).
    span : (int, int), optional
        ``(start, stop)`` for ``targets="span"``.
    score : {"logit", "logprob"}
        Explain the logit, or the log-probability (gradient methods only: it is
        not linear in the logits).
    method : {"attnlrp", "lrp", "grad_x_input"}
        ``run_lrp(rule_name="attnlrp")``, ``run_lrp`` with its default rules (the
        AH-rule for attention, CP-LRP) or ``run_grad(times_input=True)``;
        ``method_args`` go to that function (e.g. ``extra_args={"attention_mask":
        mask}`` for a conversion with token ids, ``keep_layers=True``).
    tokens : list of str, optional
        Token strings (``tokenizer.convert_ids_to_tokens(ids)``), one list for all
        samples or one per sample; default the ids as text.
    converter : innsight.Converter, optional
        A conversion of a Hugging Face ``model`` for this sequence length to reuse:
        with token ids (the default of ``ins.convert``) or with
        ``text_input="embeddings"``. Without it, ``model`` is converted with token ids.
    dtype : {"float", "double"}
        Precision of the conversion and the method.

    Returns
    -------
    TokenExplanation
        ``relevance (n_data, n_targets, tokens)``, ``frame()``, ``plot()``, ``html()``.

    Notes
    -----
    Both conversions of a Hugging Face model give the same values: with token ids the
    methods explain the output of the embedding layer, which is what the other
    conversion takes as its input. Targets that pick logits start the walk of the
    rule-based methods at those logits only (sparse ``target_weights``): no dense
    ``(n_targets, tokens x vocab)`` array is made.

    Examples
    --------
    >>> import torch, transformers as tf, innsight as ins
    >>> lm = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=50, hidden_size=16,
    ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
    ...     intermediate_size=32)).eval()
    >>> ex = ins.explain_tokens(lm, torch.randint(0, 50, (6,)), [(-1, 7), (-1, 9)])
    >>> ex.relevance.shape
    (1, 2, 6)
    """
    if method not in TOKEN_METHODS:
        raise ValueError(f"`method` must be one of {list(TOKEN_METHODS)}, got {describe(method)}.")
    if score not in SCORES:
        raise ValueError(f"`score` must be one of {list(SCORES)}, got {describe(score)}.")
    run, defaults = TOKEN_METHODS[method]
    if score == "logprob" and run is not run_grad:
        raise ValueError(f"`score='logprob'` is not linear in the logits, which `method` "
                         f"{method!r} explains; use method='grad_x_input' or score='logit'.")
    ids = _as_ids(input_ids)
    n_tokens = ids.shape[1]
    converter, data = _conversion(model, converter, ids, dtype)
    dims = converter.output_dim
    if len(dims) != 1 or len(dims[0]) != 2 or dims[0][0] != n_tokens:
        raise ValueError(f"`model` must give logits (tokens, vocab) per sample, it gives "
                         f"{dims}. (A Keras model's (tokens, vocab) output converts channels "
                         f"first, as (vocab, tokens): explain it with `run_lrp` or `run_grad` "
                         f"and `target_weights` over those nodes.)")
    vocab = dims[0][1]

    if span is not None and not (isinstance(targets, str) and targets == "span"):
        raise ValueError("`span` is for targets='span' only.")
    rows = None  # per target, the (position, token) pairs whose scores it sums
    if isinstance(targets, str) and targets == "top1":
        logits = _logits(converter, data, method_args.get("extra_args"))
        top = logits.reshape(len(ids), n_tokens, vocab)[:, -1].argmax(-1).cpu()
        chosen = {"targets": ((n_tokens - 1) * vocab + top).numpy()}
        names, target_tokens = ["top-1 next token"], top[:, None].numpy()
    elif isinstance(targets, str) and targets == "span":
        rows = [_span_pairs(span, ids)]
        names, target_tokens = [f"span {span[0]}..{span[1] - 1}"], np.full((len(ids), 1), -1)
    else:
        pairs = _pairs(targets, n_tokens, vocab)
        rows = [[pair] for pair in pairs]
        names = [f"{p}->{t}" for p, t in pairs]
        target_tokens = np.tile([t for _, t in pairs], (len(ids), 1))
    if score == "logprob":
        chosen = {"target_fun": _logprob_fun(rows, n_tokens, vocab)}
    elif rows is not None:
        chosen = {"target_weights": _picking_weights(rows, n_tokens * vocab, vocab)}
    result = run(converter, data, dtype=dtype, **{**defaults, **chosen, **method_args})
    values = result.get_result("torch_tensor")  # (n_data, tokens, [hidden,] n_targets)
    values = values.reshape(len(ids), n_tokens, -1, values.shape[-1]).sum(2)
    relevance = values.permute(0, 2, 1).detach().cpu().double().numpy()
    scores = result.preds[0].detach().cpu().double().numpy().reshape(len(ids), -1)
    return TokenExplanation(relevance, _token_strings(tokens, ids), names, target_tokens,
                            scores, result)


def _conversion(model: Any, converter: Any, ids: Tensor, dtype: str) -> tuple[Any, Tensor]:
    """The conversion to explain (``converter``, or one of ``model`` with token ids) and
    its data: the token ids, or their input embeddings for a conversion that takes
    those."""
    from innsight.converter.converter import Converter
    from innsight.converter.huggingface import accepts_huggingface, embed_tokens

    n_tokens = ids.shape[1]
    hugging = accepts_huggingface(model)
    if isinstance(model, Converter):
        if converter is not None:
            raise ValueError("`model` is a conversion already; give no `converter` with it.")
        converter = model
    elif not isinstance(model, nn.Module) or (hugging and model.main_input_name != "input_ids"):
        raise TypeError(f"`model` must be a causal language model taking token ids (a Hugging "
                        f"Face model taking `input_ids`, a torch module or a conversion of "
                        f"one), got {describe(model)}.")
    elif converter is None:
        kinds = {} if hugging else {"input_kinds": ["ids"]}
        return Converter(model, input_dim=[n_tokens], dtype=dtype, **kinds), ids
    if not isinstance(converter, Converter):
        raise TypeError(f"`converter` must be an innsight Converter, got {describe(converter)}.")
    if _takes_ids(converter, n_tokens):
        return converter, ids
    if hugging and converter.input_dim == [(n_tokens, model.get_input_embeddings().embedding_dim)]:
        return converter, embed_tokens(model, ids.to(model.device))
    if converter is model:
        raise ValueError(f"`model`, a conversion, must take {n_tokens} token ids (explained "
                         f"through an embedding), got one with inputs {converter.input_dim}.")
    raise ValueError(f"`converter` must be a conversion of `model` taking {n_tokens} token ids "
                     f"(or, for a Hugging Face model, their input embeddings), got one with "
                     f"inputs {converter.input_dim}.")


def _takes_ids(converter: Any, n_tokens: int) -> bool:
    """Whether ``converter`` explains token ids ``(n_tokens,)`` through an embedding."""
    model = converter.model
    explained = model.explained_inputs
    return (len(explained) == 1 and model.input_dim[explained[0]] == (n_tokens,)
            and model.layers[model.input_nodes[explained[0]]].kind != "float"
            and model.token_embedding(explained[0]) is not None)


def _logits(converter: Any, data: Tensor, extra_args: Any) -> Tensor:
    """The converted model's output at ``data`` (token ids with ``extra_args`` and the
    other inputs' defaults, or embeddings)."""
    model = converter.model
    if data.is_floating_point():
        inputs = [data.to(model.dtype)]
    else:
        inputs = ModelInputs.build(model, data, extra_args, True, model.dtype,
                                   model.device).tensors
    with torch.no_grad():
        return model([t.to(model.device) for t in inputs])


def _picking_weights(rows: list[list[tuple[int, int]]], n_nodes: int, vocab: int) -> Tensor:
    """Sparse ``target_weights`` ``(len(rows), n_nodes)``: row ``k`` sums the logits of
    its ``(position, token)`` pairs (node ``position * vocab + token``)."""
    entries = [(k, p * vocab + t) for k, row in enumerate(rows) for p, t in row]
    index = torch.tensor(entries, dtype=torch.long).T
    return torch.sparse_coo_tensor(index, torch.ones(len(entries), dtype=torch.float64),
                                   (len(rows), n_nodes), check_invariants=True).coalesce()


def _logprob_fun(rows: list[list[tuple[int, int]]] | None, n_tokens: int, vocab: int) -> Any:
    """``target_fun`` of the log-probabilities: of each row's pairs summed (``rows``), or
    of the top-1 token after the last position (``rows=None``)."""

    def fun(outputs: list[Tensor]) -> Tensor:
        logp = torch.log_softmax(outputs[0].reshape(-1, n_tokens, vocab), dim=-1)
        if rows is None:
            return logp[:, -1].max(-1).values
        return torch.stack([sum(logp[:, p, t] for p, t in row) for row in rows], dim=1)

    return fun
