"""The transfer report: which fine-tuning strategy to use at which label
budget, answered by measurement (``experiments/transfer_report.py``).

:func:`train_and_evaluate` trains a model on the source domain once
(:mod:`tljax.drivers.train`, resumable, in ``<workdir>/source``), then for
each target label budget (labels per class) and each seed trains every
strategy on the same labelled target subset and measures accuracy on the
target test set:

==============  ==============================================================
scratch         target only, random initialisation (no transfer)
linear_probe    frozen source backbone, features cached once
                (:mod:`tljax.methods.features`), a linear head trained
freeze_first    source backbone, its first ``freeze_layers`` layers frozen,
                the rest and the head trained (Yosinski et al., 2014)
finetune        source backbone, everything trained
l2_sp           ``finetune`` pulled towards the source weights (Li et al.,
                2018)
lwf             ``finetune`` keeping the source model's outputs on the target
                inputs through its old head (Li & Hoiem, 2016)
discriminative  ``finetune`` with per-layer rates (ULMFiT), not in the default
gradual         gradual unfreezing from the top (ULMFiT), not in the default
source_only     the source model as it is (only if the label sets agree)
==============  ==============================================================

With ``source`` empty, the source model is a pretrained backbone alone
(``init_from``: a tljax params directory or a torchvision / timm
``.safetensors`` file) under a new head: ``source_only`` and ``lwf`` need
a source task and are not run. On image folders (``folder:<root>``,
:mod:`tljax.data.images`) each run's batches are decoded and augmented as
they are drawn (the same examples at each step as for arrays); features
for the linear probe and accuracies use the evaluation transform.

Transferred strategies get a new, randomly initialised head (the general
case: the target's classes may differ); with ``head_from_source=True`` and
the same classes in both domains, they start from the source head instead
(and L2-SP pulls the head towards it too).

All strategies of one budget see the same labelled examples, the same
number of steps and batches of the same size; each strategy's step is
compiled once and reused for every budget and seed
(:class:`tljax.train.Trainer`). Outputs in ``workdir``: ``results.json``
(``metrics.accuracy[strategy][budget]`` with ``mean``, ``std``, ``runs``;
``metrics.best_strategy[budget]``), ``table.md`` and
``accuracy_vs_labels.png``.

Which source to start from (``candidates``, one step earlier): with a list
of candidate sources the report ranks them before any fine-tuning, with the
transferability scores of :mod:`tljax.methods.transferability` (LEEP, LogME,
H-score, NCE, TransRate) on each candidate's cached features of the labelled
target examples of every budget and seed, then fine-tunes the top
``num_finetune`` of them (ranked by ``select_by``; 0 = all) with the strategy
sweep above and says how well each score's ranking predicted the fine-tuned
accuracy (Kendall's tau, top-1 hit) per budget. A candidate is

==================  ===========================================================
``data:<spec>``     a classifier pretrained on that data set (any
                    :func:`tljax.data.load` spec) with the ``pretrain``
                    settings, in ``<workdir>/candidates/<k>``
``ckpt:<path>``     a classifier of the ``model`` config: a tljax params
                    directory or the workdir of a source run, or a weights
                    file with its classifier (a torchvision / timm
                    ``.safetensors`` state dict, a big_vision ``.npz``;
                    :mod:`tljax.models.convert`)
``random``          an untrained initialisation (the no-transfer baseline)
==================  ===========================================================

Every candidate must read the target's inputs (same example shape), or
the run stops with one error before any training. ``source`` and
``init_from`` are not used then; nor is ``scratch`` (the ``random``
candidate stands for it). Each candidate's sweep keeps its finished cells
in ``<workdir>/finetune/<k>`` (a restarted run resumes there). A
candidate's fine-tuned accuracy is that of its
best strategy at each budget (``candidate_accuracy="best"``) or of the one
strategy named there. Outputs: ``metrics.candidates`` in ``results.json``
(``scores[candidate][budget][score]``, ``accuracy[candidate][budget]``,
``ranking[budget][score]`` with ``kendall_tau``, ``top1_hit`` and
``picked``, ``best_candidate[budget]``; scores equal to 6 significant
digits are ties, and a tie for the top score picks none), ``table.md`` and
``transferability.png``. Without candidates the report is the one-source
report above, unchanged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np

from tljax import data as data_lib
from tljax import evaluation
from tljax import losses
from tljax import models
from tljax import optim
from tljax import viz
from tljax import workdir as workdir_lib
from tljax.drivers import common
from tljax.methods import features as features_lib
from tljax.methods import finetune
from tljax.methods import transferability

PyTree = Any

STRATEGIES = ("scratch", "linear_probe", "freeze_first", "finetune", "l2_sp",
              "lwf", "discriminative", "gradual")
DEFAULT_STRATEGIES = STRATEGIES[:6]


class _Runner:
  """Trains the strategies; compiled steps are kept across budgets/seeds.

  Every run starts from the source model (parameters and, for BatchNorm
  backbones, running statistics) or, for ``scratch``, a fresh one.
  """

  def __init__(self, config, *, model, source_model, source_params,
               cache_train: features_lib.FeatureCache, test_features, test,
               source_model_state=None,
               trainers: common.Trainers | None = None):
    self.c, self.model, self.source_model = config, model, source_model
    self.keep_head = config.head_from_source
    self.source_params = source_params
    self.source_state = dict(source_model_state or {})
    self.cache_train, self.test_features, self.test = (cache_train,
                                                       test_features, test)
    # Runners with the same models may share compiled steps (candidates).
    self.trainers = trainers or common.Trainers(
        config, batch_size=config.batch_size, num_steps=config.num_steps)
    self._gradual: dict[int, Any] = {}
    self._streamed: dict[str, Any] = {}
    self._init: dict[int, tuple] = {}

  def _tx(self, params, lr_rules=None):
    o = self.c.optim
    return optim.make_optimizer(params, name=o.name,
                                learning_rate=o.learning_rate,
                                lr_rules=lr_rules)

  def _train(self, name, params, model_state, train, seed, *,
             loss="finetune", lr_rules=None, extra=None, **loss_kwargs):
    def build():
      tx = self._tx(params, lr_rules)
      return finetune.make_step(self.model, tx, loss=loss,
                                freeze_bn=self.c.get("freeze_bn", False),
                                **loss_kwargs), tx
    if data_lib.images.is_lazy(train.arrays()):
      return self._stream(name, build, params, model_state, train, seed,
                          extra)
    return self.trainers.train(name, build, params, train.arrays(), seed,
                               extra=extra, model_state=model_state)

  def _stream(self, name, build, params, model_state, train, seed, extra):
    """:meth:`_train` on images decoded and augmented batch by batch (an
    image folder): the same steps and batches of the same examples as the
    stacked run, streamed through :func:`tljax.data.batches`."""
    if name not in self._streamed:
      step, tx = build()
      self._streamed[name] = common.trainer(step, tx, self.c)
    t, c = self._streamed[name], self.c
    state, _ = t.fit(
        t.init_state(params, extra=extra, model_state=model_state),
        lambda start: data_lib.batches(train.arrays(), c.batch_size,
                                       seed=seed, start_step=start),
        num_steps=c.num_steps, rng=jax.random.key(seed),
        log_every=c.num_steps, name=name)
    return state

  def _accuracy(self, state):
    return evaluation.accuracy(self.model, finetune.target_params(state.params),
                               self.test, model_state=state.model_state)

  def run(self, name: str, train: data_lib.Dataset, seed: int) -> float:
    """Test accuracy of strategy ``name`` trained on ``train``."""
    c = self.c
    if seed not in self._init:  # one initialisation per seed, shared by all
      self._init[seed] = models.init_variables(  # strategies (arrays are
          self.model, self.test.example_shape,     # immutable; runs copy)
          jax.random.key(1_000_003 + seed))
    init, init_state = self._init[seed]
    if name == "scratch":
      return self._accuracy(self._train(name, init, init_state, train, seed))
    if name == "linear_probe":
      head = features_lib.head_params(self.source_params if self.keep_head
                                      else init)

      def build():
        tx = self._tx(head)
        return features_lib.make_step(self.model, tx), tx
      # A head alone is dense and tiny: one lax.scan beats a Python loop.
      head = self.trainers.train(
          name, build, head,
          {"features": self.cache_train.lookup(train.x), "y": train.y}, seed,
          scan=True).params
      return features_lib.head_accuracy(self.model, head, self.test_features,
                                        self.test.y)
    keep = ("backbone/.*", "head/.*") if self.keep_head else ("backbone/.*",)
    params = finetune.transfer_layers(self.source_params, init, keep)
    state = finetune.transfer_model_state(self.source_state, init_state, keep)
    if name == "finetune":
      return self._accuracy(self._train(name, params, state, train, seed))
    if name == "freeze_first":
      keep = finetune.layer_patterns(self.model.backbone, c.freeze_layers,
                                     "first")
      return self._accuracy(self._train(
          name, params, state, train, seed,
          lr_rules=finetune.freeze_rules(keep)))
    if name == "discriminative":
      rules = finetune.discriminative_lr_rules(self.model.backbone,
                                               decay=c.discriminative_decay)
      return self._accuracy(self._train(name, params, state, train, seed,
                                        lr_rules=rules))
    if name == "l2_sp":
      # Everything copied from the source is pulled towards it.
      mask = losses.l2_sp_shared_mask(
          params, [(".*", True)] if self.keep_head
          else [("backbone/.*", True), (".*", False)])
      return self._accuracy(self._train(
          name, params, state, train, seed, loss="l2_sp", shared_mask=mask,
          alpha=c.l2_sp.alpha, beta=c.l2_sp.beta,
          extra={"source_params": params}))
    if name == "lwf":
      params = finetune.lwf_params(params, self.source_params)
      return self._accuracy(self._train(
          name, params, state, train, seed, loss="lwf",
          source_model=self.source_model, weight=c.lwf.weight,
          temperature=c.lwf.temperature,
          extra={"source_params": self.source_params,
                 "source_model_state": self.source_state}))
    if name == "gradual":
      stages = finetune.gradual_unfreezing_stages(self.model.backbone,
                                                  c.num_steps)
      state, _ = finetune.train_in_stages(
          params, stages,
          make_step=lambda tx: finetune.make_step(self.model, tx),
          make_tx=self._tx, arrays=train.arrays(), batch_size=c.batch_size,
          seed=seed, rng=jax.random.key(seed), trainers=self._gradual,
          parallel=c.parallel, model_state=state)
      return self._accuracy(state)
    raise ValueError(f"unknown strategy {name!r}")


def _check(config, source, target, model):
  common.check_sweep(config.strategies, STRATEGIES, config.budgets,
                     num_seeds=config.num_seeds)
  common.check_same_shape(
      source, [("target", target)],
      "the source model cannot read them. Choose domains with one input "
      "shape.")
  _check_freeze(config, model)
  if config.head_from_source and source.num_classes != target.num_classes:
    raise ValueError(f"head_from_source needs the same classes in source and "
                     f"target, got {source.num_classes} and "
                     f"{target.num_classes}; set --config.head_from_source="
                     "False to give the target a new head.")


def _check_pretrained_only(config):
  """Without source data, the source is a pretrained backbone alone."""
  if not config.init_from:
    raise ValueError("source is empty, so the backbone must come pretrained: "
                     "give --config.init_from=<checkpoint> (a tljax params "
                     "directory or a torchvision .safetensors file), or a "
                     "source data spec to pretrain on.")
  bad = [s for s in ("lwf",) if s in config.strategies]
  if bad or config.head_from_source:
    raise ValueError(f"without source data there is no source head, which "
                     f"{'lwf' if bad else 'head_from_source'} needs; drop "
                     "lwf from strategies and set head_from_source=False, or "
                     "give a source data spec.")


def _check_freeze(config, model):
  num_layers = model.backbone.num_layers
  if ("freeze_first" in config.strategies
      and not 0 < config.freeze_layers < num_layers):
    raise ValueError(f"freeze_layers must be in [1, {num_layers - 1}] for a "
                     f"backbone of {num_layers} layers, got "
                     f"{config.freeze_layers}")


def _best(results, strategies, budgets):
  """The best strategy per budget, and those within one std of it."""
  best, close = {}, {}
  for k in budgets:
    ranked = sorted(strategies, key=lambda n: -results[n][k]["mean"])
    best[k] = ranked[0]
    top = results[ranked[0]][k]
    close[k] = [n for n in ranked[1:] if top["mean"] - results[n][k]["mean"]
                <= max(top["std"], results[n][k]["std"])]
  return best, close


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the transfer report; see the module docstring.

  Args:
    config: the ``experiments/configs/transfer_report.py`` config.
    workdir: output directory.

  Returns:
    The ``metrics`` written to ``results.json``.

  Raises:
    ValueError: on unknown strategies, an empty budget list, a target whose
      examples differ in shape from the source's, or an unlabelled target;
      with candidates also on a malformed or duplicated candidate, one
      whose inputs differ in shape from the target's, or bad
      ``num_finetune``, ``select_by`` or ``candidate_accuracy`` (all before
      any training).
    FileNotFoundError: on a ``ckpt:`` candidate with no parameters there.
  """
  t0 = time.time()
  common.validate(config)
  c = config
  if c.get("candidates"):
    return _rank_candidates(c, workdir, t0)
  if not c.source:
    _check_pretrained_only(c)
  source = common.load(c, c.source).require_labels() if c.source else None
  target, test = _target(c)
  shape = target.example_shape
  # No source data: the source model is the pretrained backbone of
  # init_from under a new head for the target's classes.
  model_src = models.build_classifier(
      c.model, (source or target).num_classes, shape, target.modality)
  model = models.build_classifier(c.model, target.num_classes, shape,
                                  target.modality)
  _check(c, source or target, target, model)
  strategies = list(c.strategies)
  budgets = [int(b) for b in c.budgets]
  if source is None:
    init, init_state = models.init_variables(model_src, shape, c.seed)
    source_params, source_state = common.load_into(
        c.init_from, init, ("head/.*",), model_state=init_state)
    src_metrics = {}
    workdir_lib.say(f"backbone loaded from {c.init_from} (no source data)")
  else:
    source_params, source_state, src_metrics = common.source_params(
        c.pretrain, init_from=c.init_from, source=c.source, seed=c.seed,
        data_dir=c.data_dir, model_config=c.model, model=model_src,
        example_shape=shape, workdir=os.path.join(workdir, "source"))
  t_cache = time.time()
  cache = common.feature_cache(model_src, source_params, target.x,
                               workdir=workdir, name="target_train",
                               model_state=source_state)
  test_features = common.feature_cache(model_src, source_params, test.x,
                                       workdir=workdir, name="target_test",
                                       model_state=source_state).features
  cache_seconds = time.time() - t_cache
  runner = _Runner(c, model=model, source_model=model_src,
                   source_params=source_params, cache_train=cache,
                   test_features=test_features, test=test,
                   source_model_state=source_state)
  workdir_lib.say(
      f"target {c.target}: {len(target)} train / {len(test)} test examples, "
      f"{target.num_classes} classes; {len(strategies)} strategies x "
      f"{len(budgets)} budgets x {c.num_seeds} seeds, {c.num_steps} steps of "
      f"{c.batch_size} each")
  results, timing, _ = common.run_sweep(
      c, c.target, strategies, budgets,
      [c.seed + i for i in range(c.num_seeds)], runner.run,
      num_classes=target.num_classes, workdir=workdir)
  names = [common.budget_name(b) for b in budgets]
  table_strategies = list(strategies)
  source_only = None
  if source is not None and model_src.num_classes == target.num_classes:
    source_only = evaluation.accuracy(model_src, source_params, test,
                                      model_state=source_state)
    results["source_only"] = {k: common.summarize([source_only])
                              for k in names}
    table_strategies.append("source_only")
  best, close = _best(results, table_strategies, names)
  table = common.budgets_table(results, table_strategies, budgets, best=best,
                               suffix="")
  plot = viz.accuracy_vs_labels(
      os.path.join(workdir, "accuracy_vs_labels.png"), results, names,
      table_strategies,
      [b if b > 0 else len(target) / target.num_classes for b in budgets],
      title=f"{c.source or c.init_from} -> {c.target}, {c.num_seeds} seeds")
  head = ("heads start from the source head" if c.head_from_source
          else "new heads")
  lines = [f"Target test accuracy (%), mean ± std over {c.num_seeds} seeds; "
           f"source {c.source or 'the pretrained ' + c.init_from}, target "
           f"{c.target}; {head}; {c.num_steps} "
           f"steps per run; best per budget in bold.", "", table, ""]
  for k in names:
    tie = (f" (within one std: {', '.join(close[k])})" if close[k] else "")
    lines.append(f"labels/class {k}: best {best[k]} "
                 f"{100 * results[best[k]][k]['mean']:.1f}%{tie}")
  text = "\n".join(lines)
  workdir_lib.write_text(os.path.join(workdir, "table.md"), text)
  workdir_lib.say("\n" + text)
  metrics = {"accuracy": results, "best_strategy": best,
             "within_one_std_of_best": close,
             "source_accuracy_on_source": src_metrics.get("source_accuracy"),
             "source_only_accuracy": source_only,
             "train_seconds_per_strategy": timing,
             "feature_cache_seconds": cache_seconds,
             "target_train_examples": len(target),
             "target_test_examples": len(test),
             "wall_seconds": time.time() - t0}
  metrics = {k: v for k, v in metrics.items() if v is not None}
  workdir_lib.write_results(workdir, metrics, c, table=table,
                            plot=os.path.basename(plot))
  workdir_lib.say(f"wrote {workdir}/results.json, table.md and "
                  f"{os.path.basename(plot)} in {time.time() - t0:.0f}s")
  return metrics


