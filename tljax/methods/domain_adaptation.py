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

:func:`train_and_evaluate` runs ``experiments/adapt.py``: ``method`` one of
``source_only``, ``target_supervised`` (the ceiling: target labels),
``dann``, ``mmd``, ``coral``, ``kmm`` or ``tca``
(:mod:`tljax.methods.tca`, closed form).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tljax import data as data_lib
from tljax import losses
from tljax import models
from tljax import ops
from tljax import optim
from tljax.losses import alignment
from tljax.methods import kmm as kmm_lib
from tljax.methods import supervised
from tljax.methods import tca as tca_lib
from tljax.train import loop
from tljax.train import state as state_lib

PyTree = Any
ALIGNMENTS = ("none", "dann", "mmd", "coral")
METHODS = ("source_only", "target_supervised", "dann", "mmd", "coral", "kmm",
           "tca")


class DomainDiscriminator(nn.Module):
  """DANN's domain classifier: ``Dense -> relu`` layers, then one logit of
  P(target). Layers are named ``layer_<i>`` like the backbones."""
  features: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, h):
    h = h.reshape((h.shape[0], -1))
    for i, f in enumerate(self.features):
      h = nn.relu(nn.Dense(f, name=f"layer_{i}")(h))
    return nn.Dense(1, name=f"layer_{len(self.features)}")(h)[:, 0]


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


def init_params(model: nn.Module, example_shape: Sequence[int], seed: int, *,
                discriminator: nn.Module | None = None) -> PyTree:
  """``{'backbone', 'head'}`` of ``model`` (+ ``'disc'`` if given)."""
  params = dict(models.init_params(model, example_shape, seed))
  if discriminator is not None:
    x = jax.ShapeDtypeStruct((1,) + tuple(example_shape), jnp.float32)
    h = jax.eval_shape(
        lambda x: model.apply({"params": params}, x, method="features"), x)
    params["disc"] = models.init_params(discriminator, h.shape[1:], seed + 1)
  return params


def _gather(x, axis_name):
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, tiled=True)


def _weighted_mean(values, weights, axis_name):
  """Mean of ``values`` (weighted), equal to the global-batch mean once
  ``train_step`` averages it over ``axis_name``."""
  if weights is None:
    return jnp.mean(values)
  num = jnp.sum(weights * values)
  den = jnp.sum(weights)
  if axis_name is not None:
    # Each device returns n_dev * (its share of the global weighted sum); the
    # pmean in train_step then gives sum(w v) / sum(w) over the whole batch.
    den = jax.lax.psum(den, axis_name) / jax.lax.psum(1.0, axis_name)
  return num / jnp.maximum(den, 1e-12)


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
  del rng
  if alignment_name not in ALIGNMENTS:
    raise ValueError(f"unknown alignment {alignment_name!r}; choose one of "
                     f"{ALIGNMENTS}")
  _check_batch(batch, alignment_name)
  x, y = batch["x"], batch["y"]
  variables = {"params": classifier_params(params)}
  ns = x.shape[0]
  if alignment_name == "none":
    h = model.apply(variables, x, train=True, method="features")
  else:
    h = model.apply(variables, jnp.concatenate([x, batch["x_target"]], 0),
                    train=True, method="features")
  hs, ht = h[:ns], h[ns:]
  logits = model.apply(variables, hs, method="logits_from_features")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  class_loss = _weighted_mean(ce, batch.get("w"), axis_name)
  lam = weight * dann_lambda(state.step, total_steps, gamma=schedule_gamma,
                             schedule=schedule)
  metrics = {"class_loss": class_loss,
             "source_accuracy": losses.accuracy(logits, y), "lam": lam}
  if alignment_name == "none":
    return class_loss, metrics
  if alignment_name == "dann":
    if discriminator is None or "disc" not in params:
      raise ValueError("alignment 'dann' needs a discriminator module and "
                       "params['disc'] (see init_params).")
    d = discriminator.apply({"params": params["disc"]},
                            ops.gradient_reversal(h, lam))
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
  return loss, metrics


