"""Methods on a torch model with token ids and a padding mask (``input_kinds``).

References: the original model with its embedding output replaced through a forward
hook (autograd w.r.t. it, its value at a zero or pad-token reference), and the axioms
(IntegratedGradient and DeepLift sum to ``f(x) - f(x_ref)``, LRP without biases
conserves the output).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import innsight as ins


class TinyText(nn.Module):
    """Embedding, tanh, a padding mask, a sum over tokens and a dense head."""

    def __init__(self, bias: bool = True) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.lin = nn.Linear(8, 3, bias=bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.emb(ids)) * mask.unsqueeze(-1).to(torch.get_default_dtype())
        return self.lin(h.sum(1))


def _model(bias: bool = True) -> TinyText:
    torch.manual_seed(0)
    return TinyText(bias).double().eval()


def _data():
    ids = torch.randint(0, 20, (4, 5), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(4, 5, dtype=torch.long)
    mask[0, 3:] = 0
    return ids, mask


def _convert(model: nn.Module, tracer: str = "auto") -> ins.Converter:
    return ins.convert(model, input_dim=[[5], [5]], input_kinds=["ids", "int"],
                       dtype="double", tracer=tracer)


def _at_embedding(model: TinyText, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The original with its embedding output replaced by ``embedded``."""
    handle = model.emb.register_forward_hook(lambda *_: embedded)
    try:
        return model(torch.zeros(embedded.shape[:2], dtype=torch.long), mask)
    finally:
        handle.remove()


ARGS = {"dtype": "double", "verbose": False}


def test_forward_and_gradient_match_the_original():
    model, (ids, mask) = _model(), _data()
    conv = _convert(model)
    with torch.no_grad():
        torch.testing.assert_close(conv.model([ids, mask]), model(ids, mask))
    embedded = model.emb(ids).detach().requires_grad_(True)
    out = _at_embedding(model, embedded, mask)
    grads = torch.stack([torch.autograd.grad(out[:, j].sum(), embedded, retain_graph=True)[0]
                         for j in range(3)], -1)
    per_dim = ins.run_grad(conv, ids, extra_args=(mask,), keep_embedding_dim=True, **ARGS)
    torch.testing.assert_close(per_dim.get_result("torch_tensor"), grads)
    assert per_dim.get_result("torch_tensor")[0, 3:].abs().max() == 0  # masked tokens
    norms = ins.run_grad(conv, ids, extra_args={"mask": mask}, **ARGS).get_result("torch_tensor")
    torch.testing.assert_close(norms, grads.norm(dim=2))
    times = ins.run_grad(conv, ids, extra_args=(mask,), times_input=True, **ARGS)
    torch.testing.assert_close(times.get_result("torch_tensor"),
                               (grads * embedded.detach().unsqueeze(-1)).sum(2))


@pytest.mark.parametrize("x_ref", [None, 0, "ids"])
def test_deeplift_and_intgrad_sum_to_the_goal_at_embedding_references(x_ref):
    model, (ids, mask) = _model(), _data()
    conv = _convert(model)
    ref_ids = torch.randint(0, 20, (4, 5), generator=torch.Generator().manual_seed(5))
    given = ref_ids if x_ref == "ids" else x_ref
    ref = (torch.zeros(4, 5, 8, dtype=torch.float64) if x_ref is None
           else model.emb(torch.zeros_like(ids) if x_ref == 0 else ref_ids))
    with torch.no_grad():
        goal = model(ids, mask) - _at_embedding(model, ref, mask)
    deeplift = ins.run_deeplift(conv, ids, x_ref=given, extra_args=(mask,), **ARGS)
    torch.testing.assert_close(deeplift.get_result("torch_tensor").sum(1), goal)
    intgrad = ins.run_intgrad(conv, ids, x_ref=given, extra_args=(mask,), n=200, **ARGS)
    torch.testing.assert_close(intgrad.decomp_goal[0], goal)
    # the right Riemann sum converges as 1/n
    torch.testing.assert_close(intgrad.get_result("torch_tensor").sum(1), goal, rtol=0, atol=1e-2)