def _target(c) -> tuple[data_lib.Dataset, data_lib.Dataset]:
  """The labelled target train set and its test set."""
  target = common.load(c, c.target).require_labels()
  test = common.load(c, c.target, "test", num_examples=c.eval_examples or None
                     ).require_labels(target.num_classes)
  return target, test


# ------------------------------------------------------------ candidates
SCORE_NAMES = {"leep": "LEEP", "log_me": "LogME", "h_score": "H-score",
               "nce": "NCE", "transrate": "TransRate"}
CANDIDATE_FORMS = ("data:<data spec> (pretrain on it), ckpt:<params directory, "
                   "workdir or .safetensors / .npz weights file> (a "
                   "classifier), random (untrained)")


@dataclasses.dataclass
class _Candidate:
  """One candidate source: its spec, classifier (with its own classes) and
  parameters (``None`` until a ``data:`` candidate is pretrained)."""
  spec: str
  kind: str
  arg: str
  model: Any
  params: PyTree = None
  model_state: PyTree = dataclasses.field(default_factory=dict)


def _check_candidate_config(c, model) -> list[str]:
  """The candidate settings; returns the strategies to fine-tune with."""
  common.check_sweep(c.strategies, STRATEGIES, c.budgets,
                     num_seeds=c.num_seeds)
  strategies = [s for s in c.strategies if s != "scratch"]
  if not strategies:
    raise ValueError("with candidates, strategies must name one that starts "
                     "from the candidate (scratch does not read it; the "
                     "'random' candidate stands for it), e.g. finetune")
  _check_freeze(c, model)
  specs = [str(s) for s in c.candidates]
  if len(specs) < 2:
    raise ValueError(f"candidates needs at least two sources to rank, got "
                     f"{specs}; each is one of {CANDIDATE_FORMS}")
  dup = sorted({s for s in specs if specs.count(s) > 1})
  if dup:
    raise ValueError(f"candidates {dup} are listed more than once")
  if not (c.num_finetune == 0 or 2 <= c.num_finetune <= len(specs)):
    raise ValueError(f"num_finetune must be 0 (all) or in [2, {len(specs)}] "
                     f"(a ranking needs two fine-tuned candidates), got "
                     f"{c.num_finetune}")
  if c.select_by not in transferability.SCORES:
    raise ValueError(f"select_by must be one of {transferability.SCORES}, "
                     f"got {c.select_by!r}")
  if c.candidate_accuracy not in ["best"] + strategies:
    raise ValueError(f"candidate_accuracy must be 'best' or one of the "
                     f"strategies {strategies}, got {c.candidate_accuracy!r}")
  if c.get("init_from"):
    workdir_lib.say("note: init_from is not used with candidates (a "
                    "checkpoint is the candidate ckpt:<path>)")
  return strategies


