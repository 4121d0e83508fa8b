"""multitask: one CNN trained on every labelled well of a plate, one output per kept cytokine.

Hofmarcher et al. (2019) found CNNs win on cell images when they learn many assays at once; a plate gives
each cytokine ~28 balanced wells but ~370 labelled ones, and all its cytokines share the same morphology.
So `multitask_cnn` (models.py) reads the thumbnails of all the training fold's wells with a sigmoid logit per
cytokine; the loss is binary cross-entropy masked where a well has no label for a cytokine, and weighted per
cytokine so responders and non-responders count alike (class balance without throwing wells away).

Folds are the plate's folds (`train.plate_folds`), shared by every cytokine; early stopping watches a
validation split carved (grouped by treatment) from the training fold; augmentation views come from the
view bank for training wells only. Seeded: initial weights and batch order from `np.random.default_rng`.
"""

from __future__ import annotations

import numpy as np


def class_weights(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cytokine (column): weights of a responder and of a non-responder so each class sums to half.

    y is (n_wells, n_cytokines) of 1, 0 or NaN. A column with one class gets weight 0 (nothing to learn)."""
    pos = np.nansum(y == 1, axis=0).astype(float)
    neg = np.nansum(y == 0, axis=0).astype(float)
    ok = (pos > 0) & (neg > 0)
    total = pos + neg
    w_pos = np.where(ok, total / (2 * np.maximum(pos, 1)), 0.0)
    w_neg = np.where(ok, total / (2 * np.maximum(neg, 1)), 0.0)
    return w_pos.astype(np.float32), w_neg.astype(np.float32)


def masked_loss(logits, y, w_pos, w_neg):
    """Mean over labelled cells of class-weighted binary cross-entropy (TensorFlow tensors)."""
    import tensorflow as tf

    labelled = tf.logical_not(tf.math.is_nan(y))
    target = tf.where(labelled, y, tf.zeros_like(y))
    weight = tf.where(labelled, target * w_pos + (1 - target) * w_neg, tf.zeros_like(y))
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
    return tf.reduce_sum(bce * weight) / tf.maximum(tf.reduce_sum(weight), 1e-6)


def fit(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    *,
    seed: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
):
    """Train from seeded weights with early stopping on the validation wells; without them (x_val None: a
    refit on every labelled well, the epoch count chosen by the folds) exactly `epochs` epochs, last weights.

    x_*: (n, S, S, C) float32 thumbnails (x_fit holds every training view); y_*: (n, K) of 1/0/NaN.
    Returns (model, history with loss and val_loss per epoch, best epoch (1-based)).
    """
    import keras
    import tensorflow as tf

    from cytoops import models
    from cytoops.fitter import initial_weights

    n_out = y_fit.shape[1]
    model = models.build_multitask_cnn(tuple(x_fit.shape[1:]), models.ModelParams(n_outputs=n_out))
    rng = np.random.default_rng(seed)
    model.set_weights(initial_weights(model, rng))
    optimizer = keras.optimizers.Adam(learning_rate)
    w_pos, w_neg = (tf.constant(w) for w in class_weights(y_fit))
    x_spec = tf.TensorSpec([None, *x_fit.shape[1:]], tf.float32)
    y_spec = tf.TensorSpec([None, n_out], tf.float32)

    @tf.function(input_signature=[x_spec, y_spec])
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = masked_loss(model(x, training=True), y, w_pos, w_neg)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    y_fit32 = y_fit.astype(np.float32)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best, best_epoch, best_weights, wait = np.inf, 0, model.get_weights(), 0
    for epoch in range(epochs):
        order = rng.permutation(len(x_fit))
        total = 0.0
        for i in range(0, len(order), batch_size):
            batch = order[i : i + batch_size]
            total += float(step(x_fit[batch], y_fit32[batch])) * len(batch)
        history["loss"].append(total / len(order))
        if x_val is None:
            best_epoch = epoch
            continue
        logits = tf.constant(_logits(model, x_val))
        val = float(masked_loss(logits, tf.constant(y_val.astype(np.float32)), w_pos, w_neg))
        history["val_loss"].append(val)
        if val < best:
            best, best_epoch, best_weights, wait = val, epoch, model.get_weights(), 0
        else:
            wait += 1
            if wait >= patience:
                break
    if x_val is not None:
        model.set_weights(best_weights)
    return model, history, best_epoch + 1


def _logits(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)]
    ).astype(np.float32)


def probabilities(model, x: np.ndarray) -> np.ndarray:
    """P(responder) per well (rows) and cytokine (columns): the sigmoid of the model's logits."""
    return 1.0 / (1.0 + np.exp(-_logits(model, np.asarray(x, dtype=np.float32))))


def fit_predict(
    x_fit, y_fit, x_val, y_val, x_test, **kwargs
) -> tuple[np.ndarray, dict[str, list[float]], int]:
    """`fit`, then P(responder) of the test wells: (probabilities (n_test, K), history, best epoch)."""
    model, history, best_epoch = fit(x_fit, y_fit, x_val, y_val, **kwargs)
    return probabilities(model, x_test), history, best_epoch
