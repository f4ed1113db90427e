"""One result as the metrics see it: flat values, flat data, and the model behind them.

Every input layer's entries are flattened channels first and concatenated into
``p`` *features* (as the model-agnostic methods do), so a metric works on
``values (n_data, p, n_targets)`` and ``data (n_data, p)`` whatever the model's
inputs are. The model is evaluated, and the method re-run, through the
:class:`~innsight.methods.base.Setup` the method ran with: the explained output
nodes (pre-activation with ``ignore_last_act``) of a converted model, a torch
module or a model known by its predictions alike. Every model evaluation goes
through :meth:`Subject.evaluate_blocks`: stacked rows made block by block, at most
``batch_size`` at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from innsight.methods.agnostic import Players, as_features, feature_players, from_features
from innsight.methods.base import InterpretingMethod, Setup
from innsight.methods.engine import joined, progress, target_values
from innsight.methods.result import Result

#: ``make(outer, inner) -> model inputs (len(outer) * len(inner), p)``, outer-major.
BlockMaker = Callable[[slice, slice], Tensor]


def _per_input(values: list[list[Tensor] | None]) -> list[Tensor]:
    """``values[o][k]`` ``(n, *dim_k, n_o)`` as one tensor ``(n, *dim_k, n_targets)`` per
    input layer, the output layers' nodes one after the other."""
    blocks = [layer for layer in values if layer is not None]
    return [joined([layer[k] for layer in blocks], dim=-1) for k in range(len(blocks[0]))]


def flat_values(values: list[Tensor]) -> Tensor:
    """Per input layer ``(n, *dim_k, n_targets)`` as features ``(n, p, n_targets)``."""
    return joined([v.flatten(1, -2) for v in values], dim=1)


def _cat(blocks: list[Tensor | None] | None) -> Tensor | None:
    kept = [b for b in blocks or [] if b is not None]
    return joined(kept, dim=-1) if kept else None


