"""Every plot tljax draws, written to the workdir as PNG.

Figures are built with matplotlib's object API on the Agg canvas (no
pyplot state, no screen, no global backend switch) and saved through
:func:`tljax.workdir.save_figure` (process 0 alone). Only the drivers
import this module.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from tljax import workdir as workdir_lib


def _figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height))
  FigureCanvasAgg(fig)
  return fig


def _save(fig: Figure, path: str) -> str:
  fig.tight_layout()
  return workdir_lib.save_figure(fig, path)


def _grouped_bars(ax, groups: Sequence[str], series: dict[str, tuple], *,
                  percent: bool = True):
  """Bars of ``series[name] = (means, stds)`` (one value per group) side by
  side in each group."""
  scale = 100.0 if percent else 1.0
  width = 0.8 / max(len(series), 1)
  for i, (name, (mean, std)) in enumerate(series.items()):
    xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
    ax.bar(xs, scale * np.asarray(mean), width,
           yerr=None if std is None else scale * np.asarray(std), capsize=3,
           label=name)
  ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
  ax.grid(axis="y", alpha=0.3)


def _budget_series(results: dict, strategies, budgets):
  return {n: ([results[n][b]["mean"] for b in budgets],
              [results[n][b]["std"] for b in budgets]) for n in strategies}


# ------------------------------------------------------------ every run
def training_curves(workdir: str, filename: str = "metrics.jsonl",
                    out: str = "training_curves.png") -> str | None:
  """Loss and accuracy against step from a run's ``metrics.jsonl``."""
  path = os.path.join(workdir, filename)
  if not workdir_lib.is_chief() or not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    return None
  fig = _figure(10, 3.5)
  axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
  for split, style in (("train", "-"), ("eval", "o-")):
    r = [x for x in rows if x["split"] == split]
    for ax, key in zip(axes, ("loss", "accuracy")):
      k = key if split == "train" else f"eval_{key}"
      pts = [(x["step"], x[k]) for x in r if x.get(k) is not None]
      if pts:
        ax.plot(*zip(*pts), style, label=split)
  for ax, key in zip(axes, ("loss", "accuracy")):
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend()
  axes[0].set_yscale("log")
  return _save(fig, os.path.join(workdir, out))