def _checkpoint_candidate(c, spec: str, path: str, shape,
                          modality) -> _Candidate:
  try:  # read here for errors that name the candidate
    raw = common.read_variables(path)[0]
  except FileNotFoundError:
    raise FileNotFoundError(
        f"candidate {spec!r}: nothing at {path!r}; give the workdir of a "
        "source run, its params directory, or a .safetensors / .npz weights "
        "file") from None
  except ValueError as e:
    raise ValueError(f"candidate {spec!r}: {e}") from None
  head = raw.get("head") if isinstance(raw, dict) else None
  kernel = head.get("kernel") if isinstance(head, dict) else None
  if kernel is None or np.ndim(kernel) != 2:
    raise ValueError(f"candidate {spec!r}: {path} holds no classifier (its "
                     "parameters have no head/kernel, which the scores "
                     "need); point it at the workdir of a source run, its "
                     "params directory, or a weights file with its "
                     "classifier (fc / head).")
  model = models.build_classifier(c.model, int(np.shape(kernel)[-1]), shape,
                                  modality)
  init, init_state = models.init_variables(model, shape, c.seed)
  try:
    params, model_state = common.load_into(path, init,
                                           model_state=init_state)
  except ValueError as e:
    raise ValueError(
        f"candidate {spec!r}: its parameters do not fit the model config's "
        f"classifier on the target's inputs of shape {shape} (trained on "
        f"inputs of another shape, or with another model?): {e}") from None
  return _Candidate(spec, "ckpt", path, model, params, model_state)


