"""models: the study's parameter counts, the frozen ViT backbone and its weights file, `cytoops models`."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from typer.testing import CliRunner

from cytoops import cli, models

STUDY_COUNTS = {
    "wide_cnn": 3_936_674,
    "deep_cnn": 519_010,
    "vit_linear": 769,
    "vit_240k": 240_129,
    "vit_500k": 568_321,
}
SMALL = models.ModelParams(vit_layers=1)


@pytest.mark.parametrize(("name", "count"), STUDY_COUNTS.items())
def test_trainable_parameters_at_one_channel_are_the_studys(name, count):
    assert models.count_trainable(name, 1) == count


def test_the_registry_is_the_five_study_models():
    assert list(models.REGISTRY)[:5] == list(STUDY_COUNTS)
    kinds = [s.kind for s in models.REGISTRY.values()]
    assert kinds == ["cnn", "cnn", "vit", "vit", "vit", "multitask", "cnn_all"]


def test_three_channel_cnns_add_only_the_first_convolutions_weights():
    # 3x3 kernel x 32 filters x 2 more input channels = 576
    assert models.count_trainable("wide_cnn", 3) == STUDY_COUNTS["wide_cnn"] + 576
    assert models.count_trainable("deep_cnn", 3) == STUDY_COUNTS["deep_cnn"] + 576


@pytest.mark.parametrize("name", ["vit_linear", "vit_240k"])
def test_a_full_vit_model_trains_only_its_head(name):
    keras.utils.set_random_seed(0)
    model = models.REGISTRY[name].build((32, 32, 3), SMALL)
    assert models.trainable_params(model) == STUDY_COUNTS[name]
    assert model.count_params() > 1_000_000  # the (frozen) backbone is there
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert tuple(out.shape) == (2, 1)
    assert np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 1))


def test_a_vit_model_takes_three_channels_only():
    with pytest.raises(ValueError, match="takes 3 channels"):
        models.REGISTRY["vit_linear"].build((32, 32, 1), SMALL)


def test_heads_are_for_vit_models_only_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="not a ViT model"):
        models.build_head("wide_cnn", models.VIT_FEATURES, models.ModelParams())
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        models.get("resnet")


def test_cnns_output_two_logits():
    model = models.build_wide_cnn((32, 32, 3), models.ModelParams())
    assert model.output_shape == (None, 2)


def test_build_backbone_with_a_missing_weights_file_is_a_value_error(tmp_path):
    missing = tmp_path / "ViT-B_32.npz"
    with pytest.raises(ValueError, match="ViT weights file .* does not exist"):
        models.build_backbone(models.ModelParams(vit_weights=str(missing), vit_layers=1), image_size=32)


def test_build_backbone_without_weights_is_random_and_frozen():
    keras.utils.set_random_seed(0)
    backbone, pretrained = models.build_backbone(SMALL, image_size=32)
    assert pretrained is False
    assert models.trainable_params(backbone) == 0
    assert backbone.output_shape == (None, models.VIT_FEATURES)


def export_vit_npz(backbone: keras.Model, path: Path, n_layers: int, heads: int = 12) -> None:
    """Write a vit-keras backbone's weights under the key names (and Flax shapes) of vit-keras' published
    ViT npz files, i.e. what `vit_keras.utils.load_weights_numpy` reads."""
    hidden = models.VIT_FEATURES
    arrays: dict[str, np.ndarray] = {}

    def put(prefix: str, layer, names: tuple[str, ...]) -> None:
        for name, value in zip(names, layer.get_weights(), strict=True):
            arrays[f"{prefix}/{name}"] = value

    put("embedding", backbone.get_layer("embedding"), ("kernel", "bias"))
    arrays["cls"] = backbone.get_layer("class_token").get_weights()[0]
    position = backbone.get_layer("Transformer_posembed_input")
    arrays["Transformer/posembed_input/pos_embedding"] = position.get_weights()[0]
    put("Transformer/encoder_norm", backbone.get_layer("Transformer_encoder_norm"), ("scale", "bias"))
    for t in range(n_layers):
        block = backbone.get_layer(f"Transformer_encoderblock_{t}")
        prefix = f"Transformer/encoderblock_{t}"
        put(f"{prefix}/LayerNorm_0", block.layernorm1, ("scale", "bias"))
        put(f"{prefix}/LayerNorm_2", block.layernorm2, ("scale", "bias"))
        for d in (0, 1):
            dense = block.mlpblock.get_layer(f"Transformer_encoderblock_{t}_Dense_{d}")
            put(f"{prefix}/MlpBlock_3/Dense_{d}", dense, ("kernel", "bias"))
        att, attention = block.att, f"{prefix}/MultiHeadDotProductAttention_1"
        for name, layer in (("query", att.query_dense), ("key", att.key_dense), ("value", att.value_dense)):
            kernel, bias = layer.get_weights()
            arrays[f"{attention}/{name}/kernel"] = kernel.reshape(hidden, heads, -1)
            arrays[f"{attention}/{name}/bias"] = bias.reshape(heads, -1)
        kernel, bias = att.combine_heads.get_weights()
        arrays[f"{attention}/out/kernel"] = kernel.reshape(heads, -1, hidden)
        arrays[f"{attention}/out/bias"] = bias
    np.savez(path, **arrays)


def test_build_backbone_loads_weights_from_a_vit_keras_npz(tmp_path):
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    keras.utils.set_random_seed(1)
    source, _ = models.build_backbone(SMALL, image_size=32)
    expected = np.asarray(source(x, training=False))
    path = tmp_path / "vit-1-layer.npz"
    export_vit_npz(source, path, n_layers=1)

    keras.utils.set_random_seed(2)  # another random start: only the file can make it equal
    random_other, _ = models.build_backbone(SMALL, image_size=32)
    assert not np.allclose(np.asarray(random_other(x, training=False)), expected, atol=1e-3)

    keras.utils.set_random_seed(2)
    from_file = models.ModelParams(vit_weights=str(path), vit_layers=1)
    loaded, pretrained = models.build_backbone(from_file, image_size=32)
    assert pretrained is True
    assert models.trainable_params(loaded) == 0
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, rtol=1e-5, atol=1e-5)


def test_cli_models_json_lists_the_five_with_their_counts():
    result = CliRunner().invoke(cli.app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [*STUDY_COUNTS, "multitask_cnn", "cnn_all"]  # the study's, then ours
    assert {r["name"]: r["trainable_params_1ch"] for r in rows[:5]} == STUDY_COUNTS
    assert {r["name"]: r["kind"] for r in rows}["vit_500k"] == "vit"
    by_name = {r["name"]: r for r in rows}
    assert by_name["wide_cnn"]["trainable_params_3ch"] == STUDY_COUNTS["wide_cnn"] + 576
    assert by_name["cnn_all"]["trainable_params_3ch"] == by_name["wide_cnn"]["trainable_params_3ch"]
    assert by_name["vit_240k"]["trainable_params_3ch"] == STUDY_COUNTS["vit_240k"]
