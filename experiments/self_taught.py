r"""Self-taught learning: autoencoder features from unlabelled data, reused
on a labelled target with few labels; clustering of the features.

  python experiments/self_taught.py --workdir=/tmp/tljax/self_taught \
      [--config=experiments/configs/self_taught.py]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import self_taught  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs",
                           "self_taught.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.",
                               required=True)


def main(argv):
  del argv
  cli.run_experiment(self_taught.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
