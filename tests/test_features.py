"""features: the frozen ViT's CLS features of every well and view, as the backbone computes them."""

from __future__ import annotations

import numpy as np
import pytest

from cytoops import augment, features, models
from cytoops.params import FeaturesParams


def test_compute_gives_the_backbones_own_features_bit_for_bit():
    import keras

    rng = np.random.default_rng(0)
    bank = augment.make_bank(rng.random((5, 3, 64, 64)).astype(np.float32), ("none", "hflip"), np.float32)
    got = features.compute(bank, FeaturesParams(seed=7, batch_size=4), vit_layers=1, progress=False)
    keras.utils.set_random_seed(7)
    backbone, pretrained = models.build_backbone(models.ModelParams(vit_layers=1), image_size=64)
    eager = np.stack(  # Keras' eager call on the same batches (4 wells, then 1)
        [
            np.concatenate(
                [np.asarray(backbone(features.to_vit_input(v[s : s + 4]), training=False)) for s in (0, 4)]
            )
            for v in bank.images
        ]
    )
    assert got.values.shape == (2, 5, models.VIT_FEATURES) and not pretrained and got.weights == "random"
    assert np.array_equal(got.values, eager)  # a graph of the same ops: no other rounding


def test_compute_refuses_a_plate_without_three_channels():
    bank = augment.make_bank(np.zeros((2, 1, 64, 64), np.float32), ("none",), np.float32)
    with pytest.raises(ValueError, match="takes 3 channels; the plate has 1"):
        features.compute(bank, FeaturesParams(), vit_layers=1, progress=False)
