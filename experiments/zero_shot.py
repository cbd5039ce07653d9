r"""Zero-shot learning on held-out digits (DAP and a joint embedding).

  python experiments/zero_shot.py --workdir=/tmp/tljax/zsl \
      [--config=experiments/configs/zero_shot.py] \
      [--config.unseen_classes=(3,6,9)] [--config.data=mnist1d:clean]
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import zero_shot  # noqa: E402
from tljax.train import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs",
                           "zero_shot.py"),
    "Experiment configuration.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results go.",
                               required=True)


def main(argv):
  del argv
  cli.run_experiment(zero_shot.train_and_evaluate, _CONFIG.value,
                     _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
