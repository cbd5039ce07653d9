"""Unsupervised domain adaptation: labelled source, unlabelled target.

One loss function, :func:`adaptation_loss`, covers the deep methods: the
source classification loss plus a pluggable alignment term on the features of
a source batch ``x`` and a target batch ``x_target``:

- ``dann``: a domain classifier on the features through
  :func:`tljax.ops.gradient_reversal` (Ganin et al., 2016, "Domain-Adversarial
  Training of Neural Networks", JMLR 17). The classifier minimizes the domain
  loss; the reversal makes the feature extractor maximize it.
- ``mmd``: DAN's multi-kernel Gaussian MMD (Long et al., 2015).
- ``coral``: the deep CORAL loss (Sun & Saenko, 2016).
- ``none``: source only; with ``batch['w']`` (KMM weights, Huang et al.,
  2007; see :mod:`tljax.methods.kmm`) an importance-weighted source loss.

The adaptation strength follows DANN's schedule ``lam(p) = 2 / (1 + exp(-10
p)) - 1`` with ``p = step / total_steps``, computed from ``state.step`` inside
the step: the reversal coefficient for ``dann``, the weight of the alignment
term for ``mmd`` and ``coral`` (``schedule='constant'`` turns it off).

The step is :func:`tljax.train.state.train_step` with this loss bound, so it
compiles on one device, on a data-parallel mesh and under ``pmap``, with the
same result (tested). Under ``pmap`` MMD and CORAL gather the global batch's
features (``all_gather``) so the kernel sees the whole batch.

The experiment (``experiments/adapt.py``, :mod:`tljax.drivers.adapt`) runs
these and the closed-form methods (:mod:`tljax.methods.tca`,
:mod:`tljax.methods.kmm`) on a source/target pair.

  >>> import optax
  >>> from tljax import models
  >>> model = models.Classifier(models.MLP((16,)), num_classes=2)
  >>> disc = discriminator((16,))
  >>> params = add_discriminator(models.init_params(model, (2,), 0), model,
  ...                            disc, (2,), seed=1)
  >>> sorted(params)
  ['backbone', 'disc', 'head']
  >>> step = make_step(model, optax.adam(1e-3), alignment_name='dann',
  ...                  discriminator=disc, total_steps=1000)
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import evaluation
from tljax import losses
from tljax import models
from tljax import ops
from tljax.losses import alignment
from tljax.train import state as state_lib

PyTree = Any
ALIGNMENTS = ("none", "dann", "mmd", "coral")


def discriminator(features: Sequence[int] = (64, 64)) -> models.Classifier:
  """DANN's domain classifier: an MLP with one logit of P(target)
  (parameters ``backbone/layer_<i>`` and ``head``)."""
  return models.Classifier(models.MLP(tuple(features)), num_classes=1)


def dann_lambda(step, total_steps: int, *, gamma: float = 10.0,
                schedule: str = "dann") -> jax.Array:
  """``2 / (1 + exp(-gamma p)) - 1`` with ``p = step / total_steps`` clipped
  to ``[0, 1]`` (Ganin et al., 2016, sec. 5.2.2); 1 for ``constant``."""
  if schedule == "constant":
    return jnp.ones((), jnp.float32)
  if schedule != "dann":
    raise ValueError(f"unknown adaptation schedule {schedule!r}; choose dann "
                     "or constant")
  p = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return 2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0


def classifier_params(params: PyTree) -> PyTree:
  """The ``backbone`` and ``head`` of a parameter tree (without ``disc``):
  what :class:`tljax.models.Classifier` applies."""
  return {"backbone": params["backbone"], "head": params["head"]}


def add_discriminator(params: PyTree, model: nn.Module,
                      disc: nn.Module, example_shape: Sequence[int],
                      seed: int, *, model_state: PyTree | None = None
                      ) -> PyTree:
  """``params`` of ``model`` with ``'disc'``, the parameters of the domain
  classifier ``disc`` on ``model``'s features, initialised from ``seed``."""
  x = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
  h = jax.eval_shape(lambda x: models.apply(
      model, params, x, model_state=model_state, method="features"), x)
  return dict(params, disc=models.init_params(disc, h.shape[1:], seed))


def _gather(x, axis_name):
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _check_batch(batch: dict, alignment_name: str):
  if "x" not in batch or "y" not in batch:
    raise ValueError(f"a domain adaptation batch needs 'x' and 'y' (the "
                     f"labelled source); got keys {sorted(batch)}.")
  if alignment_name != "none":
    if "x_target" not in batch:
      raise ValueError(f"alignment {alignment_name!r} needs the unlabelled "
                       "target batch under 'x_target'; got keys "
                       f"{sorted(batch)}.")
    alignment.check_domains(batch["x"], batch["x_target"], what="inputs",
                            min_examples=2 if alignment_name == "coral"
                            else 1)
  if "w" in batch and np.shape(batch["w"]) != np.shape(batch["y"]):
    raise ValueError(f"batch['w'] must hold one weight per source example, "
                     f"shape {np.shape(batch['y'])}; got "
                     f"{np.shape(batch['w'])}.")


