"""Graceful preemption: SIGTERM and Ctrl-C end a run at a step boundary.

Preemptible TPU and GPU machines send SIGTERM before they take the machine
back; a person presses Ctrl-C (SIGINT). Inside :func:`watch`, either signal
only sets a flag: the trainer finishes the step it is in, saves a checkpoint
at that step and raises :class:`Preempted`; a sweep stops after the cell it
is in (every finished cell is already stored). The binaries turn
:class:`Preempted` into one line and exit status ``128 + signal`` (143 for
SIGTERM, 130 for SIGINT); started again with the same workdir, the run
resumes from there. A second signal while the first is being handled stops
at once (the usual way out of a stuck run).

  with preemption.watch() as stop:
    for step in ...:
      ...
      if stop.requested:
        save(); raise preemption.Preempted(stop.signum, step, where)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
  """The run was asked to stop (SIGTERM or SIGINT) and stopped cleanly."""

  def __init__(self, signum: int, step: int | None, where: str | None):
    self.signum, self.step, self.where = signum, step, where
    name = signal.Signals(signum).name
    at = f" at step {step}" if step is not None else ""
    saved = (f"; saved in {where}, and the same command resumes from there"
             if where else "; nothing was saved (no workdir)")
    super().__init__(f"stopped by {name}{at}{saved}")

  @property
  def exit_code(self) -> int:
    return 128 + int(self.signum)


class _Flag:
  def __init__(self):
    self.signum: int | None = None

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def raise_if_requested(self, step: int | None, where: str | None):
    if self.signum is not None:
      raise Preempted(self.signum, step, where)


_ACTIVE: list[_Flag] = []


@contextlib.contextmanager
def watch() -> Iterator[_Flag]:
  """SIGTERM and SIGINT set a flag inside the block instead of killing the
  process. Nested blocks share the outer flag. Outside the main thread
  (where Python cannot install handlers) the flag never rises."""
  if _ACTIVE:
    yield _ACTIVE[-1]
    return
  flag = _Flag()
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = {s: signal.getsignal(s) for s in SIGNALS}

  def handler(signum, frame):
    del frame
    if flag.signum is not None:  # asked twice: stop now
      signal.signal(signum, previous[signum])
      raise KeyboardInterrupt
    flag.signum = signum

  for s in SIGNALS:
    signal.signal(s, handler)
  _ACTIVE.append(flag)
  try:
    yield flag
  finally:
    _ACTIVE.pop()
    for s, h in previous.items():
      signal.signal(s, h)