def make_step(model: nn.Module, tx: optax.GradientTransformation, *,
              alignment_name: str, discriminator: nn.Module | None = None,
              **loss_kwargs):
  """The pure step ``(state, batch, rng, *, axis_name=None)`` for
  :func:`tljax.train.parallel.compile_step` and :func:`tljax.train.loop.fit`.
  """
  loss_fn = functools.partial(adaptation_loss, model=model,
                              alignment_name=alignment_name,
                              discriminator=discriminator, **loss_kwargs)
  return functools.partial(state_lib.train_step, loss_fn=loss_fn, tx=tx)


# ------------------------------------------------------------ evaluation
def features(model: nn.Module, params: PyTree, x: np.ndarray) -> np.ndarray:
  """Backbone features of ``x`` (flattened per example)."""
  f = supervised.predict(model, classifier_params(params), x,
                         method="features")
  return f.reshape(len(f), -1)


def accuracy(model: nn.Module, params: PyTree, ds: data_lib.Dataset) -> float:
  return supervised.evaluate(model, classifier_params(params), ds)["accuracy"]


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


def plot_embeddings(path: str, panels: Sequence[tuple[str, np.ndarray,
                                                       np.ndarray]],
                    ys: np.ndarray | None = None,
                    yt: np.ndarray | None = None, *, max_points: int = 600,
                    seed: int = 0) -> str:
  """Side-by-side 2-D PCA plots of source and target points.

  Args:
    path: the PNG to write.
    panels: ``(title, source_points, target_points)`` per panel, e.g. inputs
      before and features after adaptation; each panel's PCA is fitted on its
      pooled points.
    ys, yt: optional class labels (marker shapes).
    max_points: points drawn per domain.
    seed: subsampling seed.

  Returns:
    ``path``.
  """
  from tljax import viz  # pylint: disable=g-import-not-at-top
  plt = viz.plt
  rng = np.random.default_rng(seed)
  fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5),
                           squeeze=False)
  markers = "o^sPDvX*<>"
  for ax, (title, s, t) in zip(axes[0], panels):
    s = np.asarray(s, np.float64).reshape(len(s), -1)
    t = np.asarray(t, np.float64).reshape(len(t), -1)
    i_s = rng.permutation(len(s))[:max_points]
    i_t = rng.permutation(len(t))[:max_points]
    z = np.concatenate([s[i_s], t[i_t]])
    mean = z.mean(0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    proj = (z - mean) @ vt[:2].T
    if proj.shape[1] < 2:
      proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    ps, pt = proj[:len(i_s)], proj[len(i_s):]
    for pts, lab, color, name in ((ps, ys, "tab:blue", "source"),
                                  (pt, yt, "tab:red", "target")):
      idx = i_s if name == "source" else i_t
      if lab is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=color, alpha=0.5, label=name)
      else:
        lab = np.asarray(lab)[idx]
        for j, c in enumerate(np.unique(lab)[:len(markers)]):
          sel = lab == c
          ax.scatter(pts[sel, 0], pts[sel, 1], s=8, c=color, alpha=0.5,
                     marker=markers[j], label=name if j == 0 else None)
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  return viz.save(fig, path)


# ------------------------------------------------------------ experiment
def _load(config, spec: str, split: str, *, num: int | None = None):
  n = num if num is not None and num > 0 else None
  return data_lib.load(spec, split, seed=config.seed, num_examples=n,
                       data_dir=config.get("data_dir") or None)


