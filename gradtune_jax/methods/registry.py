"""Method registry: every row of the papers' tables is a `Method` the experiments dispatch on.

A method gets a `RunContext` (the raw dataset, this seed's cached ERM `FeatureSet`, the recipe,
a work folder) and returns test predictions plus info. Last-layer methods only use `ctx.fs`
(cached features); retraining methods use `ctx.ds` and train a new model.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.methods.features import FeatureSet, head_logits
from gradtune_jax.train.recipe import Recipe

SELECTION_REGIMES = ("oracle", "worst-class", "fixed")


@dataclasses.dataclass
class RunContext:
    """What a method run sees. `recipe` is the run's training recipe: every model a method trains
    starts from it (`retrain_recipe`, when set, is the one the paper gives the reweighting
    baselines' retrained models - RWG, SUBG, GroupDRO, JTT's second model). `hparams` holds the
    methods' own settings."""

    ds: GroupDataset
    fs: FeatureSet
    seed: int
    workdir: str
    recipe: Recipe
    hparams: dict = dataclasses.field(default_factory=dict)
    selection: str = "fixed"
    progress: bool = True
    retrain_recipe: Recipe | None = None

    @property
    def reweight_recipe(self) -> Recipe:
        return self.retrain_recipe or self.recipe


@dataclasses.dataclass
class MethodOutput:
    """Test-set predictions, optional validation predictions, and free-form info for results.json."""

    pred_test: np.ndarray
    info: dict = dataclasses.field(default_factory=dict)
    selection: str = "fixed"  # the regime that actually produced this result


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str  # row label in the tables
    group_labels: str  # "train/val" use of group labels, e.g. "no/yes"
    kind: str  # "last_layer" | "retrain"
    run: Callable[[RunContext], MethodOutput]
    selections: tuple[str, ...] = ("fixed",)  # regimes it accepts


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    _METHODS[method.name] = method
    return method


def _load_baselines() -> None:
    """Import `methods.baselines` once; it registers the baseline rows (lazy: it imports this module)."""
    import gradtune_jax.methods.baselines  # noqa: F401


def get_method(name: str) -> Method:
    _load_baselines()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {method_names()}")
    return _METHODS[name]


def method_names() -> list[str]:
    _load_baselines()
    return list(_METHODS)


def head_output(fs: FeatureSet, head: dict, info: dict | None = None, selection: str = "fixed") -> MethodOutput:
    """`MethodOutput` of a linear head on the cached test features."""
    return MethodOutput(pred_test=head_logits(head, fs.ds.test.x).argmax(-1), info=info or {}, selection=selection)


def _register_core() -> None:
    from gradtune_jax.methods.gradtune import GradTuneConfig, gradtune, random_finetune

    def gt_cfg(ctx: RunContext) -> GradTuneConfig:
        return ctx.hparams.get("gradtune", GradTuneConfig())

    def run_erm(ctx: RunContext) -> MethodOutput:
        return head_output(ctx.fs, ctx.fs.head)

    def run_gradtune(ctx: RunContext) -> MethodOutput:
        head, info = gradtune(ctx.fs, gt_cfg(ctx), ctx.seed)
        return head_output(ctx.fs, head, {"n_selected": info["n_selected"], "used_all_of_D": info["used_all_of_D"]})

    def run_random(ctx: RunContext) -> MethodOutput:
        head, info = random_finetune(ctx.fs, gt_cfg(ctx), ctx.seed)
        return head_output(ctx.fs, head, {"n_selected": info["n_selected"]})

    register_method(Method("erm", "ERM (class-balanced)", "no/no", "last_layer", run_erm))
    register_method(Method("random_finetune", "Random finetune", "no/no", "last_layer", run_random))
    register_method(Method("gradtune", "GradTune", "no/no", "last_layer", run_gradtune))


_register_core()
