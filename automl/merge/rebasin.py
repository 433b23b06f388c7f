"""Git Re-Basin weight matching (Ainsworth, Hayase & Srinivasa, ICLR 2023, §3.2 and Alg. 1).

Hidden units of a network can be permuted without changing its function: permuting the rows
(and bias) of the layer that produces them and the columns of the layer that reads them. Two
independently trained models are aligned by the permutations ``π`` maximising
``Σ_ℓ ⟨W_ℓ^a, P_ℓ W_ℓ^b P_{ℓ−1}ᵀ⟩`` — solved by coordinate descent: in random order, each ``P_ℓ``
is a linear assignment problem (``scipy.optimize.linear_sum_assignment``) with the others fixed,
until a sweep improves none (reference: ``samuela/git-re-basin``, ``src/weight_matching.py``).

The permutation spec (which tensor axes each permutation acts on) is derived from the model's
structure: chains of ``nn.Linear`` with elementwise activations (an ``nn.Sequential``, or a
state dict whose consecutive 2-D weights connect), and transformer feed-forward hidden units
(``linear1``/``linear2`` of ``nn.TransformerEncoderLayer``, BERT's ``intermediate.dense``/
``output.dense``, ``fc1``/``fc2``, LLaMA's ``gate_proj``+``up_proj``/``down_proj``).
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from automl.adapters.base import AdapterLayer
from automl.errors import SearchSpaceError
from automl.merge.base import MergeMethod, check_compatible, check_deltas
from automl.merge.diagnostics import loss_barrier, singular_alignment, singular_value_change
from automl.merge.factored import LowRankDelta
from automl.merge.linear import Linear

ELEMENTWISE = (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.Mish,
               nn.Hardtanh, nn.ReLU6, nn.Identity, nn.Dropout)
# (layers producing the hidden units, layer reading them), by attribute / state-dict name
FFN_PAIRS = ((("linear1",), "linear2"), (("fc1",), "fc2"), (("intermediate.dense",), "output.dense"),
             (("up_proj", "gate_proj"), "down_proj"))
Axes = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class PermutationSpec:
    """Each permutation (named by the layer producing the hidden units) → the ``(tensor, axis)``
    pairs it acts on (git-re-basin's ``perm_to_axes``)."""

    perm_to_axes: dict[str, Axes]

    def axes_to_perm(self) -> dict[str, dict[int, str]]:
        """Tensor name → {axis: permutation name}."""
        out: dict[str, dict[int, str]] = {}
        for p, axes in self.perm_to_axes.items():
            for key, axis in axes:
                out.setdefault(key, {})[axis] = p
        return out

    def sizes(self, state: dict[str, torch.Tensor]) -> dict[str, int]:
        """Number of hidden units of each permutation; every axis it acts on must agree."""
        sizes = {}
        for p, axes in self.perm_to_axes.items():
            for key, axis in axes:
                if key not in state:
                    raise SearchSpaceError(f"permutation {p!r} acts on tensor {key!r}, which the state dict lacks.")
                n = state[key].shape[axis]
                if sizes.setdefault(p, n) != n:
                    raise SearchSpaceError(f"tensor {key!r} has {n} entries on axis {axis}, but permutation {p!r} "
                                           f"has {sizes[p]} hidden units; the layers do not connect.")
        return sizes


def _chain_axes(layers: list[tuple[str, int, int, bool]]) -> dict[str, Axes]:
    """Permutations of a chain ``[(layer name, out, in, has bias)]``: the outputs of every layer
    but the last are permuted, with the next layer's inputs."""
    perms = {}
    for (name, out_features, _, bias), (nxt, _, in_features, _) in zip(layers, layers[1:]):
        if out_features != in_features:
            raise SearchSpaceError(f"tensor {nxt + '.weight'!r} takes {in_features} inputs but {name + '.weight'!r} "
                                   f"gives {out_features} outputs: not a chain of linear layers, so weight matching "
                                   f"cannot derive its permutations.")
        axes = ((f"{name}.weight", 0),) + (((f"{name}.bias", 0),) if bias else ()) + ((f"{nxt}.weight", 1),)
        perms[name] = axes
    return perms


def chain_spec_from_state(state: dict[str, torch.Tensor]) -> PermutationSpec:
    """The spec of an MLP chain from a state dict's key order: each layer is a 2-D ``weight``
    (out × in) with an optional 1-D ``bias`` (permuted with the rows), and layer ``i``'s outputs
    feed layer ``i+1``. Any other tensor raises :class:`SearchSpaceError` naming it."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = tensor
    layers = []
    for prefix, tensors in groups.items():
        weight = tensors.get("weight")
        for leaf, t in tensors.items():
            ok = (leaf == "weight" and t.dim() == 2) or (
                leaf == "bias" and weight is not None and weight.dim() == 2 and tuple(t.shape) == (weight.shape[0],))
            if not ok:
                key = f"{prefix}.{leaf}" if prefix else leaf
                raise SearchSpaceError(
                    f"tensor {key!r} (shape {tuple(t.shape)}) is not the weight or bias of a linear layer: "
                    f"from a state dict, weight matching permutes chains of linear layers (or transformer FFNs "
                    f"named {[p[0][0] + '/' + p[1] for p in FFN_PAIRS]}); align such models as nn.Modules with "
                    f"WeightMatching().align or merge them without weight matching.")
        layers.append((prefix, weight.shape[0], weight.shape[1], "bias" in tensors))
    if len(layers) < 2:
        raise SearchSpaceError(f"the state dict has {len(layers)} linear layer(s); weight matching needs a chain of "
                               f"at least 2 to have hidden units to permute.")
    return PermutationSpec(_chain_axes(layers))


def ffn_spec_from_state(state: dict[str, torch.Tensor]) -> PermutationSpec:
    """The spec of the transformer FFN hidden units found by name (see ``FFN_PAIRS``)."""
    perms = {}
    for ups, down in FFN_PAIRS:
        suffix = f"{ups[0]}.weight"
        for key in state:
            if not (key == suffix or key.endswith("." + suffix)):
                continue
            prefix = key[: -len(suffix)]
            down_key = f"{prefix}{down}.weight"
            if down_key not in state or state[key].dim() != 2 or state[down_key].dim() != 2 \
                    or state[key].shape[0] != state[down_key].shape[1]:
                continue
            axes: list[tuple[str, int]] = []
            for up in ups:
                for leaf in ("weight", "bias"):
                    if f"{prefix}{up}.{leaf}" in state:
                        axes.append((f"{prefix}{up}.{leaf}", 0))
            axes.append((down_key, 1))
            perms[f"{prefix}{ups[0]}"] = tuple(axes)
    return PermutationSpec(perms)


def spec_from_state(state: dict[str, torch.Tensor]) -> PermutationSpec:
    """An MLP chain's spec if the state dict is one, else its transformer FFNs' by name; with
    neither, the chain's error (naming the first tensor that is no linear layer's)."""
    try:
        return chain_spec_from_state(state)
    except SearchSpaceError:
        spec = ffn_spec_from_state(state)
        if spec.perm_to_axes:
            return spec
        raise


def _has_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def _first_tensor(prefix: str, module: nn.Module) -> str:
    names = [n for n, _ in module.named_parameters()] + [n for n, _ in module.named_buffers()]
    return f"{prefix}{names[0]}" if names else prefix.rstrip(".")


def _visit(module: nn.Module, prefix: str, perms: dict[str, Axes]) -> None:
    if isinstance(module, AdapterLayer):
        raise SearchSpaceError(f"layer {prefix.rstrip('.')!r} is an unmerged {type(module).__name__}: merge the "
                               f"adapters first (automl.adapters.merge_adapters) to weight-match plain linear layers.")
    children = list(module.named_children())
    if isinstance(module, nn.Sequential):
        linear_at = [i for i, (_, c) in enumerate(children) if isinstance(c, nn.Linear)]
        between = children[linear_at[0] + 1: linear_at[-1]] if len(linear_at) >= 2 else []
        blocks = [c for _, c in between if not isinstance(c, (nn.Linear, *ELEMENTWISE)) and _has_linear(c)]
        if len(linear_at) >= 2 and not blocks:
            for name, child in between:
                if not isinstance(child, (nn.Linear, *ELEMENTWISE)):
                    raise SearchSpaceError(
                        f"tensor {_first_tensor(f'{prefix}{name}.', child)!r} belongs to a {type(child).__name__} "
                        f"between linear layers; weight matching cannot permute a {type(child).__name__} (only "
                        f"linear layers with elementwise activations {[c.__name__ for c in ELEMENTWISE]}).")
            layers = [(f"{prefix}{n}", c.out_features, c.in_features, c.bias is not None)
                      for n, c in children if isinstance(c, nn.Linear)]
            perms.update(_chain_axes(layers))
            return
    handled: set[str] = set()
    for ups, down in FFN_PAIRS:
        up_modules = [(u, module.get_submodule(u)) for u in ups if _has_path(module, u)]
        if not up_modules or up_modules[0][0] != ups[0] or not _has_path(module, down):
            continue
        down_module = module.get_submodule(down)
        mods = [m for _, m in up_modules] + [down_module]
        if not all(isinstance(m, nn.Linear) for m in mods) or any(
                m.out_features != down_module.in_features for m in mods[:-1]):
            continue
        axes: list[tuple[str, int]] = []
        for u, m in up_modules:
            axes.append((f"{prefix}{u}.weight", 0))
            if m.bias is not None:
                axes.append((f"{prefix}{u}.bias", 0))
        axes.append((f"{prefix}{down}.weight", 1))
        perms[f"{prefix}{ups[0]}"] = tuple(axes)
        handled.update(u.split(".")[0] for u, _ in up_modules)
        handled.add(down.split(".")[0])
    for name, child in children:
        if name not in handled:
            _visit(child, f"{prefix}{name}.", perms)


def _has_path(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def spec_from_module(model: nn.Module) -> PermutationSpec:
    """The spec of every permutable group of hidden units in ``model`` (chains in
    ``nn.Sequential`` of linear layers and elementwise activations, transformer FFNs)."""
    perms: dict[str, Axes] = {}
    _visit(model, "", perms)
    if not perms:
        first = next(iter(model.state_dict()), "(none)")
        raise SearchSpaceError(
            f"found no hidden units to permute in {type(model).__name__} (first tensor {first!r}): weight matching "
            f"permutes nn.Sequential chains of nn.Linear with elementwise activations and transformer FFNs "
            f"({[p[0][0] + '/' + p[1] for p in FFN_PAIRS]}).")
    return PermutationSpec(perms)


def _permute(tensor: torch.Tensor, axes: dict[int, str], perm: dict[str, torch.Tensor],
             skip: int | None = None) -> torch.Tensor:
    for axis, p in axes.items():
        if axis != skip:
            tensor = tensor.index_select(axis, perm[p].to(tensor.device))
    return tensor


def permute_state(spec: PermutationSpec, perm: dict[str, torch.Tensor],
                  state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every permuted axis reindexed, ``t' = t.index_select(axis, π)``; tensors the
    spec does not touch are kept as they are."""
    axes_to_perm = spec.axes_to_perm()
    return {key: _permute(tensor, axes_to_perm.get(key, {}), perm) for key, tensor in state.items()}


