r"""Few-shot, sinusoid and metric-learning results tables (issues 5, 12).

  nice python benchmarks/meta_learning.py --workdir=/tmp/tljax_bench_meta \
      --output=docs/results_metric_meta.md
  # one suite only (its section of the file is replaced, the others kept):
  nice python benchmarks/meta_learning.py --suites=coil --seeds=3

Runs every experiment in-process with its config from experiments/configs/
(exactly what ``experiments/meta.py`` / ``experiments/metric.py`` run with
the overrides shown in each row), then writes the markdown tables:

1. 5-way 1-shot and 5-shot accuracy on held-out mnist1d classes (meta-train
   digits 0-4, test digits 5-9), mean and 95% interval over 600 test
   episodes: nearest centroid on raw inputs, a pretrained embedding + nearest
   centroid, ProtoNets, MAML (second and first order), the model-based
   learner.
2. MAML on sinusoids: query MSE after 0, 1 and 10 inner SGD steps, against a
   model pretrained on all tasks jointly and fine-tuned the same way.
3. Triplet and contrastive embeddings: recall@1/@5 and verification AUC on
   held-out classes against raw inputs.

   Each learned row of 1-3 is ``--seeds`` training runs (mean ± std over
   seeds, and the mean 95% interval over test episodes or tasks).

4. ``--suites=coil,digits`` (real images, the ``,coil`` / ``,digits``
   presets of the configs): metric learning and 5-way 1-/5-shot episodes
   on held-out classes (COIL-20: objects 0-9 / 10-19 of all 1440 images of
   ../shared/data; 8x8 digits: 0-4 / 5-9), each learned row over
   ``--seeds`` training seeds: mean ± std over seeds, and the mean over
   seeds of the 95% interval over test episodes. A suite whose data is
   missing is skipped with one line.

Each suite writes its own section of ``--output`` (between
``<!-- begin:<suite> -->`` and ``<!-- end:<suite> -->``), so one suite can
be rerun alone. ``--quick`` runs the smoke configs (seconds; numbers meaningless) and, unless
``--output`` is given, writes nothing to docs/. Never run as a test.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import meta as meta_config  # noqa: E402
from configs import metric as metric_config  # noqa: E402
from tljax import data as data_lib  # noqa: E402
from tljax.drivers import meta  # noqa: E402
from tljax.drivers import metric as metric_driver  # noqa: E402
from tljax.train import checkpoint  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/tljax_bench_meta",
                               "Where each run's workdir goes.")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write "
                              "(default docs/results_metric_meta.md; none "
                              "with --quick).")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke-test configs only.")
_SUITES = flags.DEFINE_list("suites", ["mnist1d", "coil", "digits"],
                            "Which tables: mnist1d (few-shot, sinusoids, "
                            "metric), coil, digits (held-out classes of "
                            "real images).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Training seeds per learned row "
                              "of every table.")
SUITES = ("mnist1d", "coil", "digits")

COMMAND = ("nice python benchmarks/meta_learning.py "
           "--workdir=/tmp/tljax_bench_meta --output=docs/results_metric_meta.md")


def _config(module, name, overrides):
  config = module.get_config(name + (",quick" if _QUICK.value else ""))
  for k, v in overrides.items():
    target = config
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return config


def _flags(overrides):
  return " ".join(f"--config.{k}={v}" for k, v in overrides.items())


def _acc(rows):
  return [m["test_accuracy"] for m in rows]


def _col(rows, k):
  return [m[k] for m in rows]


def _few_table(raw, few, methods):
  """The few-shot table over seeds: nearest centroid on raw inputs
  (``raw[shot]``: one ``(accuracy, 95% interval)`` per seed), then each
  learner of ``methods`` (``few[(label, shot)]``: one metrics dict per
  seed)."""
  cells = [f"{_ms([r[0] for r in raw[k]])} "
           f"[±{np.mean([r[1] for r in raw[k]]):.3f}]" for k in (1, 5)]
  lines = [
      "| method | 5-way 1-shot | 5-way 5-shot | steps | s per run (1 / 5-shot)"
      " | command (1-shot; 5-shot adds --config.k_shot=5) |",
      "|---|---|---|---|---|---|",
      f"| nearest centroid on raw inputs (no learning) | {cells[0]} | "
      f"{cells[1]} | 0 | - | `meta.raw_nearest_centroid(config)` |"]
  for _, label, _ in methods:
    a, b = few[(label, 1)], few[(label, 5)]
    lines.append(
        f"| {label} | {_ms(_acc(a))} [±{np.mean(_col(a, 'test_ci95')):.3f}]"
        f" | {_ms(_acc(b))} [±{np.mean(_col(b, 'test_ci95')):.3f}] | "
        f"{a[0]['steps']} | {np.mean(_col(a, 'seconds')):.0f} / "
        f"{np.mean(_col(b, 'seconds')):.0f} | `{a[0]['cmd']}` |")
  return lines


def _metric_rows(metric, raw_label, keys):
  """The retrieval table's rows over seeds: raw inputs (the ``raw_*`` of the
  first run), then each embedding's mean ± std of ``keys``."""
  first = next(iter(metric.values()))[0]
  lines = [f"| {raw_label} | "
           + " | ".join(f"{first['raw_' + k]:.3f}" for k in keys)
           + " | 0 | - | (raw_* in each run's results.json) |"]
  for label, rows in metric.items():
    cells = " | ".join(_ms(_col(rows, k)) for k in keys)
    lines.append(f"| {label} | {cells} | {rows[0]['steps']} | "
                 f"{np.mean(_col(rows, 'seconds')):.0f} | `{rows[0]['cmd']}` |")
  return lines


