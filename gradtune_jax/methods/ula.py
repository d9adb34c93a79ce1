"""uLA (Tsirigotis et al., 2023), at the scale of the embedded dataset and small backbones.

1. Self-supervised backbone: SimCLR (NT-Xent on two augmented views; shift, ink/brightness
   scaling and pixel noise; no colour-hue jitter) trains the ERM backbone architecture from scratch
   on the train images, without labels. The classifier's linear head serves as the projector.
2. Bias proxy: a linear probe on the (standardised, frozen) SSL features trained with plain ERM
   for only `proxy_steps` full-batch steps, so it picks up the easy spurious cue.
3. Group prior: `P(y, b)` = joint of the true class and the proxy's prediction `b` on train.
4. Final classifier trained with logit adjustment `CE(z(x) + tau * log P(y, b(x)), y)`; at test
   time the plain logits `z(x)` are used. `train_mode="finetune"` (default, as uLA's reference
   code): the whole network, initialised from the SSL backbone with a fresh head, uniform
   sampling, ERM's optimizer; `"head"`: a linear classifier on the frozen SSL features.
5. Model selection (epoch and `tau`): under the group-free regime uLA uses its own
   bias-unsupervised criterion, the worst accuracy over the pseudo-groups `(y, b)` of the
   model-selection half of validation (`criterion="worst-class"` uses worst-class accuracy
   instead); `oracle` uses the true validation groups; `fixed` keeps the last epoch and `tau`.

No group labels are read in training.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradtune_jax.data.dataset import GroupDataset, Split, take
from gradtune_jax.methods.afr import fit_heads_full_batch
from gradtune_jax.methods.retrain import derive, predict_labels, train_selected
from gradtune_jax.methods.selection import grid, select
from gradtune_jax.models import HEAD, init_variables
from gradtune_jax.train.steps import weighted_ce
from gradtune_jax.train.last_layer import init_head
from gradtune_jax.train.loop import predict
from gradtune_jax.train.optim import OptimConfig, make_optimizer
from gradtune_jax.train.recipe import Recipe, apply_fn, build_model, recipe_variables
from gradtune_jax.train.state import TrainState, create_state


@dataclasses.dataclass(frozen=True)
class ULAConfig:
    """SimCLR pretraining, bias proxy and logit-adjustment settings."""

    ssl_epochs: int = 15
    ssl_batch_size: int = 256
    ssl_lr: float = 1e-3
    proj_dim: int = 64
    temperature: float = 0.5
    proxy_steps: int = 50
    steps: int = 1000
    lr: float = 1e-2
    tau: float = 1.0
    tau_grid: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    train_mode: str = "finetune"  # "finetune" (whole network from the SSL backbone) | "head"
    epochs: int | None = None  # finetune epochs (None: ERM's); ERM's optimizer, uniform sampler
    criterion: str = "bias-unsupervised"  # group-free selection: "bias-unsupervised" | "worst-class"


def augment(x_NHWC: np.ndarray, rng: np.random.Generator, shift: int = 2, noise: float = 0.05) -> np.ndarray:
    """A random view: integer shift (wrap-around), per-image brightness scale, pixel noise."""
    n = len(x_NHWC)
    out = np.empty_like(x_NHWC)
    dx, dy = rng.integers(-shift, shift + 1, size=(2, n))
    for i in range(n):
        out[i] = np.roll(x_NHWC[i], (dy[i], dx[i]), axis=(0, 1))
    out = out * rng.uniform(0.7, 1.3, size=(n, 1, 1, 1)) + rng.normal(0.0, noise, size=out.shape)
    return out.astype(np.float32)


def nt_xent(z1_BP: jax.Array, z2_BP: jax.Array, temperature: float) -> jax.Array:
    """SimCLR's NT-Xent loss: view i of one half is the positive of view i of the other."""
    z = jnp.concatenate([z1_BP, z2_BP])
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True).clip(1e-8)
    n = z1_BP.shape[0]
    sim = z @ z.T / temperature - 1e9 * jnp.eye(2 * n)
    pos = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(sim, pos))


