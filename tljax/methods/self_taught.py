r"""Self-taught learning and clustering of learned features.

Self-taught learning (Raina, Battle, Lee, Packer & Ng 2007, "Self-taught
Learning: Transfer Learning from Unlabeled Data"): learn a representation
from plentiful *unlabelled* data that need not share the target's classes
or distribution, then reuse it on a labelled target task with few labels.
Raina et al. learn sparse codes; here the representation is the code layer
of a (denoising, optionally sparse) autoencoder (Vincent et al. 2008),
trained with :func:`reconstruction_loss` in the shared step shape. Its
encoder is an ordinary backbone (parameters ``backbone``), so it loads into
a :class:`tljax.models.Classifier` (``backbone`` loaded, a new ``head``;
:func:`classifier_from_autoencoder`).

The experiment (``experiments/self_taught.py``) compares on the target, for
each label budget and seed:

====================  =======================================================
raw_linear            a linear classifier on the raw inputs
random_linear         a linear classifier on a frozen, untrained encoder
self_taught_linear    a linear classifier on the frozen pretrained encoder
                      (Raina et al.'s protocol)
scratch               encoder + head trained from random initialisation
self_taught_finetune  pretrained encoder + head, everything trained
====================  =======================================================

and clusters the target test set with k-means (scikit-learn) on raw inputs,
their PCA, untrained and pretrained encoder features, scoring each
clustering against the true labels with the adjusted Rand index and NMI
(:func:`cluster_quality`).

  >>> import numpy as np
  >>> x = np.r_[np.zeros((5, 2)), np.ones((5, 2)) * 5]
  >>> y = np.r_[np.zeros(5, int), np.ones(5, int)]
  >>> cluster_quality(x, y, num_clusters=2)["ari"]
  1.0
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tljax import data as data_lib
from tljax import models
from tljax import optim
from tljax import params as params_lib
from tljax.methods import features as features_lib
from tljax.methods import supervised
from tljax.train import loop
from tljax.train import state as state_lib
from tljax.train import lean

PyTree = Any
STRATEGIES = ("raw_linear", "random_linear", "self_taught_linear", "scratch",
              "self_taught_finetune")
FEATURES = ("raw", "pca", "random_encoder", "self_taught")


class Decoder(nn.Module):
  """Dense relu layers ``layer_<i>``, then a linear ``out`` layer reshaped
  to ``output_shape``."""
  output_shape: Sequence[int]
  features: Sequence[int] = (128,)

  @nn.compact
  def __call__(self, h):
    h = h.reshape((h.shape[0], -1))
    for i, f in enumerate(self.features):
      h = nn.relu(nn.Dense(f, name=f"layer_{i}")(h))
    out = nn.Dense(int(np.prod(self.output_shape)), name="out")(h)
    return out.reshape((h.shape[0],) + tuple(self.output_shape))


class Autoencoder(nn.Module):
  """``decoder(backbone(x))``; parameters ``backbone`` and ``decoder``.

  ``model.apply(v, x, method='encode')`` gives the code (the features that
  are reused).
  """
  backbone: nn.Module
  output_shape: Sequence[int]
  decoder_features: Sequence[int] = (128,)

  def setup(self):
    self.decoder = Decoder(tuple(self.output_shape),
                           tuple(self.decoder_features))

  def encode(self, x, *, train: bool = False):
    return self.backbone(x, train=train)

  def decode(self, code):
    return self.decoder(code)

  def __call__(self, x, *, train: bool = False):
    return self.decode(self.encode(x, train=train))


def reconstruction_loss(params, state, batch, rng, *, model: Autoencoder,
                        noise_std: float = 0.0, sparsity: float = 0.0,
                        axis_name=None):
  """Mean squared reconstruction error of ``batch['x']`` (labels, if any,
  are ignored).

  With ``noise_std > 0`` the encoder sees ``x + noise_std * N(0, 1)`` and the
  decoder must give back the clean ``x`` (a denoising autoencoder, Vincent et
  al. 2008); ``sparsity`` adds ``sparsity * mean |code|`` (an L1 penalty on
  the code, in the spirit of Raina et al.'s sparse coding). Metrics:
  ``mse``, ``code_l1``.
  """
  del state, axis_name
  x = batch["x"]
  noisy = x
  if noise_std:
    noisy = x + noise_std * jax.random.normal(rng, x.shape, x.dtype)
  code = model.apply({"params": params}, noisy, train=True, method="encode")
  recon = model.apply({"params": params}, code, method="decode")
  mse = jnp.mean((recon - x) ** 2)
  code_l1 = jnp.mean(jnp.abs(code))
  return mse + sparsity * code_l1, {"mse": mse, "code_l1": code_l1}


def classifier_from_autoencoder(model: Autoencoder, params: PyTree, *,
                                num_classes: int, example_shape,
                                seed: int) -> tuple[models.Classifier, PyTree]:
  """A classifier on the autoencoder's encoder, its backbone loaded from
  ``params`` and a fresh head."""
  clf = models.Classifier(model.backbone, num_classes=num_classes)
  init = supervised.init_params(clf, example_shape, seed)
  return clf, params_lib.merge_params({"backbone": params["backbone"]}, init,
                                      dont_load=("head/.*",))


def encode(model: Autoencoder, params: PyTree, x: np.ndarray) -> np.ndarray:
  """The code (features) of every example of ``x``."""
  return supervised.predict(model, params, x, method="encode")


def cluster_quality(features: np.ndarray, labels: np.ndarray, *,
                    num_clusters: int | None = None, seed: int = 0,
                    n_init: int = 10) -> dict[str, float]:
  """k-means (scikit-learn) on ``features``, scored against ``labels``.

  Args:
    features: ``(n, ...)`` features (flattened to ``(n, d)``).
    labels: ``(n,)`` true classes.
    num_clusters: ``k``; default the number of distinct labels.
    seed: k-means seed.
    n_init: k-means restarts (the best inertia is kept).

  Returns:
    ``{'ari': adjusted Rand index, 'nmi': normalized mutual information}``
    (Hubert & Arabie 1985; Strehl & Ghosh 2002); 1 is a perfect match, ARI
    is about 0 for a random assignment.

  Raises:
    ValueError: on mismatched lengths, non-finite features, or fewer
      examples than clusters.
  """
  from sklearn import cluster  # pylint: disable=g-import-not-at-top
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  f = np.asarray(features, np.float64)
  y = np.asarray(labels)
  if f.ndim < 2 or y.shape != (f.shape[0],):
    raise ValueError(f"cluster_quality: features must be (n, ...) with one "
                     f"label each; got features {f.shape}, labels {y.shape}.")
  f = f.reshape(len(f), -1)
  if not np.all(np.isfinite(f)):
    raise ValueError("cluster_quality: features contain NaN or Inf.")
  k = int(num_clusters or len(np.unique(y)))
  if not 2 <= k <= len(f):
    raise ValueError(f"cluster_quality: need 2 <= num_clusters <= n "
                     f"examples; got {k} clusters for {len(f)} examples.")
  assign = cluster.KMeans(n_clusters=k, n_init=n_init,
                          random_state=seed).fit_predict(f)
  return {"ari": float(metrics.adjusted_rand_score(y, assign)),
          "nmi": float(metrics.normalized_mutual_info_score(y, assign))}


def pca_features(train_x: np.ndarray, x: np.ndarray, n_components: int
                 ) -> np.ndarray:
  """``x`` projected on the leading principal components of ``train_x``."""
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  flat = lambda a: np.asarray(a, np.float64).reshape(len(a), -1)  # noqa: E731
  pca = decomposition.PCA(n_components=n_components, random_state=0)
  return pca.fit(flat(train_x)).transform(flat(x)).astype(np.float32)


# ------------------------------------------------------------- experiment
def _load_unlabelled(config):
  xs = []
  for spec in config.unlabelled:
    ds = data_lib.load(spec, "train", seed=config.seed,
                       data_dir=config.data_dir or None,
                       num_examples=(config.unlabelled_per_source
                                     if config.unlabelled_per_source > 0
                                     else None))
    if xs and ds.example_shape != xs[0].shape[1:]:
      raise ValueError(f"unlabelled source {spec!r} has examples of shape "
                       f"{ds.example_shape}, the first {xs[0].shape[1:]}; "
                       "all must share one input shape.")
    xs.append(ds.x)  # labels, if any, are never used
  return np.concatenate(xs)


def plot_results(path: str, results: dict, budgets, strategies,
                 clustering: dict, title: str = ""):
  """Left: target accuracy per strategy and budget; right: k-means ARI and
  NMI per feature type."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(12, 4.2))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 2, 1)
  width = 0.8 / len(strategies)
  for i, name in enumerate(strategies):
    xs = np.arange(len(budgets)) + (i - (len(strategies) - 1) / 2) * width
    ax.bar(xs, [100 * results[name][str(b)]["mean"] for b in budgets], width,
           yerr=[100 * results[name][str(b)]["std"] for b in budgets],
           capsize=3, label=name)
  ax.set_xticks(range(len(budgets)), [f"{b} labels/class" for b in budgets])
  ax.set_ylabel("target test accuracy (%)")
  ax.set_title(title)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=7)
  ax = fig.add_subplot(1, 2, 2)
  names = list(clustering)
  for j, key in enumerate(("ari", "nmi")):
    ax.bar(np.arange(len(names)) + (j - 0.5) * 0.4,
           [clustering[n][key]["mean"] for n in names], 0.4,
           yerr=[clustering[n][key]["std"] for n in names], capsize=3,
           label=key.upper())
  ax.set_xticks(range(len(names)), names, fontsize=8)
  ax.set_title("k-means on the target test set")
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Pretrains the autoencoder on the unlabelled sources, then compares the
  strategies on the target and clusters its test set; see the module
  docstring.

  Writes ``results.json`` (``metrics``: ``accuracy[strategy][budget]``
  and ``clustering[features][ari|nmi]``, each mean, std and runs over seeds;
  ``target_accuracy`` (``self_taught_linear`` at the first budget),
  ``ari``/``nmi`` of the pretrained features), ``table.md`` and
  ``self_taught.png``.
  """
  t0 = time.time()
  strategies, budgets = lean.check_sweep(config.strategies, STRATEGIES,
                                         config.budgets)
  if not config.unlabelled:
    raise ValueError("self-taught learning needs unlabelled data "
                     "(config.unlabelled, a list of data specs).")
  unlabelled = _load_unlabelled(config)
  load = functools.partial(data_lib.load, config.target,
                           data_dir=config.data_dir or None)
  test = load("test", seed=config.seed).require_labels()
  shape = test.example_shape
  if unlabelled.shape[1:] != shape:
    raise ValueError(f"the unlabelled data has examples of shape "
                     f"{unlabelled.shape[1:]}, the target {config.target!r} "
                     f"{shape}; the encoder reads one input shape.")
  n_out = test.num_classes
  loop.say(f"self-taught: {len(unlabelled)} unlabelled examples from "
           f"{list(config.unlabelled)}; target {config.target} "
           f"({len(test)} test examples)")

  # 1. Unsupervised pretraining on the unlabelled data.
  ae = Autoencoder(models.backbone_from_config(config.model, shape), output_shape=shape,
                   decoder_features=tuple(config.decoder_features))
  ae_params = supervised.init_params(ae, shape, config.seed)
  # A host copy: fit donates the buffers of the state it is given.
  random_params = jax.tree.map(np.array, ae_params)
  tx = optim.from_config(ae_params, config.optim,
                         total_steps=config.pretrain_steps)
  step = functools.partial(
      state_lib.train_step, tx=tx,
      loss_fn=functools.partial(reconstruction_loss, model=ae,
                                noise_std=config.noise_std,
                                sparsity=config.sparsity))
  state, last = loop.fit(
      state_lib.create_train_state(ae_params, tx), step,
      lambda s: data_lib.batches({"x": unlabelled}, config.batch_size,
                                 seed=config.seed, start_step=s),
      num_steps=config.pretrain_steps, rng=jax.random.key(config.seed),
      workdir=workdir, eval_fn=lambda p: {"test_mse": float(np.mean(
          (supervised.predict(ae, p, test.x) - test.x) ** 2))},
      eval_every=config.eval_every, log_every=config.log_every,
      parallel_mode=config.parallel, name="pretrain")
  ae_params = state.params
  metrics: dict[str, Any] = {
      "unlabelled_examples": int(len(unlabelled)),
      "pretrain_mse": last.get("mse", float("nan")),
      "pretrain_test_mse": last.get("eval_test_mse", float("nan")),
      "raw_test_variance": float(np.mean((test.x - test.x.mean(0)) ** 2))}

  # 2. The labelled target with few labels.
  test_feats = {"raw": test.x.reshape(len(test), -1),
                "random_encoder": encode(ae, random_params, test.x),
                "self_taught": encode(ae, ae_params, test.x)}
  linear_source = {"raw_linear": None, "random_linear": random_params,
                   "self_taught_linear": ae_params}
  trainers: dict[str, Any] = {}

  def run(name, model, params, arrays, seed, loss_fn):
    # Strategies with the same model, loss and optimizer share one compiled
    # step: random_ / self_taught_linear, scratch / self_taught_finetune.
    linear = name.endswith("_linear")
    name = {"random_linear": "code_linear",
            "self_taught_linear": "code_linear",
            "self_taught_finetune": "scratch"}.get(name, name)
    if name not in trainers:
      # A linear head on fixed features wants a larger step than a deep net.
      lr = (config.linear_learning_rate if linear
            else config.optim.learning_rate)
      t = optim.make_optimizer(params, name=config.optim.name,
                               learning_rate=lr,
                               grad_clip_norm=config.optim.grad_clip_norm)
      trainers[name] = lean.LeanTrainer(functools.partial(
          state_lib.train_step, tx=t, loss_fn=loss_fn), tx=t)
    st, _ = trainers[name].train_from(
        params, arrays, batch_size=config.batch_size,
        num_steps=config.target_steps, seed=seed, rng=jax.random.key(seed))
    return st.params

  raw_clf = models.Classifier(models.MLP(features=()), num_classes=n_out)
  results = {s: {} for s in strategies}
  for b in budgets:
    runs = {s: [] for s in strategies}
    for k in range(config.num_seeds):
      seed = config.seed + 1000 * (k + 1)
      train = load("train", seed=seed, labels_per_class=b).require_labels(
          n_out)
      for name in strategies:
        if name in linear_source:
          src = linear_source[name]
          if src is None:
            model, params = raw_clf, supervised.init_params(raw_clf, shape,
                                                            seed)
            feats = train.x.reshape(len(train), -1)
            test_f = test_feats["raw"]
          else:
            model, params = classifier_from_autoencoder(
                ae, src, num_classes=n_out, example_shape=shape, seed=seed)
            feats = encode(ae, src, train.x)
            test_f = test_feats["self_taught" if src is ae_params
                                else "random_encoder"]
          head = run(name, model, features_lib.head_params(params),
                     {"features": feats, "y": train.y}, seed,
                     functools.partial(features_lib.head_loss, model=model))
          acc = features_lib.head_accuracy(model, head, test_f, test.y)
        else:
          src = ae_params if name == "self_taught_finetune" else random_params
          model, params = classifier_from_autoencoder(
              ae, src, num_classes=n_out, example_shape=shape, seed=seed)
          if name == "scratch":
            params = supervised.init_params(model, shape, seed)
          params = run(name, model, params, train.arrays(), seed,
                       functools.partial(supervised.classification_loss,
                                         model=model))
          acc = supervised.evaluate(model, params, test)["accuracy"]
        runs[name].append(acc)
        loop.say(f"[{b} labels/class, seed {k}] {name}: target accuracy "
                 f"{acc:.4f}")
    for name in strategies:
      results[name][str(b)] = lean.summarize(runs[name])

  # 3. Clustering the target test set.
  # PCA fitted on the same unlabelled data, as many components as the code
  # has units (capped below the input size, where PCA would only rotate).
  test_feats["pca"] = pca_features(
      unlabelled, test.x, min(test_feats["self_taught"].shape[1],
                              int(np.prod(shape)) // 2))
  clustering = {}
  for name in FEATURES:
    scores = [cluster_quality(test_feats[name], test.y, num_clusters=n_out,
                              seed=config.seed + k,
                              n_init=config.kmeans_restarts)
              for k in range(config.num_seeds)]
    clustering[name] = {key: lean.summarize([s[key] for s in scores])
                        for key in ("ari", "nmi")}
    loop.say(f"k-means on {name}: ARI {clustering[name]['ari']['mean']:.3f} "
             f"NMI {clustering[name]['nmi']['mean']:.3f}")

  lines = ["| strategy | " + " | ".join(f"{b} labels/class" for b in budgets)
           + " |", "|" + "---|" * (len(budgets) + 1)]
  for name in strategies:
    lines.append(f"| {name} | " + " | ".join(
        f"{100 * results[name][str(b)]['mean']:.1f} ± "
        f"{100 * results[name][str(b)]['std']:.1f}" for b in budgets) + " |")
  lines += ["", "| k-means on | ARI | NMI |", "|---|---|---|"]
  for name, c in clustering.items():
    lines.append(f"| {name} | {c['ari']['mean']:.3f} ± {c['ari']['std']:.3f}"
                 f" | {c['nmi']['mean']:.3f} ± {c['nmi']['std']:.3f} |")
  table = "\n".join(lines)
  metrics["accuracy"] = results
  metrics["clustering"] = clustering
  head = ("self_taught_linear" if "self_taught_linear" in strategies
          else strategies[0])
  metrics["target_accuracy"] = results[head][str(budgets[0])]["mean"]
  metrics["ari"] = clustering["self_taught"]["ari"]["mean"]
  metrics["nmi"] = clustering["self_taught"]["nmi"]["mean"]
  metrics["raw_ari"] = clustering["raw"]["ari"]["mean"]
  metrics["wall_seconds"] = time.time() - t0
  if loop.is_chief():
    with open(os.path.join(workdir, "table.md"), "w") as f:
      f.write(table + "\n")
    if config.plot:
      plot_results(os.path.join(workdir, "self_taught.png"), results,
                   budgets, strategies, clustering,
                   f"{'+'.join(config.unlabelled)} -> {config.target}")
  loop.write_results(workdir, metrics, config)
  loop.say(table)
  return metrics
