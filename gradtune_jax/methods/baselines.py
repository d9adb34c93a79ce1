"""The baseline rows of both papers' tables, registered in `methods.registry`.

Each entry states the paper row label, which group labels the method itself needs (train / the
held-out half D), whether it is last-layer (cached `FeatureSet` only) or full retraining, its
default hyperparameters per dataset family (`vision` / `text`, and `embedded` for the CPU-sized
default dataset), the selection regime its paper used, and a uniform `run(ctx) -> MethodOutput`.

Before a method runs, the data it gets is guarded (`methods.selection`): group labels it may not
read are hidden (reading them raises) or, for training splits of group-free retraining methods,
replaced by zeros, so a group-free method cannot leak them. Validation groups of the
model-selection half are readable only under the `oracle` regime.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from gradtune_jax.data.dataset import GroupDataset
from gradtune_jax.errors import UserError
from gradtune_jax.methods.afr import AFRConfig, afr
from gradtune_jax.methods.cb_llr import cb_llr
from gradtune_jax.methods.dfr import DFRConfig, dfr
from gradtune_jax.methods.early import early_logits
from gradtune_jax.methods.gradtune import GradTuneConfig
from gradtune_jax.methods.group_dro import GroupDROConfig, group_dro
from gradtune_jax.methods.jtt import JTTConfig, jtt
from gradtune_jax.methods.registry import (Method, MethodOutput, RunContext, get_method, head_output,
                                           register_method)
from gradtune_jax.methods.retrain import predict_labels
from gradtune_jax.methods.reweight import ReweightConfig, rwg, subg
from gradtune_jax.methods.selection import REGIMES, guard_dataset, guard_features
from gradtune_jax.methods.self_ft import SELFConfig, self_finetune
from gradtune_jax.methods.ula import ULAConfig, ula


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """What a baseline needs and how the paper ran it."""

    train_groups: bool  # reads train group labels
    heldout_groups: bool  # reads the group labels of the held-out half D (DFR)
    paper_selection: str  # the regime of the paper's row
    defaults: dict[str, Any]  # family ("vision" / "text" / "embedded") -> config object (or None)


SPECS: dict[str, BaselineSpec] = {}
# Row order of the GradTune paper's Table 1, then the attribution paper's extra rows.
PAPER_ORDER = ("group_dro", "jtt", "dfr", "self", "afr", "erm", "random_finetune", "ula", "gradtune",
               "cb_llr", "rwg", "subg")


EMBEDDED = ("digits", "digits_celeba")  # datasets trained from scratch on CPU: shorter retraining recipes


def family(ds: GroupDataset) -> str:
    """`text` for tokenised inputs, `embedded` for the built-in CPU dataset, else `vision`."""
    if ds.name in EMBEDDED:
        return "embedded"
    return "text" if ds.input_kind == "text" else "vision"


def group_label_use(name: str, regime: str) -> str:
    """The "train/val" group-label use of a baseline run under `regime`, e.g. `no/yes` (val: the
    groups of D, or oracle selection); other registered methods report their registry label."""
    spec = SPECS.get(name)
    if spec is None:
        return get_method(name).group_labels
    val = spec.heldout_groups or regime == "oracle"
    return f"{'yes' if spec.train_groups else 'no'}/{'yes' if val else 'no'}"


def paper_selection(name: str) -> str:
    """The regime of the method's row in its paper (`fixed` for methods without a search)."""
    return SPECS[name].paper_selection if name in SPECS else "fixed"


def method_config(ctx: RunContext, name: str) -> Any:
    """`ctx.hparams[name]` if given, else the family default."""
    return ctx.hparams.get(name) or SPECS[name].defaults[family(ctx.ds)]


def _head_cfg(ctx: RunContext):
    return ctx.hparams.get("gradtune", GradTuneConfig()).head


