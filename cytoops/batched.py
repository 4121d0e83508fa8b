"""Many small models at once: K units of one architecture and input shape trained by one batched step.

`BatchedFitter.fit(architecture, units)` trains K units together. Each weight of the architecture is stacked
K times (a leading unit axis) and every layer runs on all K at once as batched matrix products:

- Conv2D (stride 1, `valid` padding): `conv="grouped"`, one grouped convolution (the K units' channels side
  by side, K groups; the default where TensorFlow sees a GPU), or `conv="unrolled"`, K convolutions in the one
  compiled step (the default on CPU, where oneDNN's grouped convolution is about 2x slower than K plain ones);
- MaxPooling2D: the K units folded into the batch axis;
- Flatten, Dense (relu, sigmoid, linear) and LeakyReLU: batched matmuls and elementwise ops.

That covers all five study architectures (`models.py`: wide_cnn, deep_cnn and the three ViT heads); any other
layer is a ValueError naming it. Float32 only.

Each unit keeps what a one-at-a-time `fitter.Fitter.fit` gives it: its own data and batches (every step takes
each running unit's next mini-batch, at its own pace: a unit with fewer images starts its next epoch sooner),
its seed (`np.random.default_rng(seed)` draws the initial weights with `fitter.initial_weights`, then each
epoch's shuffle), its own Adam step count, and Keras' early-stopping rule on its own validation loss, checked
when its own epoch ends (a stopped unit sits out every later step, its weights frozen at its best epoch, while
the others go on; once stopped units are half the stack, the running ones move to a smaller one). So each unit
matches its one-at-a-time fit up to float round-off (tested): a unit's last, partial batch is padded to the
full size and the stacked sums run in another order; over many epochs a deep CNN can amplify that round-off
(benchmarks/README.md).

`run_tasks` runs `train.run_task` on tasks of one architecture with all their units fitted together
(train.batched: true; train.batched_tasks tasks at a time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from cytoops.params import TrainParams

BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam's defaults, as fitter.Fitter uses it


@dataclass
class UnitData:
    """One unit's arrays and seed, as `train.run_task` hands them to `Fitter.fit` and `probability`."""

    x: np.ndarray
    y: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    seed: int


@dataclass
class UnitFit:
    prob: np.ndarray  # P(responder) of each x_test row, from the unit's best weights
    history: dict[str, list[float]]
    best_epoch: int  # 1-based, as fitter.Fitter.fit returns it


def layer_plan(model) -> list[tuple]:
    """The model's layers as (op, ...) steps the stacked forward pass runs; a ValueError for any other."""
    steps, index = [], 0
    for layer in model.layers:
        kind = type(layer).__name__
        config = layer.get_config()
        activation = config.get("activation", "linear")
        if kind == "Conv2D":
            if tuple(config["strides"]) != (1, 1) or config["padding"] != "valid" or not config["use_bias"]:
                raise ValueError(f"batched: {layer.name} is not a stride-1 valid Conv2D with bias")
            steps.append(("conv", index, tuple(config["kernel_size"]), activation))
            index += 2
        elif kind == "Dense":
            if not config["use_bias"]:
                raise ValueError(f"batched: {layer.name} is a Dense layer without bias")
            steps.append(("dense", index, activation))
            index += 2
        elif kind == "MaxPooling2D":
            steps.append(("pool", tuple(config["pool_size"]), tuple(config["strides"]), config["padding"]))
        elif kind == "Flatten":
            steps.append(("flatten",))
        elif kind == "LeakyReLU":
            steps.append(("leaky", float(config["negative_slope"])))
        else:
            raise ValueError(
                f"batched: no stacked version of {kind} ({layer.name}): extend batched.layer_plan"
            )
    if steps[-1][0] != "dense" or steps[-1][2] not in ("linear", "sigmoid"):
        raise ValueError("batched: the last layer must be a Dense with linear (logits) or sigmoid output")
    return steps


def _activate(x, activation: str, final: bool):
    import tensorflow as tf

    if activation == "relu":
        return tf.nn.relu(x)
    if activation in ("linear", None) or (activation == "sigmoid" and final):
        return x  # a sigmoid output stays a logit here: the loss and the probability apply it
    raise ValueError(f"batched: activation {activation!r} is not supported")


