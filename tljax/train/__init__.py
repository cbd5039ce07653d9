"""Train state, the step shape, compilation over devices, the one trainer.

Checkpointing (:mod:`tljax.train.checkpoint`, orbax) is imported on first
use, so code that only builds and runs steps never loads orbax.
"""

import importlib

from tljax.train.parallel import compile_step
from tljax.train.preemption import Preempted
from tljax.train.state import TrainState
from tljax.train.state import create_train_state
from tljax.train.state import loss_step
from tljax.train.state import train_step
from tljax.train.trainer import Trainer
from tljax.train.trainer import TrainingDiverged
from tljax.train.trainer import stack_batches

_CHECKPOINT = ("Checkpointer", "save_params", "load_params", "load_variables")

__all__ = ["TrainState", "create_train_state", "train_step", "loss_step",
           "compile_step", "Trainer", "TrainingDiverged", "Preempted",
           "stack_batches", *_CHECKPOINT]


def __getattr__(name):
  if name in _CHECKPOINT:
    return getattr(importlib.import_module("tljax.train.checkpoint"), name)
  raise AttributeError(f"module 'tljax.train' has no attribute {name!r}")