@functools.partial(jax.jit, static_argnames=("temperature",), donate_argnums=0)
def _ssl_step(state: TrainState, x1, x2, temperature: float) -> tuple[TrainState, jax.Array]:
    def objective(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        (z, _), upd = state.apply_fn(variables, jnp.concatenate([x1, x2]), train=True, mutable=["batch_stats"])
        return nt_xent(z[:len(x1)], z[len(x1):], temperature), upd["batch_stats"]

    (loss, bs), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return state.apply_gradients(grads=grads, batch_stats=bs), loss


def simclr(ds: GroupDataset, recipe: Recipe, cfg: ULAConfig, seed: int) -> tuple[TrainState, list[float]]:
    """SimCLR pretraining of the recipe's backbone on the train images (labels unused), from the
    recipe's initialisation (its weights file when given; the head, the projector here, is fresh).
    Each view is the recipe's train transform (when it has an image pipeline) followed by
    `augment`. Returns the state (eval preprocessing as the recipe's) and the epoch losses."""
    x = ds.train.x
    n, bs = len(ds.train), min(cfg.ssl_batch_size, len(ds.train))
    steps = cfg.ssl_epochs * (n // bs)
    net = build_model(recipe, cfg.proj_dim)
    variables = recipe_variables(recipe, net, take(x, np.arange(2)), seed)
    state = create_state(net, variables, make_optimizer(OptimConfig("adam", cfg.ssl_lr, 0.0), steps), seed=seed)
    pipe = recipe.pipeline
    state = state.replace(apply_fn=apply_fn(net, pipe))
    losses = []
    for epoch in range(cfg.ssl_epochs):
        rng = np.random.default_rng([seed, epoch, 11])
        perm = rng.permutation(n)
        total = 0.0
        for s in range(0, n - bs + 1, bs):
            xb = np.asarray(take(x, perm[s:s + bs]))
            v1, v2 = (xb, xb) if pipe is None else (np.asarray(pipe.train(xb, rng)), np.asarray(pipe.train(xb, rng)))
            state, loss = _ssl_step(state, augment(v1, rng), augment(v2, rng), cfg.temperature)
            total += float(loss)
        losses.append(total / (n // bs))
    return state, losses


def group_prior(y: np.ndarray, b: np.ndarray, n_classes: int) -> np.ndarray:
    """`P(y, b)` (C x C) from class labels and bias-proxy predictions, with add-one smoothing."""
    counts = np.ones((n_classes, n_classes))
    np.add.at(counts, (np.asarray(y), np.asarray(b)), 1.0)
    return counts / counts.sum()


def logit_adjustment(prior_CC: np.ndarray, b: np.ndarray, tau: float) -> np.ndarray:
    """Per-example additive offsets `tau * log P(y, b_i)` over classes y: (N, C)."""
    return tau * np.log(prior_CC[:, np.asarray(b)].T)


def la_loss(logits_NC: jax.Array, batch: dict, extra: dict) -> tuple[jax.Array, dict]:
    """Logit-adjusted cross-entropy: `extra["offset_BC"][b]` added to the logits, where the bias
    proxy's prediction b rides in the batch as the attribute (`g = y * C + b`)."""
    b_N = batch["g"] % extra["offset_BC"].shape[0]
    return weighted_ce(logits_NC + extra["offset_BC"][b_N], batch, extra)


def with_backbone(ssl: TrainState, x_example) -> Callable:
    """`init_fn` for `init_state`: the SSL network's backbone and a fresh head."""
    def init(model, seed: int) -> dict:
        fresh = init_variables(model, x_example, seed)
        out = {"params": {**ssl.params, HEAD: fresh["params"][HEAD]}}
        if ssl.batch_stats:
            out["batch_stats"] = ssl.batch_stats
        return out

    return init


def _with_attribute(split: Split, b: np.ndarray, n: int) -> Split:
    return dataclasses.replace(split, a=np.asarray(b, np.int64), n_attrs=n, group_masks=None)


def ula(ds: GroupDataset, recipe: Recipe, cfg: ULAConfig, seed: int, selection: np.ndarray,
        regime: str) -> tuple[np.ndarray, dict]:
    """uLA's test predictions and info; `tau` (and the finetune epoch) are scored on
    `ds.val[selection]` by `regime` (group-free: `cfg.criterion`)."""
    if cfg.train_mode not in ("finetune", "head"):
        raise ValueError(f"uLA train_mode must be 'finetune' or 'head', got {cfg.train_mode!r}")
    state, losses = simclr(ds, recipe, cfg, seed)
    splits = ("train", "val", "test") if cfg.train_mode == "head" else ("train", "val")  # finetune: no test feats
    feats = {s: predict(state, ds.split(s).x, recipe.eval_batch_size)[1] for s in splits}
    mu, sd = feats["train"].mean(0), feats["train"].std(0) + 1e-6
    feats = {s: jnp.asarray((f - mu) / sd, jnp.float32) for s, f in feats.items()}
    y = np.asarray(ds.train.y)
    c = ds.n_classes
    h0 = init_head(feats["train"].shape[1], c, seed)
    w = jnp.full((1, len(y)), 1.0 / len(y), jnp.float32)
    proxy = jax.tree.map(lambda v: v[0], fit_heads_full_batch(h0, feats["train"], jnp.asarray(y), w,
                                                             jnp.zeros(1), cfg.proxy_steps, cfg.lr))
    b = {s: np.asarray(feats[s] @ proxy["kernel"] + proxy["bias"]).argmax(-1) for s in ("train", "val")}
    prior = group_prior(y, b["train"], c)
    taus = [cfg.tau] if regime == "fixed" else list(cfg.tau_grid)
    val = ds.val.subset(selection)
    crit = regime
    if regime == "worst-class" and cfg.criterion == "bias-unsupervised":
        # uLA's criterion: worst accuracy over the pseudo-groups (y, b) = WGA with a := b
        val, regime, crit = _with_attribute(val, b["val"][np.asarray(selection)], c), "oracle", cfg.criterion
    info = {"ssl_loss": losses, "ssl_init": recipe.describe()["init"], "proxy_prior": prior.tolist(), "proxy_train_acc": float(np.mean(b["train"] == y)),
            "train_mode": cfg.train_mode, "criterion": crit}
    if cfg.train_mode == "head":
        off = jnp.stack([jnp.asarray(logit_adjustment(prior, b["train"], t), jnp.float32) for t in taus])
        heads = jax.vmap(lambda o: jax.tree.map(lambda v: v[0], fit_heads_full_batch(
            h0, feats["train"], jnp.asarray(y), w, jnp.zeros(1), cfg.steps, cfg.lr, o)))(off)
        trained = {t: {k: v[i] for k, v in heads.items()} for i, t in enumerate(taus)}
        val_f = feats["val"][np.asarray(selection)]

        def pred(h: dict, f: jax.Array) -> np.ndarray:
            return np.asarray(f @ h["kernel"] + h["bias"]).argmax(-1)

        sel = select(grid(tau=taus), {"tau": cfg.tau}, lambda hp: trained[hp["tau"]], lambda h: pred(h, val_f),
                     val, regime)
        return pred(sel.model, feats["test"]), {**info, "tau": sel.hparams["tau"], "scores": sel.scores}
    train_b = _with_attribute(ds.train, b["train"], c)
    derived = derive(recipe, cfg.epochs, sampler="uniform")
    init = with_backbone(state, take(ds.train.x, np.arange(min(2, len(y)))))

    def fit(hp: dict) -> tuple[TrainState, dict]:
        extra = {"offset_BC": jnp.asarray(hp["tau"] * np.log(prior).T, jnp.float32)}
        return train_selected(ds, derived, seed, val_select=val, regime=regime, train=train_b, loss_fn=la_loss,
                              extra=extra, init_fn=init, desc="uLA")

    sel = select(grid(tau=taus), {"tau": cfg.tau}, fit, lambda m: predict_labels(m[0], val.x, recipe.eval_batch_size),
                 val, regime)
    model, ep = sel.model
    return predict_labels(model, ds.test.x, recipe.eval_batch_size), {
        **info, "tau": sel.hparams["tau"], "epoch": ep["epoch"], "epoch_scores": ep["epoch_scores"],
        "scores": sel.scores, "recipe": ep["recipe"]}