def _parse_candidates(c, target: data_lib.Dataset) -> list[_Candidate]:
  """Every candidate read and checked before any training."""
  shape = target.example_shape
  out = []
  for spec in (str(s) for s in c.candidates):
    kind, _, arg = spec.partition(":")
    if spec == "random":
      model = models.build_classifier(c.model, target.num_classes, shape,
                                      target.modality)
      cand = _Candidate(spec, "random", "", model,
                        *models.init_variables(model, shape, c.seed))
    elif kind == "data" and arg:
      ds = common.load(c, arg).require_labels()
      common.check_same_shape(
          target, [(f"candidate {spec!r}:", ds)],
          "every candidate must read the target's inputs. Choose sources "
          "with the target's input shape.")
      cand = _Candidate(spec, "data", arg, models.build_classifier(
          c.model, ds.num_classes, shape, target.modality))
    elif kind == "ckpt" and arg:
      cand = _checkpoint_candidate(c, spec, arg, shape, target.modality)
    else:
      raise ValueError(f"candidate {spec!r} is none of the forms "
                       f"{CANDIDATE_FORMS}")
    if c.head_from_source and cand.model.num_classes != target.num_classes:
      raise ValueError(f"head_from_source needs the same classes in every "
                       f"candidate and the target, but {spec!r} has "
                       f"{cand.model.num_classes} and the target "
                       f"{target.num_classes}; set --config.head_from_source="
                       "False to give the target a new head.")
    out.append(cand)
  return out


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = np.asarray(logits, np.float64)
  z = np.exp(z - z.max(1, keepdims=True))
  return z / z.sum(1, keepdims=True)