def _conv(x, kernel, conv: str):
    """K stride-1 valid convolutions, unit k's input x[k] (B, H, W, C) with its kernel[k] (kh, kw, C, F)."""
    import tensorflow as tf

    if conv == "unrolled":  # K oneDNN/cuDNN convolutions in one graph: fastest on CPU
        return tf.stack([tf.nn.conv2d(x[j], kernel[j], 1, "VALID") for j in range(x.shape[0])])
    k, b, h, w, c = x.shape  # grouped: one convolution of K groups (channels side by side)
    kh, kw, _, f = kernel.shape[1:]
    xs = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), [-1, h, w, k * c])
    ks = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, c, k * f])
    out = tf.nn.conv2d(xs, ks, 1, "VALID")
    return tf.transpose(tf.reshape(out, [-1, *out.shape[1:3], k, f]), [3, 0, 1, 2, 4])


def stacked_forward(steps: list[tuple], weights: list, x, conv: str = "unrolled"):
    """Logits of K stacked models: x is (K, B, ...), weights[i] is (K, *shape of the model's weight i)."""
    import tensorflow as tf

    for n, step in enumerate(steps):
        final = n == len(steps) - 1
        if step[0] == "conv":
            _, i, _, activation = step
            out = _conv(x, weights[i], conv)
            x = _activate(out + weights[i + 1][:, None, None, None, :], activation, final)
        elif step[0] == "pool":
            _, size, strides, padding = step
            k = tf.shape(x)[0]
            folded = tf.reshape(x, [-1, *x.shape[2:]])
            pooled = tf.nn.max_pool2d(folded, size, strides, padding.upper())
            x = tf.reshape(pooled, [k, -1, *pooled.shape[1:]])
        elif step[0] == "flatten":
            x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], int(np.prod(x.shape[2:]))])
        elif step[0] == "dense":
            _, i, activation = step
            x = _activate(tf.matmul(x, weights[i]) + weights[i + 1][:, None, :], activation, final)
        elif step[0] == "leaky":
            x = tf.nn.leaky_relu(x, alpha=step[1])
    return x


@dataclass
class _Run:
    """One unit's place in a batched fit: its shuffle and place in the epoch, history and early stopping."""

    rng: np.random.Generator
    order: np.ndarray  # this epoch's shuffle of the unit's rows
    position: int = 0  # rows of `order` trained on this epoch
    loss_sum: float = 0.0  # this epoch's summed loss and correct calls, over its rows so far
    correct: float = 0.0
    epoch: int = 0  # epochs ended (0-based index of the current one)
    best_loss: float = np.inf
    best_epoch: int = 0
    wait: int = 0  # epochs since the best one
    running: bool = True
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"loss": [], "val_loss": [], "accuracy": [], "val_accuracy": []}
    )

    def end_epoch(self, n: int, val_loss: float, val_accuracy: float, p: TrainParams) -> bool:
        """Whether the validation loss improved, after the epoch's history and Keras' early-stopping rule."""
        self.history["loss"].append(self.loss_sum / n)
        self.history["accuracy"].append(self.correct / n)
        self.history["val_loss"].append(val_loss)
        self.history["val_accuracy"].append(val_accuracy)
        improved = val_loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch, self.wait = val_loss, self.epoch, 0
        else:
            self.wait += 1
            if self.wait >= p.patience:
                self.running = False
        self.epoch += 1
        if self.epoch >= p.epochs:
            self.running = False
        if self.running:  # the next epoch's shuffle, drawn where fitter.Fitter draws it
            self.order, self.position, self.loss_sum, self.correct = self.rng.permutation(n), 0, 0.0, 0.0
        return improved


def _val_loss_fn(two_logits: bool):
    """The Keras loss fitter.Fitter validates with: sparse categorical from two logits, else binary."""
    import keras

    if two_logits:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.BinaryCrossentropy()


def _keep_best(full: dict, slot: dict, improved: list[tuple[int, int]]) -> None:
    """Copies the improved units' weights (rows of `slot`) into their rows of the full stack's `best`."""
    import tensorflow as tf

    rs, js = [r for r, _ in improved], [[j] for _, j in improved]
    for keep, w in zip(full["best"], slot["weights"], strict=True):
        keep.scatter_nd_update(js, tf.gather(w, rs))


