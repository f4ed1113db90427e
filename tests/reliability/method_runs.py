"""Every method on a converter, with small arguments under which the stochastic ones
draw, for inputs ``(2, 6, 6)``; shared by the state and determinism tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import innsight as ins

N_REF = 6


def images(n: int, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` standard normal samples ``(2, 6, 6)`` from ``seed``."""
    return torch.randn(n, 2, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=dtype)


#: ``run(converter, x, **shared)`` per method; DeepSHAP gets fewer references than given,
#: so that it draws them.
METHODS: dict[str, Callable[..., Any]] = {
    "Gradient": lambda c, x, **kw: ins.run_grad(c, x, **kw),
    "SmoothGrad": lambda c, x, **kw: ins.run_smoothgrad(c, x, n=8, **kw),
    "IntegratedGradient": lambda c, x, **kw: ins.run_intgrad(c, x, n=8, **kw),
    "ExpectedGradient": lambda c, x, **kw: ins.run_expgrad(c, x, data_ref=images(N_REF, 9), n=8,
                                                           **kw),
    "DeepLift": lambda c, x, **kw: ins.run_deeplift(c, x, **kw),
    "DeepSHAP": lambda c, x, **kw: ins.run_deepshap(c, x, data_ref=images(N_REF, 9),
                                                    limit_ref=3, **kw),
    "LRP": lambda c, x, **kw: ins.run_lrp(c, x, rule_name="epsilon", **kw),
    "ConnectionWeights": lambda c, x, **kw: ins.run_cw(c, x, **kw),
    "LIME": lambda c, x, **kw: ins.run_lime(c, x, images(N_REF, 9), n=40, **kw),
    "SHAP": lambda c, x, **kw: ins.run_shap(c, x, images(N_REF, 9), n=4, **kw),
}
STOCHASTIC = ("SmoothGrad", "ExpectedGradient", "DeepSHAP", "LIME", "SHAP")
