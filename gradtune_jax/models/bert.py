"""BERT (Linen) mirroring the former `FlaxBertModel`, as a backbone, and a Hugging Face loader.

The backbone maps `{"input_ids", "attention_mask", "token_type_ids"}` (each `(N, L)` int) to the
pooled feature `(N, hidden)` (`tanh(dense(h[:, 0]))`, then the classifier dropout when training);
`Classifier` adds the `head` (HF's `classifier`). Module names follow the HF key names, so
`bert.encoder.layer.0.attention.self.query.weight` is
`params["backbone"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]` (transposed).
Dropout is active only with `train=True` and draws from the `"dropout"` rng.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gradtune_jax.errors import UserError
from gradtune_jax.models.classifier import HEAD, Classifier
from gradtune_jax.models.weights import flatten, linear_head, unflatten

_ACTIVATIONS = {
    "gelu": lambda x: nn.gelu(x, approximate=False),  # BERT's GELU is exact
    "gelu_new": lambda x: nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


@dataclasses.dataclass(frozen=True)
class BertSettings:
    """The `transformers.BertConfig` fields the model uses (hashable; BERT-base defaults)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    classifier_dropout: float | None = None
    position_embedding_type: str = "absolute"

    @classmethod
    def from_config(cls, config: Any) -> BertSettings:
        """From a `transformers.BertConfig`, a dict (`config.json`) or a `BertSettings`."""
        if isinstance(config, BertSettings):
            return config
        get = config.get if isinstance(config, Mapping) else lambda k, d: getattr(config, k, d)
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})

    def validate(self) -> None:
        """Raise `UserError` for settings this implementation does not cover."""
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"BERT config: hidden_size {self.hidden_size} is not a multiple of "
                            f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in _ACTIVATIONS:
            raise UserError(f"BERT config: hidden_act {self.hidden_act!r} is not supported; "
                            f"expected one of {sorted(_ACTIVATIONS)}")
        if self.position_embedding_type != "absolute":
            raise UserError(f"BERT config: position_embedding_type "
                            f"{self.position_embedding_type!r} is not supported; expected 'absolute'")


BERT_TINY = BertSettings(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)


class _Dense(nn.Module):
    """`nn.Dense` with BERT's normal(initializer_range) kernel init."""

    features: int
    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        return _dense(self.features, self.config, self.dtype, "dense")(x)


def _dense(features: int, config: BertSettings, dtype: Any, name: str) -> nn.Dense:
    return nn.Dense(features, kernel_init=nn.initializers.normal(config.initializer_range),
                    dtype=dtype, name=name)


def _layer_norm(config: BertSettings, dtype: Any) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=dtype, name="LayerNorm")


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout."""

    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, input_ids_NL, token_type_ids_NL, train: bool):
        cfg = self.config
        init = nn.initializers.normal(cfg.initializer_range)
        embed = lambda n, name: nn.Embed(n, cfg.hidden_size, embedding_init=init, dtype=self.dtype,
                                         name=name)
        position_ids_1L = jnp.arange(input_ids_NL.shape[1])[None]
        h = (embed(cfg.vocab_size, "word_embeddings")(input_ids_NL)
             + embed(cfg.max_position_embeddings, "position_embeddings")(position_ids_1L)
             + embed(cfg.type_vocab_size, "token_type_embeddings")(token_type_ids_NL))
        h = _layer_norm(cfg, self.dtype)(h)
        return nn.Dropout(cfg.hidden_dropout_prob, deterministic=not train)(h)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention; `bias_N11L` is 0 on kept keys, a large negative on padding."""

    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_NLD, bias_N11L, train: bool):
        cfg = self.config
        n, length, d = h_NLD.shape
        n_heads = cfg.num_attention_heads
        split = lambda t: t.reshape(n, length, n_heads, d // n_heads)
        q_NLHK = split(_dense(d, cfg, self.dtype, "query")(h_NLD))
        k_NLHK = split(_dense(d, cfg, self.dtype, "key")(h_NLD))
        v_NLHK = split(_dense(d, cfg, self.dtype, "value")(h_NLD))
        scores_NHLL = jnp.einsum("nqhk,nphk->nhqp", q_NLHK, k_NLHK) / math.sqrt(d // n_heads)
        probs_NHLL = jax.nn.softmax(scores_NHLL.astype(jnp.float32) + bias_N11L, axis=-1)
        probs_NHLL = nn.Dropout(cfg.attention_probs_dropout_prob, deterministic=not train)(probs_NHLL)
        ctx_NLHK = jnp.einsum("nhqp,nphk->nqhk", probs_NHLL.astype(self.dtype), v_NLHK)
        return ctx_NLHK.reshape(n, length, d)


class BertResidual(nn.Module):
    """`LayerNorm(residual + dropout(dense(h)))` (HF's `BertSelfOutput` / `BertOutput`)."""

    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h, residual, train: bool):
        h = _dense(self.config.hidden_size, self.config, self.dtype, "dense")(h)
        h = nn.Dropout(self.config.hidden_dropout_prob, deterministic=not train)(h)
        return _layer_norm(self.config, self.dtype)(h + residual)


class BertAttention(nn.Module):
    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_NLD, bias_N11L, train: bool):
        ctx = BertSelfAttention(self.config, self.dtype, name="self")(h_NLD, bias_N11L, train)
        return BertResidual(self.config, self.dtype, name="output")(ctx, h_NLD, train)