def _guarded(ctx: RunContext, name: str) -> tuple[GroupDataset, Any]:
    """The raw dataset and feature set with every group label `name` may not read hidden."""
    spec, sel = SPECS[name], ctx.selection == "oracle"
    ds = ctx.ds
    if not spec.train_groups:  # training code builds `g` batches: zeros carry no group information
        ds = dataclasses.replace(ds, train=dataclasses.replace(ds.train, a=np.zeros_like(ds.train.y),
                                                               group_masks=None))
    val_groups: np.ndarray | bool = True if sel else False
    if spec.heldout_groups and not sel:
        val_groups = ctx.fs.heldout
    ds = guard_dataset(ds, train_groups=True, val_groups=val_groups)
    fs = guard_features(ctx.fs, train_groups=spec.train_groups, heldout_groups=spec.heldout_groups or sel,
                        selection_groups=sel)
    return ds, fs


def _actual(ctx: RunContext, info: dict) -> str:
    """What actually chose something: the regime, or the method's own criterion under it
    (`info["criterion"]`, e.g. uLA's); `fixed` when nothing was scored."""
    return info.get("criterion", ctx.selection) if info.get("scores") or info.get("epoch_scores") else "fixed"


def _register(name: str, label: str, kind: str, spec: BaselineSpec, run: Callable[[RunContext], MethodOutput],
              selections: tuple[str, ...] = REGIMES) -> None:
    SPECS[name] = spec
    register_method(Method(name, label, group_label_use(name, spec.paper_selection), kind, run, selections))


def _val_select(ctx: RunContext, ds: GroupDataset):
    return ds.val.subset(ctx.fs.selection)


def run_dfr(ctx: RunContext) -> MethodOutput:
    _, fs = _guarded(ctx, "dfr")
    head, info = dfr(fs.D, fs.val_select, method_config(ctx, "dfr"), ctx.seed, ctx.selection)
    return head_output(ctx.fs, head, info, _actual(ctx, info))


def run_afr(ctx: RunContext) -> MethodOutput:
    _, fs = _guarded(ctx, "afr")
    head, info = afr(fs.head, fs.D, fs.val_select, method_config(ctx, "afr"), ctx.selection)
    return head_output(ctx.fs, head, info, _actual(ctx, info))


def run_self(ctx: RunContext) -> MethodOutput:
    ds, fs = _guarded(ctx, "self")
    cfg: SELFConfig = method_config(ctx, "self")
    if ctx.ds.input_kind == "features":  # no backbone to stop early: rank by the ERM head's loss
        cfg = dataclasses.replace(cfg, score="misclassification")
    early = None
    if cfg.score == "es_disagreement":
        early = early_logits(ds, ctx.recipe, cfg.early_epochs, ctx.seed, ctx.progress)["val"][fs.heldout]
    head, info = self_finetune(fs, _head_cfg(ctx), cfg, ctx.seed, ctx.selection, early)
    extra = {"early_recipe": ctx.recipe.describe(), "early_epochs": cfg.early_epochs} if early is not None else {}
    return head_output(ctx.fs, head, {**info, "score": cfg.score, **extra}, _actual(ctx, info))


def run_cb_llr(ctx: RunContext) -> MethodOutput:
    _, fs = _guarded(ctx, "cb_llr")
    return head_output(ctx.fs, cb_llr(fs, _head_cfg(ctx), ctx.seed))


def _retrain(name: str, fn: Callable) -> Callable[[RunContext], MethodOutput]:
    def run(ctx: RunContext) -> MethodOutput:
        if ctx.ds.input_kind == "features":
            raise UserError(f"{name} retrains the whole model and needs raw inputs; {ctx.ds.name} holds precomputed "
                            "features, on which only last-layer methods run")
        ds, _ = _guarded(ctx, name)
        state, info = fn(ctx, ds, _val_select(ctx, ds))
        pred = predict_labels(state, ctx.ds.test.x, ctx.recipe.eval_batch_size)
        return MethodOutput(pred_test=pred, info=info, selection=_actual(ctx, info))

    return run