def adaptation_loss(params, state, batch, rng, *, model: nn.Module,
                    alignment_name: str = "dann",
                    discriminator: nn.Module | None = None,
                    weight: float = 1.0, total_steps: int = 1,
                    schedule: str = "dann", schedule_gamma: float = 10.0,
                    mmd_kernels: int = 5, mmd_kernel_mul: float = 2.0,
                    axis_name: str | None = None):
  """Source classification loss plus an alignment term; see module doc.

  Args:
    params: ``{'backbone', 'head'}`` (+ ``'disc'`` for ``dann``).
    state: the train state (its ``step`` drives the schedule).
    batch: ``x`` and ``y`` (source), ``x_target`` (target, unless
      ``alignment_name='none'``), optional ``w`` per-example weights.
    rng: unused (the models are deterministic).
    model: a :class:`tljax.models.Classifier`.
    alignment_name: ``dann``, ``mmd``, ``coral`` or ``none``.
    discriminator: the domain classifier for ``dann``.
    weight: multiplies the scheduled coefficient.
    total_steps, schedule, schedule_gamma: :func:`dann_lambda`.
    mmd_kernels, mmd_kernel_mul: :func:`tljax.losses.multi_kernel_mmd2`.
    axis_name: set under ``pmap``.

  Returns:
    ``(loss, metrics)``; metrics ``class_loss``, ``source_accuracy``,
    ``lam`` and, with alignment, ``align_loss`` (and ``domain_accuracy``,
    the domain classifier's balanced accuracy, for ``dann``).

  Raises:
    ValueError: on a missing key, a source/target shape mismatch or an empty
      batch (at trace time).
  """
  if alignment_name not in ALIGNMENTS:
    raise ValueError(f"unknown alignment {alignment_name!r}; choose one of "
                     f"{ALIGNMENTS}")
  _check_batch(batch, alignment_name)
  x, y = batch["x"], batch["y"]
  cparams = classifier_params(params)
  ns = x.shape[0]
  # One forward pass over source and target together, as TLlib does: with
  # BatchNorm, the statistics are those of both domains' batch.
  h, model_state = models.apply_train(
      model, cparams, x if alignment_name == "none"
      else jnp.concatenate([x, batch["x_target"]], 0),
      model_state=state_lib.model_state_of(state), rng=rng,
      method="features")
  hs, ht = h[:ns], h[ns:]
  logits = model.apply({"params": cparams}, hs,
                       method="logits_from_features")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  class_loss = losses.weighted_mean(ce, batch.get("w"), axis_name=axis_name)
  lam = weight * dann_lambda(state.step, total_steps, gamma=schedule_gamma,
                             schedule=schedule)
  metrics = {"class_loss": class_loss,
             "source_accuracy": losses.accuracy(logits, y), "lam": lam}
  if alignment_name == "none":
    return class_loss, state_lib.loss_aux(metrics, model_state)
  if alignment_name == "dann":
    if discriminator is None or "disc" not in params:
      raise ValueError("alignment 'dann' needs a discriminator module and "
                       "params['disc'] (see init_params).")
    d = discriminator.apply({"params": params["disc"]},
                            ops.gradient_reversal(h, lam))[:, 0]
    ds, dt = d[:ns], d[ns:]
    align = alignment.domain_classification_loss(ds, dt)
    metrics["domain_accuracy"] = alignment.domain_accuracy(ds, dt)
    loss = class_loss + align  # the reversal carries lam to the features
  else:
    gs, gt = _gather(hs, axis_name), _gather(ht, axis_name)
    if alignment_name == "mmd":
      align = alignment.multi_kernel_mmd2(gs, gt, num_kernels=mmd_kernels,
                                          kernel_mul=mmd_kernel_mul)
    else:
      align = alignment.coral_loss(gs, gt)
    loss = class_loss + lam * align
  metrics["align_loss"] = align
  return loss, state_lib.loss_aux(metrics, model_state)


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              alignment_name: str, discriminator: nn.Module | None = None,
              **loss_kwargs):
  """The step of :func:`adaptation_loss` with its settings bound."""
  return state_lib.loss_step(adaptation_loss, tx, model=model,
                             alignment_name=alignment_name,
                             discriminator=discriminator, **loss_kwargs)


# ------------------------------------------------------------ evaluation
def features(model: nn.Module, params: PyTree, x: np.ndarray, *,
             model_state: PyTree | None = None) -> np.ndarray:
  """Backbone features of ``x`` (flattened per example)."""
  f = evaluation.predict(model, classifier_params(params), x,
                         model_state=model_state, method="features")
  return f.reshape(len(f), -1)


def accuracy(model: nn.Module, params: PyTree, ds, *,
             model_state: PyTree | None = None) -> float:
  """The classifier's accuracy on a labelled data set (``disc`` ignored)."""
  return evaluation.accuracy(model, classifier_params(params), ds,
                             model_state=model_state)


def linear_domain_accuracy(fs: np.ndarray, ft: np.ndarray, *,
                           seed: int = 0) -> float:
  """Held-out accuracy of a logistic regression telling source features from
  target ones (balanced classes; 0.5 = indistinguishable) — a proxy of the
  A-distance (Ben-David et al., 2007), comparable across methods."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=g-import-not-at-top
  from sklearn.preprocessing import StandardScaler  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  n = min(len(fs), len(ft))
  fs = fs[rng.permutation(len(fs))[:n]]
  ft = ft[rng.permutation(len(ft))[:n]]
  x = np.concatenate([fs, ft]).astype(np.float64)
  d = np.r_[np.zeros(n), np.ones(n)]
  perm = rng.permutation(2 * n)
  x, d = x[perm], d[perm]
  cut = max(1, n)  # half for training, half for testing
  scaler = StandardScaler().fit(x[:cut])
  clf = LogisticRegression(max_iter=1000, random_state=seed)
  clf.fit(scaler.transform(x[:cut]), d[:cut])
  return float(clf.score(scaler.transform(x[cut:]), d[cut:]))
