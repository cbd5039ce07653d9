"""Method families, one module each: import the module you need
(``from tljax.methods import finetune``). Each has its loss functions for
:func:`tljax.train.train_step`, evaluation, and ``train_and_evaluate`` for
its experiment binary. The closed-form estimators are re-exported here.
"""

from tljax.methods.kmm import kmm_weights
from tljax.methods.tca import TCA

__all__ = ["TCA", "kmm_weights"]
