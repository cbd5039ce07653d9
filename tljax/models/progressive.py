"""Progressive neural networks (Rusu et al. 2016, "Progressive Neural
Networks"): one column per task, earlier columns frozen, lateral adapters
feeding their activations into every later column.

Column ``k`` computes, for each of its layers ``i >= 1`` (and its output
layer),

    h_i^(k) = relu(W_i^(k) h_{i-1}^(k) + U_i^(k) relu(V_i^(k) (alpha_i^(k)
              * [h_{i-1}^(0), ..., h_{i-1}^(k-1)])))

the paper's non-linear lateral adapter: the earlier columns' previous-layer
activations, concatenated, scaled by a learned scalar ``alpha``, reduced by
``V`` to ``adapter_dim`` units (a 1x1 convolution on conv layers) and mapped
by ``U``, an operation of the same kind as ``W_i`` (a dense layer, or a
convolution with the same kernel and stride). ``adapter_dim=0`` drops ``V``
and ``alpha`` (the linear lateral ``U h``).

Parameters are named per column at the top level, so regex rules can freeze
earlier columns (``columns_0/.*``):

  >>> import jax, jax.numpy as jnp
  >>> net = ProgressiveNet(num_outputs=(10, 10), features=(16, 16))
  >>> params = net.init(jax.random.key(0), jnp.zeros((1, 40)))['params']
  >>> sorted(params), sorted(params['columns_1'])
  (['columns_0', 'columns_1'], ['head', 'lateral_1', 'lateral_head', 'layer_0', 'layer_1'])

Earlier columns' activations pass through ``jax.lax.stop_gradient`` (they
are frozen, so no gradient needs to flow into them); freezing their
parameters is the optimizer's job (``lr_rules=[('columns_0/.*', None),
...]``, see :mod:`tljax.methods.progressive`).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _flat(x):
  return x.reshape((x.shape[0], -1))


class LateralAdapter(nn.Module):
  """``U relu(V (alpha * h))`` of the earlier columns' activations ``h``
  (concatenated on the feature axis); ``U`` is dense or a 1-D convolution
  like the layer it feeds."""
  features: int
  conv: bool = False
  kernel_size: int = 5
  stride: int = 2
  adapter_dim: int = 32
  alpha_init: float = 1.0

  @nn.compact
  def __call__(self, earlier: Sequence[jax.Array]):
    h = jnp.concatenate([e if self.conv else _flat(e) for e in earlier], -1)
    if self.adapter_dim:
      alpha = self.param("alpha", nn.initializers.constant(self.alpha_init),
                         ())
      h = nn.relu(nn.Dense(self.adapter_dim, name="V")(alpha * h))
    if self.conv:
      return nn.Conv(self.features, (self.kernel_size,),
                     strides=(self.stride,), use_bias=False, name="U")(h)
    return nn.Dense(self.features, use_bias=False, name="U")(h)


class Column(nn.Module):
  """One column: 1-D conv layers (stride 2), dense layers, a head; with
  lateral adapters when earlier columns are given. Layers are ``layer_<i>``
  counting from the input, as in :mod:`tljax.models.nets`."""
  num_outputs: int
  features: Sequence[int] = (128, 128)
  conv_channels: Sequence[int] = ()
  kernel_size: int = 5
  adapter_dim: int = 32

  @nn.compact
  def __call__(self, x, earlier: Sequence[Sequence[jax.Array]] = ()):
    """Returns ``(activations per layer, logits)``; ``earlier[j]`` is column
    ``j``'s list of activations."""
    if self.conv_channels and x.ndim == 2:
      x = x[..., None]
    if not self.conv_channels:
      x = _flat(x)
    acts = []
    sizes = list(self.conv_channels) + list(self.features)
    h = x
    for i, size in enumerate(sizes):
      conv = i < len(self.conv_channels)
      if conv:
        z = nn.Conv(size, (self.kernel_size,), strides=(2,),
                    name=f"layer_{i}")(h)
      else:
        z = nn.Dense(size, name=f"layer_{i}")(_flat(h))
      if earlier and i > 0:
        z = z + LateralAdapter(size, conv=conv, kernel_size=self.kernel_size,
                               adapter_dim=self.adapter_dim,
                               name=f"lateral_{i}")(
                                   [e[i - 1] for e in earlier])
      h = nn.relu(z)
      acts.append(h)
    logits = nn.Dense(self.num_outputs, name="head")(_flat(h))
    if earlier and sizes:
      logits = logits + LateralAdapter(
          self.num_outputs, adapter_dim=self.adapter_dim,
          name="lateral_head")([e[-1] for e in earlier])
    return acts, logits


class ProgressiveNet(nn.Module):
  """Columns ``columns_0 .. columns_{K-1}``, one per task; calling it gives
  the logits of ``column`` (default: the last one, the task being learned).

  Attributes:
    num_outputs: the number of outputs (classes) of each column's task.
    features: dense layer widths of every column.
    conv_channels: 1-D conv layers (stride 2) before the dense ones
      (``()``: a pure MLP column; inputs are flattened).
    kernel_size: conv kernel size.
    adapter_dim: width of the adapters' ``V`` (0: linear laterals).
  """
  num_outputs: Sequence[int]
  features: Sequence[int] = (128, 128)
  conv_channels: Sequence[int] = ()
  kernel_size: int = 5
  adapter_dim: int = 32

  @property
  def num_columns(self) -> int:
    return len(self.num_outputs)

  def setup(self):
    self.columns = [
        Column(n, tuple(self.features), tuple(self.conv_channels),
               self.kernel_size, self.adapter_dim, name=f"columns_{k}")
        for k, n in enumerate(self.num_outputs)]

  def all_logits(self, x, *, train: bool = False) -> list[jax.Array]:
    """Every column's logits (each with laterals from the earlier ones)."""
    del train
    acts, outs = [], []
    for col in self.columns:
      a, logits = col(x, [[jax.lax.stop_gradient(h) for h in prev]
                          for prev in acts])
      acts.append(a)
      outs.append(logits)
    return outs

  def __call__(self, x, *, column: int = -1, train: bool = False):
    k = column % self.num_columns
    acts = []
    for col in self.columns[:k]:
      acts.append(col(x, [[jax.lax.stop_gradient(h) for h in prev]
                          for prev in acts])[0])
    return self.columns[k](x, [[jax.lax.stop_gradient(h) for h in prev]
                               for prev in acts])[1]
