r"""Few-shot, sinusoid and metric-learning results table (issue 5).

  nice python benchmarks/meta_learning.py --workdir=/tmp/tljax_bench_meta \
      --output=docs/results_metric_meta.md

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

``--quick`` runs the smoke configs (seconds; numbers meaningless) and, unless
``--output`` is given, writes nothing to docs/. Never run as a test.
"""

from __future__ import annotations

import os
import platform
import sys
import time

from absl import app
from absl import flags
from absl import logging
import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from configs import meta as meta_config  # noqa: E402
from configs import metric as metric_config  # noqa: E402
from tljax.drivers import meta  # noqa: E402
from tljax.drivers import metric as metric_driver  # noqa: E402
from tljax.train import checkpoint  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/tljax_bench_meta",
                               "Where each run's workdir goes.")
_OUTPUT = flags.DEFINE_string("output", None, "Markdown file to write "
                              "(default docs/results_metric_meta.md; none "
                              "with --quick).")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke-test configs only.")

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


def _pm(mean, ci, digits=3):
  return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def _mse_cell(m, k):
  if f"mse_after_{k}" not in m:
    return "-"
  cell = _pm(m[f"mse_after_{k}"], m[f"mse_after_{k}_ci95"])
  n = m.get(f"diverged_after_{k}", 0)
  return cell + (f" ({n} of {m['test_episodes']} tasks diverged, excluded)"
                 if n else "")


def _verdict(a, ca, b, cb):
  """'beats', 'loses to' or 'ties with' (95% intervals overlap)."""
  if a - ca > b + cb:
    return "beats"
  if a + ca < b - cb:
    return "loses to"
  return "ties with (intervals overlap)"


