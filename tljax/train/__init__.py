"""Train state, the step shape, compilation over devices, the loop."""

from tljax.train.checkpoint import Checkpointer
from tljax.train.checkpoint import load_params
from tljax.train.checkpoint import save_params
from tljax.train.loop import TrainingDiverged
from tljax.train.loop import fit
from tljax.train.loop import write_results
from tljax.train.parallel import compile_step
from tljax.train.state import TrainState
from tljax.train.state import create_train_state
from tljax.train.state import train_step

__all__ = ["TrainState", "create_train_state", "train_step", "compile_step",
           "fit", "write_results", "TrainingDiverged", "Checkpointer",
           "save_params", "load_params"]
