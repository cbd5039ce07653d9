"""Backbones and the classifier that puts a head on them.

Every layer that holds parameters inside a backbone is called ``layer_<i>``
counting from the input, whatever its type, so a regex can name "the first
two layers" (``backbone/layer_[01]/.*``) or "the last one" on any backbone;
``Backbone.num_layers`` says how many there are.

  >>> import jax, jax.numpy as jnp
  >>> model = Classifier(backbone=MLP(features=(32, 32)), num_classes=10)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 40)))['params']
  >>> sorted(params), sorted(params['backbone'])
  (['backbone', 'head'], ['layer_0', 'layer_1'])
"""

from __future__ import annotations

import functools
import inspect
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tljax import ops
from tljax.models import resnet as resnet_lib
from tljax.models import vit as vit_lib


def dense_layers(x, features: Sequence[int], *, start: int = 0):
  """``Dense -> relu`` per entry of ``features`` on flattened ``x``, the
  layers named ``layer_<start + i>``. Call it inside a module's compact
  method: the layers belong to that module."""
  x = x.reshape((x.shape[0], -1))
  for i, f in enumerate(features):
    x = nn.relu(nn.Dense(f, name=f"layer_{start + i}")(x))
  return x


class MLP(nn.Module):
  """Fully connected backbone: ``Dense -> relu`` per entry of ``features``."""
  features: Sequence[int] = (128, 128)

  @property
  def num_layers(self) -> int:
    return len(self.features)

  @property
  def layer_names(self) -> tuple[str, ...]:
    return tuple(f"layer_{i}" for i in range(self.num_layers))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    return dense_layers(x, self.features)


class _ConvNet(nn.Module):
  """Shared by the CNNs: ``len(channels)`` conv layers (``_conv``), then an
  optional dense one."""
  _spatial_dims = 1  # inputs with this many axes after the batch get a channel

  @property
  def num_layers(self) -> int:
    return len(self.channels) + (1 if self.dense else 0)

  @property
  def layer_names(self) -> tuple[str, ...]:
    return tuple(f"layer_{i}" for i in range(self.num_layers))

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    if x.ndim == self._spatial_dims + 1:
      x = x[..., None]
    for i, c in enumerate(self.channels):
      x = self._conv(x, c, f"layer_{i}")
    return dense_layers(x, (self.dense,) if self.dense else (),
                        start=len(self.channels))


class CNN1D(_ConvNet):
  """Small 1-D CNN for signals such as mnist1d, input ``(batch, length)`` or
  ``(batch, length, channels)``: conv layers (stride 2), then a dense layer.
  """
  channels: Sequence[int] = (32, 32, 32)
  kernel_size: int = 5
  dense: int = 128

  def _conv(self, x, channels: int, name: str):
    return nn.relu(nn.Conv(channels, (self.kernel_size,), strides=(2,),
                           name=name)(x))


class CNN2D(_ConvNet):
  """LeNet-sized 2-D CNN for NHWC images (8x8 digits up to 32x32): 3x3 conv
  layers, each followed by 2x2 max pooling while the image is large enough,
  then a dense layer.

  The pooling runs through :func:`tljax.ops.max_pool_2x2`: the same
  function as ``nn.max_pool`` (tested), with a faster backward pass on the
  CPU (a 1.4x faster step at B = 256, ``benchmarks/conv_kernels.py``'s
  notes in BUILD.md). The convolutions are XLA's own: im2col matmuls were
  measured slower for every pass this step uses.
  """
  channels: Sequence[int] = (32, 64)
  dense: int = 128
  _spatial_dims = 2

  def _conv(self, x, channels: int, name: str):
    x = nn.relu(nn.Conv(channels, (3, 3), padding="SAME", name=name,
                        conv_general_dilated=ops.conv)(x))
    if min(x.shape[1:3]) >= 2:
      x = ops.max_pool_2x2(x)
    return x


