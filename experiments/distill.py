r"""Knowledge distillation from a teacher to a student; see the config.

  python experiments/distill.py --workdir=/tmp/tljax/distill \
      [--config.data=mnist1d:noisy] [--config.quick=True]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import distillation  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs",
                           "distill.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/tljax/distill",
                               "Where results go.")


def main(argv):
  del argv
  cli.run_experiment(distillation.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
