"""Where a wide_cnn training step's time goes, op by op, on one TensorFlow thread (wide_cnn_ops.json).

    PYTHONPATH=. .venv/bin/python benchmarks/wide_cnn_ops.py --out benchmarks/wide_cnn_ops.json

One batch of 32 random 64x64x3 images, the study's wide CNN as `models.build_wide_cnn` builds it: each part of
a step (the conv layer forward and its weight gradient, the dense layer's three matrix products, ReLU's
gradient, Adam's fused update, the whole step as `fitter.Fitter` runs it) timed as the mean of 30 calls of a
tf.function after 2 warm-up calls, with its FLOPs and GFLOP/s; the same thread's fp32 matmul rate
(`probe.matmul_gflops`) for scale. Then the whole step of both CNNs under `mixed_bfloat16` against float32
(train.precision).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import probe  # noqa: E402 - benchmarks/ itself, put on the path above
import trainers  # noqa: E402

from cytoops import machine  # noqa: E402

BATCH, SIZE = 32, 64  # the study's batch and thumbnail size


def mean_ms(f, *args, n: int = 30) -> float:
    import tensorflow as tf

    f(*args), f(*args)
    t = time.perf_counter()
    for _ in range(n):
        out = f(*args)
    [np.asarray(v) for v in tf.nest.flatten(out)]
    return (time.perf_counter() - t) / n * 1e3


def step_fn(model, tf, keras):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=True)
    def apply(grads):
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    @tf.function
    def grads(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def step(x, y):
        g = grads(x, y)
        apply(g)
        return g[0]  # something to wait for

    return grads, apply, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    out_path = parser.parse_args().out
    machine.import_tensorflow()
    import keras
    import tensorflow as tf

    from cytoops import models

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = models.build_wide_cnn((SIZE, SIZE, 3), models.ModelParams())
    first = {type(layer).__name__: layer for layer in reversed(model.layers)}
    conv, dense = first["Conv2D"], first["Dense"]  # the conv layer and the dense layer on its whole map
    _, out_hw, _, filters = conv.output.shape  # the layer shapes as the study's network has them
    flat, hidden = dense.kernel.shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((BATCH, SIZE, SIZE, 3), dtype=np.float32))
    y = tf.constant(rng.integers(0, 2, BATCH).astype(np.int32))
    h = tf.constant(rng.random((BATCH, flat), dtype=np.float32))
    w = tf.constant(rng.random((flat, hidden), dtype=np.float32) * 0.01)
    dy = tf.constant(rng.random((BATCH, hidden), dtype=np.float32))
    act = tf.constant(rng.random((BATCH, out_hw, out_hw, filters), dtype=np.float32) - 0.5)
    grad4 = tf.constant(rng.random((BATCH, out_hw, out_hw, filters), dtype=np.float32))
    kernel = tf.constant(rng.random(conv.kernel.shape, dtype=np.float32))

    grads, apply, step = step_fn(model, tf, keras)
    g = grads(x, y)
    conv_flops = 2 * BATCH * out_hw * out_hw * int(np.prod(conv.kernel.shape))
    dense_flops = 2 * BATCH * flat * hidden
    parts = {  # name: (function, args, FLOPs)
        "conv forward": (tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "VALID")), (), conv_flops),
        "conv weight gradient": (
            tf.function(
                lambda: tf.raw_ops.Conv2DBackpropFilter(
                    input=x,
                    filter_sizes=list(conv.kernel.shape),
                    out_backprop=grad4,
                    strides=[1, 1, 1, 1],
                    padding="VALID",
                )
            ),
            (),
            conv_flops,
        ),
        "dense forward (h @ W)": (tf.function(lambda: tf.matmul(h, w)), (), dense_flops),
        "dense weight gradient (h^T @ dy)": (
            tf.function(lambda: tf.matmul(h, dy, transpose_a=True)),
            (),
            dense_flops,
        ),
        "dense input gradient (dy @ W^T)": (
            tf.function(lambda: tf.matmul(dy, w, transpose_b=True)),
            (),
            dense_flops,
        ),
        "ReLU gradient of the conv map": (
            tf.function(lambda: tf.raw_ops.ReluGrad(gradients=grad4, features=act)),
            (),
            0,
        ),
        "Adam update (XLA-fused)": (apply, (g,), 0),
        "whole step": (step, (x, y), 3 * BATCH * trainers.forward_flops(model)),  # the bench's accounting
    }
    rows = {}
    for name, (f, args, flops) in parts.items():
        ms = mean_ms(f, *args)
        rows[name] = {"ms": round(ms, 2), "gflops": round(flops / ms / 1e6, 1) if flops else None}
    precision = {}
    for arch in ("wide_cnn", "deep_cnn"):
        for policy in ("float32", "mixed_bfloat16"):
            m = models.REGISTRY[arch].build((SIZE, SIZE, 3), models.ModelParams(dtype_policy=policy))
            precision.setdefault(arch, {})[policy] = round(mean_ms(step_fn(m, tf, keras)[2], x, y), 2)
        precision[arch]["speedup_bf16"] = round(
            precision[arch]["float32"] / precision[arch]["mixed_bfloat16"], 2
        )
    result = {
        "what": __doc__.splitlines()[0],
        "machine": {"cpu_model": probe.cpu_model(), "cpu_isa": probe.cpu_isa(), "threads": 1},
        "tensorflow": tf.__version__,
        "matmul_gflops_fp32_one_thread": round(probe.matmul_gflops(), 1),
        "wide_cnn_step_parts": rows,
        "step_ms_by_precision": precision,
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
