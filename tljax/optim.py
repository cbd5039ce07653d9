"""Optimizers from config: base optax optimizer, schedule, clipping, freezing
and per-parameter learning-rate multipliers.

Per-parameter behaviour is one ordered rule list over leaf names (see
:mod:`tljax.params`), as big_vision's ``lr_mults`` with frozen entries: a
value of ``None`` (or 0) freezes the leaf, a number multiplies its learning
rate.

  >>> import jax.numpy as jnp
  >>> params = {'backbone': {'w': jnp.ones(2)}, 'head': {'w': jnp.ones(2)}}
  >>> tx = make_optimizer(params, name='sgd', learning_rate=0.1,
  ...                     lr_rules=[('backbone/.*', None), ('.*', 1.0)])

Frozen leaves get ``optax.masked(optax.set_to_zero(), frozen)``: their update
is exactly zero (so they stay bit-identical) and the base optimizer keeps no
state for them (``optax.masked`` stores a ``MaskedNode`` in their place).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from tljax import params as params_lib

PyTree = Any


def make_schedule(learning_rate: float, schedule: str = "constant", *,
                  total_steps: int = 0, warmup_steps: int = 0,
                  end_factor: float = 0.0) -> optax.Schedule:
  """``constant``, ``cosine`` or ``linear`` decay, after a linear warmup;
  or ``annealed``, DANN's ``lr / (1 + 10 p)^0.75`` with ``p`` the fraction
  of the steps done (Ganin et al., 2016, sec. 5.2.2)."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  if schedule not in ("constant", "cosine", "linear", "annealed"):
    raise ValueError(f"unknown schedule {schedule!r}; choose constant, "
                     "cosine, linear or annealed")
  if schedule in ("cosine", "linear", "annealed") and \
      total_steps <= warmup_steps:
    raise ValueError(f"schedule {schedule!r} needs total_steps "
                     f"({total_steps}) > warmup_steps ({warmup_steps})")
  decay_steps = max(total_steps - warmup_steps, 1)
  if schedule == "constant":
    main = optax.constant_schedule(learning_rate)
  elif schedule == "annealed":
    main = lambda step: learning_rate / (  # noqa: E731
        1.0 + 10.0 * jnp.minimum(step / decay_steps, 1.0)) ** 0.75
  elif schedule == "cosine":
    main = optax.cosine_decay_schedule(learning_rate, decay_steps,
                                       alpha=end_factor)
  else:
    main = optax.linear_schedule(learning_rate, learning_rate * end_factor,
                                 decay_steps)
  if warmup_steps:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, learning_rate, warmup_steps), main],
        [warmup_steps])
  return main


def scale_by_tree(multipliers: PyTree) -> optax.GradientTransformation:
  """Multiplies each update leaf by the matching constant in ``multipliers``."""

  def update_fn(updates, state, params=None):
    del params
    # Inside optax.masked, leaves outside the mask arrive as MaskedNode.
    is_masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    return jax.tree.map(
        lambda u, m: u if is_masked(u) else u * jnp.asarray(m, u.dtype),
        updates, multipliers, is_leaf=is_masked), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def _base(name: str, lr, *, momentum: float, b1: float, b2: float,
          weight_decay: float | None, nesterov: bool):
  if name == "adamw":
    return optax.adamw(lr, b1=b1, b2=b2,
                       weight_decay=1e-4 if weight_decay is None
                       else weight_decay)
  if name == "sgd":
    base = optax.sgd(lr)
  elif name == "momentum":
    base = optax.sgd(lr, momentum=momentum or 0.9, nesterov=nesterov)
  elif name == "adam":
    base = optax.adam(lr, b1=b1, b2=b2)
  else:
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, momentum, "
                     "adam or adamw")
  if weight_decay:
    # L2 added to the gradient before the update, as torch.optim.SGD's and
    # Adam's weight_decay (and TLlib's protocols) do.
    return optax.chain(optax.add_decayed_weights(weight_decay), base)
  return base