def run_ula(ctx: RunContext) -> MethodOutput:
    if ctx.ds.input_kind != "image":
        raise UserError(f"uLA needs image inputs (its self-supervised stage augments images), {ctx.ds.name} has "
                        f"{ctx.ds.input_kind!r} inputs; leave 'ula' out of --methods (the paper has no text rows)")
    ds, _ = _guarded(ctx, "ula")
    pred, info = ula(ds, ctx.recipe, method_config(ctx, "ula"), ctx.seed, ctx.fs.selection, ctx.selection)
    return MethodOutput(pred_test=pred, info=info, selection=_actual(ctx, info))


def _families(vision: Any, text: Any = None, embedded: Any = None) -> dict[str, Any]:
    return {"vision": vision, "text": vision if text is None else text,
            "embedded": vision if embedded is None else embedded}


# The embedded default trains a small CNN from scratch for 30 epochs on 2 CPU cores: GroupDRO, RWG
# and SUBG there run 10 epochs (with epoch selection) so that all rows fit the time budget. JTT's
# second model and uLA's finetuning run ERM's full length (cut to 10 epochs, both stayed below
# ERM; see the README), uLA with its reference code's tau = 1 only.
SHORT = 10


def register_baselines() -> None:
    """Register every baseline row (idempotent)."""
    _register("group_dro", "Group DRO", "retrain",
              BaselineSpec(True, False, "oracle", _families(GroupDROConfig(), embedded=GroupDROConfig(epochs=SHORT))),
              _retrain("group_dro", lambda c, ds, v: group_dro(ds, c.reweight_recipe, method_config(c, "group_dro"),
                                                               c.seed, v, c.selection, c.progress)))
    _register("jtt", "JTT", "retrain", BaselineSpec(False, False, "oracle", _families(
        JTTConfig(), JTTConfig(id_epochs=1, lambda_up=6.0, lambda_grid=(6.0, 20.0)),
        JTTConfig(lambda_up=20.0, lambda_grid=(20.0, 100.0)))),
        _retrain("jtt", lambda c, ds, v: jtt(ds, c.reweight_recipe, method_config(c, "jtt"), c.seed, v, c.selection,
                                             c.progress, id_recipe=c.recipe)))
    _register("dfr", "DFR", "last_layer", BaselineSpec(False, True, "oracle", _families(DFRConfig())), run_dfr)
    _register("self", "SELF", "last_layer", BaselineSpec(False, False, "oracle", _families(
        SELFConfig(), SELFConfig(early_epochs=1))), run_self)
    _register("afr", "AFR", "last_layer", BaselineSpec(False, False, "oracle", _families(AFRConfig())), run_afr)
    _register("ula", "uLA", "retrain", BaselineSpec(False, False, "worst-class", _families(
        ULAConfig(), embedded=ULAConfig(ssl_epochs=SHORT // 2, tau_grid=(1.0,)))), run_ula)
    _register("cb_llr", "CB-LLR", "last_layer", BaselineSpec(False, False, "fixed", _families(None)), run_cb_llr,
              ("fixed",))
    _register("rwg", "RWG", "retrain", BaselineSpec(True, False, "oracle", _families(
        ReweightConfig(), embedded=ReweightConfig(epochs=SHORT))),
        _retrain("rwg", lambda c, ds, v: rwg(ds, c.reweight_recipe, method_config(c, "rwg"), c.seed, v, c.selection,
                                             c.progress)))
    _register("subg", "SUBG", "retrain", BaselineSpec(True, False, "oracle", _families(
        ReweightConfig(), embedded=ReweightConfig(epochs=SHORT))),
        _retrain("subg", lambda c, ds, v: subg(ds, c.reweight_recipe, method_config(c, "subg"), c.seed, v, c.selection,
                                               c.progress)))


register_baselines()
