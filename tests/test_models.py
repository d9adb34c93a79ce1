"""ResNet / BERT backbones: forward and backward on CPU at tiny sizes, loaders, fresh heads, errors."""
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from gradtune_jax.errors import UserError
from gradtune_jax.models import create_model, testing
from gradtune_jax.models.bert import BERT_TINY, load_hf_bert
from gradtune_jax.models.registry import backbone_names
from gradtune_jax.models.resnet import load_torchvision_weights


def _loss_and_grads(model, variables, x, y_N, rngs=None):
    """One jitted train-mode forward + backward: `((loss, (logits, feats, new batch_stats)), grads)`."""
    mutable = ["batch_stats"] if "batch_stats" in variables else []

    def loss_fn(params):
        (logits_NC, aux), updates = model.apply({**variables, "params": params}, x, train=True,
                                                mutable=mutable, rngs=rngs)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits_NC), y_N[:, None], 1))
        return loss, (logits_NC, aux["feats"], updates.get("batch_stats"))

    return jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables["params"])


def _assert_finite_nonzero(grads) -> None:
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_resnet50_forward_backward():
    model = create_model("resnet50", 3)
    variables = load_torchvision_weights(testing.resnet_state_dict(50), depth=50, num_classes=3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 32, 3)), jnp.float32)
    (loss, (logits, feats, batch_stats)), grads = _loss_and_grads(model, variables, x,
                                                                  jnp.array([0, 2]))
    assert logits.shape == (2, 3) and feats.shape == (2, 2048) and np.isfinite(float(loss))
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    _assert_finite_nonzero(grads["head"])
    _assert_finite_nonzero(grads["backbone"]["conv1"])
    old_mean = variables["batch_stats"]["backbone"]["bn1"]["mean"]
    assert not np.allclose(batch_stats["backbone"]["bn1"]["mean"], old_mean)


def test_resnet_small_input_bf16_compute():
    model = create_model("resnet18_small", 4, dtype=jnp.bfloat16, width=8)
    x = jnp.ones((2, 16, 16, 3))
    abstract = jax.eval_shape(model.init, jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract["params"]))
    assert abstract["params"]["backbone"]["conv1"]["kernel"].shape == (3, 3, 3, 8)
    logits, aux = jax.jit(model.apply)(testing.numpy_variables(model, x), x)
    assert logits.shape == (2, 4) and logits.dtype == jnp.float32 and aux["feats"].shape == (2, 64)


def _bert_batch(n: int = 2, length: int = 8) -> dict:
    rng = np.random.default_rng(0)
    mask = np.ones((n, length), np.int32)
    mask[1, 5:] = 0
    return {"input_ids": rng.integers(1, BERT_TINY.vocab_size, (n, length)).astype(np.int32),
            "attention_mask": mask, "token_type_ids": np.zeros((n, length), np.int32)}


def test_bert_forward_backward_dropout_and_mask():
    model = create_model("bert_tiny", 2)
    x = _bert_batch()
    variables = testing.numpy_variables(model, x)
    (loss, (logits, feats, _)), grads = _loss_and_grads(
        model, variables, x, jnp.array([0, 1]),
        rngs={"dropout": jax.random.key(1, impl="rbg")})  # rbg: threefry compiles slowly on CPU
    assert logits.shape == (2, 2) and feats.shape == (2, BERT_TINY.hidden_size)
    _assert_finite_nonzero(grads["backbone"]["embeddings"])
    _assert_finite_nonzero(grads["head"])

    apply = jax.jit(model.apply)
    eval_logits, _ = apply(variables, x)
    assert not np.allclose(eval_logits, logits)  # dropout was active in training
    padded = {**x, "input_ids": x["input_ids"].copy()}
    padded["input_ids"][1, 5:] = 3  # tokens under attention_mask == 0 must not matter
    np.testing.assert_allclose(apply(variables, padded)[0], eval_logits, atol=1e-6)


def test_registry_names():
    for name in ("resnet18", "resnet50", "resnet18_small", "resnet50_small", "bert", "bert_tiny"):
        assert name in backbone_names()
        assert create_model(name, 3).num_classes == 3
    assert create_model("bert", 2).backbone.config.hidden_size == 768


