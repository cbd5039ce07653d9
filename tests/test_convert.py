"""Pretrained weights from files: torchvision-layout ResNets from
.safetensors, big_vision ViTs from .npz, into the train driver, and one
clear error for a wrong file. Parity is against independent torch models
(tests/torch_reference.py) with random weights and BatchNorm statistics."""

import functools
import os
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from tljax import models
from tljax.drivers import common
from tljax.models import convert

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_reference as ref  # noqa: E402

TOL = 1e-4


def _images(n, size, channels=3, seed=0):
  return np.random.default_rng(seed).normal(
      size=(n, size, size, channels)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _forward(model, params, state, x):
  """``(logits, pooled features)`` in eval mode, compiled once per model."""
  feats = models.apply(model, params, x, model_state=state,
                       method="features")
  return models.apply(model, params, feats,
                      method="logits_from_features"), feats


def _jax_outputs(model, params, state, x):
  return jax.tree.map(np.asarray, _forward(model, params, state, x))


def _zeros_like_init(model, shape):
  """A model's ``(params, model_state)`` as zeros: their names and shapes,
  without compiling the random initialisers."""
  return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), jax.eval_shape(
      lambda: models.init_variables(model, shape, 0)))


def _save(tmp_path, net, name):
  path = str(tmp_path / name)
  safetensors.torch.save_file(net.state_dict(), path)
  return path


def _max_diff(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


@pytest.mark.parametrize("depth,width,size,classes", [
    (18, 8, 32, 10),    # basic blocks, width-reduced
    (50, 64, 32, 7)])   # bottleneck blocks at torchvision's real width
def test_torchvision_resnet_parity(tmp_path, depth, width, size, classes):
  net = ref.torch_resnet(depth, classes, width=width, seed=depth)
  x = _images(2, size, seed=depth)
  want_logits, want_feats = ref.outputs(net, x)
  path = _save(tmp_path, net, f"resnet{depth}.safetensors")
  model = models.Classifier(models.resnet(depth, width=width), classes)
  init, init_state = jax.eval_shape(
      lambda: models.init_variables(model, x.shape[1:], 0))
  params, state = convert.load_variables(path, like=init)
  # The conversion fills exactly the model's trees (names and shapes).
  assert jax.tree.structure(params) == jax.tree.structure(init)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, init)
  assert jax.tree.map(np.shape, state) == jax.tree.map(np.shape, init_state)
  logits, feats = _jax_outputs(model, params, state, x)
  assert np.abs(want_logits).max() > 0.1  # not a degenerate output
  assert _max_diff(logits, want_logits) <= TOL
  assert _max_diff(feats, want_feats) <= TOL


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory):
  """A width-4 ResNet-18 on one-channel images, as a safetensors file."""
  net = ref.torch_resnet(18, 10, width=4, in_chans=1, seed=3)
  path = _save(tmp_path_factory.mktemp("w"), net, "r18.safetensors")
  return net, path


