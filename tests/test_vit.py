"""ViT in the timm / big_vision layout: outputs equal an independent torch
ViT with timm's names and random weights after conversion from a timm
.safetensors state dict; timm's parameter counts; names a regex can
address by block; first-k / last-k rules; dropout from the step's rng;
registered by name."""

import functools
import os
import sys

import jax
import numpy as np
import pytest
import safetensors.torch

from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax.methods import finetune
from tljax.methods import supervised
from tljax.models import convert
from tljax.train import state as state_lib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402

TINY = dict(patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64)


def _images(n, size, seed=0):
  return np.random.default_rng(seed).normal(
      size=(n, size, size, 3)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, x):
  feats = models.apply(model, params, x, method="features")
  return models.apply(model, params, feats,
                      method="logits_from_features"), feats


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A random torch ViT (timm names), its safetensors file converted into
  a tiny tljax ViT classifier."""
  net = ref.torch_vit(img_size=16, patch=4, dim=32, depth=2, num_heads=4,
                      hidden=64, num_classes=5, seed=0)
  path = str(tmp_path_factory.mktemp("vit") / "vit.safetensors")
  safetensors.torch.save_file(net.state_dict(), path)
  model = models.Classifier(models.VisionTransformer(**TINY), 5)
  like = jax.eval_shape(lambda: models.init_variables(model, (16, 16, 3),
                                                      0))[0]
  params, state = convert.load_variables(path, like=like)
  assert state == {}
  return net, model, params, like, path


def test_timm_state_dict_parity(converted):
  net, model, params, like, _ = converted
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, like)
  x = _images(3, 16)
  want_logits, want_feats = ref.outputs(net, x)
  logits, feats = _forward(model, params, x)
  assert np.abs(want_logits).max() > 0.1
  assert np.max(np.abs(np.asarray(logits) - want_logits)) <= 1e-4
  assert np.max(np.abs(np.asarray(feats) - want_feats)) <= 1e-4


@pytest.mark.parametrize("name,count", [("vit_ti16", 5_717_416),
                                        ("vit_s16", 22_050_664),
                                        ("vit_b16", 86_567_656)])
def test_parameter_counts_are_timms(name, count):
  """timm's vit_{tiny,small,base}_patch16_224 with a 1000-class head."""
  model = models.Classifier(models.build_backbone(name), 1000)
  params = jax.eval_shape(lambda: models.init_variables(
      model, (224, 224, 3), 0))[0]
  assert params_lib.count_params(params) == count
  assert params["backbone"]["embed"]["pos_embedding"].shape[1] == 1 + 14 * 14


def test_names_layers_and_image_size():
  net = models.vit("s16")
  params = jax.eval_shape(lambda: models.init_variables(
      models.Classifier(net, 3), (32, 48, 3), 0))[0]
  names = params_lib.leaf_names(params)
  block_11 = [n for n in names if n.startswith("backbone/block_11/")]
  assert len(block_11) == 16 and "backbone/block_11/attn/query/kernel" in (
      block_11)
  assert net.layer_names == ("embed",) + tuple(
      f"block_{i}" for i in range(12)) + ("norm",)
  assert net.num_layers == 14
  # Every backbone leaf belongs to one layer, so layer rules cover them all.
  rules = [(p, True) for p in finetune.layer_patterns(net, 14)] + [
      ("head/.*", False)]
  assert params_lib.make_mask(params, rules)["head"]["kernel"] is False
  assert finetune.layer_patterns(net, 2, "last") == (
      "backbone/block_11/.*", "backbone/norm/.*")
  # The position embedding follows the image: 2x3 patches and the cls token.
  assert params["backbone"]["embed"]["pos_embedding"].shape == (1, 7, 384)
  with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
    jax.eval_shape(lambda: models.init_variables(net, (8, 8, 3), 0))


def test_first_and_last_k_layers_freeze_on_a_vit(converted):
  """The first layer (the embedding) and the last (the final LayerNorm)
  frozen, the blocks between and the head trained: one step."""
  _, model, params, _, _ = converted
  rng = np.random.default_rng(0)
  batch = {"x": _images(4, 16, seed=2),
           "y": rng.integers(0, 5, 4).astype(np.int32)}
  keep = (finetune.layer_patterns(model.backbone, 1, "first")
          + finetune.layer_patterns(model.backbone, 1, "last"))
  assert keep == ("backbone/embed/.*", "backbone/norm/.*")
  tx = optim.make_optimizer(params, name="sgd", learning_rate=0.5,
                            lr_rules=finetune.freeze_rules(keep))
  s = state_lib.create_train_state(params, tx)
  new, _ = jax.jit(supervised.make_step(model, tx))(s, batch,
                                                    jax.random.key(0))
  before = dict(zip(params_lib.leaf_names(params), jax.tree.leaves(params)))
  after = dict(zip(params_lib.leaf_names(new.params),
                   jax.tree.leaves(new.params)))
  for name in before:
    if name.endswith("attn/key/bias"):
      continue  # softmax ignores a key bias: its gradient is exactly zero
    frozen = name.startswith(("backbone/embed/", "backbone/norm/"))
    assert np.array_equal(before[name], after[name]) == frozen, name


def test_dropout_takes_the_steps_rng(converted):
  _, _, params, _, _ = converted
  x = _images(2, 16)
  plain = models.Classifier(models.VisionTransformer(**TINY), 5)
  drop = models.Classifier(models.VisionTransformer(**TINY, dropout=0.3), 5)

  @jax.jit
  def run(key):
    return (models.apply(drop, params, x, train=True, rng=key),
            models.apply(drop, params, x),
            models.apply(plain, params, x))

  a, eval_out, reference = run(jax.random.key(0))
  b, _, _ = run(jax.random.key(1))
  a2, _, _ = run(jax.random.key(0))
  np.testing.assert_array_equal(eval_out, reference)  # eval: no dropout
  np.testing.assert_array_equal(a, a2)                # the key decides
  assert not np.allclose(a, b) and not np.allclose(a, eval_out)


def test_registered_by_name_with_its_own_settings():
  cfg = models.model_config("vit_b16", dropout=0.1)
  assert cfg["vit"] == {"dropout": 0.1}
  net = models.backbone_from_config(cfg, (224, 224, 3), "image")
  assert (net.width, net.depth, net.num_heads, net.mlp_dim, net.patch_size,
          net.dropout) == (768, 12, 12, 3072, 16, 0.1)
  assert models.build_backbone("vit_ti16").num_heads == 3
  with pytest.raises(ValueError, match="backbone 'vit_s16' reads images"):
    models.backbone_from_config({"name": "vit_s16"}, (40,))
  with pytest.raises(ValueError, match="unknown ViT variant"):
    models.vit("l16")


def test_a_file_of_another_vit_is_one_clear_error(converted):
  path = converted[-1]
  like = jax.eval_shape(lambda: models.init_variables(
      models.Classifier(models.vit("ti16"), 5), (32, 32, 3), 0))[0]
  with pytest.raises(ValueError, match=r"holds a ViT \(patch 4, width 32, "
                     r"depth 2\), but the model is a ViT \(patch 16, width "
                     r"192, depth 12\)"):
    convert.load_variables(path, like=like)
