"""fitter: one small Keras model trained from fresh seeded weights by a plain mini-batch loop.

The one training loop of cytoops: cross-validation (`train`, the local and Ray backends) and the champions'
refit (`register`) run it, and `multitask` draws its initial weights the same way (`initial_weights`).
"""

from __future__ import annotations

import numpy as np

from cytoops.params import CNN_KINDS, TrainParams


def initial_weights(model, rng: np.random.Generator) -> list[np.ndarray]:
    """Fresh weights as Keras draws them (Glorot-uniform kernels, zero biases), from `rng`."""
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.name == "kernel":
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, shape).astype(np.float32))
        elif variable.name == "bias":
            weights.append(np.zeros(shape, dtype=np.float32))
        else:
            raise ValueError(f"no initial-weight rule for {variable.path}: extend fitter.initial_weights")
    return weights


class Fitter:
    """Trains a unit from fresh seeded weights, without rebuilding or retracing anything.

    One Keras model, optimizer and pair of compiled functions (a whole epoch of mini-batch steps in one graph,
    the forward pass) is kept per (architecture, input shape). Each fit resets the weights to those a fresh
    build with the unit's seed would have and the optimizer to its initial state, then runs a plain
    mini-batch loop, one graph call per epoch (the steps of a Python loop over batches): the study's loss
    (two logits + sparse categorical cross-entropy for the CNNs, sigmoid + binary cross-entropy for the ViT
    heads), Adam, shuffling from `np.random.default_rng(seed)`, and Keras' early-stopping rule (stop after
    `patience` epochs without a lower validation loss, restore the best weights). Keras' `fit` does the same
    but builds a tf.data pipeline and callbacks per call: on these small fits, most of the time.

    Adam's update is compiled by XLA, fused into one pass over each weight: Keras runs it as ~11 kernels,
    each a pass over memory, and the wide CNN's 3.9M-weight dense layer made it a third of a step. It differs
    from Keras' unfused update by float round-off only (benchmarks/README.md: test probabilities within 3e-7,
    the same epochs; seed noise moves them by ~0.1).
    """

    def __init__(self, params: TrainParams):
        self.params = params
        self._slots: dict[tuple, dict] = {}

    def _build(self, architecture: str, input_shape: tuple[int, ...]):
        from cytoops import models

        spec = models.get(architecture)
        mp = models.ModelParams(learning_rate=self.params.learning_rate, dtype_policy=self.params.precision)
        if spec.kind in CNN_KINDS:
            return spec.build(input_shape, mp)
        return models.build_head(architecture, input_shape[0], mp)

    def _slot(self, architecture: str, input_shape: tuple[int, ...]) -> dict:
        key = (architecture, input_shape)
        if key in self._slots:
            return self._slots[key]
        import keras
        import tensorflow as tf

        model = self._build(architecture, input_shape)
        two_logits = model.output_shape[-1] == 2
        loss_fn = (
            keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            if two_logits
            else keras.losses.BinaryCrossentropy()
        )
        optimizer = keras.optimizers.Adam(self.params.learning_rate)
        optimizer.build(model.trainable_variables)
        x_spec = tf.TensorSpec([None, *input_shape], tf.float32)
        y_spec = tf.TensorSpec([None] if two_logits else [None, 1], tf.int32 if two_logits else tf.float32)

        batch_size = self.params.batch_size

        @tf.function(jit_compile=True)
        def apply(grads):  # Adam's update fused by XLA: one pass over each weight instead of ~11 kernels
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

        def epoch(x, y, order, w=None):
            """One pass over (x, y) in the mini-batches `order` makes, in one graph: each batch's mean loss
            (weighted by the rows' `w` when given) and the outputs of every row, in the order's order (no
            step returns to Python)."""
            n = tf.size(order)
            steps = (n + batch_size - 1) // batch_size
            losses = tf.TensorArray(tf.float32, size=steps)
            outs = tf.TensorArray(tf.float32, size=steps, infer_shape=False)
            for i in tf.range(steps):
                batch = order[i * batch_size : tf.minimum(n, (i + 1) * batch_size)]
                weights = {} if w is None else {"sample_weight": tf.gather(w, batch)}
                with tf.GradientTape() as tape:
                    out = model(tf.gather(x, batch), training=True)
                    loss = loss_fn(tf.gather(y, batch), out, **weights)
                apply(tape.gradient(loss, model.trainable_variables))
                losses = losses.write(i, loss)
                outs = outs.write(i, tf.cast(out, tf.float32))
            return losses.stack(), outs.concat()

        order_spec, w_spec = tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.float32)
        train_epoch = tf.function(epoch, input_signature=[x_spec, y_spec, order_spec])
        # the class-weighted epoch (`fit(class_weight=True)`), traced on first use only
        weighted_epoch = tf.function(epoch, input_signature=[x_spec, y_spec, order_spec, w_spec])

        @tf.function(input_signature=[x_spec])
        def forward(x):
            return tf.cast(model(x, training=False), tf.float32)

        slot = {
            "model": model,
            "optimizer": optimizer,
            "optimizer_state": [keras.ops.convert_to_numpy(v) for v in optimizer.variables],
            "loss_fn": loss_fn,
            "two_logits": two_logits,
            "train_epoch": train_epoch,
            "weighted_epoch": weighted_epoch,
            "forward": forward,
        }
        self._slots[key] = slot
        return slot

    def _targets(self, slot: dict, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int32) if slot["two_logits"] else y.astype(np.float32).reshape(-1, 1)

    def _outputs(self, slot: dict, x: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                slot["forward"](np.asarray(x[i : i + 256], dtype=np.float32)).numpy()
                for i in range(0, len(x), 256)
            ]
        )

    def _probability(self, slot: dict, out: np.ndarray) -> np.ndarray:
        if slot["two_logits"]:  # softmax of the two logits, class 1
            return 1.0 / (1.0 + np.exp(out[:, 0] - out[:, 1]))
        return out[:, 0]

    def fit(
        self,
        architecture: str,
        x,
        y,
        x_val,
        y_val,
        seed: int,
        epochs: int | None = None,
        class_weight: bool = False,
    ):
        """Train from fresh seeded weights with early stopping on (x_val, y_val), for at most `epochs`
        (default: the params' epochs).

        With `class_weight`, each row's loss is weighted by n / (2 n_class) of the training rows' classes
        (`class_weights`), in training and in the validation loss that early stopping watches; without it
        (the study's protocol) the loop is unchanged.

        With no validation set (x_val None: a champion's refit on all its wells, whose epoch count the folds
        chose) it trains for exactly `epochs` epochs and keeps the last weights: the same seeds, initial
        weights, shuffling and steps as a cross-validation fit, only the stopping rule is fixed.
        Returns (model, history, best_epoch). The model is reused by the next fit of the same architecture
        and shape: use it (e.g. `probability`, or save it) before fitting again.
        """
        import tensorflow as tf

        slot = self._slot(architecture, tuple(x.shape[1:]))
        model, p = slot["model"], self.params
        rng = np.random.default_rng(seed)
        model.set_weights(initial_weights(model, rng))
        for variable, value in zip(slot["optimizer"].variables, slot["optimizer_state"], strict=True):
            variable.assign(value)
        validate = x_val is not None
        x = tf.constant(np.asarray(x, dtype=np.float32))  # once per fit: every epoch gathers its batches
        y_fit = tf.constant(self._targets(slot, y))
        y_check = self._targets(slot, y_val) if validate else None
        weigh = class_weights(y) if class_weight else None
        w_fit = tf.constant(weigh(y)) if weigh else None
        w_val = {"sample_weight": weigh(y_val)} if weigh and validate else {}
        history: dict[str, list[float]] = {"loss": [], "val_loss": [], "accuracy": [], "val_accuracy": []}
        best_loss, best_epoch, best_weights, wait = np.inf, 0, None, 0
        for epoch in range(p.epochs if epochs is None else epochs):
            loss, accuracy = self._epoch(slot, x, y, y_fit, rng, w_fit)
            history["loss"].append(loss)  # as Keras reports it: the mean over the epoch's batches
            history["accuracy"].append(accuracy)
            if not validate:
                best_epoch = epoch
                continue
            val_out = self._outputs(slot, x_val)
            val_loss = float(slot["loss_fn"](y_check, val_out, **w_val))
            history["val_loss"].append(val_loss)
            history["val_accuracy"].append(self._accuracy(slot, val_out, y_val))
            if val_loss < best_loss:
                best_loss, best_epoch, best_weights, wait = val_loss, epoch, model.get_weights(), 0
            else:
                wait += 1
                if wait >= p.patience:
                    break
        if validate:
            model.set_weights(best_weights)
        return model, history, best_epoch + 1

    def _epoch(self, slot: dict, x, y, y_fit, rng: np.random.Generator, w=None) -> tuple[float, float]:
        """One pass over (x, y) in shuffled mini-batches: (mean loss, accuracy) as Keras reports them; with
        row weights `w`, the class-weighted epoch."""
        n, size = len(y), self.params.batch_size
        order = rng.permutation(n).astype(np.int32)
        run = (
            slot["train_epoch"](x, y_fit, order) if w is None else slot["weighted_epoch"](x, y_fit, order, w)
        )
        losses, outs = (t.numpy() for t in run)
        loss_sum, correct = 0.0, 0.0
        for step, i in enumerate(range(0, n, size)):
            batch = order[i : i + size]
            loss_sum += float(losses[step]) * len(batch)
            correct += self._accuracy(slot, outs[i : i + size], y[batch]) * len(batch)
        return loss_sum / n, correct / n

    def _accuracy(self, slot: dict, out: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean((self._probability(slot, out) >= 0.5) == (y == 1)))

    def probability(self, model, x) -> np.ndarray:
        """P(responder) for each row of x, from the model `fit` just returned."""
        slot = next(s for s in self._slots.values() if s["model"] is model)
        return self._probability(slot, self._outputs(slot, x))


def class_weights(y: np.ndarray):
    """Row weights from the classes of `y` (1 responder, 0 not): a function of labels giving each row
    n / (2 n_class) of `y`'s, so that each class weighs half (`multitask.class_weights`, one column).
    ValueError when `y` holds one class."""
    from cytoops.multitask import class_weights as per_column

    w_pos, w_neg = (float(w[0]) for w in per_column(np.asarray(y, dtype=float).reshape(-1, 1)))
    if not w_pos:  # per_column gives 0 to a column of one class
        raise ValueError(f"class weighting needs both classes in the training rows; got only {set(y)}")
    return lambda labels: np.where(np.asarray(labels) == 1, w_pos, w_neg).astype(np.float32)