@dataclass
class Subject:
    """A result prepared for the metrics; see the module docs.

    ``values`` ``(n_data, p, n_targets)``; ``labels`` the ``n_targets`` output nodes;
    ``goal`` and ``sums`` ``(n_data, n_targets)`` (``goal`` ``None`` where the method has
    none); ``setup`` ``None`` for a result that did not come from a method run.
    """

    name: str
    result: Result
    values: Tensor
    labels: list[str]
    goal: Tensor | None
    sums: Tensor
    setup: Setup | None
    batch_size: int
    seed: int
    verbose: bool
    _cache: dict[Any, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, result: Result, batch_size: int | None, seed: int,
           device: torch.device | None, verbose: bool) -> Subject:
        setup = getattr(result, "setup", None)
        values = _per_input(result.values)
        if setup is not None:
            if device is not None and device != setup.data[0].device:
                model = setup.model
                if isinstance(model, torch.nn.Module):  # converted models move; others stay
                    model = copy.deepcopy(model).to(device)
                setup = replace(setup, model=model, data=[x.to(device) for x in setup.data])
            setup = replace(setup, verbose=verbose)
            values = [v.to(setup.data[0].device) for v in values]
        return cls(
            name=name, result=result, values=flat_values(values),
            labels=[label for o, layer in enumerate(result.values) if layer is not None
                    for label in result.output_labels[o]],
            goal=_cat(result.decomp_goal), sums=_cat(result.decomp_sum), setup=setup,
            batch_size=batch_size or (setup.batch_size if setup is not None else 1),
            seed=seed, verbose=verbose,
        )

    @property
    def n_data(self) -> int:
        return self.values.shape[0]

    @property
    def n_targets(self) -> int:
        return self.values.shape[2]

    def model_setup(self, metric: str) -> Setup:
        """The method's setup; a ValueError naming ``metric`` for a result without one."""
        if self.setup is None:
            raise ValueError(
                f"metric {metric!r} evaluates the model, but the result {self.name!r} carries "
                "none: pass the object a method returned (e.g. ins.run_grad(conv, x)).")
        return self.setup

    def data(self, metric: str) -> Tensor:
        """The explained inputs as features ``(n_data, p)``, checked against the values."""
        setup = self.model_setup(metric)
        if self.result.data is None:
            raise ValueError(f"metric {metric!r} perturbs the data, but the result {self.name!r} "
                             "was computed without data.")
        data = as_features(setup.data)
        if data.shape[1] != self.values.shape[1]:
            raise ValueError(
                f"metric {metric!r} needs one value per input entry, but {self.name!r} has "
                f"{self.values.shape[1]} values for {data.shape[1]} input entries (token inputs "
                "explained per token cannot be perturbed entry by entry).")
        return data

    def generator(self, offset: int = 0) -> torch.Generator:
        """A fresh generator seeded with the evaluation's seed (plus ``offset``): every
        method gets the same draws, so methods are compared on the same perturbations."""
        setup = self.model_setup("random draws")
        generator = torch.Generator(device=setup.data[0].device)
        return generator.manual_seed(self.seed + offset)

    def players(self, feature_groups: Any) -> Players:
        """The features (or groups of them, ``feature_groups`` as for SHAP) perturbed together."""
        return feature_players(self.model_setup("feature groups"), feature_groups)

    def outputs(self, features: Tensor, sample: Tensor) -> Tensor:
        """The explained output nodes ``(rows, n_targets)`` at ``features`` ``(rows, p)``
        made from the data samples ``sample`` ``(rows,)`` (per-sample targets and model
        arguments follow them)."""
        setup = self.model_setup("outputs")
        with torch.no_grad():
            return target_values(setup.model_fn(from_features(features, setup.data), sample),
                                 setup.targets, sample)

    def evaluate_blocks(self, n_outer: int, n_inner: int, make: BlockMaker,
                        desc: str, outer_per_sample: int = 1) -> Tensor:
        """The outputs ``(n_outer * n_inner, n_targets)`` at the rows ``(outer, inner)``
        (outer-major, e.g. sample and perturbation) that ``make`` builds block by block:
        as many whole outer rows as fit into ``batch_size``, or pieces of one where
        ``n_inner`` does not fit. Whole blocks let ``make`` broadcast instead of gathering.
        Outer row ``o`` was made from the data sample ``o // outer_per_sample``."""
        size = self.batch_size
        if n_inner <= size:
            per = size // n_inner
            blocks = [(slice(o, min(o + per, n_outer)), slice(0, n_inner))
                      for o in range(0, n_outer, per)]
        else:
            blocks = [(slice(o, o + 1), slice(i, min(i + size, n_inner)))
                      for o in range(n_outer) for i in range(0, n_inner, size)]
        device = self.values.device

        def sample(outer: slice, inner: slice) -> Tensor:
            outers = torch.arange(outer.start, outer.stop, device=device) // outer_per_sample
            return outers.repeat_interleave(inner.stop - inner.start)

        return torch.cat([self.outputs(make(outer, inner), sample(outer, inner))
                          for outer, inner in progress(blocks, len(blocks), self.verbose, desc)])

    def explain(self, features: Tensor | None = None, sample: Tensor | None = None,
                generator: torch.Generator | None = None, **changes: Any) -> Tensor:
        """The method's values ``(rows, p, n_targets)`` again, at other inputs ``features``
        ``(rows, p)`` made from the data samples ``sample`` ``(rows,)`` (``None``: row ``i``
        is sample ``i``), and/or with other setup fields (``model=...``, ``selection=...``,
        ``custom_targets=...``)."""
        setup = self.model_setup("re-explanation")
        if not isinstance(self.result, InterpretingMethod):
            raise ValueError(f"re-explaining needs the method object itself, got "
                             f"{type(self.result).__name__} for {self.name!r}.")
        if features is not None:
            changes["data"] = from_features(features, setup.data)
        if sample is not None:
            model = changes.get("model", setup.model)
            if model.per_sample:
                changes["model"] = RowsOfSamples(model, sample)
            changes["custom_targets"] = changes.get("custom_targets",
                                                    setup.targets).for_rows(sample)
        new = replace(setup, generator=generator or self.generator(), **changes)
        return flat_values(self.result._explain(new, **self.result.args).values)

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per key (metrics that share work, e.g. max and avg sensitivity)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


class RowsOfSamples:
    """``model`` (one with per-sample arguments, ``model.per_sample``) for data whose row
    ``i`` was made from the data sample ``rows[i]`` (``rows`` ``(n_rows,)``): ``run_nodes``
    passes each row its sample's arguments; everything else is ``model``'s."""

    def __init__(self, model: Any, rows: Tensor) -> None:
        self.model, self.rows = model, rows

    def __getattr__(self, name: str) -> Any:
        if name in ("model", "rows"):  # not set yet (copies build the object bare)
            raise AttributeError(name)
        return getattr(self.model, name)

    def run_nodes(self, inputs: list[Tensor], nodes: Any,
                  sample: Tensor | None = None) -> list[Tensor]:
        rows = self.rows if sample is None else self.rows[sample.to(self.rows.device)]
        return self.model.run_nodes(inputs, nodes, rows)
