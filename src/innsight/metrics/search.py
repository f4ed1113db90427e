"""Settings of a method to try when tuning: drawn from its ``get_tunables()`` ranges.

A method's tunables (:meth:`InterpretingMethod.get_tunables
<innsight.InterpretingMethod.get_tunables>`) map each own argument to

- a list of choices (``[False, True]``, rule names);
- a range ``(int, low, high)`` (drawn uniformly, ends included) or ``(float, low,
  high)`` (uniformly, or log-uniformly where ``0 < low`` and ``high >= 100 * low``,
  e.g. an LRP epsilon in ``1e-4 .. 1``);
- a dict keyed by the choices of another argument, each with its own range (LRP's
  ``rule_param`` per ``rule_name``): drawn only when that argument takes one of its
  keys, left at its default otherwise.

The first setting is always the method's defaults (the candidate's fixed arguments
included). When every searched argument is a list of choices and all their
combinations fit into ``n_trials``, all of them are tried (a grid); otherwise
``n_trials - 1`` distinct random settings follow the defaults.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

import numpy as np

from innsight.methods.base import InterpretingMethod, method_signature

#: How many draws at most are spent looking for one more distinct random setting.
MAX_DRAWS_PER_TRIAL = 20


def defaults(cls: type[InterpretingMethod]) -> dict[str, Any]:
    """The default of every own argument of ``cls`` that has one."""
    return {name: param.default for name, param in method_signature(cls).parameters.items()
            if param.default is not inspect.Parameter.empty}


def _parent(name: str, spec: dict[Any, Any], tunables: dict[str, Any],
            cls: type[InterpretingMethod]) -> str:
    """The argument whose choices key the conditional ranges ``spec`` of ``name``."""
    for other, choices in tunables.items():
        if isinstance(choices, list) and set(spec) <= set(choices):
            return other
    raise ValueError(f"{cls.__name__}.get_tunables()[{name!r}] holds ranges keyed by "
                     f"{sorted(spec)!r}, which are no argument's choices.")


def _draw(spec: Any, rng: np.random.Generator) -> Any:
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    kind, low, high = spec
    if kind is int:
        return int(rng.integers(low, high + 1))
    if low > 0 and high >= 100 * low:
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def settings(cls: type[InterpretingMethod], fixed: dict[str, Any], n_trials: int,
             rng: np.random.Generator) -> list[dict[str, Any]]:
    """Up to ``n_trials`` distinct settings of ``cls``'s own arguments (each a complete
    dict of the searched ones, ``fixed`` added), the defaults first; see the module docs."""
    tunables = {k: v for k, v in cls.get_tunables().items() if k not in fixed}
    base = {**{k: v for k, v in defaults(cls).items() if k in tunables}, **fixed}
    plain = {k: v for k, v in tunables.items() if not isinstance(v, dict)}
    conditional = {k: (_parent(k, v, cls.get_tunables(), cls), v)
                   for k, v in tunables.items() if isinstance(v, dict)}
    found = [base]
    if not conditional and all(isinstance(v, list) for v in plain.values()) \
            and math.prod(len(v) for v in plain.values()) <= n_trials:
        for combination in itertools.product(*plain.values()):
            setting = {**base, **dict(zip(plain, combination))}
            if setting not in found:
                found.append(setting)
        return found
    for _ in range(MAX_DRAWS_PER_TRIAL * n_trials):
        if len(found) == n_trials:
            break
        setting = {**base, **{k: _draw(v, rng) for k, v in plain.items()}}
        for name, (parent, ranges) in conditional.items():
            choice = setting.get(parent)
            if isinstance(choice, str) and choice in ranges:
                setting[name] = _draw(ranges[choice], rng)
        if setting not in found:
            found.append(setting)
    return found