class Classifier(nn.Module):
  """``head(backbone(x))``; parameters ``{'backbone': ..., 'head': ...}``.

  ``model.apply(v, x, method='features')`` returns the backbone's output, and
  ``model.apply(v, feats, method='logits_from_features')`` the head on it, so
  cached features and a frozen backbone give the same logits.
  """
  backbone: nn.Module
  num_classes: int

  def setup(self):
    self.head = nn.Dense(self.num_classes)

  def features(self, x, *, train: bool = False):
    return self.backbone(x, train=train)

  def logits_from_features(self, h):
    return self.head(h)

  def __call__(self, x, *, train: bool = False):
    return self.head(self.backbone(x, train=train))


BACKBONES = {"mlp": MLP, "cnn1d": CNN1D, "cnn2d": CNN2D}
for _depth in resnet_lib.DEPTHS:
  BACKBONES[f"resnet{_depth}"] = functools.partial(resnet_lib.resnet, _depth)
for _variant in vit_lib.VARIANTS:
  BACKBONES[f"vit_{_variant}"] = functools.partial(vit_lib.vit, _variant)


def _family(name: str) -> str:
  """The key of a backbone's settings in a model config: its name, or
  ``resnet`` for every ResNet depth, ``vit`` for every ViT variant."""
  return next((f for f in ("resnet", "vit") if name.startswith(f)), name)


FAMILIES = tuple(dict.fromkeys(_family(n) for n in BACKBONES))

# The example ranks each family reads (``None``: any): signals are
# (length,) or (length, channels), images (h, w) or (h, w, channels).
_INPUT_RANKS = {"mlp": None, "cnn1d": (1, 2), "cnn2d": (2, 3),
                "resnet": (2, 3), "vit": (2, 3)}
_INPUT_KIND = {"cnn1d": "signals (length[, channels])",
               "cnn2d": "images (height, width[, channels])",
               "resnet": "images (height, width[, channels])",
               "vit": "images (height, width[, channels])"}


def backbone_settings(name: str) -> dict:
  """The settings backbone ``name`` takes, with their defaults.

    >>> backbone_settings("mlp")
    {'features': (128, 128)}
  """
  if name not in BACKBONES:
    raise ValueError(f"unknown backbone {name!r}; choose one of "
                     f"{sorted(BACKBONES)} (or auto)")
  params = inspect.signature(BACKBONES[name]).parameters
  return {k: p.default for k, p in params.items()
          if k not in ("parent", "name") and not k.startswith("_")
          and p.default is not inspect.Parameter.empty}


def build_backbone(name: str, **kwargs) -> nn.Module:
  """A backbone by name (``mlp``, ``cnn1d``, ``cnn2d``, ``resnet18`` ...
  ``resnet101``, ``vit_ti16``, ``vit_s16``, ``vit_b16``) and its settings."""
  allowed = backbone_settings(name)
  bad = sorted(set(kwargs) - set(allowed))
  if bad:
    raise ValueError(f"backbone {name!r} takes no setting {bad[0]!r}; its "
                     f"settings are {sorted(allowed)}")
  kwargs = {k: (tuple(v) if isinstance(v, list) else v)
            for k, v in kwargs.items()}
  return BACKBONES[name](**kwargs)


def model_config(name: str = "auto", **settings) -> dict:
  """A model config: the backbone's ``name`` (or ``auto``) and every
  backbone's settings under its own key, so another backbone can be named
  on the command line without touching the fields of the first.

    >>> c = model_config("mlp", features=(32, 32))
    >>> c["name"], c["mlp"], c["cnn1d"]["channels"]
    ('mlp', {'features': (32, 32)}, (32, 32, 32))

  ``settings`` are the named backbone's; a backbone's key (``mlp=dict(...)``,
  ``resnet=dict(width=32)``) sets that backbone's. Unknown fields are one
  clear error.
  """
  config = {"name": name}
  for fam in FAMILIES:
    example = next(n for n in BACKBONES if _family(n) == fam)
    config[fam] = dict(backbone_settings(example))
  for key, value in settings.items():
    if key in FAMILIES:
      fam, values = key, dict(value)
    elif name == "auto":
      raise ValueError(f"model_config('auto', {key}=...): with auto, give "
                       "settings per backbone, e.g. mlp=dict(features=(64,))")
    else:
      fam, values = _family(name), {key: value}
    for k, v in values.items():
      if k not in config[fam]:
        raise ValueError(f"backbone {fam!r} takes no setting {k!r}; its "
                         f"settings are {sorted(config[fam])}")
      config[fam][k] = tuple(v) if isinstance(v, list) else v
  return config