class BatchedFitter:
    """Trains K units of one architecture and input shape at once (see the module docstring).

    One set of stacked variables, Adam moments and compiled step is kept per (architecture, input shape, K).
    """

    def __init__(self, params: TrainParams, conv: str | None = None):
        """conv: "grouped" or "unrolled" (module docstring); None: grouped where TensorFlow sees a GPU."""
        if conv is None:
            import tensorflow as tf

            conv = "grouped" if tf.config.list_physical_devices("GPU") else "unrolled"
        if conv not in ("grouped", "unrolled"):
            raise ValueError(f"batched: conv is {conv!r}: use grouped or unrolled")
        self.params, self.conv = params, conv
        self._models: dict[tuple, object] = {}
        self._slots: dict[tuple, dict] = {}

    def model(self, architecture: str, input_shape: tuple[int, ...]):
        """The one-at-a-time Keras model: its layers and weight order are what the stacked step follows."""
        from cytoops.fitter import Fitter

        key = (architecture, input_shape)
        if key not in self._models:
            self._models[key] = Fitter(self.params)._build(architecture, input_shape)
        return self._models[key]

    def _slot(self, architecture: str, input_shape: tuple[int, ...], k: int) -> dict:
        key = (architecture, input_shape, k)
        if key in self._slots:
            return self._slots[key]
        import tensorflow as tf

        model = self.model(architecture, input_shape)
        steps = layer_plan(model)
        two_logits = model.output_shape[-1] == 2
        shapes = [tuple(w.shape) for w in model.weights]
        weights = [tf.Variable(tf.zeros([k, *s]), name=f"w{i}") for i, s in enumerate(shapes)]
        moments = [tf.Variable(tf.zeros([k, *s])) for s in shapes]
        velocities = [tf.Variable(tf.zeros([k, *s])) for s in shapes]
        steps_taken = tf.Variable(tf.zeros([k]))
        best = [tf.Variable(tf.zeros([k, *s])) for s in shapes]  # each unit's weights at its best epoch
        lr = float(self.params.learning_rate)
        b = self.params.batch_size
        x_spec = tf.TensorSpec([k, b, *input_shape], tf.float32)
        y_spec = tf.TensorSpec([k, b], tf.float32)
        mask_spec = tf.TensorSpec([k, b], tf.float32)

        def unit_losses(logits, y, mask):
            if two_logits:
                per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits)
            else:
                per_row = tf.nn.sigmoid_cross_entropy_with_logits(y, logits[..., 0])
            return tf.reduce_sum(per_row * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)

        # autograph=False: plain Python loops only, and no conversion cache (in a long test session, autograph
        # once handed this step another closure's converted code: "missing arguments y and mask")
        @tf.function(input_signature=[x_spec, y_spec, mask_spec], autograph=False)
        def train_step(x, y, mask):
            active = tf.cast(tf.reduce_sum(mask, axis=1) > 0, tf.float32)  # units with a batch this step
            with tf.GradientTape() as tape:
                logits = stacked_forward(steps, weights, x, self.conv)
                losses = unit_losses(logits, y, mask)
                total = tf.reduce_sum(losses)
            grads = tape.gradient(total, weights)
            t = steps_taken + active
            t_safe = tf.maximum(t, 1.0)  # a unit that sits out its first step: alpha unused, keep it finite
            alpha = lr * tf.sqrt(1 - tf.pow(BETA_2, t_safe)) / (1 - tf.pow(BETA_1, t_safe))
            for w, m, v, g in zip(weights, moments, velocities, grads, strict=True):
                on = tf.reshape(active, [k] + [1] * (len(w.shape) - 1))  # 0: the unit sits this step out
                m.assign_add(on * ((g - m) * (1 - BETA_1)))
                v.assign_add(on * ((tf.square(g) - v) * (1 - BETA_2)))
                w.assign_sub(on * ((m * tf.reshape(alpha, on.shape)) / (tf.sqrt(v) + EPSILON)))
            steps_taken.assign(t)
            return losses, logits

        @tf.function(input_signature=[x_spec], autograph=False)
        def forward(x):
            return stacked_forward(steps, weights, x, self.conv)

        slot = dict(
            model=model,
            two_logits=two_logits,
            weights=weights,
            state=[*moments, *velocities, steps_taken],
            best=best,
            train_step=train_step,
            forward=forward,
        )
        self._slots[key] = slot
        return slot

    def _probability(self, slot: dict, logits: np.ndarray) -> np.ndarray:
        """As fitter.Fitter: softmax class 1 of two logits, or the sigmoid of one (float32)."""
        if slot["two_logits"]:
            return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))
        return 1.0 / (1.0 + np.exp(-logits[:, 0]))

    def _outputs(self, slot: dict, xs: list[np.ndarray], shape: tuple[int, ...]) -> list[np.ndarray]:
        """Each unit's logits for its own rows xs[k] (None: none), in batches of train.batch_size."""
        k, b = len(xs), self.params.batch_size
        longest = max((len(x) for x in xs if x is not None), default=0)
        outs = [[] for _ in range(k)]
        for start in range(0, longest, b):
            chunk = np.zeros((k, b, *shape), dtype=np.float32)
            for u, x in enumerate(xs):
                if x is not None and start < len(x):
                    part = x[start : start + b]
                    chunk[u, : len(part)] = part
            logits = slot["forward"](chunk).numpy()
            for u, x in enumerate(xs):
                if x is not None and start < len(x):
                    outs[u].append(logits[u, : min(b, len(x) - start)])
        return [np.concatenate(o) if o else None for o in outs]

    def _compact(self, slot: dict, architecture: str, shape: tuple[int, ...], keep: list[int]) -> dict:
        """The slot of len(keep) rows, holding rows `keep` of `slot` (weights, Adam moments, step counts)."""
        import tensorflow as tf

        small = self._slot(architecture, shape, len(keep))
        for dst, src in zip(small["weights"] + small["state"], slot["weights"] + slot["state"], strict=True):
            dst.assign(tf.gather(src, keep))
        return small

    def fit(self, architecture: str, units: list[UnitData]) -> list[UnitFit]:
        """Train every unit from fresh seeded weights, all at once: each unit's prob, history, best epoch.

        Each unit goes at its own pace: every step takes each running unit's next mini-batch, and a unit
        whose epoch ends is validated (and maybe stopped) then and there, so a unit with fewer images runs
        more epochs in the same steps instead of waiting for the others. When half the rows hold stopped
        units, the running ones move to a smaller stack (another compiled step, kept for later fits).
        """
        shape = tuple(units[0].x.shape[1:])
        if any(tuple(u.x.shape[1:]) != shape for u in units):
            raise ValueError("batched: units of one fit must share their input shape")
        full = slot = self._slot(architecture, shape, len(units))
        loss_fn = _val_loss_fn(slot["two_logits"])
        runs = self._start(slot, units)
        rows = list(range(len(units)))  # rows[r]: the unit in row r of the current stacked variables
        while any(run.running for run in runs):
            if 2 * sum(run.running for run in runs) <= len(rows) and len(rows) > 1:  # half are stopped: drop
                keep = [r for r, j in enumerate(rows) if runs[j].running]
                slot = self._compact(slot, architecture, shape, keep)
                rows = [rows[r] for r in keep]
            ended = self._step(slot, units, runs, rows, shape)
            if not ended:
                continue
            improved = self._end_epochs(slot, units, runs, rows, ended, loss_fn, shape)
            if improved:
                _keep_best(full, slot, improved)
        for w, keep in zip(full["weights"], full["best"], strict=True):
            w.assign(keep)
        test_logits = self._outputs(full, [u.x_test for u in units], shape)
        return [
            UnitFit(self._probability(full, test_logits[j]), run.history, run.best_epoch + 1)
            for j, run in enumerate(runs)
        ]

    def _start(self, slot: dict, units: list[UnitData]) -> list[_Run]:
        """Each unit's fresh run; the slot's weights set to the units' seeded initial weights, Adam zeroed."""
        from cytoops.fitter import initial_weights

        rngs = [np.random.default_rng(u.seed) for u in units]
        fresh = [initial_weights(slot["model"], rng) for rng in rngs]
        for i, w in enumerate(slot["weights"]):
            w.assign(np.stack([f[i] for f in fresh]))
        for state in slot["state"]:
            state.assign(np.zeros(state.shape, dtype=np.float32))
        return [_Run(rng, rng.permutation(len(u.x))) for u, rng in zip(units, rngs, strict=True)]

    def _step(
        self, slot: dict, units: list[UnitData], runs: list[_Run], rows: list[int], shape: tuple[int, ...]
    ) -> list[int]:
        """The rows whose unit ended its epoch, after one training step on each running unit's next batch."""
        b = self.params.batch_size
        x = np.zeros((len(rows), b, *shape), dtype=np.float32)
        y = np.zeros((len(rows), b), dtype=np.float32)
        mask = np.zeros((len(rows), b), dtype=np.float32)
        picks = [None] * len(rows)
        for r, j in enumerate(rows):
            if runs[j].running:
                batch = runs[j].order[runs[j].position : runs[j].position + b]
                picks[r] = batch
                x[r, : len(batch)] = units[j].x[batch]
                y[r, : len(batch)] = units[j].y[batch]
                mask[r, : len(batch)] = 1.0
        losses, logits = slot["train_step"](x, y, mask)
        losses, logits = losses.numpy(), logits.numpy()
        ended = []
        for r, batch in enumerate(picks):
            if batch is None:
                continue
            run, unit = runs[rows[r]], units[rows[r]]
            run.loss_sum += float(losses[r]) * len(batch)
            prob = self._probability(slot, logits[r, : len(batch)])
            run.correct += float(np.mean((prob >= 0.5) == (unit.y[batch] == 1))) * len(batch)
            run.position += len(batch)
            if run.position >= len(unit.x):
                ended.append(r)
        return ended

    def _end_epochs(
        self,
        slot: dict,
        units: list[UnitData],
        runs: list[_Run],
        rows: list[int],
        ended: list[int],
        loss_fn,
        shape: tuple[int, ...],
    ) -> list[tuple[int, int]]:
        """(row, unit) of the units whose validation loss improved, after validating every ended epoch."""
        val_logits = self._outputs(
            slot, [units[j].x_val if r in ended else None for r, j in enumerate(rows)], shape
        )
        improved = []
        for r in ended:
            j = rows[r]
            u = units[j]
            if slot["two_logits"]:
                out, target = val_logits[r], u.y_val.astype(np.int32)
            else:
                out = self._probability(slot, val_logits[r]).astype(np.float32).reshape(-1, 1)
                target = u.y_val.astype(np.float32).reshape(-1, 1)
            val_prob = self._probability(slot, val_logits[r])
            val_accuracy = float(np.mean((val_prob >= 0.5) == (u.y_val == 1)))
            if runs[j].end_epoch(len(u.x), float(loss_fn(target, out)), val_accuracy, self.params):
                improved.append((r, j))
        return improved


