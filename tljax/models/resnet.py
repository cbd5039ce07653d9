"""ResNets in the torchvision layout (He et al., 2016, "Deep Residual Learning
for Image Recognition"; the "v1.5" stride placement of torchvision), NHWC.

``ResNet-18/34`` use basic blocks (two 3x3 convolutions), ``ResNet-50/101``
bottleneck blocks (1x1, 3x3 with the stride, 1x1 to 4x the width). Every
convolution is bias-free and followed by BatchNorm (momentum 0.1 in torch's
convention, epsilon 1e-5), padding is torch's (symmetric, not XLA's "SAME"),
so that torchvision weights give torchvision's outputs
(:mod:`tljax.pretrained` converts them).

Parameters are named by part, so a regex can address a stage or a block:
``stem/{conv,bn}``, ``stage_<1-4>/block_<j>/{conv1,bn1,conv2,bn2[,conv3,
bn3][,downsample_conv,downsample_bn]}``. The BatchNorm running statistics
live in the ``batch_stats`` collection (the train state's ``model_state``);
``train=True`` normalises with the batch's statistics and updates them,
``train=False`` uses the running ones.

The backbone's layers, input to output, are ``stem, stage_1, ..., stage_4``
(:attr:`ResNet.layer_names`): ``layer_patterns`` of
:mod:`tljax.methods.finetune` freezes or copies "the first k" of them.

  >>> import jax.numpy as jnp
  >>> from tljax import models
  >>> net = resnet(18, width=8)
  >>> params, state = models.init_variables(net, (32, 32, 3), 0)
  >>> sorted(params), sorted(state)
  (['stage_1', 'stage_2', 'stage_3', 'stage_4', 'stem'], ['batch_stats'])
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# torch.nn.BatchNorm2d defaults: momentum 0.1 (flax's 0.9), eps 1e-5.
_BN = dict(momentum=0.9, epsilon=1e-5)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


def _conv(features: int, kernel: int, stride: int, name: str):
  pad = kernel // 2  # torch's symmetric padding
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 kernel_init=nn.initializers.variance_scaling(
                     2.0, "fan_out", "normal"), name=name)


def _bn(train: bool, name: str):
  return nn.BatchNorm(use_running_average=not train, name=name, **_BN)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (the first with the stride) and a shortcut."""
  features: int
  stride: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = nn.relu(_bn(train, "bn1")(_conv(self.features, 3, self.stride,
                                          "conv1")(x)))
    out = _bn(train, "bn2")(_conv(self.features, 3, 1, "conv2")(out))
    return nn.relu(out + _shortcut(x, self.features, self.stride, train))


class Bottleneck(nn.Module):
  """1x1, 3x3 (with the stride: torchvision's v1.5), 1x1 to 4x the width."""
  features: int
  stride: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, *, train: bool):
    out = nn.relu(_bn(train, "bn1")(_conv(self.features, 1, 1, "conv1")(x)))
    out = nn.relu(_bn(train, "bn2")(_conv(self.features, 3, self.stride,
                                          "conv2")(out)))
    out = _bn(train, "bn3")(_conv(4 * self.features, 1, 1, "conv3")(out))
    return nn.relu(out + _shortcut(x, 4 * self.features, self.stride, train))


def _shortcut(x, features: int, stride: int, train: bool):
  """Identity, or a strided 1x1 convolution + BatchNorm where the shape
  changes (created inside the calling block's scope)."""
  if stride == 1 and x.shape[-1] == features:
    return x
  return _bn(train, "downsample_bn")(_conv(features, 1, stride,
                                           "downsample_conv")(x))


class ResNet(nn.Module):
  """The ResNet trunk: stem (7x7/2 conv, BatchNorm, ReLU, 3x3/2 max pool),
  four stages, global average pooling; outputs ``(batch, channels)``.

  Attributes:
    block: ``basic`` or ``bottleneck``.
    stage_sizes: blocks per stage.
    width: channels of the first stage (64 in the paper; smaller for tests
      and tiny images).
    small_inputs: for 32x32 images and smaller, a 3x3/1 stem conv and no
      max pool (the CIFAR variant) instead of the ImageNet stem.
  """
  block: str = "basic"
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  small_inputs: bool = False

  @property
  def layer_names(self) -> tuple[str, ...]:
    return ("stem",) + tuple(f"stage_{i + 1}"
                             for i in range(len(self.stage_sizes)))

  @property
  def num_layers(self) -> int:
    return len(self.layer_names)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if x.ndim == 3:
      x = x[..., None]
    block = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
    x = _Stem(self.width, self.small_inputs, name="stem")(x, train=train)
    for i, n in enumerate(self.stage_sizes):
      x = _Stage(block, self.width * 2 ** i, n, 1 if i == 0 else 2,
                 name=f"stage_{i + 1}")(x, train=train)
    return jnp.mean(x, axis=(1, 2))


class _Stem(nn.Module):
  width: int
  small_inputs: bool

  @nn.compact
  def __call__(self, x, *, train: bool):
    if self.small_inputs:
      return nn.relu(_bn(train, "bn")(_conv(self.width, 3, 1, "conv")(x)))
    x = nn.relu(_bn(train, "bn")(_conv(self.width, 7, 2, "conv")(x)))
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class _Stage(nn.Module):
  block: type
  features: int
  num_blocks: int
  stride: int

  @nn.compact
  def __call__(self, x, *, train: bool):
    for j in range(self.num_blocks):
      x = self.block(self.features, self.stride if j == 0 else 1,
                     name=f"block_{j}")(x, train=train)
    return x


def resnet(depth: int, *, width: int = 64, small_inputs: bool = False
           ) -> ResNet:
  """ResNet-18, 34, 50 or 101 (torchvision's layouts)."""
  if depth not in DEPTHS:
    raise ValueError(f"unknown ResNet depth {depth}; choose one of "
                     f"{sorted(DEPTHS)}")
  block, sizes = DEPTHS[depth]
  return ResNet(block=block, stage_sizes=sizes, width=width,
                small_inputs=small_inputs)
