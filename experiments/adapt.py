r"""Unsupervised domain adaptation (DANN, MMD, CORAL, KMM, TCA); see the config.

  python experiments/adapt.py --workdir=/tmp/tljax/dann \
      [--config=experiments/configs/adapt.py[:moons|mnist1d|digits][,quick]] \
      [--config.method=dann|mmd|coral|tca|kmm|source_only|target_supervised] \
      [--config.source=npz:src.npz --config.target=npz:tgt.npz]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import adapt  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(adapt.train_and_evaluate, __file__)