def make_optimizer(params: PyTree, *, name: str = "adam",
                   learning_rate: float = 1e-3, schedule: str = "constant",
                   total_steps: int = 0, warmup_steps: int = 0,
                   end_factor: float = 0.0, momentum: float = 0.9,
                   b1: float = 0.9, b2: float = 0.999,
                   weight_decay: float | None = None, nesterov: bool = False,
                   grad_clip_norm: float | None = None,
                   lr_rules: Sequence[tuple[str, Any]] | None = None
                   ) -> optax.GradientTransformation:
  """Builds the optimizer; see the module docstring.

  Args:
    params: the parameter tree (only its structure and names are used).
    name: ``sgd``, ``momentum``, ``adam`` or ``adamw``.
    learning_rate, schedule, total_steps, warmup_steps, end_factor: the
      learning-rate schedule (:func:`make_schedule`).
    momentum, b1, b2, nesterov: base optimizer settings.
    weight_decay: ``adamw``'s decoupled decay (default 1e-4); for ``sgd``,
      ``momentum`` and ``adam``, an L2 term ``weight_decay * param`` added
      to the gradient, as PyTorch's optimizers do (default none).
    grad_clip_norm: clip the global norm of the trainable gradients.
    lr_rules: ordered ``(regex, multiplier)`` rules; ``None`` or ``0`` means
      frozen. Every leaf must be covered and every rule must match
      (:func:`tljax.params.describe_rules` shows which rule matched which
      leaf).

  Returns:
    An ``optax.GradientTransformation``.
  """
  lr = make_schedule(learning_rate, schedule, total_steps=total_steps,
                     warmup_steps=warmup_steps, end_factor=end_factor)
  base = _base(name, lr, momentum=momentum, b1=b1, b2=b2,
               weight_decay=weight_decay, nesterov=nesterov)
  if not lr_rules:
    parts = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm \
        else []
    return optax.chain(*parts, base)
  mults = params_lib.make_tree(params, lr_rules, what="lr_rules")
  for m in jax.tree.leaves(mults, is_leaf=lambda x: x is None):
    if m is not None and not isinstance(m, (int, float)):
      raise ValueError(f"lr_rules: multipliers must be numbers or None "
                       f"(frozen), got {m!r}")
  frozen = jax.tree.map(lambda m: m is None or m == 0, mults,
                        is_leaf=lambda x: x is None)
  trainable = jax.tree.map(lambda f: not f, frozen)
  if not any(jax.tree.leaves(trainable)):
    raise ValueError("lr_rules freeze every parameter; nothing would train.")
  scales = jax.tree.map(lambda m: 0.0 if m is None else float(m), mults,
                        is_leaf=lambda x: x is None)
  inner = [optax.clip_by_global_norm(grad_clip_norm)] if grad_clip_norm else []
  inner += [base]
  if any(s != 1.0 for s, t in zip(jax.tree.leaves(scales),
                                  jax.tree.leaves(trainable)) if t):
    inner.append(scale_by_tree(scales))
  return optax.chain(
      optax.masked(optax.set_to_zero(), frozen),
      optax.masked(optax.chain(*inner), trainable),
  )


def frozen_mask(params: PyTree, lr_rules) -> PyTree:
  """True for the leaves that ``lr_rules`` freeze."""
  mults = params_lib.make_tree(params, lr_rules, what="lr_rules")
  return jax.tree.map(lambda m: m is None or m == 0, mults,
                      is_leaf=lambda x: x is None)


def from_config(params: PyTree, config, *, total_steps: int
                ) -> optax.GradientTransformation:
  """``make_optimizer`` from an ``ml_collections`` optimizer config."""
  cfg = dict(config)
  rules = cfg.pop("lr_rules", None)
  if rules is not None:
    rules = [tuple(r) for r in rules]
  return make_optimizer(params, total_steps=total_steps, lr_rules=rules,
                        **cfg)
