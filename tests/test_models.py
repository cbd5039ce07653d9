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
  with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
    models.build_backbone("vgg")
  cfg = {"name": "auto"}
  pick = lambda *a: type(models.build_classifier(cfg, 10, *a).backbone)  # noqa: E731
  # The data set's modality decides; without one, the shape.
  assert pick((8, 8, 1), "image") is models.CNN2D
  assert pick((8, 8, 1)) is models.CNN2D
  assert pick((40,), "signal") is models.CNN1D
  assert pick((40,)) is models.MLP          # a flat vector is not a signal
  assert pick((256,), "vector") is models.MLP
  assert pick((100, 3)) is models.CNN1D     # (length, channels)
  assert pick((2,)) is models.MLP


def test_data_sets_say_what_they_are(tmp_path):
  from tljax import data  # pylint: disable=g-import-not-at-top
  assert data.load("mnist1d", num_examples=4).modality == "signal"
  assert data.load("digits", num_examples=4).modality == "image"
  assert data.load("moons", num_examples=4).modality == "vector"
  x = np.zeros((10, 40), np.float32)
  np.savez(tmp_path / "v.npz", x=x)
  np.savez(tmp_path / "s.npz", x=x, modality="signal")
  np.savez(tmp_path / "bad.npz", x=x, modality="video")
  assert data.load(f"npz:{tmp_path}/v.npz").modality == "vector"
  assert data.load(f"npz:{tmp_path}/s.npz").modality == "signal"
  with pytest.raises(ValueError, match="modality must be one string of"):
    data.load(f"npz:{tmp_path}/bad.npz")


def test_each_backbone_keeps_its_settings_under_its_name():
  cfg = models.model_config("mlp", features=(8,),
                            cnn1d=dict(channels=(4,), dense=6))
  assert cfg["mlp"] == {"features": (8,)}
  assert cfg["resnet"] == {"width": 64, "small_inputs": False}
  assert models.backbone_from_config(cfg).features == (8,)
  # Naming another backbone takes its own settings; the MLP's stay unused.
  cnn = models.backbone_from_config({**cfg, "name": "cnn1d"})
  assert (cnn.channels, cnn.dense, cnn.kernel_size) == ((4,), 6, 5)
  net = models.backbone_from_config({**cfg, "name": "resnet18",
                                     "resnet": {"width": 8,
                                                "small_inputs": True}})
  assert (net.width, net.small_inputs, tuple(net.stage_sizes)) == (
      8, True, (2, 2, 2, 2))
  # auto picks from the modality, then takes that backbone's settings.
  auto = models.backbone_from_config({**cfg, "name": "auto"}, (40,),
                                     "signal")
  assert auto.channels == (4,)
  # A field beside the name wins over the backbone's own key.
  assert models.backbone_from_config({**cfg, "features": (3,)}).features == (
      3,)


def test_a_setting_the_backbone_does_not_take_is_one_clear_error():
  with pytest.raises(ValueError, match=r"model\.channels is not a setting "
                     r"of backbone 'mlp', which takes \['features'\]"):
    models.backbone_from_config({"name": "mlp", "channels": (4,)})
  with pytest.raises(ValueError, match=r"model\.mlp\.dense is not a setting"):
    models.backbone_from_config({"name": "mlp", "mlp": {"dense": 4}})
  with pytest.raises(ValueError, match="backbone 'cnn2d' takes no setting "
                     "'features'"):
    models.model_config("cnn2d", features=(4,))
  with pytest.raises(ValueError, match="with auto, give settings per"):
    models.model_config("auto", features=(4,))


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_prng_implementation_is_the_users_choice(impl):
  # The suite runs with rbg (tests/conftest.py); users get threefry.
  model = models.Classifier(backbone=models.MLP(features=(4,)), num_classes=3)
  key = jax.random.key(0, impl=impl)
  params, state = models.init_variables(model, (5,), key)
  assert state == {} and params["head"]["kernel"].shape == (4, 3)
  assert np.all(np.isfinite(params["backbone"]["layer_0"]["kernel"]))