def test_load_into_keeps_a_new_head_and_checks_names(small_resnet):
  net, path = small_resnet
  model = models.Classifier(models.resnet(18, width=4), 3)  # a new head
  init, init_state = _zeros_like_init(model, (8, 8))
  init["head"]["kernel"] = np.full((32, 3), 0.5, np.float32)
  params, state = common.load_into(path, init, ("head/.*",),
                                   model_state=init_state)
  np.testing.assert_array_equal(params["head"]["kernel"],
                                init["head"]["kernel"])
  sd = ref.state_dict_numpy(net)
  np.testing.assert_array_equal(
      params["backbone"]["stage_2"]["block_0"]["downsample_conv"]["kernel"],
      sd["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      state["batch_stats"]["backbone"]["stage_4"]["block_1"]["bn2"]["var"],
      sd["layer4.1.bn2.running_var"])
  # Without dont_load the 10-class head does not fit: merge_params says so.
  with pytest.raises(ValueError, match=r"shape mismatch for head/bias: "
                     r"source \(10,\) vs target \(3,\)"):
    common.load_into(path, init, model_state=init_state)


def test_wrong_files_are_one_clear_error(tmp_path, small_resnet):
  _, good = small_resnet
  text = tmp_path / "notes.txt"
  text.write_text("not weights")
  with pytest.raises(ValueError, match=r"cannot read .*notes.txt .* takes a "
                     r"\.safetensors state dict"):
    convert.load_variables(str(text))
  other = str(tmp_path / "bert.safetensors")
  safetensors.numpy.save_file(
      {"encoder.layer.0.weight": np.zeros((2, 2), np.float32)}, other)
  with pytest.raises(ValueError, match=r"holds neither a torchvision/timm "
                     r"ResNet .* it has 1 arrays: \['encoder.layer.0.weight'\]"):
    convert.load_variables(other)
  # A ResNet of a depth tljax does not build: what was found, what exists.
  sd = {k: v for k, v in safetensors.numpy.load_file(good).items()
        if not k.startswith(("layer3.1.", "layer4.1."))}
  odd = str(tmp_path / "odd.safetensors")
  safetensors.numpy.save_file(sd, odd)
  with pytest.raises(ValueError, match=r"is a ResNet with basic blocks "
                     r"\(2, 2, 1, 1\) per stage; tljax builds ResNet-18 "
                     r"\(basic blocks \(2, 2, 2, 2\)\)"):
    convert.load_variables(odd)
  # Names beyond the torchvision layout (e.g. a conv bias) are named.
  sd = dict(safetensors.numpy.load_file(good))
  sd["layer1.0.conv1.bias"] = np.zeros(4, np.float32)
  extra = str(tmp_path / "extra.safetensors")
  safetensors.numpy.save_file(sd, extra)
  with pytest.raises(ValueError, match=r"also 1 arrays: "
                     r"\['layer1.0.conv1.bias'\] that tljax's model has no "
                     "place for"):
    convert.load_variables(extra)
  # A ResNet-18 file into a ResNet-50 model: one error naming both.
  like = jax.eval_shape(lambda: models.init_variables(
      models.Classifier(models.resnet(50), 10), (32, 32, 1), 0))[0]
  with pytest.raises(ValueError, match=r"holds a ResNet-18 \(width 4\), but "
                     r"the model is a ResNet-50 \(width 64\); use the "
                     r"backbone that matches the file "
                     r"\(--config.model.name=resnet18\)"):
    convert.load_variables(good, like=like)
  like = jax.eval_shape(lambda: models.init_variables(
      models.Classifier(models.resnet(18, width=8), 10), (32, 32, 1), 0))[0]
  with pytest.raises(ValueError, match=r"model is a ResNet-18 \(width 8\); "
                     r".*\(--config.model.resnet.width=4\)"):
    convert.load_variables(good, like=like)
  # A torch pickle (zip or not) is named as such, with the way out.
  pt = str(tmp_path / "model.pt")
  torch.save({"conv1.weight": torch.zeros(1)}, pt)
  with pytest.raises(ValueError, match=r"not a numpy \.npz \(a torch "
                     r"\.pt/\.pth file\?\).*safetensors.torch.save_file"):
    convert.load_variables(pt)
  with pytest.raises(FileNotFoundError, match="or at a pretrained "
                     r"\.safetensors / \.npz weights file"):
    common.load_into(str(tmp_path / "missing"), {})


# ------------------------------------------------------------ big_vision ViT
def _big_vision_arrays(net, old_layout):
  """The torch ViT's weights under big_vision's npz names (written here from
  the two layouts' documented names, independently of tljax's converter)."""
  sd = ref.state_dict_numpy(net)
  dim = sd["cls_token"].shape[-1]
  heads = net.blocks[0].attn.num_heads
  if old_layout:  # the original ViT release (AugReg checkpoints)
    mha, ln2, mlp = "MultiHeadDotProductAttention_1", "LayerNorm_2", \
        "MlpBlock_3"
    out = {"cls": sd["cls_token"],
           "Transformer/posembed_input/pos_embedding": sd["pos_embed"]}
  else:  # big_vision: no position embedding on the cls token
    mha, ln2, mlp = "MultiHeadDotProductAttention_0", "LayerNorm_1", \
        "MlpBlock_0"
    out = {"cls": sd["cls_token"] + sd["pos_embed"][:, :1],
           "pos_embedding": sd["pos_embed"][:, 1:]}
  out["embedding/kernel"] = sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0)
  out["embedding/bias"] = sd["patch_embed.proj.bias"]
  for i in range(len(net.blocks)):
    b, p = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
    out[p + "LayerNorm_0/scale"] = sd[b + "norm1.weight"]
    out[p + "LayerNorm_0/bias"] = sd[b + "norm1.bias"]
    out[p + ln2 + "/scale"] = sd[b + "norm2.weight"]
    out[p + ln2 + "/bias"] = sd[b + "norm2.bias"]
    w, bias = sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]
    for j, name in enumerate(("query", "key", "value")):
      rows = slice(j * dim, (j + 1) * dim)
      out[f"{p}{mha}/{name}/kernel"] = w[rows].T.reshape(dim, heads, -1)
      out[f"{p}{mha}/{name}/bias"] = bias[rows].reshape(heads, -1)
    out[f"{p}{mha}/out/kernel"] = sd[b + "attn.proj.weight"].T.reshape(
        heads, -1, dim)
    out[f"{p}{mha}/out/bias"] = sd[b + "attn.proj.bias"]
    for j, fc in enumerate(("fc1", "fc2")):
      out[f"{p}{mlp}/Dense_{j}/kernel"] = sd[f"{b}mlp.{fc}.weight"].T
      out[f"{p}{mlp}/Dense_{j}/bias"] = sd[f"{b}mlp.{fc}.bias"]
  out["Transformer/encoder_norm/scale"] = sd["norm.weight"]
  out["Transformer/encoder_norm/bias"] = sd["norm.bias"]
  out["head/kernel"], out["head/bias"] = sd["head.weight"].T, sd["head.bias"]
  return out


