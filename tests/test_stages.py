"""The DVC stages, each run through the CLI exactly as dvc.yaml says (`dvc repro`'s commands, in order), on a
plate where a cytokine fails by design: every stage records the failure and goes on (exit 0), none dies."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from cytoops import cli

REPO = Path(__file__).resolve().parents[1]

# IL-10 has one responder well (one balanced pair): kept with min_wells 2, it cannot be spread over two
# grouped folds, so train records it as failed while IL-6 and TNF-α train.
PARAMS = """\
wrangle: {min_wells: 2, image_size: 32}
augment: {strategies: [none, hflip]}
train: {architectures: [wide_cnn, profile], epochs: 1, batch_size: 16, workers: 1}
verdict: {n_perm: 99, n_boot: 20, heatmaps: 1}
"""


def stage_commands() -> dict[str, list[str]]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {name: shlex.split(spec["cmd"])[1:] for name, spec in stages.items()}


def test_every_stage_goes_on_when_a_unit_fails(wide_plate, tmp_path, monkeypatch, store):
    wide_plate().rename(tmp_path / "data")  # the plate where dvc.yaml looks for it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(PARAMS, encoding="utf-8")
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123.dir\n  path: data\n", encoding="utf-8")
    commands = stage_commands()
    assert list(commands)[-1] == "register"
    for stage, args in commands.items():
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, f"stage {stage} exited {result.exit_code}: {result.output[-2000:]}"
        if stage == "train":
            failures = pd.read_csv("work/train/failures.csv")
            assert list(failures.cytokine) == ["IL-10"] and "hold no responders" in failures.error[0]
            assert any("failed" in line and "IL-10" in line for line in result.output.splitlines())
            assert set(pd.read_csv("work/train/fits.csv").cytokine) == {"IL-6", "TNF-α"}
    assert "IL-10" in set(pd.read_csv("reports/predictable.csv").cytokine)  # said, never dropped
    registered = json.loads(Path("work/register/registered.json").read_text(encoding="utf-8"))
    assert registered, "register wrote an empty listing"