# ---- train.run_task with a task's units fitted together ----------------------------------------------------


class _Recorder:
    """Stands in for fitter.Fitter in a first pass of run_task: keeps each unit's arrays, trains nothing."""

    def __init__(self):
        self.units: list[tuple[str, UnitData]] = []

    def fit(self, architecture, x, y, x_val, y_val, seed):
        self.units.append((architecture, UnitData(x, y, x_val, y_val, np.empty((0,)), seed)))
        return len(self.units) - 1, {"loss": []}, 0

    def probability(self, model, x):
        self.units[model][1].x_test = x
        return np.zeros(len(x))


class _Replay:
    """Stands in for fitter.Fitter in the second pass: hands back each unit's batched result, in order."""

    def __init__(self, units: list[tuple[str, UnitData]], fits: list[UnitFit] | Exception):
        self.units, self.fits, self.calls = units, fits, 0

    def fit(self, architecture, x, y, x_val, y_val, seed):
        i = self.calls
        if i >= len(self.units) or self.units[i][1].seed != seed or self.units[i][0] != architecture:
            raise RuntimeError("batched: run_task asked for units in another order than it first did")
        self.calls += 1
        if isinstance(self.fits, Exception):  # the batched fit failed: every unit is a recorded failure
            raise self.fits
        return i, self.fits[i].history, self.fits[i].best_epoch

    def probability(self, model, x):
        return self.fits[model].prob


