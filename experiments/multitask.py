r"""Source and target tasks trained jointly on one trunk; see the config.

  python experiments/multitask.py --workdir=/tmp/tljax/multitask \
      [--config.labels_per_class=20] [--config.quick=True]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import multitask  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs",
                           "multitask.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/tljax/multitask",
                               "Where results go.")


def main(argv):
  del argv
  cli.run_experiment(multitask.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
