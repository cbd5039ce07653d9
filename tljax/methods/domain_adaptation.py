"""Unsupervised domain adaptation: labelled source, unlabelled target.

One loss function, :func:`adaptation_loss`, covers the one-network deep
methods: the source classification loss plus a pluggable adaptation term,
computed from ONE forward pass over the concatenated source batch ``x`` and
target batch ``x_target`` (as TLlib does: with BatchNorm, the statistics are
those of both domains' batch):

- ``dann``: a domain classifier on the features through
  :func:`tljax.ops.gradient_reversal` (Ganin et al., 2016, "Domain-Adversarial
  Training of Neural Networks", JMLR 17). The classifier minimizes the domain
  loss; the reversal makes the feature extractor maximize it.
- ``cdan`` / ``cdan_e``: the domain classifier reads the multilinear map
  ``f ⊗ softmax(g)`` of features and class predictions (randomized when
  ``d * C`` is large); ``cdan_e`` weights each example by ``1 + exp(-H)``
  (Long et al., 2018, "Conditional Adversarial Domain Adaptation").
- ``mmd``: DAN's multi-kernel Gaussian MMD (Long et al., 2015), on the
  features and, with ``mmd_logits``, on the logits too.
- ``coral``: the deep CORAL loss (Sun & Saenko, 2016).
- ``mcc``: minimum class confusion on the target predictions (Jin et al.,
  2020).
- ``self_training``: cross-entropy on the target examples whose predicted
  class has probability >= ``pseudo_threshold``, the labels from the current
  model without gradient (Lee, 2013, "Pseudo-Label"); with
  ``pseudo_alignment`` (the default) the probabilities are first aligned to
  a uniform class prior over the batch (ReMixMatch's distribution
  alignment), which keeps a biased source model from collapsing the target
  onto a few classes.
- ``none``: source only; with ``batch['w']`` (KMM weights, Huang et al.,
  2007; see :mod:`tljax.methods.kmm`) an importance-weighted source loss.

ADDA (Tzeng et al., 2017) trains a separate target encoder and has its own
loss, :func:`adda_loss`, over a tree that holds ``target_backbone``.

The adaptation strength follows DANN's schedule ``lam(p) = 2 / (1 + exp(-10
p)) - 1`` with ``p = step / total_steps``, computed from ``state.step`` inside
the step: the reversal coefficient for the adversarial methods, the weight
of the adaptation term for the others (``schedule='constant'`` turns it off).

Models: any :class:`tljax.models.Classifier`, or a
:class:`BottleneckClassifier` that puts DANN's and TLlib's bottleneck
(``Dense -> BatchNorm -> relu``, 256 wide on deep features) between the
backbone and the head; its parameters are ``backbone``, ``bottleneck``,
``head``, and its BatchNorm statistics the train state's ``model_state``.

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
ALIGNMENTS = ("none", "dann", "cdan", "cdan_e", "mmd", "coral", "mcc",
              "self_training")
ADVERSARIAL = ("dann", "cdan", "cdan_e")
# Not classifier parameters: the domain classifier, ADDA's target encoder.
_NOT_CLASSIFIER = ("disc", "target_backbone")


class Bottleneck(nn.Module):
  """DANN's / TLlib's bottleneck: ``Dense -> BatchNorm -> relu``.

  BatchNorm normalises with the batch's statistics in training (updating
  the running ones, momentum 0.9 as PyTorch's 0.1) and with the running
  ones otherwise.
  """
  features: int = 256

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    x = nn.Dense(self.features, name="dense")(x.reshape((x.shape[0], -1)))
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, name="bn")(x)
    return nn.relu(x)


class BottleneckClassifier(nn.Module):
  """``head(bottleneck(backbone(x)))``; parameters ``backbone``,
  ``bottleneck`` and ``head``. ``features`` is the bottleneck's output (what
  the alignment losses see), as in TLlib's ``ImageClassifier``."""
  backbone: nn.Module
  num_classes: int
  bottleneck_dim: int = 256

  def setup(self):
    self.bottleneck = Bottleneck(self.bottleneck_dim)
    self.head = nn.Dense(self.num_classes)

  def features(self, x, *, train: bool = False):
    return self.bottleneck(self.backbone(x, train=train), train=train)

  def logits_from_features(self, h):
    return self.head(h)

  def __call__(self, x, *, train: bool = False):
    return self.head(self.features(x, train=train))


