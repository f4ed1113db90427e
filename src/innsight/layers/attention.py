"""Scaled dot-product attention as one layer: ``softmax(scale * q @ k^T + mask + bias) @ v``.

One layer rather than its steps written out (scores, mask, softmax, product) keeps
no ``(L, S)`` tensor between the forward pass and the reverse walk: the forward
pass uses torch's fused kernel, and the rule-based walks recompute the scores and
the attention weights from ``q`` and ``k`` when they reach the layer.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from innsight.layers.activation import MASKED, rescaled_gradient, softmax_linearised
from innsight.layers.base import Layer, frozen_param
from innsight.layers.lrp_rules import Linearise, LrpRule
from innsight.layers.merge import FrozenMatMul
from innsight.layers.rules import (
    DeepLiftRule,
    Multipliers,
    Pair,
    RulePart,
    collapse,
    divide,
    fold,
    sum_to,
    unfold,
)

#: What a query row yields whose every score is masked (``masked_rows``): the softmax of
#: its masked scores as they are (an additive mask of finite numbers: about uniform
#: weights), or no weights at all, hence a zero output (torch's
#: ``scaled_dot_product_attention`` with a boolean or ``-inf`` mask).
MASKED_ROWS = ("softmax", "zero")


def _is_causal(mask: Tensor) -> bool:
    """Whether ``mask (..., L, L)`` is 0 on and below the diagonal and masks the rest."""
    if mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        return False
    above = torch.ones(mask.shape[-2:], dtype=torch.bool, device=mask.device).triu(1)
    return bool((mask.masked_fill(above, 0) == 0).all() and (mask[..., above] <= MASKED).all())


def _attending(scores: Tensor) -> Tensor:
    """Whether each query row of ``scores (..., L, S)`` (masks included) attends to some
    key: ``(..., L, 1)``."""
    return (scores > MASKED).any(-1, keepdim=True)


def _group(q: Tensor, k: Tensor) -> int:
    """How many query heads share each key head (axis ``-3``; 1 without a head axis)."""
    if q.ndim < 4 or k.ndim < 4 or not 0 < k.shape[-3] < q.shape[-3]:
        return 1
    return q.shape[-3] // k.shape[-3]


def _grouped(x: Tensor, group: int) -> Tensor:
    """``x (..., heads, L, X)`` in query-head layout as ``(..., heads / group, group * L,
    X)``: the rows of the query heads that share one key and value head stacked, so that
    one matrix product per key head serves its whole group (a view where ``x`` allows)."""
    if group == 1:
        return x
    return x.unflatten(-3, (x.shape[-3] // group, group)).flatten(-3, -2)


def _ungrouped(x: Tensor, group: int) -> Tensor:
    """Inverse of :func:`_grouped`: ``(..., kv_heads, group * L, X)`` as ``(...,
    kv_heads * group, L, X)``."""
    if group == 1:
        return x
    return x.unflatten(-2, (group, x.shape[-2] // group)).flatten(-4, -3)


class ScaledDotProductAttention(Layer):
    """Attention over the last two sample axes of ``q (batch, ..., L, E)``, ``k (batch,
    ..., S, E)``, ``v (batch, ..., S, Ev)`` and an optional ``bias`` broadcastable to ``(batch, ...,
    L, S)``, computed from the inputs (a relative position term): ``softmax(scale * q @ k^T +
    mask + bias) @ v``, ``(batch, ..., L, Ev)``. Parameters: ``scale`` (a number) and an
    optional constant ``mask`` broadcastable to the scores ``(..., L, S)`` of one sample
    (a causal or padding mask: 0 where attending, a large negative number where not);
    ``masked_rows``, what a query row whose every score is masked (at or below ``-1e30``,
    such as a padded position under a causal and padding mask) yields: ``"softmax"``
    (default) the softmax of its masked scores as they are, as with a finite additive
    mask; ``"zero"`` no attention weights, so a zero output, as torch's kernel gives for a
    boolean mask.

    Grouped-query attention: ``k`` and ``v`` may have fewer heads (axis ``-3``) than ``q``,
    a divisor of them; key and value head ``h`` serve the ``group = q heads / kv heads``
    consecutive query heads ``h * group`` to ``(h + 1) * group - 1`` (torch's
    ``enable_gqa``, Hugging Face's ``repeat_kv``), without copies of ``k`` and ``v`` per
    query head: the forward pass runs torch's kernel with ``enable_gqa``, the rules
    stack each group's query rows (``(..., kv_heads, group * L, E)``), and the relevance
    and multipliers of ``k`` and ``v`` sum over the query heads of their group.

    LRP: the layer's rule (type keys ``"ScaledDotProductAttention"`` and ``"MatMul"``) is
    the rule of its two matrix products; a rule that holds an operand (every rule but
    ``uniform``) holds the attention weights fixed (the AH-rule, CP-LRP), so that ``v``
    gets all the relevance and ``q``, ``k`` and ``bias`` none. ``uniform`` (AttnLRP)
    gives each operand of both products half: the weights' half passes the softmax by
    the rule of the part ``weights`` (key ``"Softmax"`` or the name
    ``<layer>_weights``; ``pass`` by default, ``linearise`` in AttnLRP), then
    reaches ``q`` (scaled) and ``k``, the scores' ``mask`` and ``bias`` counting as the
    product's bias; ``bias`` gets its share in proportion to its value, as a summand of
    the scores. DeepLift follows the steps: the exact split of each product,
    ``d(ab) = da (b + b')/2 + (a + a')/2 db``, and the softmax's gradient at the
    midpoint rescaled to sum to its difference. ConnectionWeights is not defined for
    it.
    """

    type_names = ("ScaledDotProductAttention",)
    n_inputs = None
    min_inputs = 3
    max_inputs = 4
    required = ("scale",)
    optional = {"mask": None, "masked_rows": "softmax"}
    rule_paths = frozenset({"lrp", "deeplift"})
    no_rule_reason = "a product of two tensors has no weights to follow"
    takes_lrp_rule = True
    lrp_kind = "product"
    rule_keys = ("MatMul",)
    rule_parts = (RulePart("weights", "Activation", "Softmax", "activation", "pass"),)

    def __init__(self, type_name: str, scale: Any, mask: Any, masked_rows: str) -> None:
        super().__init__(type_name)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(
                scale):
            raise ValueError(f"`scale` must be a finite number, got {scale!r}.")
        if not isinstance(masked_rows, str) or masked_rows not in MASKED_ROWS:
            raise ValueError(f"`masked_rows` must be one of {list(MASKED_ROWS)}, got "
                             f"{masked_rows!r}.")
        self.scale = float(scale)
        self.masked_rows = masked_rows
        self.mask = None if mask is None else frozen_param(mask, "mask")
        #: A causal mask runs as such (``is_causal``), so that fused kernels skip the
        #: masked half rather than read the mask.
        self.causal = self.mask is not None and _is_causal(self.mask)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        grouped = _group(q, k) > 1
        if not (q.ndim == k.ndim == v.ndim >= 3 and q.shape[-1] == k.shape[-1]
                and k.shape[-2] == v.shape[-2] and k.shape[-3] == v.shape[-3]
                and (q.ndim < 4 or q.shape[-3] % k.shape[-3] == 0 or q.shape[-3] == 1)):
            raise ValueError(
                f"ScaledDotProductAttention needs q (..., heads, L, E), k (..., kv_heads, S, "
                f"E), v (..., kv_heads, S, Ev) [and bias broadcastable to (..., heads, L, S)] "
                f"of the same rank, heads a multiple of kv_heads, got "
                f"{[list(x.shape[1:]) for x in (q, k, v, bias) if x is not None]}."
            )
        if bias is None and self.causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                                  enable_gqa=grouped)
        add = self.mask if bias is None else bias if self.mask is None else bias + self.mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=add, scale=self.scale,
                                             enable_gqa=grouped)
        if self.masked_rows == "zero" and add is not None:
            out = out.masked_fill(~_attending(add), 0.0)
        return out

    def get_params(self) -> dict[str, Any]:
        return {"scale": self.scale, "mask": self.mask, "masked_rows": self.masked_rows}

    def rule_key(self) -> str:
        return "MatMul"

    def held_inputs(self, rule: LrpRule) -> frozenset[int]:
        return frozenset({0, 1, *range(3, len(self.input_dim))}) if rule.holds_operand else (
            frozenset())

    def _steps(self, q: Tensor, k: Tensor, bias: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The scaled query ``q * scale``, the scores ``z`` (softmax input, ``(B, ..., L,
        S)``) and the attention weights ``softmax(z)``, each in the grouped layout of
        :func:`_grouped` (the query-head layout where ``k`` has as many heads as ``q``)."""
        group = _group(q, k)
        qs = _grouped(q, group) * self.scale
        z = qs @ k.mT
        scores = _ungrouped(z, group)  # a view of z in the query-head layout
        if self.mask is not None:
            scores.add_(self.mask)
        for b in bias:
            scores.add_(b)
        return qs, z, self._weights(z)

    def _weights(self, z: Tensor) -> Tensor:
        """The attention weights ``softmax(z)`` of the scores ``z (..., L, S)``; under
        ``masked_rows="zero"`` none in a row whose every score is masked."""
        if self.masked_rows == "softmax":
            return torch.softmax(z, dim=-1)
        attending = _attending(z)
        return torch.softmax(z.masked_fill(~attending, 0.0), dim=-1).masked_fill(~attending,
                                                                                 0.0)

    def linearised(self, r: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """The softmax part linearised at its input (the rule ``linearise``)."""
        return softmax_linearised(r, x, y, -1)

    def _gradients(self, s: Tensor, xs: list[Tensor], wanted: list[int]) -> list[Tensor]:
        """The gradients of ``s . forward(*xs)`` (``s (T, B, ..., L, Ev)``) with respect
        to the inputs ``wanted``, ``(T, B, *in)`` each, through torch's fused kernel
        (no ``(L, S)`` tensor where it has a memory-efficient backward)."""
        n_targets = s.shape[0]
        with torch.inference_mode(False), torch.enable_grad():
            at = [(x.clone() if x.is_inference() else x.detach()).expand(
                n_targets, *x.shape).reshape(-1, *x.shape[1:]) for x in xs]
            for i in wanted:
                at[i].requires_grad_(True)
            grads = torch.autograd.grad(self(*at), [at[i] for i in wanted], fold(s))
        return [unfold(g, n_targets) for g in grads]

    def relevance(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule) -> list[Tensor]:
        weights_rule = rule.part("weights", "pass")
        s = rule.quotient(r if rule.holds_operand else r * 0.5, y)
        if s is not None and rule.holds_operand:
            (g_v,) = self._gradients(s, xs, [2])
            return [None, None, xs[2] * g_v] + [None] * (len(xs) - 3)
        if s is not None and isinstance(weights_rule, Linearise):
            # The linearised softmax passes z * g (g: the gradient at its input z), which
            # the scores' product splits half and half as x * g: the input times the
            # gradient, as for the values.
            grads = self._gradients(s, xs, list(range(len(xs))))
            shares = [0.5, 0.5, 1.0] + [1.0] * (len(xs) - 3)
            return [x * g * share for x, g, share in zip(xs, grads, shares)]
        return self._relevance_written_out(r, xs, y, rule, weights_rule)

    def _relevance_written_out(self, r: Tensor, xs: list[Tensor], y: Tensor, rule: LrpRule,
                               weights_rule: LrpRule) -> list[Tensor]:
        """The relevance with the scores and weights ``(T, B, ..., L, S)`` written out (in
        the grouped layout of :func:`_grouped`)."""
        q, k, v, *bias = xs
        group = _group(q, k)
        qs, z, w = self._steps(q, k, bias)
        r, y = _grouped(r, group), _grouped(y, group)
        q_dim, k_dim, v_dim = tuple(qs.shape[1:]), *self.input_dim[1:3]
        s_dim = (*q_dim[:-1], k_dim[-2])
        if rule.holds_operand:
            r_v = rule.relevance(FrozenMatMul(self.type_name, v_dim, w, 1), r, v, y)
            return [None, None, r_v] + [None] * len(bias)
        half = r * 0.5
        r_v = rule.relevance(FrozenMatMul(self.type_name, v_dim, w, 1), half, v, y)
        r_w = rule.relevance(FrozenMatMul(self.type_name, s_dim, v, 0), half, w, y)
        del half
        r_z = weights_rule.relevance(self, r_w, z, w)
        del r_w, w
        half = r_z * 0.5
        r_q = rule.relevance(FrozenMatMul(self.type_name, q_dim, k.mT, 0), half, qs, z)
        k_t = (*k_dim[:-2], k_dim[-1], k_dim[-2])
        r_k = rule.relevance(FrozenMatMul(self.type_name, k_t, qs, 1), half, k.mT, z).mT
        del half
        s_z = _ungrouped(divide(r_z, z), group) if bias else None
        return [_ungrouped(r_q, group), r_k, r_v] + [sum_to(s_z * b, b.shape) for b in bias]

    def contribution(self, m: Multipliers, xs: list[Tensor], refs: list[Tensor], y: Tensor,
                     y_ref: Tensor, rule: DeepLiftRule,
                     splits: list[Pair] | None) -> list[Multipliers]:
        (q, k, v, *bias), (q_ref, k_ref, v_ref, *bias_ref) = xs, refs
        group = _group(q, k)
        n = _grouped(collapse(m, y - y_ref), group)
        qs, z, w = self._steps(q, k, bias)
        qs_ref, z_ref, w_ref = self._steps(q_ref, k_ref, bias_ref)
        m_v = ((w + w_ref) / 2).mT @ n
        m_z = rescaled_gradient(self._weights, n @ ((v + v_ref) / 2).mT, z, z_ref, w - w_ref)
        m_q = _ungrouped((m_z @ ((k + k_ref) / 2)) * self.scale, group)
        m_k = m_z.mT @ ((qs + qs_ref) / 2)
        m_z = _ungrouped(m_z, group)
        return [sum_to(m_q, q.shape), sum_to(m_k, k.shape), sum_to(m_v, v.shape)] + [
            sum_to(m_z, b.shape) for b in bias]
