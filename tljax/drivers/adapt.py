"""Unsupervised domain adaptation, the experiment (``experiments/adapt.py``).

``config.method`` is one of ``source_only``, ``target_supervised`` (the
ceiling: target labels), ``dann``, ``cdan``, ``cdan_e``, ``mmd``, ``coral``,
``mcc``, ``self_training``, ``adda`` (source pretraining, then an
adversarially trained target encoder)
(:mod:`tljax.methods.domain_adaptation`), ``kmm`` (source-only training
weighted by :mod:`tljax.methods.kmm` instance weights) or ``tca``
(:mod:`tljax.methods.tca`, closed form, then 1-NN / logistic regression).

The deep methods train one classifier (``config.model``, with a
``Dense-BatchNorm-relu`` bottleneck of ``config.bottleneck_dim`` when > 0)
with ``config.optim``; the domain classifier (``config.disc_features``)
learns at ``config.disc_lr_mult`` times the rate, as DANN's paper and TLlib
do on pretrained features.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from tljax import models
from tljax import optim
from tljax import viz
from tljax.drivers import common
from tljax.methods import domain_adaptation as da
from tljax.methods import kmm as kmm_lib
from tljax.methods import tca as tca_lib

METHODS = ("source_only", "target_supervised", "dann", "cdan", "cdan_e",
           "mmd", "coral", "mcc", "self_training", "adda", "kmm", "tca",
           "jda")
ALIGNED = ("dann", "cdan", "cdan_e", "mmd", "coral", "mcc", "self_training")


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
  n = n if n > 0 else None
  src = common.load(config, config.source, num_examples=n).require_labels()
  tgt = common.load(config, config.target, num_examples=n)
  src_test = common.load(config, config.source, "test")
  tgt_test = common.load(config, config.target, "test")
  common.check_same_shape(
      src, [("target", tgt), ("source test", src_test),
            ("target test", tgt_test)],
      "both domains must share one input shape (resize or project them "
      "first).")
  if tgt_test.y is None:
    raise ValueError(f"target {config.target!r} has no test labels, so target"
                     " accuracy cannot be measured; add y_test (or y) to it.")
  if tgt_test.num_classes != src.num_classes:
    raise ValueError(f"source has {src.num_classes} classes but target "
                     f"{tgt_test.num_classes}; the task must be the same.")
  if None not in (src.class_names, tgt_test.class_names) and \
      src.class_names != tgt_test.class_names:
    diff = sorted(set(src.class_names) ^ set(tgt_test.class_names))
    raise ValueError(f"the class folders of source and target differ ("
                     f"{diff[:5] or 'same names, another order'}), so their "
                     "labels would not mean the same classes; give both "
                     "domains the same class folders.")
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
  """TCA or JDA (``config.method``, settings under ``config.tca`` /
  ``config.jda``): the closed-form embedding fitted on subsamples of both
  domains, then 1-NN and logistic regression on it."""
  method = config.method
  c = config[method]
  xs, ys = _subsample(src, c.max_examples, config.seed)
  xt, _ = _subsample(tgt, c.max_examples, config.seed + 1)
  t0 = time.time()
  gamma = c.gamma if c.gamma > 0 else None
  if method == "jda":
    sub = tca_lib.JDA(n_components=c.n_components, kernel=c.kernel, mu=c.mu,
                      iterations=c.iterations, gamma=gamma).fit(xs, ys, xt)
  else:
    sub = tca_lib.TCA(n_components=c.n_components, kernel=c.kernel, mu=c.mu,
                      gamma=gamma).fit(xs, xt)
  metrics = {f"{method}_fit_seconds": time.time() - t0,
             f"{method}_n_components": sub.n_components_,
             f"{method}_fit_examples": len(xs) + len(xt)}
  acc = tca_lib.embedding_accuracies(sub, xs, ys, tgt_test.x, tgt_test.y,
                                     classifiers=("1nn", "logreg"))
  for clf in ("1nn", "logreg"):
    metrics[f"target_accuracy_{clf}"] = acc[clf]
    metrics[f"raw_target_accuracy_{clf}"] = acc[f"raw_{clf}"]
  metrics["target_accuracy"] = metrics[f"target_accuracy_{c.classifier}"]
  if config.plot:
    viz.embeddings(os.path.join(workdir, "embedding.png"),
                   [("inputs", xs, xt),
                    (f"{method.upper()} embedding", sub.transform(xs),
                     sub.transform(xt))],
                   ys, None, seed=config.seed)
  return metrics


def _kmm_weights(config, src, tgt):
  """KMM weights of every source example (mean 1), and their summary."""
  k = config.kmm
  t0 = time.time()
  if len(src) > k.max_examples:
    raise ValueError(f"KMM weights every source example; the source has "
                     f"{len(src)} > kmm.max_examples={k.max_examples}. "
                     "Raise kmm.max_examples or set num_examples.")
  xt, _ = _subsample(tgt, k.max_examples, config.seed + 1)
  w = kmm_lib.kmm_weights(_flat(src.x), _flat(xt), kernel=k.kernel,
                          gamma=k.gamma if k.gamma > 0 else None, B=k.B,
                          eps=k.eps if k.eps >= 0 else None,
                          max_iter=k.max_iter)
  ess = float(w.sum() ** 2 / max(float((w ** 2).sum()), 1e-12))
  w = (w / max(float(w.mean()), 1e-12)).astype(np.float32)
  return w, {"kmm_seconds": time.time() - t0,
             "kmm_weight_max": float(w.max()),
             "kmm_effective_sample_size": ess}


def _history(workdir, key):
  """``[[step, value], ...]`` of a train metric from ``metrics.jsonl``, one
  entry per step (the last record of a step wins)."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = {}
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        rec = json.loads(line)
        if rec.get("split") == "train" and key in rec:
          out[rec["step"]] = rec[key]
  return [[s, v] for s, v in sorted(out.items())]