def with_bottleneck(model: models.Classifier, bottleneck_dim: int
                    ) -> nn.Module:
  """``model`` with a :class:`Bottleneck` of ``bottleneck_dim`` between its
  backbone and head (``model`` itself for ``bottleneck_dim <= 0``)."""
  if bottleneck_dim <= 0:
    return model
  return BottleneckClassifier(model.backbone, model.num_classes,
                              int(bottleneck_dim))


def discriminator(features: Sequence[int] = (64, 64)) -> models.Classifier:
  """The domain classifier: an MLP with one logit of P(target)
  (parameters ``backbone/layer_<i>`` and ``head``). DANN's on deep features
  is ``(1024, 1024)`` (Ganin et al., 2016, sec. 5.2.2; TLlib)."""
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
  """The classifier's part of a parameter tree (``backbone``, ``head`` and a
  ``bottleneck`` if any; without ``disc`` and ``target_backbone``): what
  the model applies."""
  return {k: v for k, v in params.items() if k not in _NOT_CLASSIFIER}


def cdan_map(h: jax.Array, probs: jax.Array, *, max_dim: int = 4096,
             random_dim: int = 1024, seed: int = 0) -> jax.Array:
  """What CDAN's domain classifier reads: :func:`multilinear_map` of
  features and class probabilities, or the randomized map
  (:func:`randomized_multilinear_map`, ``random_dim`` wide) when ``d * C``
  exceeds ``max_dim`` (Long et al., 2018, sec. 3.2: 4096)."""
  d, c = int(np.prod(h.shape[1:])), int(probs.shape[-1])
  if d * c <= max_dim:
    return alignment.multilinear_map(h, probs)
  return alignment.randomized_multilinear_map(h, probs, dim=random_dim,
                                              seed=seed)