def _select(scores: dict, specs: list[str], names: list[str], by: str,
            k: int) -> list[str]:
  """The ``k`` candidates ranked best by score ``by`` (mean rank over the
  budgets), in their listed order."""
  if k in (0, len(specs)):
    return list(specs)
  rank = {s: 0.0 for s in specs}
  for name in names:
    for r, s in enumerate(sorted(specs,
                                 key=lambda s: -scores[s][name][by]["mean"])):
      rank[s] += r / len(names)
  top = set(sorted(specs, key=lambda s: rank[s])[:k])
  return [s for s in specs if s in top]


def _sig(v: float) -> float:
  """``v`` to 6 significant digits: scores that agree that far are ties
  (H-score, e.g., is ``C - 1`` for every backbone when ``n - 1 <= d``, up
  to rounding noise that must not rank candidates)."""
  return float(f"{v:.6g}")


def _ranking(scores, accuracy, tuned, names):
  """Per budget and score: Kendall's tau and top-1 hit of the score's
  ranking of the fine-tuned candidates against their accuracy."""
  ranking, best = {}, {}
  for name in names:
    accs = [accuracy[s][name]["mean"] for s in tuned]
    best[name] = tuned[int(np.argmax(accs))]
    ranking[name] = {}
    for score in transferability.SCORES:
      vals = [_sig(scores[s][name][score]["mean"]) for s in tuned]
      top = [s for s, v in zip(tuned, vals) if v == max(vals)]
      ranking[name][score] = {
          "kendall_tau": transferability.kendall_tau(vals, accs),
          "top1_hit": transferability.top1_hit(vals, accs),
          # None on a tie for the top score (a tie picks none).
          "picked": top[0] if len(top) == 1 else None}
  return ranking, best