def _optimizer(config, params, num_steps, *, frozen=()):
  """``config.optim`` over ``params``, the domain classifier at
  ``config.disc_lr_mult`` times the rate and the ``frozen`` top-level parts
  frozen (unless ``config.optim.lr_rules`` says otherwise)."""
  optim_cfg = config.optim
  mult = float(config.get("disc_lr_mult", 1.0))
  if not optim_cfg.get("lr_rules") and ("disc" in params and mult != 1.0
                                        or frozen):
    optim_cfg = dict(optim_cfg)
    rules = [(f"^{k}/.*", None) for k in frozen]
    if "disc" in params and mult != 1.0:
      rules.append(("^disc/.*", mult))
    optim_cfg["lr_rules"] = rules + [(".*", 1.0)]
  return optim.from_config(params, optim_cfg, total_steps=num_steps)


def _loss_settings(config) -> dict:
  return dict(weight=config.adapt_weight, total_steps=config.num_steps,
              schedule=config.schedule, schedule_gamma=config.schedule_gamma,
              mmd_logits=bool(config.get("mmd_logits", False)),
              cdan_max_dim=config.cdan.max_dim,
              cdan_random_dim=config.cdan.random_dim,
              mcc_temperature=config.mcc_temperature,
              pseudo_threshold=config.pseudo_threshold,
              pseudo_alignment=bool(config.get("pseudo_alignment", True)))


def _check_settings(config):
  if not 0.0 < config.pseudo_threshold <= 1.0:
    raise ValueError(f"pseudo_threshold must be in (0, 1], got "
                     f"{config.pseudo_threshold}; it is the least softmax "
                     "probability a target prediction needs to be used as a "
                     "label.")
  if not config.mcc_temperature > 0:
    raise ValueError(f"mcc_temperature must be > 0, got "
                     f"{config.mcc_temperature}.")
  if config.bottleneck_dim < 0:
    raise ValueError(f"bottleneck_dim must be >= 0 (0: no bottleneck), got "
                     f"{config.bottleneck_dim}.")
  if config.method == "adda" and config.adda.pretrain_steps < 1:
    raise ValueError(f"adda.pretrain_steps must be >= 1, got "
                     f"{config.adda.pretrain_steps}: ADDA starts from a "
                     "source-trained classifier.")