@pytest.fixture(scope="module")
def tiny_vit():
  net = ref.torch_vit(img_size=16, patch=4, dim=32, depth=2, num_heads=4,
                      hidden=64, num_classes=5, seed=1)
  model = models.Classifier(models.VisionTransformer(
      patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64), 5)
  x = _images(3, 16, seed=1)
  like = jax.eval_shape(lambda: models.init_variables(model, (16, 16, 3),
                                                      0))[0]
  return net, model, x, like


@pytest.mark.parametrize("old_layout", [False, True])
def test_big_vision_npz_parity(tmp_path, tiny_vit, old_layout):
  net, model, x, like = tiny_vit
  want_logits, want_feats = ref.outputs(net, x)
  path = str(tmp_path / "vit.npz")
  np.savez(path, **_big_vision_arrays(net, old_layout))
  params, state = convert.load_variables(path, like=like)
  assert state == {}
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, like)
  logits, feats = _jax_outputs(model, params, None, x)
  assert _max_diff(logits, want_logits) <= TOL
  assert _max_diff(feats, want_feats) <= TOL


def test_big_vision_without_a_cls_token_is_one_clear_error(tmp_path,
                                                           tiny_vit):
  arrays = _big_vision_arrays(tiny_vit[0], old_layout=False)
  del arrays["cls"]
  path = str(tmp_path / "gap.npz")
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match="without a cls token"):
    convert.load_variables(path)


def test_position_embedding_is_resampled_to_the_target_grid(tmp_path,
                                                            tiny_vit):
  """A 16x16-image file (4x4 patches) into a 24x24-image model (6x6): the
  grid is resized as torch's bilinear interpolation does, the cls entry
  kept."""
  net, _, _, _ = tiny_vit
  path = str(tmp_path / "vit.npz")
  np.savez(path, **_big_vision_arrays(net, old_layout=True))
  big = models.Classifier(models.VisionTransformer(
      patch_size=4, width=32, depth=2, num_heads=4, mlp_dim=64), 5)
  like = jax.eval_shape(lambda: models.init_variables(big, (24, 24, 3),
                                                      0))[0]
  params, _ = convert.load_variables(path, like=like)
  got = params["backbone"]["embed"]["pos_embedding"]
  old = ref.state_dict_numpy(net)["pos_embed"]
  assert got.shape == (1, 37, 32)
  np.testing.assert_array_equal(got[:, 0], old[:, 0])
  want = ref.interpolate_bilinear(old[0, 1:].reshape(4, 4, 32), (6, 6))
  np.testing.assert_allclose(got[0, 1:].reshape(6, 6, 32), want, atol=1e-5)
  logits, _ = _jax_outputs(big, params, None, _images(1, 24))
  assert logits.shape == (1, 5) and np.all(np.isfinite(logits))
