"""Losses of the fine-tuning family: conservative training and distillation.

- :func:`l2_sp_penalty`: parameter-space regulariser towards the source model
  (Li, Grandvalet & Davoine, 2018, "Explicit Inductive Bias for Transfer
  Learning with Convolutional Networks").
- :func:`distillation_kl`: KL between teacher and student at temperature T,
  scaled by T^2 (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a
  Neural Network").
- :func:`lwf_penalty`: the output-space penalty of Learning without
  Forgetting (Li & Hoiem, 2016): the new model's old-task outputs on the new
  data must keep the recorded outputs of the original model.

All are pure functions of arrays and pytrees; nothing here knows a model.
The output-space losses return one value per example; reduce them with
:func:`tljax.losses.weighted_mean`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import optax

from tljax import params as params_lib

PyTree = Any

DEFAULT_SHARED_RULES = (("backbone/.*", True), (".*", False))


def l2_sp_shared_mask(params: PyTree,
                      rules: Sequence[tuple[str, bool]] = DEFAULT_SHARED_RULES
                      ) -> PyTree:
  """Bool tree: True for the leaves shared with (copied from) the source.

  Args:
    params: the target model's parameters.
    rules: ordered ``(regex, bool)`` rules over ``/``-joined leaf names (first
      match wins; every leaf covered; see :func:`tljax.params.make_mask`).
      The default shares the backbone and treats everything else (the new
      head) as new.

  Returns:
    A tree of Python bools shaped like ``params``.

  Raises:
    ValueError: if a leaf is uncovered or a rule matches nothing.
  """
  return params_lib.make_mask(params, [tuple(r) for r in rules],
                              what="l2_sp shared rules")


def l2_sp_penalty(params: PyTree, source_params: PyTree, shared_mask: PyTree,
                  *, alpha: float, beta: float) -> jax.Array:
  """L2-SP: ``alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2``.

  Li, Grandvalet & Davoine (2018): instead of weight decay towards zero, the
  shared parameters ``w_S`` are pulled towards their pretrained values
  ``w_S^0`` (the starting point); parameters with no source counterpart (a
  new head) get ordinary weight decay.

    >>> import jax.numpy as jnp
    >>> p = {'backbone': {'w': jnp.array([2.0])}, 'head': {'w': jnp.array([3.0])}}
    >>> s = {'backbone': {'w': jnp.array([1.0])}, 'head': {'w': jnp.array([0.0])}}
    >>> m = {'backbone': {'w': True}, 'head': {'w': False}}
    >>> float(l2_sp_penalty(p, s, m, alpha=0.5, beta=0.25))
    1.375

  Args:
    params: current parameters.
    source_params: the source model's parameters, same structure (leaves
      outside ``shared_mask`` are ignored, so a re-initialised head may hold
      anything of the right shape). Not differentiated.
    shared_mask: bool tree, True for shared leaves (:func:`l2_sp_shared_mask`).
    alpha: strength of the pull towards the source.
    beta: weight decay on the new leaves.

  Returns:
    The scalar penalty.
  """
  source_params = jax.lax.stop_gradient(source_params)
  new_mask = jax.tree.map(lambda m: not m if isinstance(m, bool)
                          else jnp.logical_not(m), shared_mask)
  return (0.5 * alpha * params_lib.tree_sq_distance(params, source_params,
                                                    shared_mask)
          + 0.5 * beta * params_lib.tree_sq_norm(params, new_mask))


def _soft_targets(student: jax.Array, teacher: jax.Array, temperature,
                  what: str):
  """Checks the pair and returns ``(log softmax(student/T), teacher/T)``;
  no gradient reaches the teacher."""
  if student.shape != teacher.shape:
    raise ValueError(f"{what}: logits must have the same shape, got "
                     f"{student.shape} (new/student) and {teacher.shape} "
                     "(source/teacher); both models need the same outputs "
                     "(the same number of classes).")
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  return (jax.nn.log_softmax(student / temperature, -1),
          jax.lax.stop_gradient(teacher) / temperature)


def distillation_kl(student_logits: jax.Array, teacher_logits: jax.Array, *,
                    temperature: float = 1.0) -> jax.Array:
  """``T^2 * KL(softmax(t_i/T) || softmax(s_i/T))`` for each example ``i``.

  Hinton et al. (2015): soft targets at temperature ``T`` carry the
  teacher's similarity structure between classes; the ``T^2`` factor keeps
  the gradient scale independent of ``T`` so the label loss weight need not
  change with it. The teacher receives no gradient.

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1.0, 2.0, 3.0]])
    >>> distillation_kl(z, z, temperature=2.0).tolist()
    [0.0]

  Args:
    student_logits: ``(batch, classes)``.
    teacher_logits: ``(batch, classes)``.
    temperature: ``T > 0``.

  Returns:
    ``(batch,)`` per-example losses.

  Raises:
    ValueError: on mismatched shapes or a non-positive temperature.
  """
  log_q, t = _soft_targets(student_logits, teacher_logits, temperature,
                           "distillation_kl")
  return temperature ** 2 * optax.losses.kl_divergence_with_log_targets(
      log_q, jax.nn.log_softmax(t, -1))


def lwf_penalty(new_logits: jax.Array, recorded_logits: jax.Array, *,
                temperature: float = 2.0) -> jax.Array:
  """Learning-without-Forgetting loss on the old task's outputs, per example.

  Li & Hoiem (2016), eq. 2: the cross-entropy ``-sum_c y'_c log yhat'_c``
  between the recorded outputs of the original network on the same inputs
  (``recorded_logits``, ``y' = softmax(recorded/T)``, not differentiated)
  and the current network's outputs for the old task (``new_logits``,
  ``yhat' = softmax(new/T)``), both ``(batch, old_classes)``, at ``T = 2``
  in the paper. It differs from the KL of :func:`distillation_kl` by the
  (constant) entropy of ``y'`` and by not scaling with ``T^2``, as in the
  paper, where the weight ``lambda_o`` sets the balance. Raises
  ``ValueError`` on mismatched shapes or a non-positive temperature.

    >>> import jax.numpy as jnp
    >>> round(float(lwf_penalty(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]), 4)
    1.3863
  """
  log_q, t = _soft_targets(new_logits, recorded_logits, temperature,
                           "lwf_penalty")
  return -jnp.sum(jax.nn.softmax(t, -1) * log_q, -1)