def _few_verdicts(few, methods):
  """Each learner against the first row (the pretrained-embedding
  baseline), over seeds (:func:`_seed_verdict`)."""
  out = []
  base_label = methods[0][1]
  for shot in (1, 5):
    b = _acc(few[(base_label, shot)])
    for _, label, _ in methods[1:]:
      a = _acc(few[(label, shot)])
      out.append(f"- {shot}-shot: {label} ({np.mean(a):.3f}) "
                 f"{_seed_verdict(a, b)} the pretrained-embedding baseline "
                 f"({np.mean(b):.3f}).")
  return out


def _metric_verdicts(metric):
  """Each embedding against raw inputs and the first row (the classifier's
  features) on recall@1 and MAP@R, over seeds."""
  out = []
  base = next(iter(metric.values()))
  for label, rows in list(metric.items())[1:]:
    for k in ("recall@1", "map@r"):
      a, b, raw_k = _col(rows, k), _col(base, k), base[0]["raw_" + k]
      word = ("beats" if np.mean(a) > raw_k else "loses to"
              if np.mean(a) < raw_k else "equals")
      out.append(f"- {label}: {k} {np.mean(a):.3f} {word} raw inputs "
                 f"({raw_k:.3f}) and {_seed_verdict(a, b)} the "
                 f"classifier's features ({np.mean(b):.3f}).")
  return out


def _mse_cell(rows, k):
  """Query MSE after ``k`` steps over seeds: mean ± std [mean 95% interval
  over tasks], and the diverged tasks (excluded) summed over seeds."""
  if f"mse_after_{k}" not in rows[0]:
    return "-"
  cell = (f"{_ms(_col(rows, f'mse_after_{k}'))} "
          f"[±{np.mean(_col(rows, f'mse_after_{k}_ci95')):.3f}]")
  n = sum(m.get(f"diverged_after_{k}", 0) for m in rows)
  total = sum(m["test_episodes"] for m in rows)
  return cell + (f" ({n} of {total} tasks diverged, excluded)" if n else "")


def _comparisons(few, methods, sine, metric):
  """The verdicts of the mnist1d tables, over seeds (:func:`_seed_verdict`)."""
  out = _few_verdicts(few, methods)
  labels = list(sine)
  ma, pre = sine[labels[0]], sine[labels[1]]
  for k in (1, 10):
    key = f"mse_after_{k}"
    if key in ma[0]:
      div = [sum(m.get(f"diverged_after_{k}", 0) for m in rows)
             for rows in (ma, pre)]
      # Lower MSE is better: compare negated values.
      a, b = [-m[key] for m in ma], [-m[key] for m in pre]
      out.append(
          f"- sinusoids, {k} step(s) ({div[0]} / {div[1]} tasks diverged): "
          f"MAML (MSE {-np.mean(a):.3f}) {_seed_verdict(a, b)} the jointly "
          f"pretrained model fine-tuned the same way ({-np.mean(b):.3f}).")
  return out + _metric_verdicts(metric)


def _seed_tag(tag, seed):
  """A run's workdir name: seed 0 keeps the name the seed-0-only tables
  used, so their finished workdirs resume."""
  return f"{tag}_s{seed}" if seed else tag


