"""Plots written to the workdir as PNG (matplotlib, Agg backend, no screen).

Method families add their own plotting functions below in their own
delimited section.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top


def save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120, bbox_inches="tight")
  plt.close(fig)
  return path


# ----------------------------------------------------------- training curves
def plot_training_curves(workdir: str, filename: str = "metrics.jsonl",
                         out: str = "training_curves.png") -> str | None:
  """Loss and accuracy against step from a run's ``metrics.jsonl``."""
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  if not rows:
    return None
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for split, style in (("train", "-"), ("eval", "o-")):
    r = [x for x in rows if x["split"] == split]
    for ax, key in zip(axes, ("loss", "accuracy")):
      k = key if split == "train" else f"eval_{key}"
      pts = [(x["step"], x[k]) for x in r if k in x]
      if pts:
        ax.plot(*zip(*pts), style, label=split)
  for ax, key in zip(axes, ("loss", "accuracy")):
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
  axes[0].set_yscale("log")
  return save(fig, os.path.join(workdir, out))
