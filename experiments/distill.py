r"""Knowledge distillation from a teacher to a student; see the config.

  python experiments/distill.py --workdir=/tmp/tljax/distill \
      [--config.data=mnist1d:noisy] [--config.quick=True]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.methods import distillation  # noqa: E402
from tljax.train import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(distillation.train_and_evaluate, __file__, default_workdir="/tmp/tljax/distill")
