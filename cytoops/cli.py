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
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from cytoops import machine, plate

HELP = (
    "cytoops: train per-cytokine responder classifiers from 64x64 well thumbnails "
    "(actin, mito, nucleus), "
    "compare architectures and augmentations honestly, and say which cytokines images predict.\n\n"
    "Quick start: `cytoops demo-plate data/` writes a simulated plate; `cytoops validate data/` checks a "
    "plate; `dvc repro` (or `cytoops run --data data --out out`) runs wrangle, augment, features, train "
    "and evaluate. Parameters live in params.yaml; every stage takes --set section.key=value."
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


# subcommand -> "module:function"; a command imports its own module only (`build`): a stage that needs
# neither MLflow nor scikit-learn does not pay for importing them (~2 s a command)
COMMANDS: dict[str, str] = {
    "demo-plate": "cytoops.demo:command",
    "validate": "cytoops.plate:validate_command",
    "wrangle": "cytoops.wrangle:command",
    "augment": "cytoops.augment:command",
    "features": "cytoops.features:command",
    "profile": "cytoops.profile:command",
    "train": "cytoops.train:command",
    "evaluate": "cytoops.evaluate:command",
    "run": "cytoops.pipeline:command",
    "summary": "cytoops.evaluate:summary_command",
    "track": "cytoops.tracking:command",
    "ui-url": "cytoops.tracking:ui_url_command",
    "register": "cytoops.register:command",
    "best-model": "cytoops.registry:best_model_command",
    "predict": "cytoops.predict:command",
    "verdict": "cytoops.verdict.stage:command",
    "models": "cytoops.cli:models_command",
}
# imported before the command runs (quietly, oneDNN on: `machine.import_tensorflow`); train's workers import
# it themselves, and its coordinating process does only when it fits in-process (`backends.run_local`)
TENSORFLOW_COMMANDS = {"features", "run", "register", "predict", "models"}


def _setup() -> None:
    configure_logging()


def build(names: list[str] | None = None) -> typer.Typer:
    """The typer app with the named subcommands (default: all), importing only their modules."""
    app = typer.Typer(
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(_setup)
    for name in names or COMMANDS:
        module, function = COMMANDS[name].split(":")
        app.command(name)(_friendly(getattr(importlib.import_module(module), function)))
    return app


@functools.cache
def __getattr__(name: str):
    """`cli.app`: every subcommand (tests, docs), built on first use; `main` builds only the one it runs."""
    if name == "app":
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console entry point: import TensorFlow as cytoops runs it (for the commands that use it), then run the
    subcommand named (its module alone imported), or, for --help or no subcommand, the whole app."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    wanted = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in COMMANDS else None
    if wanted in TENSORFLOW_COMMANDS:
        machine.import_tensorflow()
    build([wanted] if wanted else None)()