def _candidates_text(c, specs, tuned, names, scores, accuracy, strategy,
                     ranking, best, src_acc, strategies) -> tuple[str, str]:
  """``(table.md text, the ranking table)``."""
  how = ("best of " + ", ".join(strategies) if c.candidate_accuracy == "best"
         else c.candidate_accuracy)
  lines = [f"Candidate sources for the target {c.target}: transferability "
           f"scores on the labelled target examples (mean over the "
           f"{c.num_seeds} seeds' subsets; higher = predicted better) and "
           f"target test accuracy (%) after fine-tuning ({how}; mean ± std "
           f"over {c.num_seeds} seeds, {c.num_steps} steps). Bold: each "
           "score's pick (all of them on a tie: equal to 6 significant "
           "digits) and the best fine-tuned candidate.", ""]
  for name in names:
    top = {sc: max(_sig(scores[s][name][sc]["mean"]) for s in specs)
           for sc in transferability.SCORES}
    rows = []
    for s in specs:
      row = [s + (f" ({100 * src_acc[s]:.0f}% on its source)"
                  if src_acc.get(s) is not None else "")]
      for sc in transferability.SCORES:
        mean = scores[s][name][sc]["mean"]
        v = f"{mean:.3f}"
        row.append(f"**{v}**" if _sig(mean) == top[sc] else v)
      if s in tuned:
        v = common.mean_std(accuracy[s][name])
        row += [f"**{v}**" if best[name] == s else v, strategy[s][name]]
      else:
        row += ["not fine-tuned", ""]
      rows.append(row)
    lines += [f"{name} labels/class:", "", common.markdown_table(
        ["candidate"] + [SCORE_NAMES[sc] for sc in transferability.SCORES]
        + ["fine-tuned %", "strategy"], rows), ""]
  rows = []
  for sc in transferability.SCORES:
    row = [SCORE_NAMES[sc]]
    for name in names:
      r = ranking[name][sc]
      tau = r["kendall_tau"]
      row += ["n/a" if np.isnan(tau) else f"{tau:+.2f}",
              "yes" if r["top1_hit"] else
              f"no ({r['picked'] or 'a tie picks none'})"]
    rows.append(row)
  rank_table = common.markdown_table(
      ["score"] + [f"{n}: {what}" for n in names
                   for what in ("tau", "top-1")], rows)
  lines += [f"How well each score ranked the {len(tuned)} fine-tuned "
            "candidates (Kendall's tau against fine-tuned accuracy; top-1: "
            "did its pick fine-tune best?):", "", rank_table, ""]
  for name in names:
    hits = [SCORE_NAMES[sc] for sc in transferability.SCORES
            if ranking[name][sc]["top1_hit"]]
    lines.append(f"labels/class {name}: best after fine-tuning {best[name]} "
                 f"{100 * accuracy[best[name]][name]['mean']:.1f}%; picked "
                 f"by {', '.join(hits) if hits else 'no score'}")
  return "\n".join(lines), rank_table