def _load_domains(config):
  """Source train/test, target train (unlabelled use) and test sets."""
  if config.method not in METHODS:
    raise ValueError(f"unknown method {config.method!r}; choose one of "
                     f"{METHODS}")
  if not config.source or not config.target:
    raise ValueError("both config.source and config.target must name a data "
                     "set (e.g. --config.source=npz:src.npz "
                     "--config.target=npz:tgt.npz)")
  n = config.get("num_examples", -1)
  src = _load(config, config.source, "train", num=n).require_labels()
  tgt = _load(config, config.target, "train", num=n)
  src_test = _load(config, config.source, "test")
  tgt_test = _load(config, config.target, "test")
  for name, ds in (("target", tgt), ("source test", src_test),
                   ("target test", tgt_test)):
    if ds.example_shape != src.example_shape:
      raise ValueError(
          f"{name} data {ds.name!r} has examples of shape {ds.example_shape}"
          f" but the source {src.name!r} has {src.example_shape}; both "
          "domains must share one input shape (resize or project them "
          "first).")
  if tgt_test.y is None:
    raise ValueError(f"target {config.target!r} has no test labels, so target"
                     " accuracy cannot be measured; add y_test (or y) to it.")
  if tgt_test.num_classes != src.num_classes:
    raise ValueError(f"source has {src.num_classes} classes but target "
                     f"{tgt_test.num_classes}; the task must be the same.")
  tgt_test.require_labels(src.num_classes)
  if config.method == "target_supervised":
    tgt.require_labels(src.num_classes)
  return src, tgt, src_test, tgt_test


def _flat(x):
  return np.asarray(x, np.float32).reshape(len(x), -1)


def _subsample(ds, n, seed):
  if n is None or n <= 0 or n >= len(ds):
    return ds.x, ds.y
  idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
  return ds.x[idx], None if ds.y is None else ds.y[idx]


def _run_tca(config, workdir, src, tgt, tgt_test):
  c = config.tca
  xs, ys = _subsample(src, c.max_examples, config.seed)
  xt, _ = _subsample(tgt, c.max_examples, config.seed + 1)
  t0 = time.time()
  tca = tca_lib.TCA(n_components=c.n_components, kernel=c.kernel, mu=c.mu,
                    gamma=c.gamma if c.gamma > 0 else None).fit(xs, xt)
  fit_s = time.time() - t0
  zs, zt = tca.transform(xs), tca.transform(tgt_test.x)
  metrics = {"tca_fit_seconds": fit_s, "tca_n_components": tca.n_components_,
             "tca_fit_examples": len(xs) + len(xt)}
  for clf in ("1nn", "logreg"):
    metrics[f"target_accuracy_{clf}"] = float(np.mean(
        tca_lib.classify(zs, ys, zt, clf) == tgt_test.y))
    metrics[f"raw_target_accuracy_{clf}"] = float(np.mean(
        tca_lib.classify(_flat(xs), ys, _flat(tgt_test.x), clf)
        == tgt_test.y))
  metrics["target_accuracy"] = metrics[f"target_accuracy_{c.classifier}"]
  if config.plot:
    zt_train = tca.transform(xt)
    plot_embeddings(os.path.join(workdir, "embedding.png"),
                    [("inputs", xs, xt), ("TCA embedding", zs, zt_train)],
                    ys, None, seed=config.seed)
  return metrics