class BertLayer(nn.Module):
    """Attention block, then the feed-forward block (`intermediate` + `output`)."""

    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_NLD, bias_N11L, train: bool):
        cfg = self.config
        h_NLD = BertAttention(cfg, self.dtype, name="attention")(h_NLD, bias_N11L, train)
        inner = _Dense(cfg.intermediate_size, cfg, self.dtype, name="intermediate")(h_NLD)
        inner = _ACTIVATIONS[cfg.hidden_act](inner)
        return BertResidual(cfg, self.dtype, name="output")(inner, h_NLD, train)


class BertLayerCollection(nn.Module):
    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_NLD, bias_N11L, train: bool):
        for i in range(self.config.num_hidden_layers):
            h_NLD = BertLayer(self.config, self.dtype, name=str(i))(h_NLD, bias_N11L, train)
        return h_NLD


class BertEncoder(nn.Module):
    config: BertSettings
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_NLD, bias_N11L, train: bool):
        return BertLayerCollection(self.config, self.dtype, name="layer")(h_NLD, bias_N11L, train)


class Bert(nn.Module):
    """BERT backbone: token dict `(N, L)` -> pooled feature `(N, hidden_size)`."""

    config: BertSettings = BertSettings()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Mapping[str, Any], train: bool = False):
        cfg = self.config
        input_ids_NL = jnp.asarray(x["input_ids"])
        mask_NL = x.get("attention_mask")
        mask_NL = jnp.ones_like(input_ids_NL) if mask_NL is None else jnp.asarray(mask_NL)
        types_NL = x.get("token_type_ids")
        types_NL = jnp.zeros_like(input_ids_NL) if types_NL is None else jnp.asarray(types_NL)
        bias_N11L = jnp.where(mask_NL > 0, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        h_NLD = BertEmbeddings(cfg, self.dtype, name="embeddings")(input_ids_NL, types_NL, train)
        h_NLD = BertEncoder(cfg, self.dtype, name="encoder")(h_NLD, bias_N11L, train)
        pooled_ND = jnp.tanh(_Dense(cfg.hidden_size, cfg, self.dtype, name="pooler")(h_NLD[:, 0]))
        rate = cfg.hidden_dropout_prob if cfg.classifier_dropout is None else cfg.classifier_dropout
        return nn.Dropout(rate, deterministic=not train)(pooled_ND)


def bert(dtype: Any = jnp.float32, config: Any = None, **overrides) -> Bert:
    """BERT backbone from a `BertConfig` / dict / `BertSettings` (BERT-base when None), with
    field `overrides` (e.g. `vocab_size=...`)."""
    settings = BertSettings.from_config(BertSettings() if config is None else config)
    settings = dataclasses.replace(settings, **overrides)
    settings.validate()
    return Bert(settings, dtype=dtype)


# ---------------------------------------------------------------- Hugging Face checkpoints

_BACKBONE_ROOTS = ("embeddings.", "encoder.", "pooler.")
_IGNORED = ("cls.", "embeddings.position_ids", "embeddings.token_type_ids")


def _flax_path(key: str) -> tuple[tuple[str, ...], bool] | None:
    """HF key (without `bert.`) -> (path in the backbone params, transpose?); None: not ours."""
    if not key.startswith(_BACKBONE_ROOTS):
        return None
    *modules, leaf = key.split(".")
    if leaf in ("weight", "gamma"):
        if modules[-1] == "LayerNorm":
            return (*modules, "scale"), False
        if modules[-1].endswith("_embeddings"):
            return (*modules, "embedding"), False
        return (*modules, "kernel"), True
    if leaf in ("bias", "beta"):
        return (*modules, "bias"), False
    return None


def load_hf_bert(path: str | os.PathLike, num_labels: int = 2, seed: int = 0,
                 dtype: Any = jnp.float32) -> tuple[Classifier, dict]:
    """`(Classifier(Bert), {"params"})` from a Hugging Face folder (`config.json` +
    `model.safetensors`) of a `BertModel` / `BertForSequenceClassification` / pre-training
    checkpoint. Masked-LM `cls.*` keys are ignored; keys with or without the `bert.` prefix are
    accepted; HF's `classifier` becomes the `head`, or a fresh head (seeded) when the checkpoint
    has none or a different label count. Raises `UserError` naming the file and key."""
    folder = os.fspath(path)
    config_path = os.path.join(folder, "config.json")
    weights_path = os.path.join(folder, "model.safetensors")
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: BERT checkpoint folder not found")
    for required in (config_path, weights_path):
        if not os.path.isfile(required):
            raise UserError(f"{required}: file not found (a BERT checkpoint folder needs "
                            f"config.json and model.safetensors)")
    try:
        with open(config_path) as f:
            config = json.load(f)
        from safetensors.numpy import load_file
        state = dict(load_file(weights_path))
    except Exception as e:  # unreadable JSON or safetensors: report it on one line
        raise UserError(f"{folder}: cannot read checkpoint ({type(e).__name__}: {e})"
                        .splitlines()[0]) from e
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: expected a JSON object")

    try:
        backbone = bert(dtype, config)
    except UserError as e:  # an unsupported setting: name the file
        raise UserError(f"{config_path}: {e}") from e
    model = Classifier(backbone, num_labels, dtype=dtype)
    example = {k: jnp.zeros((1, 2), jnp.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    abstract = jax.eval_shape(model.init, jax.random.key(0), example)["params"]
    expected = {path: leaf.shape for path, leaf in flatten(abstract["backbone"]).items()}
    feat_dim = abstract[HEAD]["kernel"].shape[0]

    flat: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in state.items():
        name = key.removeprefix("bert.")
        if name.startswith(_IGNORED) or key.startswith("classifier."):
            continue
        target = _flax_path(name)
        if target is None or target[0] not in expected:
            raise UserError(f"{weights_path}: unexpected key {key!r} for this BERT config")
        target_path, transpose = target
        arr = np.asarray(value, dtype=np.float32)
        arr = arr.T if transpose else arr
        if arr.shape != expected[target_path]:
            raise UserError(f"{weights_path}: key {key!r} has shape {tuple(np.shape(value))}, which "
                            f"does not match config.json")
        flat[target_path] = arr
    missing = sorted(expected.keys() - flat.keys())
    if missing:
        raise UserError(f"{weights_path}: missing key {_hf_key(missing[0])!r} "
                        f"({len(missing)} missing)")

    head = linear_head(state, weights_path, "classifier", feat_dim, num_labels, seed)
    return model, {"params": {"backbone": unflatten(flat), HEAD: head}}


def _hf_key(path: tuple[str, ...]) -> str:
    """Backbone param path -> the HF key, for error messages."""
    *modules, leaf = path
    return "bert." + ".".join([*modules, "bias" if leaf == "bias" else "weight"])
