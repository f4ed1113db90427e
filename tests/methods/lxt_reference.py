"""LXT's efficient AttnLRP (Achtibat et al. 2024, ``lxt.efficient``) as an independent
reference, made to run with the ``transformers`` version this package supports.

``lxt`` 2.1 from PyPI does not work with ``transformers`` 5.x as it is: its package
``lxt.efficient`` imports every model file on import, and the BERT one imports a module
that ``transformers`` removed (``modeling_attn_mask_utils``); and its ``patch_attention``
replaces the attention-function registry ``ALL_ATTENTION_FUNCTIONS`` by a plain dict,
which has no ``get_interface`` that the modelling code now calls. LXT's upstream main
fixed both for ``transformers`` 5.9: the model files are imported one by one (BERT
skipped where it fails), and the registry's entries are wrapped in place. This module
does the same with LXT's own code, without holding back ``transformers``:

- it loads ``lxt.efficient.rules``, ``lxt.efficient.patches`` and the model files it
  needs (``lxt.efficient.models.llama``, ``qwen2``, ``gpt2``) directly, registering the
  packages ``lxt.efficient`` and ``lxt.efficient.models`` without running their
  ``__init__`` (which would import the BERT file);
- it takes each model's ``attnLRP`` patch map from LXT as it is, except the attention
  entry, for which :func:`patch_attention` wraps ``eager_attention_forward`` and each
  entry of the registry in place with LXT's own ``wrap_attention_forward`` (the gradient
  of query and key divided by 4, of value by 2: the uniform rule of both products), as
  upstream main's ``patch_attention`` does;
- BERT's patch map is built from LXT's functions as upstream main's BERT file applies
  them: LXT's ``layer_norm_forward`` for ``nn.LayerNorm``, the attention patch above,
  and LXT's ``identity_rule_implicit`` on the activations of ``BertIntermediate`` and
  ``BertPooler``.

:func:`lxt_attnlrp` applies a map for the duration of a ``with`` block and restores every
patched class, function and registry entry afterwards (LXT patches classes such as
``torch.nn.LayerNorm`` process-wide). :func:`lxt_relevance` is LXT's relevance of the
input embeddings: embeddings times their gradient, summed over the hidden dimension.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def _lxt_module(name: str) -> types.ModuleType:
    """``lxt.efficient.<name>`` imported without running the ``__init__`` of
    ``lxt.efficient`` or ``lxt.efficient.models``."""
    root = Path(importlib.util.find_spec("lxt").origin).parent / "efficient"
    for package, path in (("lxt.efficient", root), ("lxt.efficient.models", root / "models")):
        if package not in sys.modules:
            module = types.ModuleType(package)
            module.__path__ = [str(path)]
            sys.modules[package] = module
    return importlib.import_module(f"lxt.efficient.{name}")


def patch_attention(module: types.ModuleType) -> bool:
    """Upstream main's attention patch: LXT's ``wrap_attention_forward`` around the
    module's ``eager_attention_forward`` and around every entry of its registry, in place."""
    wrap = _lxt_module("patches").wrap_attention_forward
    module.eager_attention_forward = wrap(module.eager_attention_forward)
    registry = module.ALL_ATTENTION_FUNCTIONS
    for key in list(registry):
        registry[key] = wrap(registry[key])
    return True


def _identity_rule_on(attribute: str, then: Callable[[nn.Module, Tensor], Tensor] | None = None
                      ) -> Callable[[nn.Module, Tensor], Tensor]:
    """A forward ``dense -> activation (identity rule)``, as LXT's BERT file writes
    ``BertIntermediate`` and ``BertPooler``."""
    identity_rule = _lxt_module("rules").identity_rule_implicit

    def forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
        if then is not None:
            hidden_states = then(self, hidden_states)
        return identity_rule(getattr(self, attribute), self.dense(hidden_states))

    return forward


def attnlrp_map(model: nn.Module) -> dict[Any, Callable[[Any], bool]]:
    """LXT's AttnLRP patch map for the modelling module of ``model``."""
    family = type(model).__module__.rsplit(".", 1)[-1].removeprefix("modeling_")
    modeling = importlib.import_module(type(model).__module__)
    patches = _lxt_module("patches")
    if family == "bert":
        patch_map = {
            nn.LayerNorm: partial(patches.patch_method, patches.layer_norm_forward),
            nn.Dropout: partial(patches.patch_method, patches.dropout_forward),
            modeling.BertIntermediate: partial(
                patches.patch_method, _identity_rule_on("intermediate_act_fn")),
            # the pooler reads the first token
            modeling.BertPooler: partial(patches.patch_method, _identity_rule_on(
                "activation", lambda self, h: h[:, 0])),
        }
    else:
        patch_map = dict(_lxt_module(f"models.{family}").attnLRP)
        patch_map.pop(modeling)  # 2.1's patch_attention, replaced below
    patch_map[modeling] = patch_attention
    return patch_map


@contextlib.contextmanager
def lxt_attnlrp(model: nn.Module) -> Iterator[None]:
    """LXT's efficient AttnLRP patches of ``model``'s modelling module, undone on exit."""
    patch_map = attnlrp_map(model)
    saved_classes = {cls: cls.__dict__.get("forward") for cls in patch_map
                     if isinstance(cls, type)}
    modules = [m for m in patch_map if isinstance(m, types.ModuleType)]
    saved_modules = {m: (m.eager_attention_forward,
                         dict(m.ALL_ATTENTION_FUNCTIONS._local_mapping)) for m in modules}
    try:
        for target, patch in patch_map.items():
            if not patch(target):
                raise RuntimeError(f"LXT could not patch {target!r}")
        yield
    finally:
        for cls, forward in saved_classes.items():
            if forward is None:
                delattr(cls, "forward")
            else:
                cls.forward = forward
        for m, (eager, local) in saved_modules.items():
            m.eager_attention_forward = eager
            m.ALL_ATTENTION_FUNCTIONS._local_mapping.clear()
            m.ALL_ATTENTION_FUNCTIONS._local_mapping.update(local)


def lxt_relevance(model: nn.Module, embeddings: Tensor,
                  target: Callable[[Tensor], Tensor]) -> Tensor:
    """LXT's AttnLRP relevance per token ``(batch, tokens)`` of ``target(logits)``
    (summed over the batch) at ``embeddings (batch, tokens, hidden)``: embeddings times
    their gradient under the patches, summed over the hidden dimension."""
    x = embeddings.detach().clone().requires_grad_(True)
    with lxt_attnlrp(model), torch.enable_grad():
        target(model(inputs_embeds=x).logits).sum().backward()
    return (x * x.grad).sum(-1).detach()