def _comparisons(few, raw, methods, sine, metric):
  out = []
  base_label = methods[0][1]
  for shot in (1, 5):
    b = few[(base_label, shot)]
    for _, label, _ in methods[1:]:
      m = few[(label, shot)]
      out.append(
          f"- {shot}-shot: {label} ({m['test_accuracy']:.3f}) "
          f"{_verdict(m['test_accuracy'], m['test_ci95'], b['test_accuracy'], b['test_ci95'])} "
          f"the pretrained-embedding baseline ({b['test_accuracy']:.3f}).")
  labels = list(sine)
  ma, pre = sine[labels[0]], sine[labels[1]]
  for k in (1, 10):
    key = f"mse_after_{k}"
    if key in ma:
      # Lower MSE is better: compare negated values.
      div = [f"{n} diverged" for n in (ma.get(f"diverged_after_{k}", 0),
                                       pre.get(f"diverged_after_{k}", 0))]
      out.append(
          f"- sinusoids, {k} step(s) ({div[0]} / {div[1]} tasks): "
          f"MAML (MSE {ma[key]:.3f}) "
          f"{_verdict(-ma[key], ma[key + '_ci95'], -pre[key], pre[key + '_ci95'])} "
          f"the jointly pretrained model fine-tuned the same way "
          f"({pre[key]:.3f}).")
  for label, m in metric.items():
    for k in ("recall@1", "auc"):
      word = ("beats" if m[k] > m["raw_" + k] else "loses to" if m[k] <
              m["raw_" + k] else "equals")
      out.append(f"- {label}: {k} {m[k]:.3f} {word} raw inputs "
                 f"({m['raw_' + k]:.3f}) (single run, no interval).")
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  t_start = time.time()
  root = _WORKDIR.value
  os.makedirs(root, exist_ok=True)

  def run(kind, name, overrides, tag):
    module = meta_config if kind == "meta" else metric_config
    fn = (meta.train_and_evaluate if kind == "meta"
          else metric_driver.train_and_evaluate)
    config = _config(module, name, overrides)
    workdir = os.path.join(root, tag)
    t0 = time.time()
    metrics = fn(config, workdir)
    metrics["seconds"] = time.time() - t0
    metrics["steps"] = config.num_steps
    metrics["cmd"] = (f"python experiments/{kind}.py --workdir=/tmp/{tag} "
                      f"--config=experiments/configs/{kind}.py:{name}"
                      + (f" {_flags(overrides)}" if overrides else ""))
    print(f"== {tag}: {metrics}", flush=True)
    return metrics, config, workdir

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
    cfg = _config(meta_config, "protonet", shot_over)
    raw[shot] = meta.raw_nearest_centroid(cfg)
    for name, label, over in methods:
      tag = f"{name}{'_fo' if over else ''}_{shot}shot"
      few[(label, shot)] = run("meta", name, {**shot_over, **over}, tag)[0]

  # ------------------------------------------------------- 2. sinusoids
  sine = {}
  for name, label in (("sinusoid_maml", "MAML (second order)"),
                      ("sinusoid_pretrained", "pretrained jointly")):
    sine[label], cfg, wd = run("meta", name, {}, name)
  # The pretrained model fine-tuned with a 10x smaller step as well (the
  # shared rate 0.01 overshoots for it), from its saved parameters.
  params = checkpoint.load_params(os.path.join(root, "sinusoid_pretrained",
                                               "params"))
  low = meta.sinusoid_evaluate(params, cfg, inner_lr=0.001)
  low.update(seconds=0.0, steps=cfg.num_steps,
             test_episodes=cfg.test_episodes, cmd="(the run above, fine-tuned at inner_lr 0.001)")
  sine["pretrained jointly, fine-tuned at lr 0.001"] = low

  # ------------------------------------------------------- 3. metric
  metric = {}
  for loss, label in (("triplet", "triplet, semi-hard mining"),
                      ("contrastive", "Siamese, contrastive")):
    metric[label] = run("metric", loss, {}, f"metric_{loss}")[0]

  total = time.time() - t_start
  lines = [
      "# Metric learning and meta-learning results",
      "",
      "Produced by one run of",
      "",
      f"    {COMMAND}" + (" --quick" if _QUICK.value else ""),
      "",
      f"on {platform.machine()} CPU, {os.cpu_count()} cores, jax "
      f"{jax.__version__}, {jax.device_count()} device(s); total "
      f"{total / 60:.1f} min. Each row's equivalent single command is in the "
      "last column (workdirs under /tmp). Seeds are fixed (seed 0); one run "
      "per row, so the intervals cover episode sampling, not training "
      "seeds. Hyperparameters are the configs' defaults, set by hand and not "
      "tuned per method (there is no separate validation class split).",
      "",
      "## 1. Few-shot classification on held-out classes",
      "",
      "mnist1d (standard preset): meta-train on digits 0-4 (train split), "
      "5-way episodes of digits 5-9 (test split), 15 queries per class; test "
      "accuracy, mean ± 95% interval over 600 test episodes (the same "
      "episodes for every row). All learners use the same MLP (128, 128) "
      "backbone.",
      "",
      "| method | 5-way 1-shot | 5-way 5-shot | steps | s (1-shot / 5-shot) "
      "| command (1-shot; 5-shot adds --config.k_shot=5) |",
      "|---|---|---|---|---|---|",
      f"| nearest centroid on raw inputs (no learning) | "
      f"{_pm(*raw[1])} | {_pm(*raw[5])} | 0 | - | "
      "`meta.raw_nearest_centroid(config)` |",
  ]
  for _, label, _ in methods:
    a, b = few[(label, 1)], few[(label, 5)]
    lines.append(
        f"| {label} | {_pm(a['test_accuracy'], a['test_ci95'])} | "
        f"{_pm(b['test_accuracy'], b['test_ci95'])} | {a['steps']} | "
        f"{a['seconds']:.0f} / {b['seconds']:.0f} | `{a['cmd']}` |")
  lines += [
      "",
      "## 2. MAML on sinusoids",
      "",
      "y = A sin(x - phase), A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; "
      "10-shot support, 100 query points, 600 test tasks; query MSE (mean ± "
      "95% interval) after k plain SGD steps on the support set (rate 0.01 "
      "unless stated). MLP (40, 40) regressor as in the paper.",
      "",
      "| initialisation | k=0 | k=1 | k=10 | steps | s | command |",
      "|---|---|---|---|---|---|---|",
  ]
  for label, m in sine.items():
    cells = " | ".join(_mse_cell(m, k) for k in (0, 1, 10))
    lines.append(f"| {label} | {cells} | {m['steps']} | "
                 f"{m['seconds']:.0f} | `{m['cmd']}` |")
  lines += [
      "",
      "## 3. Metric learning: retrieval and verification on held-out classes",
      "",
      "mnist1d (standard preset): embedding (cnn1d backbone, 64-d) trained on "
      "digits 0-4 (train split); leave-one-out recall@k and same/different "
      "ROC-AUC over pairs on the digits 5-9 of the test split.",
      "",
      "| embedding | recall@1 | recall@5 | verification AUC | steps | s | "
      "command |",
      "|---|---|---|---|---|---|---|",
  ]
  first = next(iter(metric.values()))
  lines.append(f"| raw inputs (no learning) | {first['raw_recall@1']:.3f} | "
               f"{first['raw_recall@5']:.3f} | {first['raw_auc']:.3f} | 0 | "
               "- | (raw_* in each run's results.json) |")
  for label, m in metric.items():
    lines.append(f"| {label} | {m['recall@1']:.3f} | {m['recall@5']:.3f} | "
                 f"{m['auc']:.3f} | {m['steps']} | {m['seconds']:.0f} | "
                 f"`{m['cmd']}` |")
  lines += ["", "## Comparisons (computed from the rows above)", ""]
  lines += _comparisons(few, raw, methods, sine, metric)
  lines.append("")
  text = "\n".join(lines)
  print(text)
  out = _OUTPUT.value or (None if _QUICK.value else os.path.join(
      ROOT, "docs", "results_metric_meta.md"))
  if out:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
      f.write(text)
    print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
