r"""Knowledge distillation from a teacher to a student; see the config.

  python experiments/distill.py --workdir=/tmp/tljax/distill \
      [--config.data=mnist1d:noisy] [--config=experiments/configs/distill.py:quick]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tljax.drivers import distill  # noqa: E402
from tljax.drivers import cli  # noqa: E402

if __name__ == "__main__":
  cli.main(distill.train_and_evaluate, __file__, default_workdir="/tmp/tljax/distill")
