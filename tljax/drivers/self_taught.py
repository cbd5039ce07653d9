"""Self-taught learning, the experiment (``experiments/self_taught.py``): an
autoencoder (:mod:`tljax.methods.self_taught`) pretrained on unlabelled data
from other domains, its features reused on a labelled target with few
labels, against raw inputs, random features and training from scratch; plus
k-means clustering of the target test set on each kind of features.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tljax import evaluation
from tljax import models
from tljax import optim
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import features as features_lib
from tljax.methods import self_taught as st
from tljax.methods import supervised

STRATEGIES = ("raw_linear", "random_linear", "self_taught_linear", "scratch",
              "self_taught_finetune")
FEATURES = ("raw", "pca", "random_encoder", "self_taught")


def _load_unlabelled(config):
  cap = (config.unlabelled_per_source if config.unlabelled_per_source > 0
         else None)
  xs = []
  for spec in config.unlabelled:
    ds = common.load(config, spec, num_examples=cap)
    if xs and ds.example_shape != xs[0].shape[1:]:
      raise ValueError(f"unlabelled source {spec!r} has examples of shape "
                       f"{ds.example_shape}, the first {xs[0].shape[1:]}; "
                       "all must share one input shape.")
    xs.append(ds.x)  # labels, if any, are never used
  return np.concatenate(xs)


def _pretrain(config, workdir, ae, unlabelled, test):
  """Trains the autoencoder on the unlabelled data; returns the trained
  and the untrained (initial) parameters and the run's metrics."""
  shape = test.example_shape
  random_params = models.init_params(ae, shape, config.seed)
  tx = optim.from_config(random_params, config.optim,
                         total_steps=config.pretrain_steps)
  step = st.make_step(ae, tx, noise_std=config.noise_std,
                      sparsity=config.sparsity)
  trainer = common.trainer(step, tx, config)
  state, last = common.fit(
      trainer, trainer.init_state(random_params),
      common.batches_from(config, {"x": unlabelled}),
      config, workdir=workdir, num_steps=config.pretrain_steps,
      eval_fn=lambda s: {"test_mse": float(np.mean(
          (evaluation.predict(ae, s.params, test.x) - test.x) ** 2))},
      name="pretrain")
  return state.params, random_params, last


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """The experiment of the module docstring; returns the metrics it writes
  to ``results.json``: ``accuracy[strategy][budget]`` and
  ``clustering[features][ari|nmi]`` (mean, std and runs over seeds),
  ``target_accuracy`` (``self_taught_linear`` at the first budget) and the
  pretrained features' ``ari``/``nmi``; with ``table.md`` and
  ``self_taught.png``.
  """
  t0 = time.time()
  common.validate(config)
  if not config.unlabelled:
    raise ValueError("self-taught learning needs unlabelled data "
                     "(config.unlabelled, a list of data specs).")
  strategies, budgets = common.check_sweep(
      config.strategies, STRATEGIES, config.budgets,
      num_seeds=config.num_seeds)
  unlabelled = _load_unlabelled(config)
  test = common.load(config, config.target, "test").require_labels()
  shape = test.example_shape
  if unlabelled.shape[1:] != shape:
    raise ValueError(f"the unlabelled data has examples of shape "
                     f"{unlabelled.shape[1:]}, the target {config.target!r} "
                     f"{shape}; the encoder reads one input shape.")
  n_out = test.num_classes
  workdir_lib.say(f"self-taught: {len(unlabelled)} unlabelled examples from "
                  f"{list(config.unlabelled)}; target {config.target} "
                  f"({len(test)} test examples)")

  # 1. Unsupervised pretraining on the unlabelled data.
  ae = st.Autoencoder(models.backbone_from_config(config.model, shape,
                                                  test.modality),
                      output_shape=shape,
                      decoder_features=tuple(config.decoder_features))
  ae_params, random_params, last = _pretrain(config, workdir, ae, unlabelled,
                                             test)
  metrics: dict[str, Any] = {
      "unlabelled_examples": int(len(unlabelled)),
      "pretrain_mse": last.get("mse", float("nan")),
      "pretrain_test_mse": last.get("eval_test_mse", float("nan")),
      "raw_test_variance": float(np.mean((test.x - test.x.mean(0)) ** 2))}

  # 2. The labelled target with few labels.
  test_feats = {"raw": test.x.reshape(len(test), -1),
                "random_encoder": st.encode(ae, random_params, test.x),
                "self_taught": st.encode(ae, ae_params, test.x)}
  linear_source = {"raw_linear": None, "random_linear": random_params,
                   "self_taught_linear": ae_params}
  trainers = common.Trainers(config, batch_size=config.batch_size,
                             num_steps=config.target_steps)

  def train(name, model, params, arrays, seed):
    # Strategies with the same model, loss and optimizer share one compiled
    # step: random_ / self_taught_linear, scratch / self_taught_finetune.
    linear = name.endswith("_linear")

    def build():
      # A linear head on fixed features wants a larger step than a deep net.
      tx = optim.make_optimizer(
          params, name=config.optim.name,
          learning_rate=(config.linear.optim.learning_rate if linear
                         else config.optim.learning_rate),
          grad_clip_norm=config.optim.grad_clip_norm)
      return (features_lib.make_step(model, tx) if linear
              else supervised.make_step(model, tx)), tx
    return trainers.train(
        {"random_linear": "code_linear", "self_taught_linear": "code_linear",
         "self_taught_finetune": "scratch"}.get(name, name), build, params,
        arrays, seed).params

  raw_clf = models.Classifier(models.MLP(features=()), num_classes=n_out)

  def run(name, data, seed):
    if name in linear_source:
      src = linear_source[name]
      if src is None:
        model = raw_clf
        params = models.init_params(raw_clf, shape, seed)
        feats = data.x.reshape(len(data), -1)
        test_f = test_feats["raw"]
      else:
        model, params = st.classifier_from_autoencoder(
            ae, src, num_classes=n_out, example_shape=shape, seed=seed)
        feats = st.encode(ae, src, data.x)
        test_f = test_feats["self_taught" if src is ae_params
                            else "random_encoder"]
      head = train(name, model, features_lib.head_params(params),
                   {"features": feats, "y": data.y}, seed)
      return features_lib.head_accuracy(model, head, test_f, test.y)
    src = ae_params if name == "self_taught_finetune" else random_params
    model, params = st.classifier_from_autoencoder(
        ae, src, num_classes=n_out, example_shape=shape, seed=seed)
    if name == "scratch":
      params = models.init_params(model, shape, seed)
    params = train(name, model, params, data.arrays(), seed)
    return evaluation.accuracy(model, params, test)

  results, _, _ = common.run_sweep(
      config, config.target, strategies, budgets, common.run_seeds(config),
      run, num_classes=n_out, workdir=workdir)
  names = [common.budget_name(b) for b in budgets]

  # 3. Clustering the target test set.
  # PCA fitted on the same unlabelled data, as many components as the code
  # has units (capped below the input size, where PCA would only rotate).
  test_feats["pca"] = st.pca_features(
      unlabelled, test.x, min(test_feats["self_taught"].shape[1],
                              int(np.prod(shape)) // 2))
  clustering = {}
  for name in FEATURES:
    scores = [st.cluster_quality(test_feats[name], test.y,
                                 num_clusters=n_out, seed=config.seed + k,
                                 n_init=config.kmeans_restarts)
              for k in range(config.num_seeds)]
    clustering[name] = {key: common.summarize([s[key] for s in scores])
                        for key in ("ari", "nmi")}
    workdir_lib.say(f"k-means on {name}: ARI "
                    f"{clustering[name]['ari']['mean']:.3f} NMI "
                    f"{clustering[name]['nmi']['mean']:.3f}")

  table = "\n".join([
      common.budgets_table(results, strategies, budgets), "",
      common.markdown_table(
          ["k-means on", "ARI", "NMI"],
          [[name, common.mean_std(c["ari"], 1, 3),
            common.mean_std(c["nmi"], 1, 3)]
           for name, c in clustering.items()])])
  metrics["accuracy"] = results
  metrics["clustering"] = clustering
  head = ("self_taught_linear" if "self_taught_linear" in strategies
          else strategies[0])
  metrics["target_accuracy"] = results[head][names[0]]["mean"]
  metrics["ari"] = clustering["self_taught"]["ari"]["mean"]
  metrics["nmi"] = clustering["self_taught"]["nmi"]["mean"]
  metrics["raw_ari"] = clustering["raw"]["ari"]["mean"]
  workdir_lib.write_text(os.path.join(workdir, "table.md"), table)
  if config.plot:
    viz.accuracy_bars(os.path.join(workdir, "self_taught.png"), results,
                      names, strategies,
                      f"{'+'.join(config.unlabelled)} -> {config.target}",
                      clustering=clustering)
  return common.finish(workdir, metrics, config, t0, table)