def _mnist1d_section(run, seeds):
  """Tables 1-3 (mnist1d) over ``seeds``: the lines of the mnist1d
  section."""
  # ------------------------------------------------------- 1. few-shot
  few = {}
  methods = [("baseline", "pretrained embedding + nearest centroid", {}),
             ("protonet", "ProtoNets (Snell et al. 2017)", {}),
             ("maml", "MAML, second order (Finn et al. 2017)", {}),
             ("maml", "MAML, first order", {"maml.first_order": True}),
             ("hypernet", "model-based: generated head (Qiao et al. 2018)",
              {})]
  raw = {}
  for shot in (1, 5):
    shot_over = {"k_shot": shot} if shot != 1 else {}
    raw[shot] = [meta.raw_nearest_centroid(_config(
        meta_config, "protonet", {**shot_over, "seed": seed}))
                 for seed in seeds]
    for name, label, over in methods:
      tag = f"{name}{'_fo' if over else ''}_{shot}shot"
      few[(label, shot)] = [
          run("meta", name, {**shot_over, **over, "seed": seed},
              _seed_tag(tag, seed))[0] for seed in seeds]

  # ------------------------------------------------------- 2. sinusoids
  sine = {}
  low_label = "pretrained jointly, fine-tuned at lr 0.001"
  for name, label in (("sinusoid_maml", "MAML (second order)"),
                      ("sinusoid_pretrained", "pretrained jointly")):
    sine[label] = []
    for seed in seeds:
      m, cfg, wd = run("meta", name, {"seed": seed}, _seed_tag(name, seed))
      sine[label].append(m)
      if name != "sinusoid_pretrained":
        continue
      # The pretrained model fine-tuned with a 10x smaller step as well
      # (the shared rate 0.01 overshoots for it), from its saved params.
      low = meta.sinusoid_evaluate(
          checkpoint.load_params(os.path.join(wd, "params")), cfg,
          inner_lr=0.001)
      low.update(seconds=0.0, steps=cfg.num_steps,
                 test_episodes=cfg.test_episodes,
                 cmd="(the runs above, fine-tuned at inner_lr 0.001)")
      sine.setdefault(low_label, []).append(low)

  # ------------------------------------------------------- 3. metric
  metric = {}
  for loss, label in (("softmax", "pretrained classifier's features "
                                  "(softmax, the baseline)"),
                      ("triplet", "triplet, batch-all mining"),
                      ("contrastive", "Siamese, contrastive")):
    metric[label] = [run("metric", loss, {"seed": seed},
                         _seed_tag(f"metric_{loss}", seed))[0]
                     for seed in seeds]

  n, seed_list = len(seeds), ",".join(map(str, seeds))
  lines = [
      f"Every learned row is {n} training run(s), seeds {seed_list}: mean ± "
      "std over the seeds, then [the mean over seeds of the 95% interval "
      "over the test episodes or tasks]; each seed draws its own test "
      "episodes. The command is seed 0's; the other seeds add "
      "--config.seed=N (workdir suffix _sN).",
      "",
      "### 1. Few-shot classification on held-out classes",
      "",
      "mnist1d (standard preset): meta-train on digits 0-4 (train split), "
      "5-way episodes of digits 5-9 (test split), 15 queries per class, 600 "
      "test episodes per run. All learners use the same MLP (128, 128) "
      "backbone.",
      "",
  ]
  lines += _few_table(raw, few, methods)
  lines += [
      "",
      "### 2. MAML on sinusoids",
      "",
      "y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; "
      "10-shot support, 100 query points, 600 test tasks per run; query MSE "
      "after k plain SGD steps on the support set (rate 0.01 unless "
      "stated). MLP (40, 40) regressor as in the paper.",
      "",
      "| initialisation | k=0 | k=1 | k=10 | steps | s per run | command |",
      "|---|---|---|---|---|---|---|",
  ]
  for label, rows in sine.items():
    cells = " | ".join(_mse_cell(rows, k) for k in (0, 1, 10))
    lines.append(f"| {label} | {cells} | {rows[0]['steps']} | "
                 f"{np.mean(_col(rows, 'seconds')):.0f} | `{rows[0]['cmd']}` |")
  lines += [
      "",
      "### 3. Metric learning: retrieval and verification on held-out classes",
      "",
      "mnist1d (standard preset): embedding (cnn1d backbone, 64-d) trained on "
      "digits 0-4 (train split); leave-one-out recall@k, MAP@R, R-precision "
      "and same/different ROC-AUC over pairs on the digits 5-9 of the test "
      "split. The settings behind the triplet defaults: "
      "docs/metric_learning_settings.md.",
      "",
      "| embedding | recall@1 | recall@5 | MAP@R | R-precision | "
      "verification AUC | steps | s per run | command |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  lines += _metric_rows(metric, "raw inputs (no learning)", (
      "recall@1", "recall@5", "map@r", "r_precision", "auc"))
  lines += ["", "### Comparisons (computed from the rows above, over seeds)",
            ""]
  lines += _comparisons(few, methods, sine, metric)
  return lines