def run_tasks(
    run, tasks: list, inputs, params, fitter: BatchedFitter, sources: dict
) -> list[dict[str, list]]:
    """`run(task, ...)` (train.run_task) for each task, all their units fitted at once by `fitter`.

    The tasks share an architecture (and so an input shape). run_task is called twice per task: first with a
    recorder that collects each unit's arrays (no training), then, after one batched fit of every task's
    units, with a replay that hands each unit its result (or the batched fit's error, which run_task then
    records for each unit). Units run_task records as failures (e.g. no validation split) are not fitted.
    A unit's `seconds` is its equal share of the batched fit's time.
    """
    recorders = [_Recorder() for _ in tasks]
    for task, recorder in zip(tasks, recorders, strict=True):
        run(task, inputs, params, recorder, sources)
    units = [unit for recorder in recorders for unit in recorder.units]
    fits, seconds = [], 0.0
    if units:
        t0 = time.perf_counter()
        try:
            fits = fitter.fit(units[0][0], [u for _, u in units])
        except Exception as err:  # noqa: BLE001 - recorded per unit by run_task, as a one-at-a-time failure
            fits = err
        seconds = time.perf_counter() - t0
    parts, start = [], 0
    for task, recorder in zip(tasks, recorders, strict=True):
        n = len(recorder.units)
        mine = fits if isinstance(fits, Exception) else fits[start : start + n]
        part = run(task, inputs, params, _Replay(recorder.units, mine), sources)
        for row in part["fits"]:
            row["seconds"] = round(seconds / len(units), 3)
        parts.append(part)
        start += n
    return parts