def _adda(config, workdir, model, disc, params, model_state, src, tgt,
          joint_batches):
  """ADDA's two phases: source-only pretraining (``adda.pretrain_steps``),
  then the target encoder against the domain classifier (``num_steps``)
  with the source classifier frozen. Returns the final train state (its
  params are ADDA's tree) and the last metrics."""
  pre_steps = config.adda.pretrain_steps
  tx = _optimizer(config, params, pre_steps)
  step = da.make_step(model, tx, alignment_name="none")
  trainer = common.trainer(step, tx, config)
  source_batches = common.batches_from(config, {"x": src.x, "y": src.y})
  state, _ = common.fit(
      trainer, trainer.init_state(params, model_state=model_state),
      source_batches, config, workdir=workdir, name="pretrain",
      num_steps=pre_steps)
  aparams = da.adda_params(state.params, disc, config.seed + 1, model=model,
                           example_shape=src.example_shape,
                           model_state=state.model_state)
  frozen = [k for k in aparams if k not in ("disc", "target_backbone")]
  # The adversarial phase at the paper's Adam settings (lr 2e-4, b1 0.5):
  # at the pretraining rate (1e-3) the target encoder collapses (mnist1d and
  # digits at chance, docs/domain_adaptation_settings.md).
  adv = config.copy_and_resolve_references()
  with adv.unlocked():
    for k in ("learning_rate", "b1"):
      if config.adda.get(k):
        adv.optim[k] = config.adda[k]
  tx = _optimizer(adv, aparams, config.num_steps, frozen=frozen)
  step = da.make_adda_step(model, tx, discriminator=disc)
  trainer = common.trainer(step, tx, config)
  init = trainer.init_state(
      aparams, model_state=state.model_state,
      extra={"source_model_state": state.model_state})
  return common.fit(trainer, init, joint_batches, config, workdir=workdir,
                    eval_fn=lambda s: {"target_accuracy": da.accuracy(
                        model, da.adda_target_classifier(s.params), tgt,
                        model_state=s.model_state)})


