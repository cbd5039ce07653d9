"""Everything tljax writes to a run's workdir, written from process 0 alone.

On a TPU pod or a GPU cluster every host runs the same program; files must
be written once. Every text, JSON and figure file tljax writes goes through
this module (orbax checkpoints are the one exception: orbax coordinates all
processes itself). Writes are atomic (a temporary file, then ``os.replace``),
so a run killed mid-write never leaves a half-written ``results.json``.

JSON is strict: NaN and Inf have no JSON spelling, so they are written as
``null`` (:func:`to_json`), and ``results.json`` says which fields were not
finite under ``"non_finite"``.

  >>> to_json({"acc": float("nan"), "n": 3})
  {'acc': None, 'n': 3}
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

import jax
import numpy as np


def is_chief() -> bool:
  """True on process 0 (the only one that writes files and prints)."""
  return jax.process_index() == 0


def say(msg: str):
  """Prints a progress or result line from process 0."""
  if is_chief():
    print(msg, file=sys.stdout, flush=True)


def to_json(x, *, _path: str = "", _bad: list | None = None):
  """``x`` as plain JSON types: numpy/jax scalars and arrays become numbers
  and lists, tuples lists, and non-finite floats ``None``."""
  if isinstance(x, dict):
    return {str(k): to_json(v, _path=f"{_path}/{k}" if _path else str(k),
                            _bad=_bad) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_json(v, _path=f"{_path}/{i}", _bad=_bad)
            for i, v in enumerate(x)]
  if isinstance(x, (np.generic, np.ndarray, jax.Array)):
    x = np.asarray(x)
    x = x.item() if x.ndim == 0 else x.tolist()
    if isinstance(x, list):
      return to_json(x, _path=_path, _bad=_bad)
  if isinstance(x, float) and not math.isfinite(x):
    if _bad is not None:
      _bad.append(_path)
    return None
  return x


def _atomic_write(path: str, text: str):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def write_text(path: str, text: str) -> str:
  """Writes ``text`` to ``path`` from process 0; returns ``path``."""
  if is_chief():
    _atomic_write(path, text if text.endswith("\n") else text + "\n")
  return path


def write_json(path: str, obj: Any) -> str:
  """Writes ``obj`` as strict JSON (see :func:`to_json`) from process 0."""
  if is_chief():
    _atomic_write(path, json.dumps(to_json(obj), indent=2, sort_keys=True,
                                   allow_nan=False) + "\n")
  return path


def append_jsonl(path: str, record: dict):
  """Appends one strict JSON line to ``path`` from process 0."""
  if is_chief():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a") as f:
      f.write(json.dumps(to_json(record), allow_nan=False) + "\n")


def write_results(workdir: str, metrics: dict, config=None, **extra) -> str:
  """Writes ``<workdir>/results.json``: ``{"metrics": ..., "config": ...}``
  plus ``extra`` fields; non-finite values are ``null`` and listed under
  ``"non_finite"``."""
  cfg = config.to_dict() if hasattr(config, "to_dict") else config
  bad: list[str] = []
  out = {"metrics": to_json(metrics, _path="metrics", _bad=bad),
         "config": to_json(cfg), **to_json(extra)}
  if bad:
    out["non_finite"] = {"fields": bad, "why": "NaN or Inf has no JSON "
                         "spelling; these values were not finite."}
  return write_json(os.path.join(workdir, "results.json"), out)


def save_figure(fig, path: str) -> str:
  """Saves a matplotlib figure as PNG from process 0; returns ``path``."""
  if is_chief():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.png"
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)
  return path


def save_npz(path: str, **arrays) -> str:
  """Saves arrays to ``path`` (``.npz``) from process 0; returns ``path``."""
  if is_chief():
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  return path
