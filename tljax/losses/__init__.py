"""Every loss and penalty in tljax: pure functions of arrays and pytrees.

One file per family; this module re-exports the public ones, so
``tljax.losses.triplet_loss`` etc. work.
"""

from tljax.losses.classification import accuracy
from tljax.losses.classification import cross_entropy
from tljax.losses.metric import contrastive_loss
from tljax.losses.metric import triplet_loss
from tljax.losses.transfer import distillation_kl
from tljax.losses.transfer import l2_sp_penalty
from tljax.losses.transfer import l2_sp_shared_mask
from tljax.losses.transfer import lwf_penalty
from tljax.losses.alignment import coral_loss
from tljax.losses.alignment import domain_accuracy
from tljax.losses.alignment import domain_classification_loss
from tljax.losses.alignment import gaussian_mmd2
from tljax.losses.alignment import multi_kernel_mmd2
from tljax.losses.zero_shot import attribute_loss
from tljax.losses.zero_shot import hinge_ranking_loss
