"""Pure linen modules. Parameter trees name their parts at the top level."""

from tljax.models.nets import CNN1D
from tljax.models.nets import CNN2D
from tljax.models.nets import Classifier
from tljax.models.nets import MLP
from tljax.models.nets import backbone_from_config
from tljax.models.nets import build_backbone
from tljax.models.nets import build_classifier
from tljax.models.nets import dense_layers
from tljax.models.nets import init_params

__all__ = ["MLP", "CNN1D", "CNN2D", "Classifier", "build_backbone",
           "backbone_from_config", "init_params", "build_classifier",
           "dense_layers"]
