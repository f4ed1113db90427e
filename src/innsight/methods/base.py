"""``InterpretingMethod``: the shared arguments and the run of every method.

A method is constructed with a model and data, runs at once, and *is* its
:class:`~innsight.methods.result.Result`. The run is explicit: the shared
arguments are checked, model and data brought onto one dtype and device, the
output nodes chosen (a :class:`~innsight.outputs.OutputSelection`), and the
subclass's :meth:`InterpretingMethod._explain` returns an :class:`Explanation`:
the values, their goal, and the outputs at the data where it computed them in
passing. Whatever model the method gets, it works through the interface of
:mod:`innsight.methods.model_interface`.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from innsight._validation import check_bool, describe, is_int, resolve_dtype
from innsight.converter import Converter
from innsight.converter.names import Names
from innsight.methods.data import prepare_data, prepare_like, user_dim
from innsight.methods.engine import (
    default_batch_size,
    evaluate,
    row_chunks,
    target_values,
)
from innsight.methods.heads import target_columns
from innsight.methods.layer_attribution import AttributedLayer, at_layer, layer_node
from innsight.methods.model_inputs import ModelInputs, needs_start, per_token
from innsight.methods.model_interface import ExplainableModel, TorchModule
from innsight.methods.result import Result
from innsight.methods.targets import ChosenTargets, NodeTargets, Targets, choose_targets
from innsight.outputs import OutputSelection


@dataclass(frozen=True)
class OutputsAtData:
    """The explained outputs and the model's predictions at the data, each
    ``(n_data, n_targets)``."""

    explained: Tensor
    preds: Tensor


@dataclass(frozen=True)
class Explanation:
    """What ``_explain`` computed: values per input layer ``(n_data, *dim, n_targets)``,
    the decomposition goal ``(n_data, n_targets)`` (``None``: the method has none), and
    the outputs at the data when the method ran the model on the data anyway (``None``:
    one more pass over the data computes them)."""

    values: list[Tensor]
    goal: Tensor | None = None
    at_data: OutputsAtData | None = None
    #: The axis names of the values where they differ from the inputs' (e.g. Grad-CAM maps).
    input_names: list[Names] | None = None
    #: Per layer, what it passed on (``keep_layers=True``; see :mod:`~innsight.methods.layer_report`).
    layer_records: Any = None


@dataclass(frozen=True)
class Setup:
    """What a method's ``_explain`` works with, all checked and on one device and dtype."""

    model: ExplainableModel  # on the method's dtype and device
    explained: list[int]  # per output layer, the node explained (see explained_nodes)
    data: list[Tensor]  # per input layer, (n_data, *dim), channels first
    selection: OutputSelection  # the result's columns (the nodes, for node targets)
    batch_size: int
    generator: torch.Generator
    verbose: bool
    channels_first: bool
    #: Per output layer, the node whose value is the prediction; ``None``: the model's outputs.
    predicted: list[int] | None = None
    #: What the columns explain where it is not the nodes of ``selection`` (``targets=``,
    #: ``target_fun=``, ``target_weights=``).
    custom_targets: Targets | None = None
    #: The layer the values are attributed to (``attribute_to``); ``None``: the inputs.
    layer: AttributedLayer | None = None

    @property
    def targets(self) -> Targets:
        """What each column explains (see :mod:`innsight.methods.targets`)."""
        if self.custom_targets is not None:
            return self.custom_targets
        return NodeTargets(tuple(self.selection.targets))

    @property
    def prediction_nodes(self) -> list[int]:
        return self.model.output_nodes if self.predicted is None else self.predicted

    def model_fn(self, inputs: list[Tensor], sample: Tensor | None = None) -> list[Tensor]:
        """The explained outputs (pre-activation with ``ignore_last_act``), one tensor
        ``(rows, *out_dim)`` per output layer, for ``inputs`` ``(rows, *dim)`` per input layer
        made from the data samples ``sample`` ``(rows,)``."""
        return self.model.run_nodes(inputs, self.explained, sample)

    def target_columns(self, inputs: list[Tensor], sample: Tensor) -> Tensor:
        """The explained quantities ``(rows, n_targets)`` at ``inputs`` made from the data
        samples ``sample``, differentiable; from a few units of the output layers where
        the targets pick them (:mod:`~innsight.methods.heads`)."""
        return target_columns(self.model, self.explained, self.targets, inputs, sample)

    def columns_at(self, inputs: list[Tensor], sample: Tensor | None = None) -> Tensor:
        """:meth:`target_columns` without gradients, in chunks of ``batch_size`` rows
        (``sample`` default: row ``i`` is sample ``i``): the logits a target picks, not
        all, for goals and predictions. (Perturbation methods take :meth:`outputs_at`,
        the same numbers to float rounding, whatever the targets.)"""
        return evaluate(lambda xs, rows: [self.target_columns(xs, rows)], inputs,
                        self.batch_size, sample)[0]

    def outputs_at(self, inputs: list[Tensor], sample: Tensor | None = None) -> Tensor:
        """The explained quantities ``(rows, n_targets)`` at ``inputs`` made from the data
        samples ``sample``, without gradients."""
        outputs = evaluate(self.model_fn, inputs, self.batch_size, sample)
        return target_values(outputs, self.targets, sample)

    def mean_outputs_at(self, refs: list[Tensor]) -> Tensor:
        """Per sample, the mean over the rows of ``refs`` (references, per input layer
        ``(n_ref, *dim)``) of the explained quantities: ``(1 or n_data, n_targets)``. A model
        with per-sample arguments runs every (sample, reference) pair."""
        n_data, n_ref = self.data[0].shape[0], refs[0].shape[0]
        if not self.model.per_sample:
            return self.targets.mean_values(evaluate(self.model_fn, refs, self.batch_size),
                                            n_data)
        sums = refs[0].new_zeros(n_data, len(self.targets))
        for rows in row_chunks(n_data * n_ref, self.batch_size):
            row = torch.arange(rows.start, rows.stop, device=sums.device)
            sample = row // n_ref
            sums.index_add_(0, sample, self.outputs_at([r[row % n_ref] for r in refs], sample))
        return sums / n_ref

    def outputs_at_data(self) -> OutputsAtData:
        """The explained outputs and predictions at the data, from one pass."""
        if self.prediction_nodes == self.explained:  # through sparse heads where they fit
            explained = self.columns_at(self.data)
            return OutputsAtData(explained, explained)
        nodes = self.explained + self.prediction_nodes
        at_data = evaluate(lambda xs, sample: self.model.run_nodes(xs, nodes, sample),
                           self.data, self.batch_size)
        sample = torch.arange(self.data[0].shape[0], device=self.data[0].device)
        return OutputsAtData(target_values(at_data[:len(self.explained)], self.targets, sample),
                             target_values(at_data[len(self.explained):], self.targets, sample))

    def prepare_refs(self, value: Any, arg_name: str) -> list[Tensor]:
        """References given like the data (``x_ref``, ``data_ref``), checked, in the space
        the values are attributed to: the layer's activations at them for gradient methods
        attributing to a layer (at zero inputs for ``value=None``)."""
        if self.layer is None or self.layer.lift is None:
            return prepare_like(value, self.data, self.channels_first, arg_name)
        return [self.layer.lift(value, arg_name)]


