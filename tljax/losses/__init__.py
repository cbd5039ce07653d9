"""Every loss and penalty in tljax: pure functions of arrays and pytrees.

One file per family; this module re-exports the public ones, so
``tljax.losses.triplet_loss`` etc. work. Per-example losses return one value
per example (as optax's do); :func:`weighted_mean` is the one reducer.
For softmax cross-entropy use optax's
``softmax_cross_entropy_with_integer_labels``.
"""

from tljax.losses.classification import accuracy
from tljax.losses.classification import weighted_mean
from tljax.losses.metric import arcface_loss
from tljax.losses.metric import contrastive_loss
from tljax.losses.metric import cosface_loss
from tljax.losses.metric import cosine_similarity
from tljax.losses.metric import multi_similarity_loss
from tljax.losses.metric import multi_similarity_miner
from tljax.losses.metric import ntxent_loss
from tljax.losses.metric import proxy_anchor_loss
from tljax.losses.metric import softmax_classifier_loss
from tljax.losses.metric import supcon_loss
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

__all__ = ["accuracy", "weighted_mean", "contrastive_loss", "triplet_loss",
           "supcon_loss", "ntxent_loss", "multi_similarity_loss",
           "multi_similarity_miner", "arcface_loss", "cosface_loss",
           "proxy_anchor_loss", "softmax_classifier_loss", "cosine_similarity",
           "distillation_kl", "l2_sp_penalty", "l2_sp_shared_mask",
           "lwf_penalty", "coral_loss", "domain_accuracy",
           "domain_classification_loss", "gaussian_mmd2", "multi_kernel_mmd2",
           "attribute_loss", "hinge_ranking_loss"]
