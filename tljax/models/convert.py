"""Pretrained weights from local files into tljax's parameter trees.

Reads, without torch:

- a torchvision (or timm: same names) ResNet-18/34/50/101 state dict saved as
  ``.safetensors`` (``conv1.weight``, ``bn1.running_mean``,
  ``layer1.0.conv1.weight``, ..., ``fc.weight``);
- a timm ViT state dict saved as ``.safetensors`` (``patch_embed.proj.weight``,
  ``cls_token``, ``pos_embed``, ``blocks.<i>.attn.qkv.weight``, ...,
  ``head.weight``);
- a big_vision ViT ``.npz`` (``embedding/kernel``, ``cls``,
  ``pos_embedding``, ``Transformer/encoderblock_<i>/...``), including the
  older layout of the original ViT release (``posembed_input``,
  ``MultiHeadDotProductAttention_1``, ``MlpBlock_3``), the one of the AugReg
  checkpoints (Steiner et al., 2022).

The layout is recognised by the names inside the file, not by its suffix.
Each is converted to a ``Classifier``'s trees, ``({'backbone': ..., 'head':
...}, {'batch_stats': {'backbone': ...}})`` for a ResNet (``(params, {})``
for a ViT): convolution kernels OIHW -> HWIO, linear weights transposed,
BatchNorm running mean / variance into ``batch_stats``, timm's fused ``qkv``
split into flax's per-head query / key / value. The file's classifier
becomes ``head``: load with ``dont_load=('head/.*',)`` for a new one. A state
dict saved with torch is made readable here by
``safetensors.torch.save_file(model.state_dict(), 'resnet50.safetensors')``.

:func:`load_variables` is what ``init_from=<file>`` calls
(:func:`tljax.train.checkpoint.load_variables`); given the target model's
parameters it also names a different architecture in one error and
resamples a ViT's position embedding to the target's patch grid, as
big_vision's ``load`` does.

  >>> import numpy as np, safetensors.numpy
  >>> safetensors.numpy.save_file({'fc.weight': np.zeros((3, 4), 'float32')},
  ...                             '/tmp/fc.safetensors')
  >>> load_variables('/tmp/fc.safetensors')
  Traceback (most recent call last):
  ...
  ValueError: /tmp/fc.safetensors holds neither a torchvision/timm ResNet ...
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any, Mapping

import flax
import jax
import numpy as np
import safetensors.numpy

# (tljax.models exports functions named resnet and vit: import from the
# modules themselves.)
from tljax.models.resnet import DEPTHS as RESNET_DEPTHS
from tljax.models.vit import PATCH_SIZE
from tljax.models.vit import VARIANTS as VIT_VARIANTS

PyTree = Any
# safetensors: an 8-byte little-endian header length, then a JSON header.
_SAFETENSORS_HEAD = b"{"
_KINDS = ("a .safetensors state dict (torchvision/timm ResNet, timm ViT), "
          "a big_vision ViT .npz, or a tljax workdir / params directory")


def is_weights_file(path: str) -> bool:
  """Whether ``path`` is a file (a weights file), not a tljax checkpoint
  directory."""
  return os.path.isfile(os.path.abspath(os.path.expanduser(path)))


def read_arrays(path: str) -> dict[str, np.ndarray]:
  """The named arrays of a ``.safetensors`` or ``.npz`` file (as float32
  where they are floats).

  Raises:
    ValueError: if the file is neither.
  """
  path = os.path.abspath(os.path.expanduser(path))
  with open(path, "rb") as f:
    head = f.read(9)
  try:
    if zipfile.is_zipfile(path):
      with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
      if not all(isinstance(v, np.ndarray) for v in arrays.values()):
        raise ValueError("a zip archive, but not a numpy .npz (a torch "
                         ".pt/.pth file?)")
    elif len(head) == 9 and head[8:9] == _SAFETENSORS_HEAD:
      arrays = safetensors.numpy.load_file(path)
    else:
      raise ValueError("not a safetensors or npz file")
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"cannot read {path} ({type(e).__name__}: {e}); init_from takes "
        f"{_KINDS}. A torch .pth/.pt state dict: save it with "
        "safetensors.torch.save_file(torch.load(p), 'model.safetensors') "
        "first.") from None
  return {k: (np.asarray(v, np.float32)
              if np.issubdtype(v.dtype, np.floating)
              or v.dtype.name == "bfloat16" else np.asarray(v))
          for k, v in arrays.items()}


def load_variables(path: str, like: PyTree | None = None
                   ) -> tuple[PyTree, dict]:
  """``(params, model_state)`` of the pretrained model in the file at
  ``path`` (see the module docstring for the layouts).

  Args:
    path: a ``.safetensors`` or ``.npz`` file.
    like: the target model's parameters (``{'backbone': ..., ...}``), if
      known: a ViT's heads are read from it (a state dict does not record
      them; without it, 64 channels per head as in every ViT-Ti/S/B), a
      different architecture is one error naming both, and the position
      embedding is resampled to its grid.

  Raises:
    ValueError: on a file that is neither kind, names of no known layout,
      or a ResNet depth tljax does not build.
  """
  arrays = read_arrays(path)
  heads = None
  if like is not None and "patch_embed.proj.weight" in arrays:
    q = _flat(like).get("backbone/block_0/attn/query/kernel")
    if q is not None and np.shape(q)[0] == len(
        arrays["patch_embed.proj.weight"]):  # else: another ViT, see below
      heads = int(np.shape(q)[1])
  if "conv1.weight" in arrays and any(k.startswith("layer1.")
                                      for k in arrays):
    params, state = from_torchvision_resnet(arrays, source=path)
  elif "patch_embed.proj.weight" in arrays:
    params, state = from_timm_vit(arrays, num_heads=heads, source=path), {}
  elif any(k == "embedding/kernel" or k.endswith("/embedding/kernel")
           for k in arrays):
    params, state = from_big_vision_vit(arrays, source=path), {}
  else:
    raise ValueError(
        f"{path} holds neither a torchvision/timm ResNet (conv1.weight, "
        "layer1.0.conv1.weight, ...) nor a timm ViT (patch_embed.proj.weight,"
        " blocks.0.attn.qkv.weight, ...) nor a big_vision ViT "
        f"(embedding/kernel, Transformer/encoderblock_0/...); it has "
        f"{_some(arrays)}")
  if like is not None:
    _check_same_architecture(params, like, path)
    params = _resample_posemb(params, like)
  return params, state


def _some(names, n: int = 6) -> str:
  names = sorted(names)
  more = f" and {len(names) - n} more" if len(names) > n else ""
  return f"{len(names)} arrays: {names[:n]}{more}"


def _unflatten(flat: Mapping[str, np.ndarray]) -> PyTree:
  return flax.traverse_util.unflatten_dict(dict(flat), sep="/")


def _flat(tree: PyTree) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/")


def _conv(w: np.ndarray) -> np.ndarray:
  """torch's (out, in, h, w) kernel as flax's (h, w, in, out)."""
  return np.transpose(w, (2, 3, 1, 0))


def _unknown(names, source: str, what: str):
  if names:
    raise ValueError(f"{source}: {what} {_some(names)} that tljax's model "
                     "has no place for (a variant it does not build)")


# ------------------------------------------------------------------ ResNet
_TV_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\."
                       r"(weight|bias|running_mean|running_var)")
_TV_STEM = re.compile(r"(conv1|bn1)\.(weight|bias|running_mean|running_var)")
_BN_LEAF = {"weight": ("params", "scale"), "bias": ("params", "bias"),
            "running_mean": ("batch_stats", "mean"),
            "running_var": ("batch_stats", "var")}


def from_torchvision_resnet(state_dict: Mapping[str, np.ndarray], *,
                            source: str = "the state dict"
                            ) -> tuple[PyTree, dict]:
  """A torchvision (or timm) ResNet state dict as ``(params,
  {'batch_stats': ...})`` of ``Classifier(resnet(depth), num_classes)``.

  Raises:
    ValueError: on names it does not know, or stage sizes of no ResNet
      depth tljax builds (:data:`tljax.models.resnet.DEPTHS`).
  """
  params, stats, unknown, blocks = {}, {}, [], {}
  for key, value in state_dict.items():
    if key.endswith("num_batches_tracked"):
      continue
    if key in ("fc.weight", "fc.bias"):
      params["head/" + ("kernel" if key == "fc.weight" else "bias")] = (
          value.T if value.ndim == 2 else value)
      continue
    m, s = _TV_BLOCK.fullmatch(key), _TV_STEM.fullmatch(key)
    if m:
      stage, block, layer, leaf = m.groups()
      blocks.setdefault(int(stage), set()).add(int(block))
      layer = {"downsample.0": "downsample_conv",
               "downsample.1": "downsample_bn"}.get(layer, layer)
      where = f"backbone/stage_{stage}/block_{block}/{layer}"
    elif s:
      layer, leaf = s.groups()
      where = "backbone/stem/" + ("conv" if layer == "conv1" else "bn")
    else:
      unknown.append(key)
      continue
    if "conv" in where.rsplit("/", 1)[1] and leaf == "weight":
      params[where + "/kernel"] = _conv(value)
    elif "bn" in where.rsplit("/", 1)[1]:
      collection, name = _BN_LEAF[leaf]
      (params if collection == "params" else stats)[f"{where}/{name}"] = value
    else:
      unknown.append(key)
  _unknown(unknown, source, "it has ResNet-like names but also")
  bottleneck = any("/conv3/" in k for k in params)
  sizes = tuple(len(blocks.get(i, ())) for i in range(1, max(blocks) + 1))
  found = ("bottleneck" if bottleneck else "basic", sizes)
  if found not in RESNET_DEPTHS.values():
    expected = ", ".join(f"ResNet-{d} ({b} blocks {s})"
                         for d, (b, s) in RESNET_DEPTHS.items())
    raise ValueError(f"{source} is a ResNet with {found[0]} blocks "
                     f"{sizes} per stage; tljax builds {expected}")
  return _unflatten(params), {"batch_stats": _unflatten(stats)}


# --------------------------------------------------------------------- ViT
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|"
                         r"mlp\.fc1|mlp\.fc2)\.(weight|bias)")


def from_timm_vit(state_dict: Mapping[str, np.ndarray], *,
                  num_heads: int | None = None,
                  source: str = "the state dict") -> PyTree:
  """A timm ``VisionTransformer`` state dict (class-token pooling, no
  LayerScale or registers) as the params of ``Classifier(
  VisionTransformer(...), num_classes)``.

  Args:
    state_dict: names to arrays.
    num_heads: attention heads (a state dict does not record them);
      default ``width // 64``, as in ViT-Ti/S/B/L.
    source: the file's name, for errors.
  """
  sd = dict(state_dict)
  width = sd["patch_embed.proj.weight"].shape[0]
  heads = num_heads or (width // 64 if width % 64 == 0 else 1)
  out, unknown = {}, []
  for key, value in sd.items():
    m = _TIMM_BLOCK.fullmatch(key)
    if key == "patch_embed.proj.weight":
      out["backbone/embed/patch/kernel"] = _conv(value)
    elif key == "patch_embed.proj.bias":
      out["backbone/embed/patch/bias"] = value
    elif key == "cls_token":
      out["backbone/embed/cls"] = value
    elif key == "pos_embed":
      out["backbone/embed/pos_embedding"] = value
    elif key in ("norm.weight", "norm.bias"):
      out["backbone/norm/" + ("scale" if key.endswith("weight")
                              else "bias")] = value
    elif key in ("head.weight", "head.bias"):
      out["head/" + ("kernel" if key.endswith("weight") else "bias")] = (
          value.T if value.ndim == 2 else value)
    elif m:
      i, layer, leaf = m.groups()
      where = f"backbone/block_{i}/"
      if layer.startswith("norm"):
        out[where + layer + ("/scale" if leaf == "weight" else "/bias")] = (
            value)
      elif layer == "attn.qkv":
        # Rows are (3, heads, head_dim): timm's reshape(B, N, 3, H, hd).
        for name, part in zip(("query", "key", "value"),
                              np.split(value, 3, axis=0)):
          if leaf == "weight":
            out[where + f"attn/{name}/kernel"] = part.T.reshape(
                width, heads, -1)
          else:
            out[where + f"attn/{name}/bias"] = part.reshape(heads, -1)
      elif layer == "attn.proj":
        out[where + "attn/out/" + ("kernel" if leaf == "weight" else
                                   "bias")] = (
            value.T.reshape(heads, -1, width) if leaf == "weight" else value)
      else:
        out[where + layer.replace(".", "/") + (
            "/kernel" if leaf == "weight" else "/bias")] = (
                value.T if leaf == "weight" else value)
    else:
      unknown.append(key)
  _unknown(unknown, source, "it is a timm ViT but has")
  missing = [k for k in ("cls_token", "pos_embed", "norm.weight")
             if k not in sd]
  _unknown(missing, source, "it is a timm ViT but lacks")
  return _unflatten(out)


_BV_BLOCK = re.compile(
    r"Transformer/encoderblock_(\d+)/(LayerNorm_\d|"
    r"MultiHeadDotProductAttention_\d/(?:query|key|value|out)|"
    r"MlpBlock_\d/Dense_[01])/(scale|bias|kernel)")


def from_big_vision_vit(arrays: Mapping[str, np.ndarray], *,
                        source: str = "the npz") -> PyTree:
  """A big_vision ViT (``pool_type='tok'``: a cls token) as the params of
  ``Classifier(VisionTransformer(...), num_classes)``; the original ViT
  release's names (``posembed_input``, ``LayerNorm_2``, ``MlpBlock_3``,
  ``MultiHeadDotProductAttention_1``) too. big_vision adds no position
  embedding to its cls token; that is a zero one here."""
  # A training checkpoint nests the parameters ("params/", "opt/target/")
  # beside the optimizer's state: keep the parameters.
  prefix = min((k[:-len("embedding/kernel")] for k in arrays
                if k.endswith("embedding/kernel")), key=len, default="")
  arrays = {k[len(prefix):]: v for k, v in arrays.items()
            if k.startswith(prefix)}
  if "cls" not in arrays:
    raise ValueError(
        f"{source} is a big_vision ViT without a cls token (pool_type gap or"
        " map); tljax's ViT pools its cls token: use a checkpoint trained "
        "with pool_type='tok' (the AugReg ones, timm's vit_*_augreg)")
  if "pre_logits/kernel" in arrays:
    raise ValueError(f"{source} has a pre_logits layer (a representation "
                     "layer before the head) that tljax's ViT has not")
  out, unknown = {}, []
  posemb = None
  for key, value in arrays.items():
    m = _BV_BLOCK.fullmatch(key)
    if key in ("embedding/kernel", "embedding/bias"):
      out["backbone/embed/patch/" + key.split("/")[1]] = value
    elif key == "cls":
      out["backbone/embed/cls"] = value
    elif key in ("pos_embedding", "Transformer/pos_embedding",
                 "Transformer/posembed_input/pos_embedding"):
      posemb = value
    elif key.startswith("Transformer/encoder_norm/"):
      out["backbone/norm/" + key.rsplit("/", 1)[1]] = value
    elif key in ("head/kernel", "head/bias"):
      out[key] = value
    elif m:
      i, layer, leaf = m.groups()
      if layer.startswith("LayerNorm"):
        # The old layout numbers every submodule of a block (LayerNorm_0,
        # MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3).
        layer = "norm1" if layer == "LayerNorm_0" else "norm2"
      elif layer.startswith("MlpBlock"):
        layer = "mlp/fc1" if layer.endswith("Dense_0") else "mlp/fc2"
      else:
        layer = "attn/" + layer.rsplit("/", 1)[1]
      out[f"backbone/block_{i}/{layer}/{leaf}"] = value
    else:
      unknown.append(key)
  _unknown(unknown, source, "it is a big_vision ViT but has")
  if posemb is None:
    raise ValueError(f"{source} is a big_vision ViT without a position "
                     "embedding (sincos2d?); tljax's ViT learns one")
  n = posemb.shape[1]
  if int(np.sqrt(n)) ** 2 != n - 1:  # big_vision's: patches only
    posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
  out["backbone/embed/pos_embedding"] = posemb
  return _unflatten(out)


# ------------------------------------------------------- fitting the target
def describe(params: PyTree) -> str | None:
  """The architecture of a ResNet or ViT ``Classifier``'s params in words
  (e.g. ``ResNet-50 (width 64)``), or None for other models."""
  flat = _flat(params)
  bb = {k[len("backbone/"):]: v for k, v in flat.items()
        if k.startswith("backbone/")}
  if "stem/conv/kernel" in bb:
    blocks = {}
    for k in bb:
      m = re.match(r"stage_(\d+)/block_(\d+)/", k)
      if m:
        blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    sizes = tuple(len(blocks[i]) for i in sorted(blocks))
    kind = "bottleneck" if any("/conv3/" in k for k in bb) else "basic"
    depth = next((d for d, v in RESNET_DEPTHS.items()
                  if v == (kind, sizes)), None)
    width = np.shape(bb["stem/conv/kernel"])[-1]
    name = f"ResNet-{depth}" if depth else f"ResNet ({kind} blocks {sizes})"
    return f"{name} (width {width})"
  if "embed/patch/kernel" in bb:
    p, _, _, width = np.shape(bb["embed/patch/kernel"])
    depth = len({k.split("/")[0] for k in bb if k.startswith("block_")})
    return f"ViT (patch {p}, width {width}, depth {depth})"
  return None


def _check_same_architecture(loaded: PyTree, like: PyTree, source: str):
  found, expected = describe(loaded), describe(like)
  if not (found and expected) or found == expected:
    return
  flat = _flat(loaded)
  depth = re.match(r"ResNet-(\d+) \(width (\d+)\)$", found)
  if depth and expected.startswith(f"ResNet-{depth[1]} "):
    hint = f"--config.model.resnet.width={depth[2]}"
  elif depth:
    hint = f"--config.model.name=resnet{depth[1]}"
  else:
    names = [f"vit_{v}" for v, c in VIT_VARIANTS.items()
             if found == f"ViT (patch {PATCH_SIZE}, width {c['width']}, "
             f"depth {c['depth']})"
             and np.shape(flat["backbone/block_0/mlp/fc1/kernel"])[1]
             == c["mlp_dim"]]
    hint = (f"--config.model.name={names[0]}" if names else
            "the backbone settings that fit it")
  raise ValueError(f"{source} holds a {found}, but the model is a "
                   f"{expected}; use the backbone that matches the file "
                   f"({hint})")


def _resample_posemb(params: PyTree, like: PyTree) -> PyTree:
  """The file's position embedding resampled (bilinear) to the target's
  square patch grid when the image sizes differ (Dosovitskiy et al., 2021,
  sec. 3.2: "2D interpolation of the pre-trained position embeddings");
  the cls entry is kept."""
  key = "backbone/embed/pos_embedding"
  flat, target = _flat(params), _flat(like).get(key)
  if key not in flat or target is None:
    return params
  old, (_, n_new, _) = flat[key], np.shape(target)
  g_old, g_new = int(np.sqrt(old.shape[1] - 1)), int(np.sqrt(n_new - 1))
  if (old.shape[1] == n_new or g_old ** 2 != old.shape[1] - 1
      or g_new ** 2 != n_new - 1):
    return params  # same grid, or not square: merge_params checks shapes
  grid = old[0, 1:].reshape(g_old, g_old, -1)
  grid = jax.image.resize(grid, (g_new, g_new, grid.shape[-1]), "bilinear")
  flat[key] = np.concatenate(
      [old[:, :1], np.asarray(grid, old.dtype).reshape(1, g_new ** 2, -1)],
      axis=1)
  return _unflatten(flat)
