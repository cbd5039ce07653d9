"""Pure linen modules. Parameter trees name their parts at the top level;
other collections (BatchNorm statistics) are the model state."""

from tljax.models.nets import CNN1D
from tljax.models.nets import CNN2D
from tljax.models.nets import Classifier
from tljax.models.nets import MLP
from tljax.models.nets import apply
from tljax.models.nets import apply_train
from tljax.models.nets import backbone_from_config
from tljax.models.nets import build_backbone
from tljax.models.nets import build_classifier
from tljax.models.nets import backbone_name
from tljax.models.nets import backbone_settings
from tljax.models.nets import default_backbone_for
from tljax.models.nets import model_config
from tljax.models.nets import dense_layers
from tljax.models.nets import init_params
from tljax.models.nets import init_variables
from tljax.models.resnet import ResNet
from tljax.models.resnet import resnet
from tljax.models.vit import VisionTransformer
from tljax.models.vit import vit

__all__ = ["MLP", "CNN1D", "CNN2D", "Classifier", "ResNet", "resnet",
           "VisionTransformer", "vit",
           "build_backbone", "backbone_from_config", "build_classifier",
           "backbone_name", "backbone_settings", "default_backbone_for", "model_config",
           "init_params", "init_variables", "apply", "apply_train",
           "dense_layers"]