def backbone_from_config(model_config, example_shape=None,
                         modality: str | None = None) -> nn.Module:
  """The backbone a model config names, with that backbone's settings.

  ``name: auto`` picks by what the data is (:func:`default_backbone_for`).
  Settings come from the backbone's own key (``model.mlp.features``, made by
  :func:`model_config`; ``model.resnet.width`` for every ResNet depth), or
  from fields beside ``name`` (``model.features``), which win. A field the
  named backbone does not take is one error naming both. ``None`` fields
  mean "the backbone's default" (the flag parser turns
  ``--config.model.features=None`` on a tuple field into ``(None,)``, so
  that counts as ``None`` too).
  """
  cfg = dict(model_config)
  cfg.pop("name", None)
  name = backbone_name(model_config, example_shape, modality)
  allowed = backbone_settings(name)
  fam = _family(name)
  ranks = _INPUT_RANKS[fam]
  if (example_shape is not None and ranks is not None
      and len(tuple(example_shape)) not in ranks):
    raise ValueError(
        f"backbone {name!r} reads {_INPUT_KIND[fam]}, but the examples have "
        f"shape {tuple(example_shape)}; name a backbone that fits "
        f"(model.name=auto picks {default_backbone_for(example_shape, modality)!r})")
  subs = {k: cfg.pop(k) for k in list(cfg) if k in FAMILIES}
  settings = {}
  for where, fields in ((f"model.{fam}", dict(subs.get(fam) or {})),
                        ("model", cfg)):
    for k, v in fields.items():
      if v is None or v == (None,):
        continue
      if k not in allowed:
        raise ValueError(
            f"config field {where}.{k} is not a setting of backbone "
            f"{name!r}, which takes {sorted(allowed)}; set them as "
            f"--config.model.{fam}.<field>, or name a backbone that takes "
            f"{k!r}")
      settings[k] = v
  return build_backbone(name, **settings)


def backbone_name(model_config, example_shape=None,
                  modality: str | None = None) -> str:
  """The backbone a model config names; ``auto`` resolved as
  :func:`backbone_from_config` does."""
  name = dict(model_config).get("name", "auto")
  if name == "auto":
    if example_shape is None:
      raise ValueError("model name 'auto' needs the example shape")
    name = default_backbone_for(example_shape, modality)
  return name


def build_classifier(model_config, num_classes: int, example_shape=None,
                     modality: str | None = None) -> Classifier:
  """A :class:`Classifier` on :func:`backbone_from_config`'s backbone."""
  return Classifier(backbone=backbone_from_config(model_config, example_shape,
                                                  modality),
                    num_classes=num_classes)


def default_backbone_for(example_shape: Sequence[int],
                         modality: str | None = None) -> str:
  """The backbone for data of this shape and modality: ``cnn2d`` for
  images, ``cnn1d`` for signals (mnist1d), ``mlp`` for feature vectors.
  Without a modality the shape decides: (h, w, c) images, (length,
  channels) signals, anything else vectors; a flat vector is never taken
  for a signal unless its data set says so.

    >>> default_backbone_for((40,), "signal"), default_backbone_for((40,))
    ('cnn1d', 'mlp')
  """
  if modality is None:
    modality = {3: "image", 2: "signal"}.get(len(example_shape), "vector")
  if modality == "image" and len(example_shape) in (2, 3):
    return "cnn2d"
  if modality == "signal" and len(example_shape) in (1, 2):
    return "cnn1d"
  return "mlp"