def is_interactive() -> bool:
    """Whether a person watches: an interactive interpreter or a terminal."""
    return hasattr(sys, "ps1") or bool(getattr(sys.stderr, "isatty", lambda: False)())


def check_positive_int(value: Any, arg_name: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"`{arg_name}` must be a positive int, got {describe(value)}.")
    return int(value)


def make_generator(seed: Any, device: torch.device) -> torch.Generator:
    """A private random generator: seeded when ``seed`` is an int, else from entropy."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    elif is_int(seed):
        generator.manual_seed(int(seed))
    else:
        raise TypeError(f"`seed` must be an int or None, got {describe(seed)}.")
    return generator


def resolve_device(device: Any, default: torch.device) -> torch.device:
    if device is None:
        return default
    try:
        resolved = torch.device(device)
        torch.empty(0, device=resolved)  # fails where the device is not usable
    except (RuntimeError, TypeError, AssertionError) as err:
        raise ValueError(
            f"`device` must name a usable torch device such as 'cpu' or 'cuda', got "
            f"{device!r}: {err}"
        ) from err
    return resolved


#: Every method class by its ``method_name``; a subclass that sets ``method_name``
#: registers itself (and joins the method conformance suite).
METHODS: dict[str, type[InterpretingMethod]] = {}


class InterpretingMethod(Result):
    """Base of every method; see the shared parameters below.

    Parameters
    ----------
    converter : Converter
        The converted model.
    data
        A numpy array, torch tensor or pandas DataFrame ``(n_data, *input_dim)``
        (a single sample may omit the batch axis), or a list of them, one per
        input layer. DataFrame column names become the input names.
    channels_first : bool
        Whether ``data`` is channels first (torch) or channels last (Keras);
        results come back in the same layout.
    output_idx : int, list of int, or list of such per output layer
        Output nodes (flat, 0-based) to explain; default the first 10 of the
        first output layer.
    output_label
        Output nodes chosen by label instead, in the same forms.
    targets : "predicted" or array of int or str, optional
        One output node per sample, one result column: ``"predicted"`` (each sample's
        own top node, the arg-max of the first explained output) or ``(n_data,)`` node
        indices or labels of the first explained output (e.g. the true classes). The
        data frame's ``output_node`` names each sample's node. Not with ``output_idx``
        or ``output_label``.
    target_fun : callable, optional
        Explain ``target_fun(outputs)``, ``(rows,)`` or ``(rows, k)`` (a column each,
        named ``target_fun`` or ``target_fun_1..k``), where ``outputs`` is the list of
        the explained outputs, ``(rows, *dim)`` channels first (pre-activation with
        ``ignore_last_act``): a logit difference, a class summed over a region, a loss.
        Gradient-based, LIME and SHAP methods take any (differentiable) function; the
        rule-based methods take linear targets as ``target_weights`` instead.
    target_weights : array or list of arrays, optional
        Explain weighted sums of output nodes: ``(n_nodes,)`` or ``(k, n_nodes)`` (or an
        output's shape, with or without a leading ``k``; nodes flattened channels
        first) for the first output layer, or a list with one such array (or ``None``)
        per output layer; columns ``target_weights`` or ``target_weights_1..k``. LRP
        starts from ``w * f``, DeepLift from the multipliers ``w``. A sparse torch
        tensor ``(n_nodes,)`` or ``(k, n_nodes)`` (e.g. ``torch.sparse_coo_tensor``)
        picks a few nodes cheaply: the rule-based methods start their walk from its
        entries, with no dense ``(k, n_nodes)`` array (a language model's logits have
        ``tokens x vocab`` nodes).
    output_layer : str, int or list of them, optional
        Explain these layers (names from ``conv.model.layer_names``, or positions in
        it; a module name from ``dict(model.named_modules())`` for the direct torch
        methods) instead of the model's outputs: their values are the explained
        outputs (``ignore_last_act`` does not apply), with generated labels
        ``Y1..``; ``output_idx`` and the targets above choose among their nodes, and
        the predictions and goals are theirs.
    ignore_last_act : bool
        Explain the input of a final activation (e.g. the logits before softmax).
    verbose : bool
        Show a progress bar; default: when running interactively.
    dtype : {"float", "double"}
        Precision of the computation.
    batch_size : int
        Most rows (samples, noisy copies and path points together) sent through
        the model at once; default from a memory budget.
    seed : int
        Makes stochastic methods reproducible.
    device : str or torch.device
        Where to compute, e.g. ``"cuda"``; default the model's device.
    attribute_to : str or int, optional
        A layer name from ``conv.model.layer_names`` (or its position in it):
        attribute to that layer's activations instead of the input (gradient and
        rule-based methods; see :mod:`~innsight.methods.layer_attribution`). The
        values are then shaped like that layer's output ``(n_data, *layer_dim,
        n_targets)``, in the layout of the data. Combines with every way of
        choosing targets above and with ``output_layer`` (the layer must lead to it).
    extra_args : dict or tuple, optional
        The model's non-explained inputs (``attention_mask``, ``token_type_ids``), a
        dict keyed by input name or a tuple in their order, each ``(n_data, *dim)``
        (or one sample for all); left out, an input takes its default (a mask of
        ones). Noisy copies and path points of a sample get that sample's rows.
    keep_embedding_dim : bool
        For token inputs: keep the values per embedding dimension ``(n_data, tokens,
        D, n_targets)`` instead of one per token (their sum, or their 2-norm for
        plain gradients; see :mod:`~innsight.methods.model_inputs`).
    """

    method_name = "InterpretingMethod"
    #: What the values are called on plot axes and legends ("gradient", "relevance", ...).
    value_name = "attribution"
    #: Whether ``data=None`` is allowed (a global method); its predictions are then NaN.
    data_optional = False
    #: Whether the method walks the converted graph's layers (rule-based methods), so
    #: that it cannot explain a raw torch module.
    needs_graph = False
    #: The hyper-parameters worth tuning: ``(type, low, high)`` or a list of choices.
    tunables: ClassVar[dict[str, Any]] = {}
    #: How the method attributes to a layer (``attribute_to``): ``"cut"`` (gradient
    #: methods), ``"walk"`` (rule-based methods) or ``None`` (it cannot).
    layer_attribution: ClassVar[str | None] = None

    @classmethod
    def get_tunables(cls) -> dict[str, Any]:
        """The method's own hyper-parameters with their search ranges: ``{name: (type,
        low, high)}`` or ``{name: [choices]}``; every value in a range is a valid argument,
        e.g. ``ins.SmoothGrad.get_tunables()["noise_level"] == (float, 0.05, 0.95)``."""
        return copy.deepcopy(cls.tunables)

    #: The method's own keyword arguments: those of its ``_explain`` (found once per class).
    own_arg_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.own_arg_names = tuple(name for name in inspect.signature(cls._explain).parameters
                                  if name not in ("self", "setup"))
        if "method_name" in vars(cls):  # shared bases (no name of their own) are no methods
            METHODS[cls.method_name] = cls

    def __init__(
        self,
        converter: Converter,
        data: Any,
        *,
        channels_first: bool = True,
        output_idx: Any = None,
        output_label: Any = None,
        ignore_last_act: bool = True,
        verbose: bool | None = None,
        dtype: str = "float",
        batch_size: int | None = None,
        seed: int | None = None,
        device: Any = None,
        targets: Any = None,
        target_fun: Any = None,
        target_weights: Any = None,
        output_layer: Any = None,
        attribute_to: str | int | None = None,
        extra_args: Any = None,
        keep_embedding_dim: bool = False,
        **own_args: Any,
    ) -> None:
        self._check_own_args(own_args)
        if target_fun is not None and self.needs_graph:
            raise TypeError(
                f"{self.method_name} propagates rules back from the outputs and explains "
                "linear targets only; `target_fun` (a callable) needs a gradient-based, LIME "
                "or SHAP method. Pass the target as `target_weights=` instead: weights over "
                "the output nodes, e.g. +1 and -1 for a logit difference or a mask for a region."
            )
        check_bool(channels_first, "channels_first")
        check_bool(ignore_last_act, "ignore_last_act")
        verbose = is_interactive() if verbose is None else check_bool(verbose, "verbose")
        torch_dtype = resolve_dtype(dtype)
        check_bool(keep_embedding_dim, "keep_embedding_dim")
        model = self._model(converter, data, channels_first, torch_dtype, device)
        torch_device = model.device
        inputs = self._model_inputs(model, data, extra_args, channels_first, torch_dtype)

        without_data = data is None and self.data_optional
        if without_data:
            data = [torch.zeros(1, *user_dim(dim, channels_first))
                    for dim in model.input_dim]  # shapes only
        if inputs is None:
            tensors, columns = prepare_data(data, model.input_dim, channels_first, torch_dtype,
                                            torch_device)
        else:
            tensors, columns = inputs.tensors, inputs.columns
        if without_data and targets is not None:
            raise ValueError(f"`targets` selects an output node per sample and needs data; "
                             f"got data=None and targets={describe(targets)}.")
        if batch_size is not None:
            batch_size = check_positive_int(batch_size, "batch_size")
        explained, chosen = what_to_explain(
            model, tensors, ignore_last_act, output_layer, batch_size, output_idx=output_idx,
            output_label=output_label, targets=targets, target_fun=target_fun,
            target_weights=target_weights)
        selection = chosen.selection
        if batch_size is None:
            batch_size = default_batch_size(model.input_dim, len(chosen.targets),
                                            torch_dtype.itemsize)
        setup = Setup(
            model=model,
            explained=explained,
            data=tensors,
            selection=selection,
            batch_size=batch_size,
            generator=make_generator(seed, torch_device),
            verbose=verbose,
            channels_first=channels_first,
            predicted=explained if output_layer is not None or chosen.at_explained else None,
            custom_targets=None if isinstance(chosen.targets, NodeTargets) else chosen.targets,
        )
        if attribute_to is not None:
            if self.layer_attribution is None:
                raise ValueError(f"{self.method_name} cannot attribute to a layer; got "
                                 f"`attribute_to`={attribute_to!r}.")
            node = layer_node(setup.model, attribute_to, setup.explained, "attribute_to")
            setup = at_layer(setup, node, cut=self.layer_attribution == "cut")
        elif inputs is not None:
            converted = model
            setup = at_layer(setup, inputs.start, cut=self.layer_attribution == "cut",
                             lift=lambda value, arg_name: inputs.lift(
                                 converted, value, arg_name, channels_first))
        self.converter = converter
        #: What the method ran with (model, explained nodes, data, batch size): the metrics
        #: (:mod:`innsight.metrics`) evaluate the model and re-run ``_explain`` through it.
        self.setup = setup
        explanation = self._explain(setup, **own_args)
        values = explanation.values
        if without_data:  # no data, no predictions: nothing is run for them
            preds = tensors[0].new_full((1, len(selection.targets)), float("nan"))
        else:
            preds = (explanation.at_data or setup.outputs_at_data()).preds
        input_names = explanation.input_names or [
            [cols] if cols is not None and len(names) == 1 else names
            for cols, names in zip(columns, model.input_names)
        ]
        layer = setup.layer
        # Values per token ``(tokens, D)`` have no channels axis to move (Keras' or torch's).
        per_token_values = inputs is not None and attribute_to is None and inputs.tokens
        if inputs is not None and attribute_to is None:  # reported per input, not per layer
            input_names, tensors = [model.input_names[inputs.k]], [inputs.tensors[inputs.k]]
            if inputs.tokens and keep_embedding_dim:
                width = values[0].shape[-2]
                input_names = [[*input_names[0], [f"E{i + 1}" for i in range(width)]]]
            elif inputs.tokens:
                values = [per_token(values[0], self.token_reduction(own_args))]
            tensors, layer = [tensors[0].to(torch_dtype)], None
        elif layer is not None:
            input_names, tensors = [layer.names], [layer.activations]
        goal = explanation.goal
        super().__init__(
            method=self.method_name,
            value_name=self.value_name,
            args=own_args,
            values=split_by_output(values, selection),
            output_idx=selection.indices,
            output_labels=selection.labels,
            input_names=input_names,
            channels_first=channels_first or per_token_values,
            preds=selection.split(preds),
            decomp_goal=None if goal is None else selection.split(goal),
            data=None if without_data else tensors,
            sample_nodes=chosen.targets.sample_labels,
            attributed_to=None if layer is None else layer.name,
            token_grid=None if layer is None or layer.grid is None or layer.grid.token_axis is None
            else layer.grid,
            layer_records=explanation.layer_records,
        )

    def token_reduction(self, own_args: dict[str, Any]) -> str:
        """How values at an embedding become one per token: ``"sum"`` for values that
        add up to a goal (the default), ``"norm"`` for plain gradients."""
        return "sum"

    def _model_inputs(self, model: Any, data: Any, extra_args: Any, channels_first: bool,
                      dtype: torch.dtype) -> ModelInputs | None:
        """The inputs of a model with token ids or non-explained inputs (see
        :mod:`~innsight.methods.model_inputs`), ``None`` for other models."""
        if not needs_start(model):
            if extra_args is not None and not isinstance(model, TorchModule):
                raise ValueError("`extra_args` passes the model's non-explained inputs, but "
                                 "this model has none; got extra_args="
                                 f"{describe(extra_args)}.")
            return None
        if self.layer_attribution is None:
            raise ValueError(
                f"{self.method_name} cannot explain a model with token ids or non-explained "
                "inputs (masks): it needs inputs it can vary or weights back to them; use "
                "Gradient, SmoothGrad, IntegratedGradient, ExpectedGradient, DeepLift, "
                "DeepSHAP or LRP, which explain the embedding output per token.")
        return ModelInputs.build(model, data, extra_args, channels_first, dtype, model.device)

    def _check_own_args(self, own_args: dict[str, Any]) -> None:
        """Refuse keywords that are neither shared nor this method's own, by name."""
        own = list(self.own_arg_names)
        unknown = sorted(set(own_args) - set(own))
        if unknown:
            shared = [p.name for p in inspect.signature(InterpretingMethod.__init__).parameters
                      .values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
            raise TypeError(
                f"{type(self).__name__} got unexpected argument(s) {unknown}; its own "
                f"arguments are {own} and the shared ones {shared}."
            )

    def _model(self, converter: Any, data: Any, channels_first: bool, dtype: torch.dtype,
               device: Any) -> ExplainableModel:
        """The model to explain on ``dtype`` and ``device``: a converted model (a copy
        where they differ), or a raw torch module (the direct ``torch_*`` methods)."""
        if isinstance(converter, TorchModule) and not self.needs_graph:
            return converter  # built by the torch_* function on this dtype
        if not isinstance(converter, Converter):
            raise TypeError(
                f"`converter` must be an innsight Converter (from ins.convert(model, ...)), "
                f"got {describe(converter)}."
            )
        model = converter.model
        torch_device = resolve_device(device, model.device)
        if model.dtype != dtype or model.device != torch_device:
            model = copy.deepcopy(model).to(dtype=dtype, device=torch_device)
        return model

    def _explain(self, setup: Setup, **own_args: Any) -> Explanation:
        """The values, their goal and (where computed in passing) the outputs at the data."""
        raise NotImplementedError


def what_to_explain(model: ExplainableModel, data: list[Tensor], ignore_last_act: bool,
                    output_layer: Any, batch_size: int | None,
                    **target_args: Any) -> tuple[list[int], ChosenTargets]:
    """The explained nodes (per output layer: the model's outputs, or the layers
    ``output_layer`` names) and what the columns explain among them (``target_args``:
    ``output_idx``, ``output_label``, ``targets``, ``target_fun``, ``target_weights``)."""
    if output_layer is None:
        explained, names = model.explained_nodes(ignore_last_act), model.output_names
    else:
        explained, names = model.layer_outputs(output_layer)
    rows = batch_size or default_batch_size(model.input_dim, 1, data[0].dtype.itemsize)
    first = torch.zeros(1, dtype=torch.long, device=data[0].device)
    chosen = choose_targets(
        names, **target_args, n_data=data[0].shape[0],
        outputs_at_data=lambda: evaluate(
            lambda xs, sample: model.run_nodes(xs, explained, sample), data, rows),
        outputs_at_first=lambda: model.run_nodes([x[:1] for x in data], explained, first),
        like=data[0] if data[0].is_floating_point() else data[0].to(model.dtype))
    return explained, chosen


def split_by_output(values: list[Tensor], selection: OutputSelection) -> list[list[Tensor] | None]:
    """Per input layer ``(n, *dim, n_targets)`` into ``[output layer][input layer]`` blocks."""
    per_input = [selection.split(v) for v in values]
    return [
        [blocks[o] for blocks in per_input] if indices else None
        for o, indices in enumerate(selection.indices)
    ]


M = TypeVar("M", bound=InterpretingMethod)


def runner(cls: type[M], name: str) -> Callable[..., M]:
    """The ``run_*`` function ``name`` of a method class: it takes the class's arguments
    (its signature and docs are the class's) and returns the method's result."""

    def run(*args: Any, **kwargs: Any) -> M:
        return cls(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__module__ = cls.__module__
    run.__doc__ = (f"Run :class:`{cls.__name__}` and return its result (the method object).\n\n"
                   f"{inspect.getdoc(cls)}\n\n{SHARED_HEADING}\n{shared_parameters(cls)}")
    run.__signature__ = method_signature(cls)  # type: ignore[attr-defined]
    return run


SHARED_HEADING = "Shared parameters (every method)\n--------------------------------"


def shared_parameters(cls: type[InterpretingMethod]) -> str:
    """The parameters sections of the docs of ``cls``'s bases down to
    :class:`InterpretingMethod` (e.g. LIME's ``model`` and ``pred_fun``, then the
    arguments of every method), which ``run_*`` docstrings end with."""
    bases = cls.__mro__[1:cls.__mro__.index(InterpretingMethod) + 1]
    sections = [(inspect.getdoc(base) or "").partition("----------\n")[2] for base in bases]
    return "\n".join(section.split("\n\n")[0] for section in sections if section)


def method_signature(cls: type[InterpretingMethod]) -> inspect.Signature:
    """The whole signature of a method class: its positional arguments, then its own and
    every base's keyword arguments down to the shared ones of :class:`InterpretingMethod`."""
    inits = [vars(klass)["__init__"] for klass in
             cls.__mro__[:cls.__mro__.index(InterpretingMethod) + 1] if "__init__" in vars(klass)]
    positional = [param for param in list(inspect.signature(inits[0]).parameters.values())[1:]
                  if param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    keywords: dict[str, inspect.Parameter] = {}
    for init in inits:
        for param in inspect.signature(init).parameters.values():
            if param.kind is inspect.Parameter.KEYWORD_ONLY:
                keywords.setdefault(param.name, param)
    return inspect.Signature([*positional, *keywords.values()],
                             return_annotation=cls.__name__)
