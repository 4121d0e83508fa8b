"""params.yaml -> frozen dataclasses: defaults, unknown names, `--set` overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cytoops import models, params

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_repo_params_yaml_loads_and_matches_the_built_in_defaults():
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    p = params.load(REPO_PARAMS)
    # every value in the file arrives in its section (lists as tuples) ...
    for section, values in raw.items():
        for key, value in values.items():
            expected = tuple(value) if isinstance(value, list) else value
            assert getattr(getattr(p, section), key) == expected, f"{section}.{key}"
    # ... and `cytoops run` without --params (built-in defaults) runs what `dvc repro` runs
    assert p == params.Params()
    assert p.train.architectures == (
        "wide_cnn", "deep_cnn", "vit_linear", "vit_240k", "vit_500k", "profile", "multitask_cnn"
    )  # fmt: skip
    assert p.wrangle.min_wells == 15 and p.train.folds == 2


def test_load_without_a_file_gives_the_defaults():
    assert params.load() == params.Params()
    assert params.load(None, []) == params.Params()


def test_flat_names_every_key_as_section_dot_key():
    flat = params.Params().flat()
    assert flat["train.epochs"] == 30
    assert flat["wrangle.method"] == "threshold"
    assert flat["features.vit_weights"] is None
    assert all(k.count(".") == 1 for k in flat)


def test_unknown_section_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="unknown section.*trian"):
        params.from_dict({"trian": {"epochs": 5}})


def test_unknown_key_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key.*train\.epoch\b"):
        params.from_dict({"train": {"epoch": 5}})
    file = tmp_path / "params.yaml"
    file.write_text("wrangle:\n  min_well: 10\n")
    with pytest.raises(ValueError, match=r"wrangle\.min_well\b"):
        params.load(file)


def test_missing_file_and_non_mapping_file_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        params.load(tmp_path / "nope.yaml")
    file = tmp_path / "params.yaml"
    file.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        params.load(file)


def test_apply_overrides_parses_values_as_yaml_and_leaves_the_input_alone():
    raw = {"train": {"epochs": 30}}
    out = params.apply_overrides(
        raw,
        [
            "train.epochs=5",
            "train.architectures=[wide_cnn, vit_linear]",
            "features.vit_weights=null",
            "wrangle.threshold=0.5",
            "train.learning_rate=0.01",
        ],
    )
    assert out == {
        "train": {"epochs": 5, "architectures": ["wide_cnn", "vit_linear"], "learning_rate": 0.01},
        "features": {"vit_weights": None},
        "wrangle": {"threshold": 0.5},
    }
    assert raw == {"train": {"epochs": 30}}


def test_load_with_overrides_applies_them_over_the_file():
    p = params.load(REPO_PARAMS, ["train.epochs=5", "augment.strategies=[none,d4]", "wrangle.min_wells=4"])
    assert p.train.epochs == 5
    assert p.augment.strategies == ("none", "d4")
    assert p.wrangle.min_wells == 4
    assert p.train.folds == 2  # untouched keys keep the file's value


@pytest.mark.parametrize("item", ["train.epochs", "epochs=5", "train=5", "train.=5"])
def test_malformed_override_is_a_value_error(item):
    with pytest.raises(ValueError, match="is not section.key=value"):
        params.apply_overrides({}, [item])


def test_override_of_an_unknown_key_is_a_value_error():
    with pytest.raises(ValueError, match=r"train\.epoks"):
        params.load(None, ["train.epoks=5"])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("augment.strategies=[none, rot45]", r"augment\.strategies has \['rot45'\]"),
        ("augment.strategies=[]", r"augment\.strategies has nothing"),
        ("train.architectures=[wide_cnn, resnet50]", r"train\.architectures has \['resnet50'\]"),
        ("train.folds=1", r"train\.folds is 1"),
        ("wrangle.method=zscore", r"wrangle\.method is 'zscore'"),
        ("wrangle.image_size=48", r"wrangle\.image_size is 48"),
        ("wrangle.image_size=16", r"wrangle\.image_size is 16"),
        ("wrangle.min_wells=1", r"wrangle\.min_wells is 1"),
        ("train.val_fraction=0.5", r"train\.val_fraction is 0\.5"),
        ("train.epochs=0", r"train\.epochs is 0"),
        ("train.repeats=0", r"train\.repeats is 0"),
        ("train.precision=float16", r"train\.precision is 'float16'"),
        ("verdict.n_perm=0", r"verdict\.n_perm \(0\) and \.n_boot \(1000\) must be >= 1"),
        ("verdict.alpha=1.5", r"verdict\.alpha \(1\.5\)"),
        (
            "train.architectures=[resnet]",
            r"train\.architectures has \['resnet'\]: choose from wide_cnn, .*profile",
        ),
    ],
)
def test_invalid_values_are_value_errors_naming_the_param(override, match):
    with pytest.raises(ValueError, match=match):
        params.load(None, [override])


def test_valid_edge_values_are_accepted():
    edges = [
        "wrangle.image_size=32",
        "wrangle.min_wells=2",
        "train.folds=3",
        "augment.strategies=[d4]",
        "train.architectures=[wide_cnn]",
    ]
    p = params.load(None, edges)
    assert (p.wrangle.image_size, p.wrangle.min_wells, p.train.folds) == (32, 2, 3)
    assert p.augment.strategies == ("d4",)


def test_deep_cnn_below_64_pixels_is_a_value_error():
    with pytest.raises(ValueError, match=r"deep_cnn needs wrangle\.image_size >= 64"):
        params.load(None, ["wrangle.image_size=32"])


def test_a_single_strategy_without_brackets_is_one_strategy():
    assert params.load(None, ["augment.strategies=hflip"]).augment.strategies == ("hflip",)


def test_architectures_are_the_model_registry():
    # one table of architectures: every Keras-built one is in models.REGISTRY with the same kind
    keras_built = {n: k for n, k in params.ARCHITECTURES.items() if k != "profile"}
    assert {n: s.kind for n, s in models.REGISTRY.items()} == keras_built
    assert params.TrainParams().architectures == tuple(a for a in params.ARCHITECTURES if a != "cnn_all")
    assert params.STUDY_ARCHITECTURES == tuple(params.ARCHITECTURES)[:5]


def test_cnn_all_is_in_the_table_but_not_in_the_default_grid():
    assert params.architecture_kind("cnn_all") == "cnn_all" and params.OPT_IN == ("cnn_all",)
    assert "cnn_all" not in params.TrainParams().architectures
    chosen = params.load(None, ["train.architectures=[wide_cnn,cnn_all,profile]"]).train.architectures
    assert chosen == ("wide_cnn", "cnn_all", "profile")


def test_a_non_number_for_a_number_param_is_a_value_error():
    with pytest.raises(ValueError, match=r"train\.epochs"):
        params.load(None, ["train.epochs=five"])


def test_a_float_param_written_1e_minus_4_is_a_float_or_rejected():
    try:
        p = params.load(None, ["train.learning_rate=1e-4"])
    except ValueError:
        return
    assert p.train.learning_rate == pytest.approx(1e-4)


# ---- issue 14: every bad value is one ValueError naming the key, before any work -----------------------


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.epochs=.inf", r"train\.epochs is inf"),
        ("train.epochs=1e400", r"train\.epochs is '1e400'"),
        ("train.architectures=[wide_cnn,", r"override train\.architectures: .* is not a YAML value"),
        ("train.batch_size=0", r"train\.batch_size is 0: use at least 1"),
        ("train.learning_rate=nan", r"train\.learning_rate is nan: use a finite positive"),
        ("train.learning_rate=.inf", r"train\.learning_rate is inf"),
        ("train.learning_rate=0", r"train\.learning_rate is 0.0"),
        ("train.patience=-1", r"train\.patience is -1"),
        ("features.batch_size=0", r"features\.batch_size is 0"),
        ("wrangle.threshold=.nan", r"wrangle\.threshold is nan"),
        ("evaluate.f1_cutoff=.nan", r"evaluate\.f1_cutoff is nan"),
    ],
)
def test_hostile_values_are_value_errors_naming_the_key(override, match):
    with pytest.raises(ValueError, match=match):
        params.load(None, [override])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("train: [1, 2]\n", r"section train holds \[1, 2\], not keys"),
        ("train: 5\n", r"section train holds 5, not keys"),
        ("train:\n  epochs: [\n", r"cannot be read at line 3 .*write valid YAML"),
        ("train:\n\tepochs: 3\n", r"cannot be read at line 2"),
    ],
)
def test_a_broken_params_file_is_one_value_error(tmp_path, text, match):
    file = tmp_path / "params.yaml"
    file.write_text(text)
    with pytest.raises(ValueError, match=match):
        params.load(file)


def test_a_section_that_is_not_a_mapping_with_an_override_is_a_value_error(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train: [1, 2]\n")
    with pytest.raises(ValueError, match=r"section train holds"):
        params.load(file, ["train.epochs=2"])


@pytest.mark.parametrize("override", ["train.epochs=.inf", "train.architectures=[a,", "train.batch_size=0"])
def test_a_bad_param_on_the_command_line_is_one_line_and_exit_2(tiny_plate, tmp_path, monkeypatch, override):
    from typer.testing import CliRunner

    from cytoops import cli

    monkeypatch.chdir(tmp_path)
    data = tiny_plate()
    before = sorted(p.name for p in (data / "plate-1").rglob("*"))
    args = ["run", "--data", str(data), "--out", str(tmp_path / "out"), "--no-track", "--set", override]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and override.split("=")[0] in lines[0]
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in (data / "plate-1").rglob("*")) == before
