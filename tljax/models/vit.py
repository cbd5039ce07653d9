"""Vision Transformers (Dosovitskiy et al., 2021, "An Image is Worth 16x16
Words: Transformers for Image Recognition at Scale") in the timm /
big_vision layout, NHWC.

The image is cut into ``patch_size`` squares by a strided convolution, a
learned ``cls`` token is put in front, a learned position embedding is added
(to the cls token too, as in timm and the original ViT checkpoints), then
``depth`` pre-LayerNorm encoder blocks (``x + attn(norm1(x))``, ``x +
mlp(norm2(x))``; multi-head self-attention, a GELU MLP) and a final
LayerNorm. The pooled feature is the cls token after that LayerNorm (timm's
``forward_head(x, pre_logits=True)``). LayerNorm epsilon is 1e-6 and GELU
the exact (erf) one, both timm's, so that timm and big_vision weights
(:mod:`tljax.models.convert`) give timm's outputs. (big_vision and the
original JAX ViT train with flax's tanh-approximate GELU; timm runs their
checkpoints with the exact one, and so does this module.)

The variants are Touvron et al.'s (2021, DeiT) and Steiner et al.'s (2022,
"How to train your ViT?") Ti/S/B:

========  =====  =====  =====  =======
variant   width  depth  heads  mlp_dim
========  =====  =====  =====  =======
Ti/16     192    12     3      768
S/16      384    12     6      1536
B/16      768    12     12     3072
========  =====  =====  =====  =======

Parameters are named by part, so a regex can address a block:
``embed/{patch,cls,pos_embedding}``, ``block_<i>/{norm1, attn/{query, key,
value, out}, norm2, mlp/{fc1, fc2}}``, ``norm``. The position embedding's
length is set by the image size at initialisation (``1 + (h/p)(w/p)``), so
no setting depends on the image size. The backbone's layers, input to
output, are ``embed, block_0, ..., block_<depth-1>, norm``
(:attr:`VisionTransformer.layer_names`), for the first-k / last-k rules of
:mod:`tljax.methods.finetune`.

Dropout (``dropout``, after the position embedding, in the MLP and on each
residual branch, as big_vision places it) is active with ``train=True`` and
takes its key from the ``dropout`` rng (the step's ``rng``, see
:func:`tljax.models.apply`).

  >>> from tljax import models
  >>> net = VisionTransformer(patch_size=4, width=16, depth=2, num_heads=2)
  >>> params, state = models.init_variables(net, (8, 8, 3), 0)
  >>> sorted(params), state, net.layer_names
  (['block_0', 'block_1', 'embed', 'norm'], {}, ('embed', 'block_0', \
'block_1', 'norm'))
  >>> params['embed']['pos_embedding'].shape
  (1, 5, 16)
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

VARIANTS = {"ti16": dict(width=192, depth=12, num_heads=3, mlp_dim=768),
            "s16": dict(width=384, depth=12, num_heads=6, mlp_dim=1536),
            "b16": dict(width=768, depth=12, num_heads=12, mlp_dim=3072)}
PATCH_SIZE = 16

_LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6)  # timm's eps
_Dense = functools.partial(nn.Dense,
                           kernel_init=nn.initializers.xavier_uniform(),
                           bias_init=nn.initializers.normal(stddev=1e-6))


class EncoderBlock(nn.Module):
  """Pre-LayerNorm transformer block: multi-head self-attention, then a GELU
  MLP, each on a residual branch."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        deterministic=True, name="attn")(_LayerNorm(name="norm1")(x))
    x = x + drop(y)
    y = _Mlp(self.mlp_dim, self.dropout, name="mlp")(
        _LayerNorm(name="norm2")(x), train=train)
    return x + drop(y)


class _Mlp(nn.Module):
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, *, train: bool):
    y = nn.gelu(_Dense(self.mlp_dim, name="fc1")(x), approximate=False)
    y = nn.Dropout(self.dropout, deterministic=not train)(y)
    return _Dense(x.shape[-1], name="fc2")(y)


class _Embed(nn.Module):
  """Patches (a ``patch_size``-strided convolution), the cls token in front,
  plus the learned position embedding."""
  patch_size: int
  width: int

  @nn.compact
  def __call__(self, x):
    p = self.patch_size
    if x.shape[1] < p or x.shape[2] < p:
      raise ValueError(f"images of {x.shape[1]}x{x.shape[2]} pixels are "
                       f"smaller than one {p}x{p} patch of this ViT; resize "
                       "them or use a smaller patch_size")
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID",
                name="patch")(x)
    n, h, w, c = x.shape
    cls = self.param("cls", nn.initializers.zeros, (1, 1, c), x.dtype)
    x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, c)),
                         x.reshape(n, h * w, c)], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(stddev=0.02),
                     (1, 1 + h * w, c), x.dtype)
    return x + pos


class VisionTransformer(nn.Module):
  """The ViT trunk; outputs the pooled feature ``(batch, width)``: the cls
  token after the final LayerNorm.

  Attributes:
    patch_size: side of the square patches (16 for ``vit_*16``).
    width: the token dimension.
    depth: encoder blocks.
    num_heads: attention heads (``width`` must be a multiple).
    mlp_dim: hidden units of each block's MLP (default ``4 * width``).
    dropout: dropout rate while training (0: none).
  """
  patch_size: int = PATCH_SIZE
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int | None = None
  dropout: float = 0.0

  @property
  def layer_names(self) -> tuple[str, ...]:
    return ("embed",) + tuple(f"block_{i}" for i in range(self.depth)) + (
        "norm",)

  @property
  def num_layers(self) -> int:
    return len(self.layer_names)

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    if x.ndim == 3:
      x = x[..., None]
    if self.width % self.num_heads:
      raise ValueError(f"ViT width {self.width} is not a multiple of its "
                       f"{self.num_heads} heads")
    x = _Embed(self.patch_size, self.width, name="embed")(x)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    for i in range(self.depth):
      x = EncoderBlock(self.num_heads, self.mlp_dim or 4 * self.width,
                       self.dropout, name=f"block_{i}")(x, train=train)
    return _LayerNorm(name="norm")(x)[:, 0]


def vit(variant: str, *, dropout: float = 0.0) -> VisionTransformer:
  """ViT-Ti/16, S/16 or B/16 (``ti16``, ``s16``, ``b16``)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown ViT variant {variant!r}; choose one of "
                     f"{sorted(VARIANTS)}")
  return VisionTransformer(patch_size=PATCH_SIZE, dropout=dropout,
                           **VARIANTS[variant])