# The held-out-class suites on real images: (title, data description,
# few-shot methods, metric losses). Each method: (config name, label,
# overrides).
HELDOUT = {
    "coil": ("COIL-20",
             "all 1440 images of ../shared/data/coil{1,2}.npz (20 objects x "
             "72 poses, 32x32 grey, 0-1); train on objects 0-9, test on "
             "objects 10-19 (all 720 of their images)"),
    "digits": ("8x8 digits (scikit-learn)",
               "train on digits 0-4 (train split, 70%), test on digits 5-9 "
               "(test split, 30%)"),
}
# An override value naming the workdir of the same suite's and seed's
# baseline run (1-shot; the baseline's training does not depend on the shot).
BASELINE_WORKDIR = "{root}/{preset}_baseline_1shot_s{seed}"

HELDOUT_FEW = [
    ("baseline", "pretrained embedding + nearest centroid", {}),
    ("protonet", "ProtoNets (Snell et al. 2017)", {}),
    ("maml", "MAML, second order (Finn et al. 2017)", {}),
    ("anil", "ANIL: MAML adapting the head only (Raghu et al. 2020)", {}),
    ("reptile", "Reptile (Nichol et al. 2018)", {}),
    ("reptile", "Reptile, Adam inner loop (b1 = 0, 1e-3; 50 Adam steps at "
     "test, Nichol et al.'s evaluation)",
     {"maml.inner_optimizer": "adam", "maml.inner_lr": 1e-3,
      "maml.test_inner_steps": 50}),
    ("metasgd", "Meta-SGD (Li et al. 2017)", {}),
    ("hypernet", "model-based: generated head (Qiao et al. 2018)", {}),
    # Each task's head built from its support's class means (Proto-MAML,
    # Triantafillou et al. 2020), so the initialisation cannot memorise the
    # training classes' labels; SGD at 0.1 from that head diverges in MAML,
    # so MAML and Meta-SGD (the rates' start) step at 0.01.
    ("maml", "MAML, proto head (Proto-MAML, Triantafillou et al. 2020), "
     "inner rate 0.01", {"maml.head_init": "proto", "maml.inner_lr": 0.01}),
    ("anil", "ANIL, proto head", {"maml.head_init": "proto"}),
    ("metasgd", "Meta-SGD, proto head, rates from 0.01",
     {"maml.head_init": "proto", "maml.inner_lr": 0.01}),
    # Meta-training from the baseline's pretrained backbone (Chen et al.
    # 2021, "Meta-Baseline"), the same seed's baseline workdir (the first
    # row, so it exists by then).
    # From pretrained features SGD at 0.01 diverged at 5-shot in MAML (and
    # Reptile): they step at 0.001; Reptile also adapts on the queries
    # (from a proto head a 1-shot support is already fitted, so without
    # them its inner loop, hence its outer step, barely moves).
    ("maml", "MAML from the baseline's backbone, proto head, inner rate "
     "0.001", {"init_from": BASELINE_WORKDIR, "maml.head_init": "proto",
               "maml.inner_lr": 0.001}),
    ("metasgd", "Meta-SGD from the baseline's backbone, proto head, rates "
     "from 0.01", {"init_from": BASELINE_WORKDIR, "maml.head_init": "proto",
                   "maml.inner_lr": 0.01}),
    ("reptile", "Reptile from the baseline's backbone, proto head, inner "
     "rate 0.001, inner loop on the queries too",
     {"init_from": BASELINE_WORKDIR, "maml.head_init": "proto",
      "maml.inner_lr": 0.001, "maml.train_on_query": True}),
]
HELDOUT_METRIC = [
    ("softmax", "pretrained classifier's features (softmax, the baseline)",
     {}),
    ("triplet", "triplet, batch-all mining", {}),
    ("supcon", "supervised contrastive (Khosla et al. 2020)", {}),
    ("multi_similarity", "multi-similarity + miner (Wang et al. 2019)", {}),
    ("ntxent", "NT-Xent (Chen et al. 2020), same-label pairs as positives", {}),
    ("arcface", "ArcFace (Deng et al. 2019)", {}),
    ("cosface", "CosFace (Wang et al. 2018)", {}),
    ("proxy_anchor", "Proxy-Anchor (Kim et al. 2020)", {}),
]