def test_lrp_conserves_and_reference_methods_sum_to_their_goals():
    model, (ids, mask) = _model(bias=False), _data()
    conv = _convert(model)
    with torch.no_grad():
        out = model(ids, mask)
    lrp = ins.run_lrp(conv, ids, extra_args=(mask,), **ARGS).get_result("torch_tensor")
    torch.testing.assert_close(lrp.sum(1), out)
    shap = ins.run_deepshap(conv, ids, extra_args=(mask,), **ARGS)
    refs = model.emb(ids)  # DeepSHAP's default references: the data, in embedding space
    with torch.no_grad():
        at_refs = torch.stack([_at_embedding(model, refs[[r] * 4], mask) for r in range(4)])
    torch.testing.assert_close(shap.decomp_goal[0], out - at_refs.mean(0))
    torch.testing.assert_close(shap.get_result("torch_tensor").sum(1), shap.decomp_goal[0])


def test_smoothgrad_adds_noise_in_embedding_space():
    model, (ids, mask) = _model(), _data()
    conv = _convert(model)
    plain = ins.run_grad(conv, ids, extra_args=(mask,), **ARGS).get_result("torch_tensor")
    tiny = ins.run_smoothgrad(conv, ids, extra_args=(mask,), noise_level=1e-9, n=3, seed=0,
                              **ARGS).get_result("torch_tensor")
    torch.testing.assert_close(tiny, plain)  # noise of scale ~0 in embedding space
    noisy = ins.run_smoothgrad(conv, ids, extra_args=(mask,), n=3, seed=0, **ARGS)
    assert noisy.get_result("torch_tensor").shape == (4, 5, 3)
    assert not torch.allclose(noisy.get_result("torch_tensor"), plain)


@pytest.mark.parametrize(("run", "match"), [
    (ins.run_cw, "ConnectionWeights cannot explain a model with token ids"),
    (lambda conv, ids, **kw: ins.run_lime(conv, ids, ids, **kw),
     "LIME cannot explain a model with token ids"),
    (lambda conv, ids, **kw: ins.run_shap(conv, ids, ids, **kw),
     "SHAP cannot explain a model with token ids"),
])
def test_methods_that_vary_inputs_or_follow_weights_refuse_token_models_by_name(run, match):
    conv, (ids, mask) = _convert(_model()), _data()
    with pytest.raises(ValueError, match=match):
        run(conv, ids, extra_args=(mask,), verbose=False)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"data": torch.rand(4, 5)}, TypeError, r"`data` must hold integers"),
    ({"data": torch.full((4, 5), 20)}, ValueError, r"vocabulary is 0..19"),
    ({"extra_args": (torch.ones(4, 6, dtype=torch.long),)}, ValueError,
     r"`extra_args\['mask'\]` has shape \(4, 6\), expected \(4, 5\)"),
    ({"extra_args": None}, ValueError, r"`extra_args\['mask'\]` is required"),
    ({"x_ref": torch.rand(1, 5)}, TypeError, r"`x_ref` must hold integers"),
    ({"x_ref": 25}, ValueError, r"`x_ref` holds token ids from 25 to 25"),
])
def test_bad_token_inputs_are_refused_by_name(kwargs, error, match):
    conv, (ids, mask) = _convert(_model()), _data()
    args = {"data": ids, "extra_args": (mask,), **kwargs}
    with pytest.raises(error, match=match):
        ins.run_intgrad(conv, args.pop("data"), **args, verbose=False)


def test_input_kinds_and_tracers_are_checked_by_name():
    model = _model()
    with pytest.raises(ValueError, match=r"`input_kinds` must list one of \['real', 'ids', "
                                         r"'int', 'extra'\] per input \(2\)"):
        ins.convert(model, input_dim=[[5], [5]], input_kinds=["ids"])
    with pytest.raises(ins.ConversionError, match="on values computed from integer or "
                                                  "non-explained inputs.*tracer='export'"):
        _convert(model, tracer="fx")
    with pytest.raises(ValueError, match="`extra_args` passes the model's non-explained inputs"):
        ins.run_grad(ins.convert(nn.Linear(3, 2), input_dim=[3]), torch.rand(2, 3),
                     extra_args=(torch.ones(2),), verbose=False)
