"""fitter: the one training loop's initial weights are Keras' draw, seeded (the loop itself is tested through
train's grid in test_train, as the refit in test_register)."""

import numpy as np
import pytest

from cytoops.fitter import initial_weights


@pytest.mark.parametrize("architecture", ["wide_cnn", "deep_cnn", "vit_500k"])
def test_initial_weights_are_seeded_and_shaped_as_keras_draws_them(architecture):
    from cytoops import models

    spec = models.get(architecture)
    model = (
        spec.build((64, 64, 3), models.ModelParams())
        if spec.kind == "cnn"
        else models.build_head(architecture, models.VIT_FEATURES, models.ModelParams())
    )
    keras_draw = model.get_weights()
    ours = initial_weights(model, np.random.default_rng(7))
    assert [w.shape for w in ours] == [w.shape for w in keras_draw]
    for mine, theirs in zip(ours, keras_draw, strict=True):
        if theirs.ndim == 1:  # biases start at zero
            assert not mine.any() and not theirs.any()
        else:  # Glorot uniform: both inside the bound our fan-in/fan-out give, with the spread it implies
            receptive = int(np.prod(theirs.shape[:-2])) if theirs.ndim > 2 else 1
            limit = np.sqrt(6.0 / (receptive * (theirs.shape[-2] + theirs.shape[-1])))
            bound = np.float32(limit)  # float32 draws may round up to the limit's float32 value
            assert np.abs(mine).max() <= bound and np.abs(theirs).max() <= bound
            if theirs.size >= 5000:
                assert mine.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
                assert theirs.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
    again = initial_weights(model, np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip(ours, again, strict=True))
    other = initial_weights(model, np.random.default_rng(8))
    assert not np.array_equal(ours[0], other[0])
