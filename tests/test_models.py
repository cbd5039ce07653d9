"""Model shapes and parameter names (what regex rules address)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tljax import models
from tljax import params as P


@pytest.mark.parametrize("backbone,x_shape,n_layers", [
    (models.MLP(features=(8, 8, 8)), (3, 5), 3),
    (models.CNN1D(channels=(4, 4), dense=8), (3, 40), 3),
    (models.CNN2D(channels=(4, 8), dense=8), (3, 8, 8, 1), 3),
    (models.CNN2D(channels=(4,), dense=0), (3, 28, 28, 3), 1),
])
def test_classifier_shapes_and_names(backbone, x_shape, n_layers):
  model = models.Classifier(backbone=backbone, num_classes=7)
  x = jnp.ones(x_shape)
  params = model.init(jax.random.key(0), x)["params"]
  assert model.apply({"params": params}, x).shape == (3, 7)
  assert backbone.num_layers == n_layers
  names = P.leaf_names(params)
  layers = sorted({n.split("/")[1] for n in names if n.startswith("backbone")})
  assert layers == [f"layer_{i}" for i in range(n_layers)]
  assert {"head/kernel", "head/bias"} <= set(names)
  feats = model.apply({"params": params}, x, method="features")
  logits = model.apply({"params": params}, feats,
                       method="logits_from_features")
  np.testing.assert_allclose(logits, model.apply({"params": params}, x),
                             rtol=1e-6)


def test_build_by_name_and_auto():
  m = models.build_classifier({"name": "mlp", "features": [4, 4]}, 3)
  assert m.backbone.features == (4, 4)
  with pytest.raises(ValueError, match="unknown backbone 'vit'"):
    models.build_backbone("vit")
  cfg = {"name": "auto"}
  assert isinstance(models.build_classifier(cfg, 10, (8, 8, 1)).backbone,
                    models.CNN2D)
  assert isinstance(models.build_classifier(cfg, 10, (40,)).backbone,
                    models.CNN1D)
  assert isinstance(models.build_classifier(cfg, 2, (2,)).backbone, models.MLP)
