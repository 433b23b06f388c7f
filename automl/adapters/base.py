"""The adapter interface: a symbolic fine-tuning method applied to selected ``nn.Linear`` layers.

An :class:`Adapter` is a ``pg.Object``: it *is* the configuration (no registry). ``apply`` freezes
the model and swaps each targeted linear layer for an :class:`AdapterLayer`; every adapter layer
merges into its base weight (zero inference overhead) and unmerges exactly.
"""
from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import Iterable

import pyglove as pg
import torch
from safetensors.torch import save_file
from torch import nn

from automl.adapters.rsvd import randomized_svd
from automl.constraints import RANK
from automl.errors import SearchSpaceError

ALL_LINEAR = "all-linear"


def select_linears(model: nn.Module, targets: str | Iterable[str], within: Iterable[str] | None = None) -> list[str]:
    """Names of the ``nn.Linear`` modules of ``model`` selected by ``targets``.

    Follows PEFT's ``target_modules``: ``"all-linear"`` selects every linear layer (those of
    ``within`` when given: a task's adaptable layers, as PEFT leaves out the output layer); a tuple of
    names selects the layers whose dotted name equals a name or ends with ``"." + name``; any
    other single string is a regular expression that must match the whole dotted name.
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if isinstance(targets, str):
        if targets == ALL_LINEAR:
            chosen = linears if within is None else [n for n in linears if n in set(within)]
        else:
            try:
                pattern = re.compile(targets)
            except re.error as e:
                raise SearchSpaceError(f"targets {targets!r} is not a valid regular expression ({e}); "
                                       f"use a tuple of layer names or 'all-linear'.") from e
            chosen = [n for n in linears if pattern.fullmatch(n)]
    else:
        names = tuple(targets)
        if not names or not all(isinstance(t, str) for t in names):
            raise SearchSpaceError(f"targets must be 'all-linear', a regex, or a non-empty tuple of "
                                   f"layer names; got {targets!r}.")
        unknown = [t for t in names if not any(n == t or n.endswith("." + t) for n in linears)]
        if unknown:
            raise SearchSpaceError(f"target pattern(s) {unknown} match no linear layer; "
                                   f"the model's linear layers are {linears}.")
        chosen = [n for n in linears if any(n == t or n.endswith("." + t) for t in names)]
    if not chosen:
        raise SearchSpaceError(f"targets {targets!r} match no linear layer; "
                               f"the model's linear layers are {linears}.")
    return chosen


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def check_rank(rank: int, name: str, linear: nn.Linear) -> None:
    """A rank must lie in ``[1, min(in, out)]`` of the layer it adapts."""
    limit = min(linear.in_features, linear.out_features)
    if not 1 <= rank <= limit:
        raise SearchSpaceError(f"rank {rank} does not fit layer {name!r} "
                               f"({linear.out_features}×{linear.in_features}): "
                               f"choose a rank in [1, {limit}].")


def principal_svd(weight: torch.Tensor, rank: int,
                  niter: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-``rank`` singular triplets of ``weight`` in float32: ``U_r`` (out × r), ``S_r`` (r),
    ``Vh_r`` (r × in), with ``U_r diag(S_r) Vh_r`` the best rank-r approximation (Eckart–Young).

    ``niter=None`` takes the exact thin SVD (``torch.linalg.svd``); an integer runs Halko et al.'s
    randomized SVD with ``niter`` subspace iterations (:func:`automl.adapters.rsvd.randomized_svd`)
    — PiSSA's fast initialisation (PiSSA §3; the algorithm of peft ``init_lora_weights=
    "pissa_niter_N"``, with an oversampled sketch and fewer passes over ``W``).
    """
    w = weight.detach().float()
    if niter is None:
        if w.shape[0] < w.shape[1]:  # LAPACK is ~2× faster on the tall side: W = (Wᵀ)ᵀ
            v, s, uh = torch.linalg.svd(w.t(), full_matrices=False)
            return uh[:rank].t(), s[:rank], v[:, :rank].t()
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank]
    return randomized_svd(w, rank, niter)


