"""cli: every subcommand registered; a subcommand run imports its own module, not the whole package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cytoops import cli

HEAVY = ("tensorflow", "mlflow", "sklearn")


def modules_after(*argv: str) -> set[str]:
    """The heavy packages `cytoops ARGV` imports (run as the console script runs it, in a fresh process)."""
    code = (
        "import json, sys\n"
        f"sys.argv = ['cytoops', *{list(argv)!r}]\n"
        "from cytoops.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_app_registers_every_command_under_its_name():
    assert [c.name for c in cli.app.registered_commands] == list(cli.COMMANDS)


@pytest.mark.parametrize(
    ("command", "imported", "not_imported"),
    [
        ("wrangle", set(), {"tensorflow", "mlflow", "sklearn"}),
        ("evaluate", {"sklearn"}, {"tensorflow", "mlflow"}),  # ROC AUC is sklearn's
        ("verdict", {"sklearn"}, {"tensorflow", "mlflow"}),  # the verdict fits no network
        ("train", set(), {"tensorflow", "mlflow"}),  # its workers import TensorFlow (backends.run_local)
        ("features", {"tensorflow"}, {"mlflow"}),
        ("register", {"tensorflow", "mlflow"}, set()),
    ],
)
def test_a_subcommand_imports_only_what_it_runs(command, imported, not_imported):
    heavy = modules_after(command, "--help")
    assert imported <= heavy and not (not_imported & heavy), heavy


def test_help_without_a_subcommand_lists_them_all():
    out = subprocess.run(
        [sys.executable, "-c", "from cytoops.cli import main; main()", "--help"],
        capture_output=True,
        text=True,
    ).stdout
    assert all(name in out for name in cli.COMMANDS)


def test_an_unknown_attribute_of_the_cli_module_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cli.nope  # noqa: B018
