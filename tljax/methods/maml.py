"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine 2017, "Model-Agnostic
Meta-Learning for Fast Adaptation of Deep Networks"): an optimisation-based
meta-learner.

For each task of a meta-batch, the inner loop takes a few SGD steps on the
task's support set from the shared initial parameters ``theta``,

    theta'_i = theta'_{i-1} - alpha_i * grad L_support(theta'_{i-1}),

and the outer (meta) loss is the query loss at the adapted parameters,
averaged over tasks (``jax.vmap``). Differentiating through the inner loop
gives second-order MAML; ``first_order=True`` stops the gradient through the
inner gradients (first-order MAML, same paper, section 5.2), so the
meta-gradient is the query gradient at the adapted parameters.

The inner learning rate can be one number or one per step (``inner_lr`` a
sequence), and ``inner_rules`` (``(regex, multiplier or None)`` over leaf
names, as in :mod:`tljax.optim`) scales it per parameter, e.g.
``(("head/.*", 1.0), (".*", None))`` adapts only the head (ANIL, Raghu et
al. 2020, "Rapid Learning or Feature Reuse?"; the ``anil`` config of
``experiments/configs/meta.py``).

Meta-SGD (Li, Zhou, Chen & Li 2017, "Meta-SGD: Learning to Learn Quickly
for Few-Shot Learning") learns the inner rates too: one rate per parameter
entry, ``theta' = theta - alpha * grad`` elementwise, with ``alpha`` a
subtree ``params['inner_lr']`` shaped like the model's parameters
(:func:`init_metasgd`) and meta-learned with ``theta`` by the same outer
gradient (:func:`metasgd_loss`). With ``alpha`` held at one value it is
MAML. Reptile, the first-order learner that needs no query gradient, is in
:mod:`tljax.methods.reptile`.

``head_init`` sets the head each task's inner loop starts from
(:func:`task_head`): ``learned`` (the meta-learned head, Finn et al.),
``zero`` (the zeroing trick of Kao, Chiu & Chen 2022, "MAML is a Noisy
Contrastive Learner in Classification": a zero head, so the first step
builds a centred-prototype head from the support features) or ``proto``
(Proto-MAML of Triantafillou et al. 2020, "Meta-Dataset": ``W_k = 2 c_k``,
``b_k = -||c_k||^2`` from the support's class means ``c_k``, which starts
the inner loop at the ProtoNets classifier; the meta-gradient flows
through ``c_k``). With a head built from each task's support, the
initialisation cannot memorise which training class goes with which
label. The model must have a Dense ``head`` and a ``features`` method
(:class:`tljax.models.Classifier`).

  >>> import jax, jax.numpy as jnp, flax.linen as nn
  >>> model = nn.Dense(1)
  >>> p = model.init(jax.random.key(0), jnp.zeros((1, 1)))['params']
  >>> x, y = jnp.ones((4, 1)), jnp.ones((4, 1))
  >>> p1 = inner_adapt(p, x, y, model=model, kind='regression',
  ...                  inner_lr=0.1, inner_steps=2)
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tljax import losses
from tljax import params as params_lib
from tljax.data import episodes
from tljax.methods import protonet
from tljax.train import state as state_lib

PyTree = Any
KINDS = ("classification", "regression")
HEAD_INITS = ("learned", "zero", "proto")


def task_loss(kind: str, out: jax.Array, y: jax.Array) -> jax.Array:
  """Cross-entropy (integer labels) or mean squared error."""
  if kind == "classification":
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
  if kind == "regression":
    if out.shape != y.shape:
      raise ValueError(f"regression outputs {out.shape} and targets {y.shape} "
                       "must have the same shape (targets (n, 1) for a "
                       "1-output model).")
    return jnp.mean(jnp.square(out - y))
  raise ValueError(f"unknown task kind {kind!r}; choose classification or "
                   "regression")


def _lrs(inner_lr, inner_steps: int | None) -> jax.Array:
  if isinstance(inner_lr, (list, tuple)):
    if inner_steps is not None and inner_steps != len(inner_lr):
      raise ValueError(f"inner_lr has {len(inner_lr)} per-step rates but "
                       f"inner_steps={inner_steps}; give one rate per step.")
    return jnp.asarray(inner_lr, jnp.float32)
  if inner_steps is None or inner_steps < 0:
    raise ValueError(f"inner_steps must be >= 0 with a single inner_lr, got "
                     f"{inner_steps}")
  return jnp.full((inner_steps,), inner_lr, jnp.float32)


def _rule_scales(params: PyTree, inner_rules, lr_tree=None) -> PyTree | None:
  """Per-leaf multipliers of the inner gradient: the rules' numbers (0 for
  frozen), times ``lr_tree`` (per-entry rates, Meta-SGD) where given."""
  if not inner_rules:
    return lr_tree
  mults = params_lib.make_tree(params, [tuple(r) for r in inner_rules],
                               what="inner_rules")
  mults = jax.tree.map(lambda m: 0.0 if m is None else float(m), mults,
                       is_leaf=lambda m: m is None)
  if lr_tree is None:
    return mults
  return jax.tree.map(lambda m, a: m * a, mults, lr_tree)


def apply_on_task(model: nn.Module, params: PyTree, model_state: PyTree,
                  x, method=None):
  """``model`` (or its ``method``) on a task's examples. A BatchNorm model
  normalises with the statistics of the examples it is given, and keeps no
  running ones: the transductive BatchNorm of Finn et al.'s reference
  implementation."""
  if not model_state:
    return model.apply({"params": params}, x, method=method)
  return model.apply({"params": params, **model_state}, x, train=True,
                     mutable=list(model_state), method=method)[0]


def check_head_init(head_init: str, kind: str = "classification") -> None:
  """Raises a clear error for a ``head_init`` the inner loop cannot use."""
  if head_init not in HEAD_INITS:
    raise ValueError(f"unknown head_init {head_init!r}; choose one of "
                     f"{HEAD_INITS}")
  if head_init != "learned" and kind != "classification":
    raise ValueError(f"head_init={head_init!r} builds a classification head "
                     "from the support labels; regression tasks use "
                     "head_init='learned'.")


def task_head(params: PyTree, x: jax.Array, y: jax.Array, *,
              model: nn.Module, head_init: str = "learned",
              model_state: PyTree | None = None) -> PyTree:
  """``params`` with the head one task's inner loop starts from (see the
  module docstring): unchanged for ``learned``; zeros for ``zero``;
  ``kernel[:, k] = 2 c_k``, ``bias[k] = -||c_k||^2`` for ``proto``, with
  ``c_k`` the mean feature of support class ``k`` (``y`` in ``0..n-1``,
  ``n`` the head's width), so that the logits are the ProtoNets ones,
  ``-||f - c_k||^2`` up to a constant per example."""
  check_head_init(head_init)
  if head_init == "learned":
    return params
  head = params.get("head") if isinstance(params, dict) else None
  if not (isinstance(head, dict) and set(head) == {"kernel", "bias"}):
    raise ValueError(f"head_init={head_init!r} needs a Dense 'head' (kernel "
                     "and bias) at the top of the parameters, as "
                     "tljax.models.Classifier has; got top-level keys "
                     f"{sorted(params) if isinstance(params, dict) else params}")
  if head_init == "zero":
    return dict(params, head=jax.tree.map(jnp.zeros_like, head))
  feats = apply_on_task(model, params, model_state, x, method="features")
  c = protonet.prototypes(feats, y, head["bias"].shape[-1])
  return dict(params, head={"kernel": (2.0 * c.T).astype(head["kernel"].dtype),
                            "bias": (-jnp.sum(c * c, -1)).astype(
                                head["bias"].dtype)})


def inner_adapt(params: PyTree, x: jax.Array, y: jax.Array, *,
                model: nn.Module, kind: str, inner_lr=0.01,
                inner_steps: int | None = 1, first_order: bool = False,
                inner_rules=None, return_path: bool = False,
                model_state: PyTree | None = None, lr_tree=None,
                inner_tx: optax.GradientTransformation | None = None):
  """SGD steps on one task's support set ``(x, y)`` from ``params``.

  Step ``t`` is ``p - inner_lr[t] * scale * grad``, with ``scale`` per leaf
  from ``inner_rules`` and, elementwise, ``lr_tree`` (Meta-SGD's learned
  rates, shaped like ``params``). With ``inner_tx`` (an optax
  transformation without a rate, e.g. ``optax.scale_by_adam()``), ``grad``
  is replaced by its update, from a state initialised afresh here (one per
  task under ``jax.vmap``): Reptile's Adam inner loop
  (:func:`tljax.methods.reptile.inner_transform`).

  Args:
    params: the initial (meta-learned) parameters.
    x, y: the support set.
    model: a linen module, applied as ``model.apply({'params': p}, x)``.
    model_state: its BatchNorm statistics' collection, if it has one
      (the task's own statistics are used; see :func:`_apply`).
    kind: ``classification`` or ``regression``.
    inner_lr: a rate, or a sequence of per-step rates.
    inner_steps: number of steps (with a single rate).
    first_order: stop gradients through the inner gradients (FOMAML).
    inner_rules: optional ``(regex, multiplier or None)`` per-leaf scales.
    return_path: also return the stacked parameters after each step.
    lr_tree: optional per-entry rates shaped like ``params``.
    inner_tx: optional optax transformation of the gradient (default: the
      gradient itself, plain SGD).

  Returns:
    The adapted parameters (and, with ``return_path``, the path).
  """
  lrs = _lrs(inner_lr, inner_steps)
  scales = _rule_scales(params, inner_rules, lr_tree)

  def support_loss(p):
    return task_loss(kind, apply_on_task(model, p, model_state, x), y)

  def step(carry, lr):
    p, tx_state = carry
    g = jax.grad(support_loss)(p)
    if first_order:
      g = jax.lax.stop_gradient(g)
    if inner_tx is not None:
      g, tx_state = inner_tx.update(g, tx_state, p)
    if scales is not None:
      # After the transformation, so that a rule's multiplier scales the
      # step (Adam would cancel a scale of the gradient); 0 still freezes.
      g = jax.tree.map(lambda g, s: g * s, g, scales)
    p = jax.tree.map(lambda p, g: p - lr * g, p, g)
    return (p, tx_state), (p if return_path else None)

  tx_state = inner_tx.init(params) if inner_tx is not None else None
  (adapted, _), path = jax.lax.scan(step, (params, tx_state), lrs)
  return (adapted, path) if return_path else adapted


def _task_metrics(kind, out, y):
  loss = task_loss(kind, out, y)
  acc = (losses.accuracy(out, y) if kind == "classification"
         else jnp.zeros(()))
  return loss, acc


def maml_loss(params, state, batch, rng, *, model: nn.Module, kind: str,
              inner_lr=0.01, inner_steps: int | None = 1,
              first_order: bool = False, inner_rules=None,
              axis_name: str | None = None, lr_tree=None,
              head_init: str = "learned"):
  """The MAML meta-loss of a meta-batch (leading task axis): mean query loss
  after adapting on each task's support set. Metrics: ``pre_query_loss``
  (before adaptation) and, for classification, ``accuracy``. ``lr_tree``:
  per-entry inner rates (Meta-SGD, :func:`metasgd_loss`); ``head_init``:
  the head each task starts from (:func:`task_head`)."""
  del rng, axis_name
  check_head_init(head_init, kind)
  ms = state_lib.model_state_of(state)

  def one(task):
    start = task_head(params, task["support_x"], task["support_y"],
                      model=model, head_init=head_init, model_state=ms)
    adapted = inner_adapt(start, task["support_x"], task["support_y"],
                          model=model, kind=kind, inner_lr=inner_lr,
                          inner_steps=inner_steps, first_order=first_order,
                          inner_rules=inner_rules, model_state=ms,
                          lr_tree=lr_tree)
    post = _task_metrics(kind, apply_on_task(model, adapted, ms,
                                             task["query_x"]),
                         task["query_y"])
    pre = task_loss(kind, apply_on_task(model, start, ms, task["query_x"]),
                    task["query_y"])
    return post, pre

  (loss, acc), pre = jax.vmap(one)(episodes.task_arrays(batch))
  metrics = {"pre_query_loss": jax.lax.stop_gradient(pre.mean())}
  if kind == "classification":
    metrics["accuracy"] = acc.mean()
  return loss.mean(), metrics


def adaptation_curve(params: PyTree, batch: dict, *, model: nn.Module,
                     kind: str, inner_lr=0.01, inner_steps: int | None = 10,
                     inner_rules=None, model_state: PyTree | None = None,
                     lr_tree=None, inner_tx=None, head_init: str = "learned"
                     ) -> tuple[jax.Array, jax.Array]:
  """Query loss and accuracy of each task after ``0..inner_steps`` steps.

  Used for evaluation (e.g. MSE after 1 and 10 steps) of MAML and of any
  other initialisation fine-tuned the same way (a jointly pretrained model,
  Reptile, with its inner ``inner_tx`` if it has one; Meta-SGD with its
  learned ``lr_tree`` and ``inner_lr=1``).

  ``head_init``: the head each task starts from (:func:`task_head`).

  Returns:
    ``(losses, accuracies)``, each ``(tasks, steps + 1)`` (accuracies are 0
    for regression).
  """
  check_head_init(head_init, kind)

  def one(task):
    start = task_head(params, task["support_x"], task["support_y"],
                      model=model, head_init=head_init,
                      model_state=model_state)
    _, path = inner_adapt(start, task["support_x"], task["support_y"],
                          model=model, kind=kind, inner_lr=inner_lr,
                          inner_steps=inner_steps, inner_rules=inner_rules,
                          return_path=True, model_state=model_state,
                          lr_tree=lr_tree, inner_tx=inner_tx)
    path = jax.tree.map(lambda p0, ps: jnp.concatenate([p0[None], ps]),
                        start, path)
    return jax.vmap(lambda p: _task_metrics(
        kind, apply_on_task(model, p, model_state, task["query_x"]),
        task["query_y"]))(path)

  return jax.vmap(one)(episodes.task_arrays(batch))


def episode_accuracies(params: PyTree, batch: dict, *, model: nn.Module,
                       inner_lr=0.01, inner_steps: int | None = 10,
                       inner_rules=None, model_state: PyTree | None = None,
                       lr_tree=None, inner_tx=None,
                       head_init: str = "learned") -> jax.Array:
  """Per-episode query accuracy ``(tasks,)`` after ``inner_steps`` SGD steps
  (or ``inner_tx`` steps, see :func:`inner_adapt`) on each episode's
  support set (classification), from the head ``head_init`` gives."""
  return adaptation_curve(params, batch, model=model, kind="classification",
                          inner_lr=inner_lr, inner_steps=inner_steps,
                          inner_rules=inner_rules, model_state=model_state,
                          lr_tree=lr_tree, inner_tx=inner_tx,
                          head_init=head_init)[1][:, -1]


# ------------------------------------------------------------------ Meta-SGD
def init_metasgd(params: PyTree, inner_lr: float) -> PyTree:
  """``params`` with Meta-SGD's per-entry inner rates ``params['inner_lr']``
  (a copy of the model's tree, every entry ``inner_lr``; Li et al. draw
  them at random in a small range, a constant start is MAML's)."""
  if "inner_lr" in params:
    raise ValueError("params already hold an 'inner_lr' subtree")
  return dict(params, inner_lr=jax.tree.map(
      lambda p: jnp.full(jnp.shape(p), inner_lr, jnp.result_type(p)),
      params))


def split_metasgd(params: PyTree) -> tuple[PyTree, PyTree]:
  """``(model parameters, per-entry inner rates)`` of a Meta-SGD tree."""
  if "inner_lr" not in params:
    raise ValueError("Meta-SGD parameters need an 'inner_lr' subtree; build "
                     "them with init_metasgd(params, inner_lr).")
  return {k: v for k, v in params.items() if k != "inner_lr"}, params[
      "inner_lr"]


def metasgd_loss(params, state, batch, rng, *, model: nn.Module, kind: str,
                 inner_steps: int = 1, first_order: bool = False,
                 inner_rules=None, axis_name: str | None = None,
                 head_init: str = "learned"):
  """The Meta-SGD meta-loss: :func:`maml_loss` with the inner step ``theta -
  alpha * grad`` elementwise, ``alpha = params['inner_lr']`` (learned with
  the rest: the meta-gradient reaches ``alpha`` through the adapted
  parameters, also with ``first_order``, which only stops the gradient
  through the inner gradients)."""
  theta, alpha = split_metasgd(params)
  return maml_loss(theta, state, batch, rng, model=model, kind=kind,
                   inner_lr=1.0, inner_steps=inner_steps,
                   first_order=first_order, inner_rules=inner_rules,
                   axis_name=axis_name, lr_tree=alpha, head_init=head_init)


def metasgd_episode_accuracies(params: PyTree, batch: dict, *,
                               model: nn.Module, inner_steps: int = 1,
                               inner_rules=None,
                               model_state: PyTree | None = None,
                               head_init: str = "learned") -> jax.Array:
  """Per-episode query accuracy ``(tasks,)`` after ``inner_steps`` Meta-SGD
  steps with the learned rates."""
  theta, alpha = split_metasgd(params)
  return episode_accuracies(theta, batch, model=model, inner_lr=1.0,
                            inner_steps=inner_steps, inner_rules=inner_rules,
                            model_state=model_state, lr_tree=alpha,
                            head_init=head_init)


def joint_regression_loss(params, state, batch, rng, *, model: nn.Module,
                          axis_name=None):
  """MSE on every point of every task of a meta-batch, as one data set: the
  "pretrained on all tasks jointly" baseline of Finn et al. (2017), which
  is then fine-tuned on each task as MAML is (:func:`adaptation_curve`)."""
  del state, rng, axis_name
  x = jnp.concatenate([batch["support_x"], batch["query_x"]], 1)
  y = jnp.concatenate([batch["support_y"], batch["query_y"]], 1)
  out = model.apply({"params": params}, x.reshape((-1,) + x.shape[2:]))
  loss = task_loss("regression", out, y.reshape((-1,) + y.shape[2:]))
  return loss, {}


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              kind: str, joint: bool = False, metasgd: bool = False,
              **maml_kwargs):
  """The step of :func:`maml_loss` (``maml_kwargs``: ``inner_lr``,
  ``inner_steps``, ``first_order``, ``inner_rules``, ``head_init``), with ``metasgd=True``
  of :func:`metasgd_loss` (the same but ``inner_lr``, which is learned), or
  with ``joint=True`` of the jointly pretrained regression baseline
  (:func:`joint_regression_loss`)."""
  if metasgd:
    if "inner_lr" in maml_kwargs:
      raise ValueError("Meta-SGD learns its inner rates: set their start "
                       "with init_metasgd(params, inner_lr), not inner_lr.")
    return state_lib.loss_step(metasgd_loss, tx, model=model, kind=kind,
                               **maml_kwargs)
  if joint:
    if kind != "regression" or maml_kwargs:
      raise ValueError("the joint baseline is a regression model with no "
                       "inner-loop settings")
    return state_lib.loss_step(joint_regression_loss, tx, model=model)
  return state_lib.loss_step(maml_loss, tx, model=model, kind=kind,
                             **maml_kwargs)


def check_config(kind: str, inner_steps: int, inner_lr) -> None:
  """Raises a clear error for settings the inner loop cannot use."""
  if kind not in KINDS:
    raise ValueError(f"unknown task kind {kind!r}; choose one of {KINDS}")
  _lrs(tuple(inner_lr) if isinstance(inner_lr, Sequence) and not isinstance(
      inner_lr, str) else inner_lr, inner_steps)