def add_discriminator(params: PyTree, model: nn.Module,
                      disc: nn.Module, example_shape: Sequence[int],
                      seed: int, *, model_state: PyTree | None = None,
                      alignment_name: str = "dann", cdan_max_dim: int = 4096,
                      cdan_random_dim: int = 1024) -> PyTree:
  """``params`` of ``model`` with ``'disc'``, the parameters of the domain
  classifier ``disc`` initialised from ``seed`` on what it reads: the
  model's features (``dann``, ``adda``) or CDAN's map of features and
  predictions (``cdan``, ``cdan_e``)."""
  x = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
  cparams = classifier_params(params)

  def disc_input(x):
    h = models.apply(model, cparams, x, model_state=model_state,
                     method="features")
    if alignment_name not in ("cdan", "cdan_e"):
      return h
    logits = model.apply({"params": cparams}, h,
                         method="logits_from_features")
    return cdan_map(h, jax.nn.softmax(logits), max_dim=cdan_max_dim,
                    random_dim=cdan_random_dim)

  h = jax.eval_shape(disc_input, x)
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
                    mmd_logits: bool = False,
                    cdan_max_dim: int = 4096, cdan_random_dim: int = 1024,
                    mcc_temperature: float = 2.5,
                    pseudo_threshold: float = 0.9,
                    pseudo_alignment: bool = True,
                    axis_name: str | None = None):
  """Source classification loss plus an adaptation term; see module doc.

  Args:
    params: the classifier's (``backbone``, ``head``, maybe ``bottleneck``)
      plus ``disc`` for the adversarial methods.
    state: the train state (its ``step`` drives the schedule, its
      ``model_state`` holds BatchNorm statistics).
    batch: ``x`` and ``y`` (source), ``x_target`` (target, unless
      ``alignment_name='none'``), optional ``w`` per-example weights.
    rng: dropout key (if the model has dropout).
    model: a :class:`tljax.models.Classifier` or
      :class:`BottleneckClassifier`.
    alignment_name: one of :data:`ALIGNMENTS`.
    discriminator: the domain classifier for ``dann``, ``cdan``,
      ``cdan_e``.
    weight: multiplies the scheduled coefficient.
    total_steps, schedule, schedule_gamma: :func:`dann_lambda`.
    mmd_kernels, mmd_kernel_mul: :func:`tljax.losses.multi_kernel_mmd2`.
    mmd_logits: ``mmd`` also on the logits (DAN adapts the last layers,
      the classifier's included).
    cdan_max_dim, cdan_random_dim: :func:`cdan_map`.
    mcc_temperature: :func:`tljax.losses.alignment.mcc_loss`.
    pseudo_threshold: ``self_training``'s confidence threshold.
    pseudo_alignment: ``self_training``'s distribution alignment (see
      :func:`tljax.losses.alignment.confident_pseudo_labels`).
    axis_name: set under ``pmap``.

  Returns:
    ``(loss, metrics)`` (with the new model state when the model has one);
    metrics ``class_loss``, ``source_accuracy``, ``lam`` and, with
    adaptation, ``align_loss`` (and ``domain_accuracy``, the domain
    classifier's balanced accuracy, for the adversarial methods;
    ``pseudo_label_fraction`` for ``self_training``).

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
  logits_all = model.apply({"params": cparams}, h,
                           method="logits_from_features")
  hs, ht = h[:ns], h[ns:]
  logits, logits_t = logits_all[:ns], logits_all[ns:]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  class_loss = losses.weighted_mean(ce, batch.get("w"), axis_name=axis_name)
  lam = weight * dann_lambda(state.step, total_steps, gamma=schedule_gamma,
                             schedule=schedule)
  metrics = {"class_loss": class_loss,
             "source_accuracy": losses.accuracy(logits, y), "lam": lam}
  if alignment_name == "none":
    return class_loss, state_lib.loss_aux(metrics, model_state)
  if alignment_name in ADVERSARIAL:
    if discriminator is None or "disc" not in params:
      raise ValueError(f"alignment {alignment_name!r} needs a discriminator "
                       "module and params['disc'] (see add_discriminator).")
    d_in = ops.gradient_reversal(h, lam)
    tw = sw = None
    if alignment_name != "dann":
      # TLlib detaches the predictions: the reversed gradient reaches the
      # features through f only.
      probs = jax.lax.stop_gradient(jax.nn.softmax(logits_all))
      d_in = cdan_map(d_in, probs, max_dim=cdan_max_dim,
                      random_dim=cdan_random_dim)
      if alignment_name == "cdan_e":
        w = alignment.cdan_entropy_weights(probs)
        sw, tw = w[:ns], w[ns:]
    d = discriminator.apply({"params": params["disc"]}, d_in)[:, 0]
    ds, dt = d[:ns], d[ns:]
    align = alignment.domain_classification_loss(
        ds, dt, source_weights=sw, target_weights=tw, axis_name=axis_name)
    metrics["domain_accuracy"] = alignment.domain_accuracy(ds, dt)
    loss = class_loss + align  # the reversal carries lam to the features
  elif alignment_name == "mcc":
    align = alignment.mcc_loss(_gather(logits_t, axis_name),
                               temperature=mcc_temperature)
    loss = class_loss + lam * align
  elif alignment_name == "self_training":
    pseudo, mask = alignment.confident_pseudo_labels(
        logits_t, threshold=pseudo_threshold,
        distribution_alignment=pseudo_alignment, axis_name=axis_name)
    ce_t = optax.softmax_cross_entropy_with_integer_labels(logits_t, pseudo)
    # FixMatch's reduction: the mean over the whole target batch, so the
    # term grows with the number of confident examples.
    align = jnp.mean(mask * ce_t)
    metrics["pseudo_label_fraction"] = jnp.mean(mask)
    loss = class_loss + lam * align
  else:
    gs, gt = _gather(hs, axis_name), _gather(ht, axis_name)
    if alignment_name == "mmd":
      align = alignment.multi_kernel_mmd2(gs, gt, num_kernels=mmd_kernels,
                                          kernel_mul=mmd_kernel_mul)
      if mmd_logits:
        align = align + alignment.multi_kernel_mmd2(
            _gather(logits, axis_name), _gather(logits_t, axis_name),
            num_kernels=mmd_kernels, kernel_mul=mmd_kernel_mul)
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


# ------------------------------------------------------------------ ADDA
def adda_params(source_params: PyTree, disc: nn.Module, seed: int, *,
                model: nn.Module, example_shape: Sequence[int],
                model_state: PyTree | None = None) -> PyTree:
  """ADDA's parameter tree from a source-trained classifier: the source
  classifier (kept frozen), ``target_backbone`` (the target encoder, every
  classifier part but the head, initialised as a copy of the source's) and
  ``disc``, a domain classifier on the features drawn from ``seed``.

  Tzeng et al. (2017), "Adversarial Discriminative Domain Adaptation", CVPR,
  sec. 4: the target encoder starts from the source encoder.
  """
  cparams = classifier_params(source_params)
  encoder = {k: v for k, v in cparams.items() if k != "head"}
  params = add_discriminator(cparams, model, disc, example_shape, seed,
                             model_state=model_state)
  params["target_backbone"] = jax.tree.map(jnp.array, encoder)
  return params


def adda_target_classifier(params: PyTree) -> PyTree:
  """The classifier ADDA predicts the target with: the target encoder and
  the source head."""
  return {**params["target_backbone"], "head": params["head"]}


def adda_loss(params, state, batch, rng, *, model: nn.Module,
              discriminator: nn.Module, axis_name: str | None = None):
  """ADDA's adversarial phase (Tzeng et al., 2017, eqs. (8)-(9)).

  The domain classifier learns to tell the frozen source encoder's features
  of ``x`` (label 0) from the target encoder's features of ``x_target``
  (label 1); the target encoder learns to make its features be classified
  as source (the inverted label, the GAN loss). The source encoder and the
  head get no gradient; each of the two terms reaches only its own player
  (``stop_gradient`` on the other's inputs), so one step updates both.

  Args:
    params: :func:`adda_params`'s tree.
    state: the train state; its ``model_state`` holds the target encoder's
      BatchNorm statistics, ``extra['source_model_state']`` the frozen
      source encoder's (if the model has any).
    batch: ``x`` (source; ``y`` only for the source accuracy metric) and
      ``x_target``.
    rng: dropout key (if any).
    model: the classifier both encoders belong to.
    discriminator: the domain classifier.
    axis_name: set under ``pmap``.

  Returns:
    ``(loss, metrics)``: ``align_loss`` (the domain classifier's loss),
    ``target_encoder_loss`` and ``domain_accuracy``.
  """
  _check_batch(batch, "adda")
  frozen = jax.lax.stop_gradient(
      {k: v for k, v in classifier_params(params).items()})
  src_state = dict((getattr(state, "extra", None) or {}).get(
      "source_model_state", {}) or {})
  hs = models.apply(model, frozen, batch["x"], model_state=src_state,
                    method="features")
  tparams = {**params["target_backbone"], "head": frozen["head"]}
  ht, model_state = models.apply_train(
      model, tparams, batch["x_target"],
      model_state=state_lib.model_state_of(state), rng=rng,
      method="features")
  disc_p = params["disc"]
  apply_d = lambda p, h: discriminator.apply({"params": p}, h)[:, 0]  # noqa: E731
  ds = apply_d(disc_p, hs)
  dt = apply_d(disc_p, jax.lax.stop_gradient(ht))
  d_loss = alignment.domain_classification_loss(ds, dt)
  dt_enc = apply_d(jax.lax.stop_gradient(disc_p), ht)
  g_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(
      dt_enc, jnp.zeros_like(dt_enc)))
  logits = model.apply({"params": frozen}, hs, method="logits_from_features")
  metrics = {"align_loss": d_loss, "target_encoder_loss": g_loss,
             "domain_accuracy": alignment.domain_accuracy(ds, dt)}
  if "y" in batch:
    metrics["source_accuracy"] = losses.accuracy(logits, batch["y"])
  return d_loss + g_loss, state_lib.loss_aux(metrics, model_state)


def make_adda_step(model: nn.Module, tx: optax.GradientTransformation, *,
                   discriminator: nn.Module):
  """The step of :func:`adda_loss`. Freeze the source classifier in ``tx``
  too (``lr_rules`` with ``(r'^(backbone|bottleneck|head)/.*', None)``) so
  the optimizer keeps no state for it."""
  return state_lib.loss_step(adda_loss, tx, model=model,
                             discriminator=discriminator)


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