def _tag(name, overrides):
  """A workdir name per (method, overrides): the bare name without any;
  ``init_from`` the baseline's workdir is ``from_baseline``."""
  return "_".join([name] + [
      "from_baseline" if v == BASELINE_WORKDIR else
      f"{k.rsplit('.', 1)[-1]}{v}" for k, v in sorted(overrides.items())])


def _fill(overrides, **where):
  """``overrides`` with :data:`BASELINE_WORKDIR` made a real path."""
  return {k: v.format(**where) if v == BASELINE_WORKDIR else v
          for k, v in overrides.items()}


def _ms(values, digits=3):
  """'mean ± std' over seeds (sample std; 0 for one seed)."""
  v = np.asarray(values, np.float64)
  sd = v.std(ddof=1) if v.size > 1 else 0.0
  return f"{v.mean():.{digits}f} ± {sd:.{digits}f}"


def _seed_verdict(a, b):
  """How per-seed values ``a`` compare with ``b``'s."""
  a, b = np.asarray(a), np.asarray(b)
  if a.min() > b.max():
    return "beats (every seed above every baseline seed)"
  if a.max() < b.min():
    return "loses to (every seed below)"
  return ("beats on the mean (seed ranges overlap)" if a.mean() > b.mean()
          else "loses on the mean (seed ranges overlap)" if a.mean() <
          b.mean() else "ties with")


def _heldout_section(preset, run, seeds, root):
  """The few-shot and metric tables of one real-image suite."""
  title, what = HELDOUT[preset]
  try:
    meta_config.get_config(f"protonet,{preset}")
    data_lib.load(meta_config.get_config(f"protonet,{preset}").data)
  except FileNotFoundError as e:
    print(f"skipping suite {preset}: {e}")
    return None
  few, raw = {}, {}
  for shot in (1, 5):
    shot_over = {"k_shot": shot} if shot != 1 else {}
    raw[shot] = []
    for seed in seeds:
      cfg = _config(meta_config, f"protonet,{preset}",
                    {**shot_over, "seed": seed})
      raw[shot].append(meta.raw_nearest_centroid(cfg))
    for name, label, over in HELDOUT_FEW:
      few[(label, shot)] = [
          run("meta", f"{name},{preset}",
              {**shot_over, **_fill(over, root=root, preset=preset,
                                    seed=seed), "seed": seed},
              f"{preset}_{_tag(name, over)}_{shot}shot_s{seed}")[0]
          for seed in seeds]
  metric = {}
  for loss, label, over in HELDOUT_METRIC:
    metric[label] = [run("metric", f"{loss},{preset}", {**over, "seed": seed},
                         f"{preset}_metric_{loss}_s{seed}")[0]
                     for seed in seeds]
  n = len(seeds)
  seed_list = ",".join(map(str, seeds))
  lines = [
      f"{title}: {what}. Every learned row is {n} training run(s), seeds "
      f"{seed_list}: mean ± std over the seeds, then [the mean over seeds of "
      "the 95% interval over the test episodes]; each seed draws its own "
      "test episodes (600 per run). The command is seed 0's; the other "
      "seeds add --config.seed=N. Each seed's numbers are in "
      "<workdir>/results.json. 's per run' is each run's training wall "
      "time (<workdir>/bench_seconds.json); a run resumed from a workdir "
      "finished before that file existed shows its re-evaluation only.",
      "",
      "### Few-shot: 5-way accuracy on the held-out classes",
      "",
      "All learners use the same MLP (128, 128) backbone on the flattened "
      "images, 15 queries per class.",
      "",
  ]
  lines += _few_table(raw, few, HELDOUT_FEW)
  lines += [
      "",
      "### Metric learning: retrieval on the held-out classes",
      "",
      "Leave-one-out recall@k, MAP@R and R-precision (Musgrave et al. "
      "2020) over every held-out image. Embedding: an MLP (256) on the "
      "flattened images and a 64-d linear head, 1000 steps; softmax and triplet compare "
      "embeddings by l2, the cosine losses by cosine distance.",
      "",
      "| embedding | recall@1 | recall@5 | MAP@R | R-precision | steps | "
      "s per run | command |",
      "|---|---|---|---|---|---|---|---|",
  ]
  lines += _metric_rows(metric, "raw inputs (no learning, l2)", (
      "recall@1", "recall@5", "map@r", "r_precision"))
  lines += ["", "### Comparisons (computed from the rows above, over seeds)",
            ""]
  lines += _few_verdicts(few, HELDOUT_FEW) + _metric_verdicts(metric)
  return lines