def train_and_evaluate(config, workdir: str) -> dict[str, float]:
  """Runs one domain adaptation method (``config.method``); see module doc.

  Writes ``metrics.jsonl``, checkpoints, ``embedding.png`` (2-D PCA of source
  and target, inputs vs learned features) and ``results.json`` whose
  ``metrics`` hold ``target_accuracy`` (on the target test split),
  ``source_accuracy``, ``feature_domain_accuracy`` (a linear probe telling
  the domains apart on the learned features; 0.5 = aligned), and for the
  adversarial methods ``domain_accuracy`` (the domain classifier's, at the
  end) with ``domain_accuracy_history`` over training.

  Raises:
    ValueError: on an unknown method, domains with different input shapes,
      an empty domain, NaN inputs, or a target without test labels.
  """
  t0 = time.time()
  common.validate(config)
  src, tgt, src_test, tgt_test = _load_domains(config)
  method = config.method
  if method in ("tca", "jda"):
    metrics = _run_tca(config, workdir, src, tgt, tgt_test)
    return common.finish(workdir, metrics, config, t0,
                         common.result_line(metrics, f"results ({method})"))
  _check_settings(config)

  model = da.with_bottleneck(
      models.build_classifier(config.model, src.num_classes,
                              src.example_shape, src.modality),
      config.bottleneck_dim)
  align = method if method in ALIGNED else "none"
  adversarial = align in da.ADVERSARIAL or method == "adda"
  disc = da.discriminator(config.disc_features) if adversarial else None
  params, model_state = models.init_variables(model, src.example_shape,
                                              config.seed)
  if config.get("init_from"):
    # A pretrained backbone (e.g. ImageNet ResNet-50 for Office-31): the
    # bottleneck and the new head start fresh.
    params, model_state = common.load_into(
        config.init_from, params,
        [f"{k}/.*" for k in ("bottleneck", "head") if k in params],
        model_state=model_state)
  if align in da.ADVERSARIAL:
    params = da.add_discriminator(params, model, disc, src.example_shape,
                                  config.seed + 1, model_state=model_state,
                                  alignment_name=align,
                                  cdan_max_dim=config.cdan.max_dim,
                                  cdan_random_dim=config.cdan.random_dim)
  train = tgt if method == "target_supervised" else src
  train_arrays = {"x": train.x, "y": train.y}
  extra_metrics = {}
  if method == "kmm":
    train_arrays["w"], extra_metrics = _kmm_weights(config, src, tgt)
  source_batches = common.batches_from(config, train_arrays)
  target_batches = common.batches_from(config, {"x_target": tgt.x},
                                       seed=config.seed + 1)

  def joint_batches(start):
    return ({**a, **b} for a, b in zip(source_batches(start),
                                       target_batches(start)))

  if method == "adda":
    state, last = _adda(config, workdir, model, disc, params, model_state,
                        src, tgt_test, joint_batches)
    p = da.adda_target_classifier(state.params)
    src_p = da.classifier_params(state.params)
    src_ms = state.extra.get("source_model_state", {})
  else:
    tx = _optimizer(config, params, config.num_steps)
    step = da.make_step(model, tx, alignment_name=align, discriminator=disc,
                        **_loss_settings(config))
    trainer = common.trainer(step, tx, config)
    state, last = common.fit(
        trainer, trainer.init_state(params, model_state=model_state),
        source_batches if align == "none" else joint_batches, config,
        workdir=workdir,
        eval_fn=lambda s: {"target_accuracy": da.accuracy(
            model, s.params, tgt_test, model_state=s.model_state)})
    p = src_p = state.params
    src_ms = state.model_state
  ms = state.model_state
  # ADDA: source examples through the source encoder, target ones through
  # the target encoder (what each domain's predictions use).
  feats_s = lambda x: da.features(model, src_p, x, model_state=src_ms)  # noqa: E731
  feats_t = lambda x: da.features(model, p, x, model_state=ms)  # noqa: E731
  fs = feats_s(_subsample(src_test, 2000, 0)[0])
  ft = feats_t(_subsample(tgt_test, 2000, 0)[0])
  metrics = {"target_accuracy": da.accuracy(model, p, tgt_test,
                                            model_state=ms),
             "source_accuracy": da.accuracy(model, src_p, src_test,
                                            model_state=src_ms),
             "feature_domain_accuracy": da.linear_domain_accuracy(
                 fs, ft, seed=config.seed),
             "final_loss": last.get("loss", float("nan")),
             **extra_metrics}
  extra = {"backbone": models.backbone_name(config.model, src.example_shape,
                                            src.modality)}
  if adversarial:
    metrics["domain_accuracy"] = last.get("domain_accuracy", float("nan"))
    extra["domain_accuracy_history"] = _history(workdir, "domain_accuracy")
  if align != "none" or method == "adda":
    metrics["align_loss"] = last.get("align_loss", float("nan"))
  if align == "self_training":
    metrics["pseudo_label_fraction"] = last.get("pseudo_label_fraction",
                                                float("nan"))
  if config.plot:
    xs, ys = _subsample(src_test, 600, 0)
    xt, yt = _subsample(tgt_test, 600, 0)
    viz.embeddings(os.path.join(workdir, "embedding.png"),
                   [("inputs", xs, xt),
                    (f"features after {method}", feats_s(xs), feats_t(xt))],
                   ys, yt, seed=config.seed)
  return common.finish(workdir, metrics, config, t0,
                       common.result_line(metrics, f"results ({method})"),
                       **extra)
