"""The `cytoops` command. Each subcommand is the thin I/O edge of one module's pure core.

Bad input (a malformed plate, a wrong param) raises ValueError in the core; here it becomes one line on
stderr and exit status 2, never a traceback; so is an output folder asked for where a file is. Running out of
memory is one line too, and exit status 1.

Output: a command's answer (a table, JSON) is printed here; every module logs what it does to its own
`logging` logger (`cytoops.<module>`), which `configure_logging` sends to the screen as plain lines: info to
stdout, warnings to stderr. TensorFlow's own start-up notices are kept off the screen
(`machine.import_tensorflow`, which also turns TensorFlow's oneDNN kernels on).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from cytoops import (
    augment,
    demo,
    evaluate,
    features,
    machine,
    pipeline,
    plate,
    predict,
    profile,
    register,
    registry,
    tracking,
    train,
    wrangle,
)
from cytoops.verdict import stage as verdict_stage

app = typer.Typer(
    help=(
        "cytoops: train per-cytokine responder classifiers from 64x64 well thumbnails "
        "(actin, mito, nucleus), "
        "compare architectures and augmentations honestly, and say which cytokines images predict.\n\n"
        "Quick start: `cytoops demo-plate data/` writes a simulated plate; `cytoops validate data/` checks a "
        "plate; `dvc repro` (or `cytoops run --data data --out out`) runs wrangle, augment, features, train "
        "and evaluate. Parameters live in params.yaml; every stage takes --set section.key=value."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def configure_logging(level: int = logging.INFO) -> None:
    """cytoops' loggers print plain lines: below WARNING to stdout, WARNING and above to stderr (the streams
    of this invocation, so a test runner that swaps them sees the lines)."""
    root = logging.getLogger("cytoops")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def _file_in_the_way(err: OSError) -> str:
    """One line for a path that needs a folder where a file is (an output folder over a file, mostly)."""
    if err.filename is None:
        return f"{err.strerror}; fix: give a folder path where a folder is needed"
    target = Path(err.filename)
    blocking = next((p for p in (target, *target.parents) if p.exists() and not p.is_dir()), target)
    within = "" if blocking == target else f" (for {target})"
    return (
        f"{blocking}: is a file where a folder is needed{within}; fix: give a folder path, or move the file"
    )


def _friendly(fn: Callable) -> Callable:
    """Bad input is one line and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except plate.PlateError as err:
            for problem in err.problems:
                typer.echo(str(problem), err=True)
            raise typer.Exit(2) from None
        except ValueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except (FileExistsError, NotADirectoryError) as err:  # a folder to write where a file is
            typer.echo(f"error: {_file_in_the_way(err)}", err=True)
            raise typer.Exit(2) from None
        except MemoryError:
            typer.echo(
                "error: out of memory; fix: close other programs, use a machine with more memory, or "
                "lower wrangle.image_size, train.batch_size or train.workers",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapper


def models_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the registered architectures with their trainable parameters (CNNs at 1 and 3 channels)."""
    from cytoops import models

    rows = [
        {
            "name": spec.name,
            "study_name": spec.study_name,
            "kind": spec.kind,
            "input": "ViT-B/32 CLS features of 3 channels"
            if spec.kind == "vit"
            else "image, train.cnn_channels",
            "trainable_params_1ch": models.count_trainable(spec.name, 1),
            "trainable_params_3ch": models.count_trainable(spec.name, 3),
        }
        for spec in models.REGISTRY.values()
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'name':<11} {'study name':<15} {'trainable @1ch':>15} {'@3ch':>10}  input")
    for r in rows:
        typer.echo(
            f"{r['name']:<11} {r['study_name']:<15} {r['trainable_params_1ch']:>15,} "
            f"{r['trainable_params_3ch']:>10,}  {r['input']}"
        )


COMMANDS: dict[str, Callable] = {
    "demo-plate": demo.command,
    "validate": plate.validate_command,
    "wrangle": wrangle.command,
    "augment": augment.command,
    "features": features.command,
    "profile": profile.command,
    "train": train.command,
    "evaluate": evaluate.command,
    "run": pipeline.command,
    "summary": evaluate.summary_command,
    "track": tracking.command,
    "ui-url": tracking.ui_url_command,
    "register": register.command,
    "best-model": registry.best_model_command,
    "predict": predict.command,
    "verdict": verdict_stage.command,
    "models": models_command,
}
TENSORFLOW_COMMANDS = {"features", "train", "run", "register", "predict", "models", "verdict"}

for _name, _fn in COMMANDS.items():
    app.command(_name)(_friendly(_fn))


@app.callback()
def _setup() -> None:
    configure_logging()


def main() -> None:
    """Console entry point: import TensorFlow as cytoops runs it (for the commands that use it), then run."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if TENSORFLOW_COMMANDS & set(sys.argv[1:2]):
        machine.import_tensorflow()
    app()