# ------------------------------------------------------- transfer report
def accuracy_vs_labels(path: str, results: dict, budgets: Sequence[str],
                       strategies: Sequence[str], xs: Sequence[float],
                       title: str = "") -> str:
  """Accuracy against labels per class, one line (mean ± std) per
  strategy; ``budgets`` name the columns of ``results[strategy]`` and
  ``xs`` their positions (labels per class)."""
  order = np.argsort(xs)
  x = np.asarray(xs, np.float64)[order]
  fig = _figure(7, 4.5)
  ax = fig.add_subplot(1, 1, 1)
  for name in strategies:
    mean = np.array([results[name][budgets[i]]["mean"] for i in order])
    std = np.array([results[name][budgets[i]]["std"] for i in order])
    style = "--" if name == "source_only" else "-o"
    line, = ax.plot(x, 100 * mean, style, label=name, markersize=4)
    ax.fill_between(x, 100 * (mean - std), 100 * (mean + std), alpha=0.15,
                    color=line.get_color())
  ax.set_xscale("log")
  ax.set_xticks(x)
  ax.set_xticklabels([budgets[i] for i in order])
  ax.set_xlabel("target labels per class")
  ax.set_ylabel("target test accuracy (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


# ------------------------------------------------------ domain adaptation
def embeddings(path: str, panels: Sequence[tuple[str, np.ndarray,
                                                 np.ndarray]],
               ys: np.ndarray | None = None, yt: np.ndarray | None = None, *,
               max_points: int = 600, seed: int = 0) -> str:
  """Side-by-side 2-D PCA plots of source and target points.

  Args:
    path: the PNG to write.
    panels: ``(title, source_points, target_points)`` per panel, e.g. inputs
      before and features after adaptation; each panel's PCA is fitted on its
      pooled points.
    ys, yt: optional class labels (marker shapes).
    max_points: points drawn per domain.
    seed: subsampling seed.
  """
  rng = np.random.default_rng(seed)
  fig = _figure(5 * len(panels), 4.5)
  markers = "o^sPDvX*<>"
  for k, (title, s, t) in enumerate(panels):
    ax = fig.add_subplot(1, len(panels), k + 1)
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
    for pts, lab, idx, color, name in (
        (proj[:len(i_s)], ys, i_s, "tab:blue", "source"),
        (proj[len(i_s):], yt, i_t, "tab:red", "target")):
      if lab is None:
        ax.scatter(pts[:, 0], pts[:, 1], s=6, c=color, alpha=0.5, label=name)
        continue
      lab = np.asarray(lab)[idx]
      for j, c in enumerate(np.unique(lab)[:len(markers)]):
        sel = lab == c
        ax.scatter(pts[sel, 0], pts[sel, 1], s=8, c=color, alpha=0.5,
                   marker=markers[j], label=name if j == 0 else None)
    ax.set_title(title)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


# --------------------------------------------------------------- zero-shot
def zero_shot_runs(path: str, runs: dict[str, list[dict]], splits: list,
                   chance: float,
                   confusions: dict[str, np.ndarray] | None = None) -> str:
  """Unseen-class accuracy of every run (bars, one per method) against
  chance; with one fixed split, also the row-normalised confusion matrices
  over its unseen classes."""
  panels = 1 + (len(confusions) if confusions else 0)
  fig = _figure(max(5, 1.1 * len(splits) + 2) + 3.8 * (panels - 1), 3.8)
  ax = fig.add_subplot(1, panels, 1)
  _grouped_bars(ax, ["/".join(str(u) for u in sp) for sp in splits],
                {m: ([r["unseen_accuracy"] for r in rs], None)
                 for m, rs in runs.items()})
  ax.axhline(100 * chance, color="k", ls="--", lw=1, label="chance")
  ax.set_xlabel("unseen classes of each run")
  ax.set_ylabel("unseen-class accuracy (%)")
  ax.legend(fontsize=8)
  if confusions:
    unseen = splits[0]
    for i, (name, cm) in enumerate(confusions.items()):
      ax = fig.add_subplot(1, panels, i + 2)
      rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
      ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
      for r in range(len(unseen)):
        for c in range(len(unseen)):
          ax.text(c, r, f"{rows[r, c]:.2f}", ha="center", va="center",
                  color="white" if rows[r, c] > 0.5 else "black")
      ax.set_xticks(range(len(unseen)), [str(u) for u in unseen])
      ax.set_yticks(range(len(unseen)), [str(u) for u in unseen])
      ax.set_xlabel("predicted")
      ax.set_ylabel("true class")
      ax.set_title(f"{name} (all runs)")
  return _save(fig, path)


# ------------------------------------------ progressive nets, self-taught
def accuracy_bars(path: str, results: dict, budgets: Sequence[str],
                  strategies: Sequence[str], title: str = "",
                  baseline: tuple[str, float] | None = None,
                  clustering: dict | None = None) -> str:
  """Grouped bars of mean ± std target accuracy, one group per label
  budget; a dashed ``baseline = (label, accuracy)`` line if given; with
  ``clustering`` (``{features: {"ari": cell, "nmi": cell}}``) a second panel
  of k-means scores per feature type."""
  fig = _figure(1.8 + 1.6 * len(budgets) * len(strategies) / 2
                + (6 if clustering else 0), 4.2)
  ax = fig.add_subplot(1, 2 if clustering else 1, 1)
  _grouped_bars(ax, [f"{b} labels/class" for b in budgets],
                _budget_series(results, strategies, budgets))
  if baseline is not None:
    ax.axhline(100 * baseline[1], color="k", ls="--", lw=1,
               label=baseline[0])
  ax.set_ylabel("target test accuracy (%)")
  ax.set_title(title)
  ax.legend(fontsize=7)
  if clustering:
    ax = fig.add_subplot(1, 2, 2)
    names = list(clustering)
    _grouped_bars(ax, names, {key.upper(): (
        [clustering[n][key]["mean"] for n in names],
        [clustering[n][key]["std"] for n in names]) for key in ("ari", "nmi")},
                  percent=False)
    ax.set_title("k-means on the target test set")
    ax.legend(fontsize=8)
  return _save(fig, path)


# ------------------------------------------------------ transferability
def transferability_ranking(path: str, scores: dict, accuracy: dict,
                            budgets: Sequence[str], score_names: dict,
                            ranking: dict, title: str = "") -> str:
  """Fine-tuned accuracy against each transferability score, one panel per
  label budget (rows) and score (columns), one colour per candidate.

  ``scores[candidate][budget][score]`` and ``accuracy[candidate][budget]``
  are :func:`tljax.drivers.common.summarize` cells (means drawn, accuracy
  std as error bars); ``score_names`` maps score keys to labels;
  ``ranking[budget][score]["kendall_tau"]`` goes in each panel's title."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  candidates = list(scores)
  fig = _figure(2.9 * len(score_names) + 1.5, 2.5 * len(budgets) + 0.6)
  colors = [f"C{i % 10}" for i in range(len(candidates))]
  for r, b in enumerate(budgets):
    for j, (key, label) in enumerate(score_names.items()):
      ax = fig.add_subplot(len(budgets), len(score_names),
                           r * len(score_names) + j + 1)
      for cand, color in zip(candidates, colors):
        acc = accuracy[cand][b]
        ax.errorbar(scores[cand][b][key]["mean"], 100 * acc["mean"],
                    yerr=100 * acc["std"], fmt="o", color=color, capsize=2,
                    markersize=5, label=cand)
      tau = ranking[b][key]["kendall_tau"]
      tau = "n/a" if tau is None or not np.isfinite(tau) else f"{tau:+.2f}"
      ax.set_title(f"{label}, {b}/class: tau {tau}", fontsize=8)
      ax.tick_params(labelsize=7)
      ax.locator_params(axis="x", nbins=3)
      ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%.4g"))
      ax.grid(alpha=0.3)
      if j == 0:
        ax.set_ylabel("fine-tuned acc. (%)", fontsize=8)
  handles, labels = fig.axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4),
             fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) > 4), 1, 0.97))
  return workdir_lib.save_figure(fig, path)
