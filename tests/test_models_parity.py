"""Parity of the Flax ResNet / BERT with torchvision / transformers (eval mode), from the
committed fixtures of `tools/make_parity_fixtures.py`. Weights are regenerated with numpy and
loaded through the public loaders; no torch needed."""
import functools
import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from gradtune_jax.models import Classifier, testing
from gradtune_jax.models.bert import load_hf_bert
from gradtune_jax.models.resnet import load_torchvision_weights, resnet

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
ATOL = 1e-4


def _fixture(name: str) -> dict:
    with np.load(os.path.join(FIXTURES, f"{name}_parity.npz")) as f:
        return {k: f[k] for k in f.files}


@functools.cache
def _resnet_forward(depth: int):
    return jax.jit(Classifier(resnet(depth), testing.RESNET_NUM_CLASSES).apply)


@pytest.mark.parametrize("depth, source", [(18, "dict"), (18, "npz"), (50, "safetensors")])
def test_resnet_matches_torchvision(depth, source, tmp_path):
    ref = _fixture("resnet")
    state = testing.resnet_state_dict(depth)
    if source == "dict":
        weights = state
    elif source == "npz":
        weights = tmp_path / "w.npz"
        np.savez(weights, **state)
    else:
        weights = str(tmp_path / "model.safetensors")
        save_file(state, weights)
    variables = load_torchvision_weights(weights, depth=depth,
                                         num_classes=testing.RESNET_NUM_CLASSES)
    with jax.default_matmul_precision("highest"):
        logits, aux = _resnet_forward(depth)(variables, ref["x"])
    np.testing.assert_allclose(np.asarray(logits), ref[f"logits{depth}"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(aux["feats"]), ref[f"feats{depth}"], rtol=0, atol=ATOL)


def _write_bert_folder(folder, state: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(testing.BERT_CONFIG, f)
    save_file(state, os.path.join(folder, "model.safetensors"))


@pytest.mark.parametrize("layout", ["prefixed", "unprefixed_with_mlm_head"])
def test_bert_matches_transformers(layout, tmp_path):
    ref = _fixture("bert")
    state = testing.bert_state_dict()
    if layout != "prefixed":
        state = {k.removeprefix("bert."): v for k, v in state.items()}
        d, vocab = testing.BERT_CONFIG["hidden_size"], testing.BERT_CONFIG["vocab_size"]
        state["cls.predictions.bias"] = np.zeros(vocab, np.float32)
        state["cls.predictions.transform.dense.weight"] = np.eye(d, dtype=np.float32)
    _write_bert_folder(tmp_path, state)
    model, variables = load_hf_bert(tmp_path, num_labels=testing.BERT_NUM_LABELS)
    x = {k: ref[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with jax.default_matmul_precision("highest"):
        logits, aux = model.apply(variables, x)
    np.testing.assert_allclose(np.asarray(logits), ref["logits"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(np.asarray(aux["feats"]), ref["pooled"], rtol=0, atol=ATOL)
