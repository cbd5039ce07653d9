"""Everything tljax writes to a run's workdir, written from process 0 alone,
and the workdir's ownership: one run at a time.

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

One run owns a workdir at a time (:func:`hold`): a second run on the same
workdir is one clear error, not a second writer of the same checkpoints and
metrics. The lock is an ``flock`` on ``<workdir>/.lock``: the kernel drops
it when its process ends in any way (even ``kill -9``), so a lock left by a
dead process never blocks the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import sys
from typing import Any, Iterator

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


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSON-lines file (``[]`` if there is none)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def trim_jsonl(path: str, last_step: int):
  """Drops the records after ``last_step`` from a metrics file: a run
  resumed from the checkpoint at ``last_step`` writes them again."""
  if not is_chief() or not os.path.exists(path):
    return
  rows = read_jsonl(path)
  kept = [r for r in rows if int(r.get("step", 0)) <= last_step]
  if len(kept) != len(rows):
    _atomic_write(path, "".join(json.dumps(r, allow_nan=False) + "\n"
                                for r in kept))


# ------------------------------------------------------------- ownership
_HELD: dict[str, list] = {}  # real path -> [open lock file, depth]


def _is_remote(path: str) -> bool:
  return "://" in path  # gs://, s3://: no local lock; the scheduler owns it


def check_writable(workdir: str) -> str:
  """Creates ``workdir`` if needed; raises one clear ValueError if it is a
  file or cannot be written. Returns its absolute path."""
  if _is_remote(workdir):
    return workdir
  path = os.path.abspath(os.path.expanduser(workdir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"workdir {workdir!r} is a file, not a directory; give "
                     "a directory (it is created if missing).")
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, f".write-test-{os.getpid()}")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"cannot write to workdir {workdir!r} ({e.strerror}); "
                     "choose a directory this user can write.") from None
  return path


@contextlib.contextmanager
def hold(workdir: str | None) -> Iterator[None]:
  """Owns ``workdir`` for the duration of the block (process 0 only).

  Re-entrant within one process: a driver that holds its workdir can run
  trainers that hold it again.

  Raises:
    ValueError: if the workdir is a file, cannot be written, or another
      live process holds it.
  """
  if not workdir or not is_chief() or _is_remote(workdir):
    yield
    return
  path = check_writable(workdir)
  if path in _HELD:
    _HELD[path][1] += 1
    try:
      yield
    finally:
      _HELD[path][1] -= 1
    return
  f = open(os.path.join(path, ".lock"), "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    f.seek(0)
    owner = f.read().strip() or "another process"
    f.close()
    if e.errno not in (errno.EAGAIN, errno.EACCES):
      raise
    raise ValueError(f"workdir {workdir!r} is in use by {owner}; wait for "
                     "that run to end, or give this one another workdir.") \
        from None
  f.seek(0)
  f.truncate()
  f.write(f"process {os.getpid()} on {socket.gethostname()}\n")
  f.flush()
  _HELD[path] = [f, 1]
  try:
    yield
  finally:
    _HELD[path][1] -= 1
    if not _HELD[path][1]:
      del _HELD[path]
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()


# ------------------------------------------------- the config of a workdir
def _flatten(cfg, prefix="") -> dict[str, Any]:
  out = {}
  for k, v in cfg.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def claim(workdir: str | None, config, *, ignore=(), added=None) -> None:
  """Records ``config`` as the config of ``workdir`` (``config.json``), or
  checks that the one recorded there agrees with it.

  A workdir holds one run: resuming it, or re-running a finished one, with
  another config would stamp the new settings on the old model. Every field
  except those named in ``ignore`` (settings that cannot change the result,
  like ``log_every``) must agree. ``added`` maps dotted field names that
  configs gained after a release to the value that reproduces what runs
  made before had: a recorded config without the field holds that value.

  Raises:
    ValueError: naming every field that differs, and what to do.
  """
  if not workdir:
    return
  cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  cfg = to_json(cfg)
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      old = _flatten(json.load(f))
    new = _flatten(cfg)
    skip = lambda k: any(k == i or k.endswith("." + i) for i in ignore)  # noqa: E731
    old = {**{k: v for k, v in (added or {}).items() if k in new}, **old}
    diff = sorted(k for k in set(old) | set(new)
                  if not skip(k) and old.get(k, "<missing>")
                  != new.get(k, "<missing>"))
    if diff:
      shown = "; ".join(f"{k}: {old.get(k, '<missing>')!r} there, "
                        f"{new.get(k, '<missing>')!r} now" for k in diff[:8])
      more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
      raise ValueError(
          f"workdir {workdir!r} holds a run made with another config ({shown}"
          f"{more}); resuming it would mix the two. Use a new workdir for "
          "the new settings (or delete this one to start over).")
    return
  write_json(path, cfg)