def _read_history(workdir, key):
  path = os.path.join(workdir, "metrics.jsonl")
  out = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if rec.get("split") == "train" and key in rec:
          out.append([rec["step"], rec[key]])
  return out


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Runs one domain adaptation method (``config.method``); see module doc.

  Writes ``metrics.jsonl``, checkpoints, ``embedding.png`` (2-D PCA of source
  and target, inputs vs learned features) and ``results.json`` whose
  ``metrics`` hold ``target_accuracy`` (on the target test split),
  ``source_accuracy``, ``feature_domain_accuracy`` (a linear probe telling
  the domains apart on the learned features; 0.5 = aligned), and for
  ``dann`` ``domain_accuracy`` (the domain classifier's, at the end) with
  ``domain_accuracy_history`` over training.

  Raises:
    ValueError: on an unknown method, domains with different input shapes,
      an empty domain, NaN inputs, or a target without test labels.
  """
  t0 = time.time()
  src, tgt, src_test, tgt_test = _load_domains(config)
  os.makedirs(workdir, exist_ok=True)
  method = config.method
  if method == "tca":
    metrics = _run_tca(config, workdir, src, tgt, tgt_test)
    metrics["wall_seconds"] = time.time() - t0
    loop.write_results(workdir, metrics, config)
    loop.say(f"results ({method}): " + "  ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()))
    return metrics

  num_classes = src.num_classes
  model = supervised.build_model(config, num_classes, src.example_shape)
  align = {"dann": "dann", "mmd": "mmd", "coral": "coral"}.get(method, "none")
  disc = (DomainDiscriminator(tuple(config.disc_features))
          if align == "dann" else None)
  params = init_params(model, src.example_shape, config.seed,
                       discriminator=disc)
  if method == "target_supervised":
    train_arrays = {"x": tgt.x, "y": tgt.y}
  else:
    train_arrays = {"x": src.x, "y": src.y}
  extra_metrics = {}
  if method == "kmm":
    k = config.kmm
    tk = time.time()
    if len(src) > k.max_examples:
      raise ValueError(f"KMM weights every source example; the source has "
                       f"{len(src)} > kmm.max_examples={k.max_examples}. "
                       "Raise kmm.max_examples or set num_examples.")
    xt_k, _ = _subsample(tgt, k.max_examples, config.seed + 1)
    w = kmm_lib.kmm_weights(_flat(src.x), _flat(xt_k), kernel=k.kernel,
                            gamma=k.gamma if k.gamma > 0 else None, B=k.B,
                            eps=k.eps if k.eps >= 0 else None,
                            max_iter=k.max_iter)
    train_arrays["w"] = (w / max(float(w.mean()), 1e-12)).astype(np.float32)
    extra_metrics = {"kmm_seconds": time.time() - tk,
                     "kmm_weight_max": float(train_arrays["w"].max()),
                     "kmm_effective_sample_size": float(
                         w.sum() ** 2 / max(float((w ** 2).sum()), 1e-12))}
  tx = optim.from_config(params, config.optim, total_steps=config.num_steps)
  state = state_lib.create_train_state(params, tx)
  step = make_step(model, tx, alignment_name=align, discriminator=disc,
                   weight=config.adapt_weight, total_steps=config.num_steps,
                   schedule=config.schedule,
                   schedule_gamma=config.schedule_gamma)
  bs = config.batch_size

  def batches_from(start):
    it_s = data_lib.batches(train_arrays, bs, seed=config.seed,
                            start_step=start)
    if align == "none":
      return it_s
    it_t = data_lib.batches({"x_target": tgt.x}, bs, seed=config.seed + 1,
                            start_step=start)
    return ({**a, **b} for a, b in zip(it_s, it_t))

  eval_fn = lambda p: {"target_accuracy": accuracy(model, p, tgt_test)}  # noqa: E731
  state, last = loop.fit_with_config(state, step, batches_from, config,
                                     workdir=workdir, eval_fn=eval_fn)
  p = state.params
  fs = features(model, p, _subsample(src_test, 2000, 0)[0])
  ft = features(model, p, _subsample(tgt_test, 2000, 0)[0])
  metrics = {"target_accuracy": accuracy(model, p, tgt_test),
             "source_accuracy": accuracy(model, p, src_test),
             "feature_domain_accuracy": linear_domain_accuracy(
                 fs, ft, seed=config.seed),
             "final_loss": last.get("loss", float("nan")),
             **extra_metrics}
  if align == "dann":
    metrics["domain_accuracy"] = last.get("domain_accuracy", float("nan"))
  if align != "none":
    metrics["align_loss"] = last.get("align_loss", float("nan"))
  metrics["wall_seconds"] = time.time() - t0
  extra = {}
  if align == "dann":
    extra["domain_accuracy_history"] = _read_history(workdir,
                                                     "domain_accuracy")
  if config.plot:
    xs_p, ys_p = _subsample(src_test, 600, 0)
    xt_p, yt_p = _subsample(tgt_test, 600, 0)
    plot_embeddings(
        os.path.join(workdir, "embedding.png"),
        [("inputs", xs_p, xt_p),
         (f"features after {method}", features(model, p, xs_p),
          features(model, p, xt_p))], ys_p, yt_p, seed=config.seed)
  loop.write_results(workdir, metrics, config, **extra)
  loop.say(f"results ({method}): " + "  ".join(
      f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
      for k, v in metrics.items()))
  return metrics
