"""fitter: the one training loop's initial weights are Keras' draw, seeded; its epochs (a graph each) are
a plain per-batch Keras loop's; its optional class weighting (the loop is also tested through train's grid
in test_train, as the refit in test_register)."""

import numpy as np
import pytest

from cytoops.fitter import Fitter, initial_weights
from cytoops.params import TrainParams


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


def reference_fit(architecture, x, y, x_val, y_val, seed, params):
    """The training loop written plainly, one eager Keras step per mini-batch: the unit's initial weights,
    Adam, shuffling from default_rng(seed), early stopping on the validation loss (best weights restored)."""
    import keras
    import tensorflow as tf

    from cytoops import models

    model = models.get(architecture).build(tuple(x.shape[1:]), models.ModelParams())
    rng = np.random.default_rng(seed)
    model.set_weights(initial_weights(model, rng))
    optimizer = keras.optimizers.Adam(params.learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses, val_losses, best, best_epoch, wait, best_weights = [], [], np.inf, 0, 0, None
    for epoch in range(params.epochs):
        order, total = rng.permutation(len(x)), 0.0
        for i in range(0, len(x), params.batch_size):
            batch = order[i : i + params.batch_size]
            with tf.GradientTape() as tape:
                loss = loss_fn(y[batch], model(x[batch], training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            total += float(loss) * len(batch)
        losses.append(total / len(x))
        val_losses.append(float(loss_fn(y_val, model(x_val, training=False))))
        if val_losses[-1] < best:
            best, best_epoch, wait, best_weights = val_losses[-1], epoch, 0, model.get_weights()
        else:
            wait += 1
            if wait >= params.patience:
                break
    model.set_weights(best_weights)
    return model, losses, val_losses, best_epoch + 1


def test_a_fit_is_the_plain_per_batch_loop():
    """Same initial weights, batches, Adam steps and stopping: the same curves, best epoch and probabilities
    (float round-off aside: Adam's update is compiled apart from the rest)."""
    rng = np.random.default_rng(0)
    x = rng.random((70, 12, 12, 2), dtype=np.float32)  # 70 rows: 3 batches of 32, the last one partial
    y = rng.integers(0, 2, 70)  # noise: it overfits, the validation loss turns up, early stopping acts
    x_val, y_val = rng.random((20, 12, 12, 2), dtype=np.float32), rng.integers(0, 2, 20)
    params = TrainParams(epochs=12, batch_size=32, patience=2)
    fitter = Fitter(params)
    model, history, best_epoch = fitter.fit("wide_cnn", x, y, x_val, y_val, seed=3)
    prob = fitter.probability(model, x_val)
    ref, losses, val_losses, ref_best = reference_fit(
        "wide_cnn", x, y, x_val, y_val.astype(np.int32), 3, params
    )
    out = ref(x_val, training=False).numpy()
    ref_prob = 1.0 / (1.0 + np.exp(out[:, 0] - out[:, 1]))
    assert best_epoch == ref_best and len(history["loss"]) == len(losses) > best_epoch  # stopped early
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(history["val_loss"], val_losses, rtol=1e-5)
    np.testing.assert_allclose(prob, ref_prob, atol=1e-5)


def test_class_weights_give_each_class_half_of_the_weight():
    from cytoops.fitter import class_weights

    y = np.array([1, 0, 0, 0, 0])
    w = class_weights(y)(y)
    np.testing.assert_allclose(w, [5 / 2, 5 / 8, 5 / 8, 5 / 8, 5 / 8])  # n / (2 n_class)
    assert w[y == 1].sum() == pytest.approx(w[y == 0].sum())
    np.testing.assert_allclose(class_weights(y)(np.array([0, 1])), [5 / 8, 5 / 2])  # validation rows
    with pytest.raises(ValueError, match="class weighting needs both classes in the training rows"):
        class_weights(np.zeros(4, int))


def _rows(n_pos: int, n: int = 24):
    rng = np.random.default_rng(0)
    y = (np.arange(n) < n_pos).astype(int)
    x = rng.random((n, 16, 16, 3)).astype(np.float32)
    x[y == 1, ..., 0] += 0.3
    return x, y


def test_class_weighting_reweights_the_loss_and_leaves_the_default_loop_untouched():
    from cytoops.fitter import Fitter
    from cytoops.params import TrainParams

    fitter = Fitter(TrainParams(epochs=4, batch_size=8, patience=10, learning_rate=0.003))

    def probability(x, y, **kw):
        model, history, _ = fitter.fit("wide_cnn", x, y, x[:8], y[:8], seed=3, **kw)
        return fitter.probability(model, x), history

    x, y = _rows(n_pos=4)  # 4 responders of 24
    plain, _ = probability(x, y)
    weighted, history = probability(x, y, class_weight=True)
    again, _ = probability(x, y)  # the weighted step compiled beside the default changes nothing of it
    np.testing.assert_array_equal(plain, again)
    fresh = Fitter(fitter.params)
    model, _, _ = fresh.fit("wide_cnn", x, y, x[:8], y[:8], seed=3)
    np.testing.assert_array_equal(plain, fresh.probability(model, x))
    assert not np.allclose(weighted, plain) and len(history["val_loss"]) == 4
    x, y = _rows(n_pos=12)  # balanced rows: every weight is 1, the same fit as without weighting
    np.testing.assert_allclose(probability(x, y, class_weight=True)[0], probability(x, y)[0], atol=1e-6)


def test_the_weighted_loss_is_the_class_weighted_cross_entropy_in_training_and_validation():
    from cytoops.fitter import Fitter
    from cytoops.params import TrainParams

    # a learning rate too small to move the weights: each loss is that of the initial model, known
    fitter = Fitter(TrainParams(epochs=1, batch_size=8, learning_rate=1e-12))
    x, y = _rows(n_pos=4)
    val = np.r_[0:2, 10:16]  # 2 responders, 6 not
    losses = {}
    for weighted in (False, True):
        model, history, _ = fitter.fit("wide_cnn", x, y, x[val], y[val], seed=3, class_weight=weighted)
        p = fitter.probability(model, x).astype(float)
        nll = -np.log(np.where(y == 1, p, 1 - p))
        w = np.where(y == 1, 24 / (2 * 4), 24 / (2 * 20)) if weighted else np.ones(24)
        assert history["loss"][0] == pytest.approx(np.mean(w * nll), rel=1e-4)
        assert history["val_loss"][0] == pytest.approx(np.mean(w[val] * nll[val]), rel=1e-4)
        losses[weighted] = history["loss"][0]
    assert losses[True] != pytest.approx(losses[False], rel=1e-3)