def trainable_parameters(model: nn.Module) -> int:
    """Number of scalars the optimizer updates."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class AdapterLayer(nn.Module, abc.ABC):
    """A frozen ``base`` linear layer plus trainable adapter state.

    Subclasses define :meth:`merged_weight` (the effective weight, used for merging and spectral
    analysis) and :meth:`adapter_forward` (the forward pass while unmerged). Merging writes the
    effective weight into ``base.weight`` and keeps the original for an exact unmerge.
    """

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self._original: torch.Tensor | None = None

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def merged(self) -> bool:
        return self._original is not None

    @abc.abstractmethod
    def merged_weight(self) -> torch.Tensor:
        """The effective weight ``W'`` (out × in) this layer computes with."""

    @abc.abstractmethod
    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the unmerged layer for input ``x``."""

    @abc.abstractmethod
    def trained_state(self) -> dict[str, torch.Tensor]:
        """The minimal tensors that export this layer's trained adapter, by short name."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        return self.adapter_forward(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Write the effective weight into ``base.weight`` (idempotent)."""
        if self.merged:
            return
        merged = self.merged_weight().detach().to(self.base.weight.dtype)
        self._original = self.base.weight.detach().clone()
        self.base.weight.copy_(merged)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weight exactly as it was before :meth:`merge`."""
        if not self.merged:
            return
        self.base.weight.copy_(self._original)
        self._original = None

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` with the merged weight (what is deployed)."""
        with torch.no_grad():
            weight = self.merged_weight().detach() if not self.merged else self.base.weight.detach()
            out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                            device=weight.device, dtype=self.base.weight.dtype)
            out.weight.copy_(weight)
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def merge_adapters(model: nn.Module) -> nn.Module:
    """Replace every :class:`AdapterLayer` of ``model`` (in place) by its merged ``nn.Linear``.

    The result has the base model's module names and parameter shapes, so its state dict can be
    compared with, or merged with, the pretrained one.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, AdapterLayer):
            replace_module(model, name, module.to_linear())
    return model


class Adapter(pg.Object):
    """A fine-tuning method: which layers it adapts and how.

    :meth:`plan` chooses the layers (and a rank per layer, for ranked adapters) on the pretrained
    model; :meth:`apply` freezes every parameter, then wraps each planned layer with :meth:`wrap`
    (one linear layer → its adapter layer). The plan is computed once per fit and handed to
    ``apply`` for each subtask model; nothing is stored on the adapter (the configuration).
    """

    targets: str | tuple | list = ALL_LINEAR

    @property
    def label(self) -> str:
        """Short stable name shown in leaderboards."""
        return type(self).__name__

    @abc.abstractmethod
    def wrap(self, name: str, linear: nn.Linear, rank: int | None = None) -> nn.Module:
        """The adapter layer that replaces ``linear`` (named ``name``) at ``rank`` (ranked adapters)."""

    def plan(self, model: nn.Module, within: Iterable[str] | None = None) -> dict[str, int | None]:
        """The layers of (pretrained) ``model`` this adapter changes → their rank (None if unranked).

        ``within``: the layers ``targets="all-linear"`` means (a task's adaptable layers, e.g. a
        transformer's blocks without its head); explicit names or a regex select among all
        linear layers."""
        return {name: None for name in select_linears(model, self.targets, within)}

    def adapted_layers(self, model: nn.Module, within: Iterable[str] | None = None) -> list[str]:
        """Names of the linear layers of ``model`` this adapter changes."""
        return list(self.plan(model, within))

    def apply(self, model: nn.Module, plan: dict[str, int | None] | None = None) -> nn.Module:
        """Adapt ``model`` in place by ``plan`` (default: :meth:`plan` of ``model``) and return it;
        only the adapter's parameters stay trainable."""
        plan = self.plan(model) if plan is None else plan
        for p in model.parameters():
            p.requires_grad_(False)
        for name, layer in self.wrap_layers(model, plan).items():
            replace_module(model, name, layer)
        return model

    def wrap_layers(self, model: nn.Module, plan: dict[str, int | None]) -> dict[str, nn.Module]:
        """The adapter layer of every layer of ``plan``, by name: :meth:`wrap` one layer at a time
        (an adapter whose layers share work, e.g. a batched initialisation, overrides this)."""
        return {name: self.wrap(name, model.get_submodule(name), rank) for name, rank in plan.items()}

    def penalty(self, model: nn.Module) -> torch.Tensor | float:
        """A regulariser added to the training loss (0 unless the method defines one)."""
        return 0.0

    def trained_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors that export the trained adapter, named ``<layer>.<tensor>``, read from the
        adapted, unmerged ``model`` (detached; on the model's device)."""
        state: dict[str, torch.Tensor] = {}
        for name, module in model.named_modules():
            if isinstance(module, AdapterLayer):
                for key, tensor in module.trained_state().items():
                    state[f"{name}.{key}"] = tensor.detach()
        return state

    def export(self, trained_state: dict[str, torch.Tensor], base_model: nn.Module, path: Path) -> None:
        """Write the trained adapter under ``path``: the merged weights of the adapted layers in
        the base model's state dict (``model.safetensors``). LoRA-family adapters write peft's
        format instead."""
        from automl.export import FULL_WEIGHTS, merged_state_dict
        save_file(merged_state_dict(trained_state, base_model), str(path / FULL_WEIGHTS), metadata={"format": "pt"})


@pg.members([("rank", RANK.set_default(8), "rank of every adapted layer (typed: each pg.oneof candidate is checked)")])
class RankedAdapter(Adapter):
    """An adapter with a rank per layer: ``rank`` everywhere, or, with ``ranks`` (e.g.
    :class:`automl.adapters.WeLoreRanks`, or any ``pg.Object`` with a method
    ``ranks(model, layers, rank) -> {layer: rank}``), sized per layer — layers it leaves out
    stay frozen."""

    rank: int = 8
    ranks: pg.Object | None = None

    def layer_ranks(self, model: nn.Module, within: Iterable[str] | None = None) -> dict[str, int]:
        """The rank of every adapted layer of (pretrained) ``model``."""
        names = select_linears(model, self.targets, within)
        if self.ranks is None:
            return {n: self.layer_rank(n, model.get_submodule(n)) for n in names}
        return self.ranks.ranks(model, names, self.rank)

    def layer_rank(self, name: str, linear: nn.Linear) -> int:
        """The uniform rank of layer ``name`` (a hook for per-layer rank rules)."""
        return self.rank

    def plan(self, model: nn.Module, within: Iterable[str] | None = None) -> dict[str, int | None]:
        plan = self.layer_ranks(model, within)
        for name, rank in plan.items():
            check_rank(rank, name, model.get_submodule(name))
        return plan

    def rank_for(self, name: str, linear: nn.Linear, rank: int | None) -> int:
        """``rank`` from the plan (or the adapter's own when wrapping outside a plan), checked."""
        rank = self.layer_rank(name, linear) if rank is None else rank
        check_rank(rank, name, linear)
        return rank