def _write_sections(path, sections, header):
  """Replaces (or appends) each ``<!-- begin:name -->`` ... ``<!-- end:name
  -->`` section of ``path``; a file without sections is started afresh."""
  old = open(path).read() if os.path.exists(path) else ""
  text = old if "<!-- begin:" in old else header
  for name, body in sections.items():
    block = f"<!-- begin:{name} -->\n{body}\n<!-- end:{name} -->"
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    if begin in text and end in text:
      i, j = text.index(begin), text.index(end) + len(end)
      text = text[:i] + block + text[j:]
    else:
      text = text.rstrip("\n") + "\n\n" + block + "\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)
  bad = sorted(set(_SUITES.value) - set(SUITES))
  if bad or _SEEDS.value < 1:
    raise app.UsageError(f"--suites takes {', '.join(SUITES)} (got {bad}); "
                         f"--seeds >= 1 (got {_SEEDS.value})")

  def run(kind, name, overrides, tag):
    module = meta_config if kind == "meta" else metric_config
    fn = (meta.train_and_evaluate if kind == "meta"
          else metric_driver.train_and_evaluate)
    config = _config(module, name, overrides)
    workdir = os.path.join(root, tag)
    # The wall time of the run that trained, kept beside it, so that a
    # resumed (finished) workdir reports its training time, not the
    # re-evaluation's.
    timing = os.path.join(workdir, "bench_seconds.json")
    resumed = os.path.exists(os.path.join(workdir, "results.json"))
    t0 = time.time()
    metrics = fn(config, workdir)
    metrics["seconds"] = time.time() - t0
    if os.path.exists(timing):
      with open(timing) as f:
        metrics["seconds"] = json.load(f)["seconds"]
    elif not resumed:
      with open(timing, "w") as f:
        json.dump({"seconds": metrics["seconds"]}, f)
    metrics["steps"] = config.num_steps
    shown = {k: v for k, v in overrides.items() if k != "seed" or v}
    metrics["cmd"] = (f"python experiments/{kind}.py --workdir=/tmp/{tag} "
                      f"--config=experiments/configs/{kind}.py:{name}"
                      + (f" {_flags(shown)}" if shown else ""))
    print(f"== {tag}: {metrics}", flush=True)
    return metrics, config, workdir

  sections = {}
  for suite in _SUITES.value:
    t0 = time.time()
    if suite == "mnist1d":
      lines = _mnist1d_section(run, list(range(_SEEDS.value)))
      title = "mnist1d: few-shot, sinusoids, metric learning"
      args = f"--suites=mnist1d --seeds={_SEEDS.value}"
    else:
      lines = _heldout_section(suite, run, list(range(_SEEDS.value)), root)
      if lines is None:
        continue
      title = f"{HELDOUT[suite][0]}: held-out classes"
      args = f"--suites={suite} --seeds={_SEEDS.value}"
    sections[suite] = "\n".join(
        [f"## {title}", "", "Produced by", "",
         f"    {COMMAND} {args}" + (" --quick" if _QUICK.value else ""), "",
         f"on {platform.machine()} CPU, {os.cpu_count()} cores, jax "
         f"{jax.__version__}, {jax.device_count()} device(s), in "
         f"{(time.time() - t0) / 60:.1f} min. Each row's equivalent single "
         "command is in the last column (workdirs under /tmp). "
         "Hyperparameters are the configs' defaults, set by hand and not "
         "tuned per method (there is no separate validation class split), "
         "with the overrides a row names (chosen on seed 0's held-out "
         "episodes, docs/metric_learning_settings.md).",
         ""] + lines)
    print(sections[suite])
  header = "\n".join([
      "# Metric learning and meta-learning results", "",
      "Each section below is produced by the command at its top (all of "
      "them: the command without --suites).", ""])
  out = _OUTPUT.value or (None if _QUICK.value else os.path.join(
      ROOT, "docs", "results_metric_meta.md"))
  if out and sections:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    _write_sections(out, sections, header)
    print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
