"""tljax: transfer learning in JAX/Flax.

Every method is a loss function on the one step shape
``step(state, batch, rng, *, axis_name=None) -> (state, metrics)``
(:mod:`tljax.train`); method families live in :mod:`tljax.methods`, one
module each.
"""

from tljax import data
from tljax import losses
from tljax import models
from tljax import ops
from tljax import optim
from tljax import params
from tljax import train

__version__ = "0.1.0"

__all__ = ["data", "losses", "models", "ops", "optim", "params", "train"]