def weight_matching(spec: PermutationSpec, params_a: dict[str, torch.Tensor], params_b: dict[str, torch.Tensor],
                    max_iter: int = 100, seed: int = 0) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations ``π`` (index tensors) such that ``permute_state(spec, π, params_b)`` best matches
    ``params_a`` (Alg. 1), and the number of sweeps run (the last one improving nothing, unless
    ``max_iter`` stopped it). Sweeps visit the permutations in an order drawn from ``seed``."""
    sizes = spec.sizes(params_a)
    keys = {k for axes in spec.perm_to_axes.values() for k, _ in axes}
    a = {k: params_a[k].detach().to("cpu", torch.float64) for k in keys}
    b = {k: params_b[k].detach().to("cpu", torch.float64) for k in keys}
    names = list(spec.perm_to_axes)
    axes_to_perm = spec.axes_to_perm()
    perm = {p: torch.arange(sizes[p]) for p in names}
    order = np.random.default_rng(seed)
    for sweep in range(1, max_iter + 1):
        progress = False
        for i in order.permutation(len(names)):
            p, n = names[i], sizes[names[i]]
            similarity = torch.zeros(n, n, dtype=torch.float64)
            for key, axis in spec.perm_to_axes[p]:
                w_b = _permute(b[key], axes_to_perm[key], perm, skip=axis)
                similarity += a[key].movedim(axis, 0).reshape(n, -1) @ w_b.movedim(axis, 0).reshape(n, -1).t()
            from scipy.optimize import linear_sum_assignment  # scipy only when a merge aligns
            _, cols = linear_sum_assignment(similarity.numpy(), maximize=True)
            cols = torch.from_numpy(cols)
            rows = torch.arange(n)
            old, new = float(similarity[rows, perm[p]].sum()), float(similarity[rows, cols].sum())
            progress = progress or new > old + 1e-12 * max(1.0, abs(old))
            perm[p] = cols
        if not progress:
            return perm, sweep
    return perm, max_iter


@dataclass(frozen=True)
class Matching:
    """The permutations (and sweeps) that aligned state dict ``other`` to ``reference``, kept with
    weak references to both dicts' tensors and their versions: :meth:`is_for` tells the same,
    unmodified pair again without holding the models in memory."""

    tensors: tuple[tuple[str, weakref.ref, int], ...]
    spec: PermutationSpec
    perm: dict[str, torch.Tensor]
    sweeps: int

    @staticmethod
    def _identity(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> list[tuple]:
        return [(k, t) for state in (reference, other) for k, t in state.items()]

    @classmethod
    def of(cls, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor], spec: PermutationSpec,
           perm: dict[str, torch.Tensor], sweeps: int) -> "Matching":
        tensors = tuple((k, weakref.ref(t), t._version) for k, t in cls._identity(reference, other))
        return cls(tensors, spec, perm, sweeps)

    def is_for(self, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> bool:
        """Whether ``reference`` and ``other`` hold the very tensors matched, unchanged since."""
        pairs = self._identity(reference, other)
        return len(pairs) == len(self.tensors) and all(
            key == k and ref() is t and version == t._version
            for (key, ref, version), (k, t) in zip(self.tensors, pairs))


class WeightMatching(MergeMethod):
    """Align every model to the first by weight matching, then merge them with ``then``.

    Needed when the models were trained independently (different seeds): after alignment the
    linear path between them has a (near) zero loss barrier (Ainsworth et al., 2023, §5).
    """

    then: MergeMethod = Linear()
    max_iter: int = 100
    seed: int = 0

    @property
    def uses_base(self) -> bool:  # type: ignore[override]
        """Whether ``then`` reads the base (task-vector merges)."""
        return bool(getattr(self.then, "uses_base", False))

    def _on_bound(self) -> None:
        super()._on_bound()
        if isinstance(self.max_iter, int) and self.max_iter < 1:
            raise SearchSpaceError(f"WeightMatching.max_iter must be at least 1, got {self.max_iter}.")

    def check_count(self, n: int) -> None:
        if isinstance(self.then, MergeMethod):
            self.then.check_count(n)

    def match(self, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
              spec: PermutationSpec | None = None) -> tuple[dict[str, torch.Tensor], int]:
        """The permutations aligning state dict ``other`` to ``reference``, and the sweeps run."""
        check_compatible(reference, [other])
        spec = spec or spec_from_state(reference)
        return weight_matching(spec, reference, other, self.max_iter, self.seed)

    def align_state(self, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor],
                    spec: PermutationSpec | None = None) -> dict[str, torch.Tensor]:
        """``other`` with its hidden units permuted to match ``reference``."""
        spec = spec or spec_from_state(reference)
        perm, _ = self.match(reference, other, spec)
        return permute_state(spec, perm, other)

    def align(self, reference: nn.Module, other: nn.Module) -> nn.Module:
        """A permuted copy of ``other`` that computes the same function, matched to ``reference``."""
        spec = spec_from_module(reference)
        aligned = copy.deepcopy(other)
        aligned.load_state_dict(self.align_state(reference.state_dict(), other.state_dict(), spec))
        return aligned

    def matching(self, reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> Matching:
        """The weight matching of ``other`` to ``reference``: the one the last merge computed for
        this pair (its first two models) when the tensors are the same and unchanged, else a new one."""
        last = getattr(self, "_last_matching", None)
        if last is not None and last.is_for(reference, other):
            return last
        spec = spec_from_state(reference)
        return Matching.of(reference, other, spec, *self.match(reference, other, spec))

    def merge_models(self, base: dict[str, torch.Tensor],
                     models: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Align ``models[1:]`` to ``models[0]``, then ``then.merge(base, aligned)``. The matching
        of ``models[1]`` is kept for :meth:`diagnose`."""
        spec = spec_from_state(models[0])
        matches = [self.match(models[0], m, spec) for m in models[1:]]
        self._last_matching = Matching.of(models[0], models[1], spec, *matches[0])
        aligned = [models[0]] + [permute_state(spec, perm, m) for (perm, _), m in zip(matches, models[1:])]
        return self.then.merge(base, aligned)

    def diagnose(self, model: nn.Module, state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor],
                 loss_fn: Callable[[nn.Module], float], points: int = 5, top: int = 5) -> dict[str, float]:
        """After aligning ``state_b`` to ``state_a`` (the merge's own matching when it merged this
        pair): ``merge/barrier_matched``, ``merge/alignment_matched/<layer>``, ``merge/sweeps`` and
        ``merge/sv_change`` (largest relative singular-value change the permutation made, ≈ 0)."""
        found = self.matching(state_a, state_b)
        matched = permute_state(found.spec, found.perm, state_b)
        metrics = {"merge/barrier_matched": loss_barrier(model, state_a, matched, loss_fn, points)}
        alignment = singular_alignment(state_a, matched, top)
        metrics.update({f"merge/alignment_matched/{k}": v for k, v in alignment.items()})
        metrics["merge/sweeps"] = float(found.sweeps)
        metrics["merge/sv_change"] = max(singular_value_change(state_b, matched).values())
        return metrics

    def merge_tensor(self, name: str, base: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
        """``then``'s rule on one tensor of models that are already aligned."""
        return self.then.merge_tensor(name, base, tensors)

    def merge_low_rank(self, base: dict[str, torch.Tensor],
                       deltas: list[dict[str, LowRankDelta]]) -> dict[str, torch.Tensor]:
        """Permutations act on whole models: the deltas are materialised, then merged as state dicts."""
        check_deltas(base, deltas)
        models = [{k: base[k] + d[k].dense().to(base[k]) if k in d else base[k] for k in base} for d in deltas]
        return self.merge(base, models)