@functools.partial(jax.jit, static_argnames=("model", "method"))
def _init(model, method, key, *inputs):
  return model.init(key, *inputs, method=method)


def init_variables(model: nn.Module, example, seed, *more_inputs,
                   method: str | None = None) -> tuple[dict, dict]:
  """``(params, model_state)`` of ``model``, from a seed or a key, compiled
  once per model and input shapes.

  ``model_state`` holds every collection but ``params`` (BatchNorm's
  ``batch_stats``; ``{}`` for models without state): what the train state
  carries as ``model_state``, updated by training steps, never
  differentiated.

  Args:
    model: a linen module.
    example: the example shape (a tuple of ints; one all-zero example is
      used) or an array batch of the first input.
    seed: an int seed or a ``jax.random`` key.
    *more_inputs: further inputs the module takes after the first (e.g.
      class descriptions, support labels); arrays, used for their shapes.
    method: the module method to initialise through (default ``__call__``).

  Eager ``model.init`` dispatches every random and array operation one by
  one; the compiled initialiser is one program, reused for every seed.
  """
  key = jax.random.key(seed) if isinstance(seed, int) else seed
  if isinstance(example, (tuple, list)) and all(
      isinstance(d, (int, np.integer)) for d in example):
    example = jnp.zeros((1,) + tuple(int(d) for d in example), jnp.float32)
  variables = dict(_init(model, method, key, example, *more_inputs))
  params = variables.pop("params", {})
  return params, variables


def init_params(model: nn.Module, example, seed, *more_inputs,
                method: str | None = None) -> dict:
  """The ``params`` of :func:`init_variables` (for models without state).

    >>> p = init_params(MLP((4,)), (3,), 0)
    >>> p['layer_0']['kernel'].shape
    (3, 4)
  """
  return init_variables(model, example, seed, *more_inputs, method=method)[0]


def apply(model: nn.Module, params, x, *args, model_state=None,
          train: bool = False, rng=None, method=None, **kwargs):
  """``model``'s output for ``x`` (and further ``args``).

  ``model_state`` is the model's other collections (BatchNorm statistics).
  With ``train=True`` and a model state the model normalises with the
  batch's statistics; use :func:`apply_train` to keep their update.
  ``rng`` feeds dropout (``rngs={'dropout': rng}``) when training.
  """
  return apply_train(model, params, x, *args, model_state=model_state,
                     train=train, rng=rng, method=method, **kwargs)[0]


def apply_train(model: nn.Module, params, x, *args, model_state=None,
                train: bool = True, rng=None, method=None, **kwargs):
  """``(output, new model_state)``: a training forward pass that updates
  the model's state (BatchNorm running statistics) where it has one.

  Losses of models with state return ``(loss, (metrics, model_state))``
  (see :func:`tljax.train.train_step`). ``train=False`` (e.g. fine-tuning
  with frozen BatchNorm, TLlib's ``freeze_bn``) uses the running statistics
  and leaves them as they are.
  """
  model_state = dict(model_state or {})
  variables = {"params": params, **model_state}
  rngs = {"dropout": rng} if train and rng is not None else None
  if train and model_state:
    out, updates = model.apply(variables, x, *args, train=True, rngs=rngs,
                               method=method, mutable=list(model_state),
                               **kwargs)
    return out, {**model_state, **updates}
  out = model.apply(variables, x, *args, rngs=rngs, method=method,
                    **({"train": train} if _takes_train(model, method)
                       else {}), **kwargs)
  return out, model_state


def _takes_train(model: nn.Module, method) -> bool:
  import inspect  # pylint: disable=g-import-not-at-top
  fn = (getattr(type(model), method) if isinstance(method, str)
        else method if method is not None else type(model).__call__)
  try:
    return "train" in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False
