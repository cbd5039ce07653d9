r"""Trains a classifier on a source (or target) domain; see the config.

  python experiments/train.py --workdir=/tmp/tljax/src \
      [--config=experiments/configs/train.py] [--config.source=...]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import train  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(train.train_and_evaluate, __file__)