def _rank_candidates(c, workdir: str, t0: float) -> dict:
  """The candidates report; see the module docstring."""
  target, test = _target(c)
  shape = target.example_shape
  model = models.build_classifier(c.model, target.num_classes, shape,
                                  target.modality)
  strategies = _check_candidate_config(c, model)
  cands = _parse_candidates(c, target)
  specs = [x.spec for x in cands]
  budgets = [int(b) for b in c.budgets]
  names = [common.budget_name(b) for b in budgets]
  seeds = [c.seed + i for i in range(c.num_seeds)]
  src_acc = {}
  for k, cand in enumerate(cands):
    if cand.kind == "data":
      cand.params, cand.model_state, m = common.source_params(
          c.pretrain, init_from="", source=cand.arg, seed=c.seed,
          data_dir=c.data_dir, model_config=c.model, model=cand.model,
          example_shape=shape,
          workdir=os.path.join(workdir, "candidates", str(k)))
      src_acc[cand.spec] = m.get("source_accuracy")

  # Scores: features of all target train examples cached once per
  # candidate; each budget's labelled subsets are looked up in the cache.
  t_score = time.time()
  subsets = {name: [common.load(c, c.target, seed=s,
                                labels_per_class=b if b > 0 else None
                                ).require_labels(target.num_classes)
                    for s in seeds] for b, name in zip(budgets, names)}
  caches, scores = {}, {}
  for k, cand in enumerate(cands):
    cache = caches[cand.spec] = common.feature_cache(
        cand.model, cand.params, target.x, workdir=workdir,
        name=f"candidate{k}_target_train", model_state=cand.model_state)
    probs = features_lib.FeatureCache(target.x, _softmax(evaluation.predict(
        cand.model, features_lib.head_params(cand.params), cache.features,
        method="logits_from_features")))
    scores[cand.spec] = {}
    for name in names:
      runs = [transferability.scores(cache.lookup(ds.x), probs.lookup(ds.x),
                                     ds.y) for ds in subsets[name]]
      scores[cand.spec][name] = {sc: common.summarize([r[sc] for r in runs])
                                 for sc in transferability.SCORES}
  score_seconds = time.time() - t_score
  workdir_lib.say(f"scored {len(cands)} candidates x {len(names)} budgets x "
                  f"{len(seeds)} seeds in {score_seconds:.1f}s")

  tuned = _select(scores, specs, names, c.select_by, c.num_finetune)
  t_tune = time.time()
  trainers, sweeps, accuracy, strategy = {}, {}, {}, {}
  for k, cand in enumerate(cands):
    if cand.spec not in tuned:
      continue
    workdir_lib.say(f"fine-tuning candidate {k} {cand.spec}: "
                    f"{', '.join(strategies)} x {len(budgets)} budgets x "
                    f"{len(seeds)} seeds")
    test_features = (common.feature_cache(
        cand.model, cand.params, test.x, workdir=workdir,
        name=f"candidate{k}_target_test",
        model_state=cand.model_state).features
                     if "linear_probe" in strategies else None)
    shared = trainers.setdefault(cand.model, common.Trainers(
        c, batch_size=c.batch_size, num_steps=c.num_steps))
    runner = _Runner(c, model=model, source_model=cand.model,
                     source_params=cand.params, cache_train=caches[cand.spec],
                     test_features=test_features, test=test, trainers=shared,
                     source_model_state=cand.model_state)
    results, _, _ = common.run_sweep(
        c, c.target, strategies, budgets, seeds, runner.run,
        num_classes=target.num_classes,
        workdir=os.path.join(workdir, "finetune", str(k)))
    sweeps[cand.spec] = results
    strategy[cand.spec] = {
        name: (max(strategies, key=lambda s, n=name: results[s][n]["mean"])
               if c.candidate_accuracy == "best" else c.candidate_accuracy)
        for name in names}
    accuracy[cand.spec] = {name: results[strategy[cand.spec][name]][name]
                           for name in names}
  finetune_seconds = time.time() - t_tune

  ranking, best = _ranking(scores, accuracy, tuned, names)
  text, rank_table = _candidates_text(c, specs, tuned, names, scores,
                                      accuracy, strategy, ranking, best,
                                      src_acc, strategies)
  workdir_lib.write_text(os.path.join(workdir, "table.md"), text)
  workdir_lib.say("\n" + text)
  plot = viz.transferability_ranking(
      os.path.join(workdir, "transferability.png"),
      {s: scores[s] for s in tuned}, accuracy, names,
      {sc: SCORE_NAMES[sc] for sc in transferability.SCORES}, ranking,
      title=f"candidate sources -> {c.target}")
  metrics = {
      "candidates": {
          "specs": specs, "finetuned": tuned, "select_by": c.select_by,
          "scores": scores, "accuracy": accuracy, "strategy": strategy,
          "sweep": sweeps, "ranking": ranking, "best_candidate": best,
          "source_accuracy_on_source": src_acc,
          "score_seconds": score_seconds,
          "finetune_seconds": finetune_seconds},
      "target_train_examples": len(target),
      "target_test_examples": len(test),
      "wall_seconds": time.time() - t0}
  workdir_lib.write_results(workdir, metrics, c, table=rank_table,
                            plot=os.path.basename(plot))
  workdir_lib.say(f"wrote {workdir}/results.json, table.md and "
                  f"{os.path.basename(plot)} in {time.time() - t0:.0f}s")
  return metrics