def test_resnet_fresh_head_and_backbone_conversion():
    state = testing.resnet_state_dict(18)
    kept = load_torchvision_weights(state, depth=18, num_classes=testing.RESNET_NUM_CLASSES)
    np.testing.assert_array_equal(kept["params"]["head"]["kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(kept["params"]["backbone"]["conv1"]["kernel"],
                                  state["conv1.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(kept["batch_stats"]["backbone"]["layer2_0"]["downsample_bn"]["var"],
                                  state["layer2.0.downsample.1.running_var"])
    fresh = load_torchvision_weights(state, depth=18, num_classes=3, seed=0)
    assert fresh["params"]["head"]["kernel"].shape == (512, 3)
    same = load_torchvision_weights(state, depth=18, num_classes=3, seed=0)
    other = load_torchvision_weights(state, depth=18, num_classes=3, seed=1)
    np.testing.assert_array_equal(fresh["params"]["head"]["kernel"], same["params"]["head"]["kernel"])
    assert not np.allclose(fresh["params"]["head"]["kernel"], other["params"]["head"]["kernel"])
    headless = {k: v for k, v in state.items() if not k.startswith("fc.")}
    assert load_torchvision_weights(headless, depth=18, num_classes=3)["params"]["head"]["bias"].shape == (3,)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("layer1.0.bn1.running_var"), "missing key 'layer1.0.bn1.running_var'"),
    (lambda s: s.update({"layer9.0.conv1.weight": np.zeros((1,), np.float32)}),
     "unexpected key 'layer9.0.conv1.weight'"),
    (lambda s: s.update({"conv1.weight": np.zeros((64, 3, 3, 3), np.float32)}), "key 'conv1.weight'"),
    (lambda s: s.update({"fc.weight": np.zeros((10, 7), np.float32)}), "key 'fc.weight'"),
])
def test_resnet_loader_errors(change, message):
    state = testing.resnet_state_dict(18)
    change(state)
    with pytest.raises(UserError, match=message):
        load_torchvision_weights(state, depth=18, num_classes=testing.RESNET_NUM_CLASSES)


def test_resnet_loader_file_errors(tmp_path):
    state = testing.resnet_state_dict(18)
    del state["bn1.bias"]
    path = str(tmp_path / "bad.npz")
    np.savez(path, **state)
    with pytest.raises(UserError, match=re.escape(f"{path}: missing key 'bn1.bias'")):
        load_torchvision_weights(path, depth=18)
    with pytest.raises(UserError, match="not found"):
        load_torchvision_weights(tmp_path / "nope.safetensors")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="expected a .safetensors or .npz"):
        load_torchvision_weights(tmp_path / "w.pt")
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot read weights"):
        load_torchvision_weights(tmp_path / "w.safetensors")
    with pytest.raises(UserError, match="depth 34"):
        load_torchvision_weights({}, depth=34)


def _bert_folder(tmp_path, state: dict, config: dict = testing.BERT_CONFIG):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path


def test_bert_loader_heads(tmp_path):
    state = testing.bert_state_dict()
    model, variables = load_hf_bert(_bert_folder(tmp_path, state), num_labels=3)
    np.testing.assert_array_equal(variables["params"]["head"]["kernel"], state["classifier.weight"].T)
    assert model.backbone.config.hidden_size == testing.BERT_CONFIG["hidden_size"]
    layer0 = variables["params"]["backbone"]["encoder"]["layer"]["0"]
    np.testing.assert_array_equal(layer0["attention"]["self"]["query"]["kernel"],
                                  state["bert.encoder.layer.0.attention.self.query.weight"].T)
    _, relabelled = load_hf_bert(tmp_path, num_labels=5, seed=0)
    assert relabelled["params"]["head"]["kernel"].shape == (64, 5)
    no_head = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    _, fresh = load_hf_bert(_bert_folder(tmp_path, no_head), num_labels=3)
    assert not np.allclose(fresh["params"]["head"]["kernel"], state["classifier.weight"].T)


def test_bert_loader_errors(tmp_path):
    with pytest.raises(UserError, match="folder not found"):
        load_hf_bert(tmp_path / "nope")
    tmp_path.joinpath("config.json").write_text(json.dumps(testing.BERT_CONFIG))
    with pytest.raises(UserError, match="model.safetensors: file not found"):
        load_hf_bert(tmp_path)
    state = testing.bert_state_dict()
    missing = {k: v for k, v in state.items() if k != "bert.pooler.dense.bias"}
    with pytest.raises(UserError, match="missing key 'bert.pooler.dense.bias'"):
        load_hf_bert(_bert_folder(tmp_path, missing))
    bad = {**state, "bert.embeddings.word_embeddings.weight": np.zeros((7, 64), np.float32)}
    with pytest.raises(UserError, match="model.safetensors: key 'bert.embeddings.word_embeddings"):
        load_hf_bert(_bert_folder(tmp_path, bad))
    extra = {**state, "bert.encoder.layer.5.output.dense.weight": np.zeros((64, 64), np.float32)}
    with pytest.raises(UserError, match="unexpected key 'bert.encoder.layer.5"):
        load_hf_bert(_bert_folder(tmp_path, extra))
    with pytest.raises(UserError, match="config.json: BERT config: hidden_act"):
        load_hf_bert(_bert_folder(tmp_path, state, {**testing.BERT_CONFIG, "hidden_act": "tanh"}))
