"""Write docs/cli.md from the typer app: every command's --help, as `cytoops <command> --help` prints it.

python scripts/cli_docs.py            # rewrite docs/cli.md
python scripts/cli_docs.py --check    # exit 1 when docs/cli.md is not what the app says (tests run this)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import click
import typer.main

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
WIDTH = 100  # fixed, so the text does not depend on the terminal that wrote it


def _help(command: click.Command, name: str, parent: click.Context | None = None) -> str:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
    return command.get_help(ctx).rstrip()


def render() -> str:
    from cytoops.cli import app

    group = typer.main.get_command(app)
    root = click.Context(group, info_name="cytoops", terminal_width=WIDTH, max_content_width=WIDTH)
    lines = [
        "# The `cytoops` command",
        "",
        "Generated from the typer app by `python scripts/cli_docs.py` (a test fails when it is stale): what",
        "`cytoops --help` and `cytoops <command> --help` print.",
        "",
        "```text",
        _help(group, "cytoops"),
        "```",
    ]
    for name in group.list_commands(root):
        lines += ["", f"## cytoops {name}", "", "```text", _help(group.commands[name], name, root), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/cli.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not DOC.is_file() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python scripts/cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
