"""dvc.yaml's code deps are the code each stage runs, derived here so they cannot drift.

A stage whose cmd is `cytoops <subcommand>` runs cytoops/cli.py (the dispatcher, a dep of every stage) and
the module behind the subcommand (read from the typer app), with every cytoops module that module imports,
at module level or inside a function, transitively (parsed with `ast`, nothing imported), the `__init__.py`
of each package on the way, and the package data files (templates) named in that code. The stage's deps must
cover exactly these package files: one missing means an edit to it does not rerun the stage (stale results);
one extra means an edit to a file the stage never runs reruns it for nothing. A folder dep covers the files
in it and must not hold files the stage never runs.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "cytoops"
ENTRY = "cytoops/cli.py"  # `cytoops <subcommand>` starts here in every stage


def cli_commands() -> dict[str, str]:
    """Subcommand -> the module of the function it calls, as the typer app registers them."""
    from cytoops import cli

    return {
        cmd.name or cmd.callback.__name__.replace("_", "-"): inspect.unwrap(cmd.callback).__module__
        for cmd in cli.app.registered_commands
    }


def package_files(folder: Path) -> set[Path]:
    """The package's files under `folder`: modules and data files, not bytecode caches or hidden files."""
    return {
        p
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
    }


def module_file(module: str, root: Path) -> Path | None:
    base = root.joinpath(*module.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def imports_of(path: Path, root: Path) -> set[str]:
    """The package modules a file imports anywhere: module level or in a function, absolute or relative."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    here = parts[:-1]  # the package a relative import starts from (for __init__.py: its own)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import module`
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == PACKAGE and module_file(n, root)}
    return found


def reached(module: str, root: Path) -> set[Path]:
    """Every package file that running `module`'s code can execute or read."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += imports_of(module_file(name, root), root)
    files = {module_file(name, root) for name in seen}
    data = {p for p in package_files(root / PACKAGE) if p.suffix != ".py"}
    while True:  # data files (templates) named in reached code or in a reached template
        text = "\n".join(p.read_text(encoding="utf-8") for p in files)
        named = {p for p in data - files if p.name in text}
        if not named:
            return files
        files |= named


def check(stages: dict, commands: dict[str, str], root: Path) -> list[str]:
    """One line per disagreement between each stage's code deps and the package files its command runs."""
    problems = []
    for stage, spec in stages.items():
        cmd = spec.get("cmd")
        words = shlex.split(cmd) if isinstance(cmd, str) else []
        if words[:1] != [PACKAGE] or len(words) < 2:
            problems.append(
                f"stage {stage}: cmd {cmd!r} is not `cytoops <subcommand>`, so tests/test_dvc_deps.py cannot "
                "derive its code deps; fix: run the stage through the cytoops CLI or extend this test"
            )
            continue
        sub = words[1]
        if sub not in commands:
            problems.append(f"stage {stage}: `cytoops {sub}` is not a command of cytoops/cli.py; fix the cmd")
            continue
        runs = {p.relative_to(root).as_posix() for p in reached(commands[sub], root)} | {ENTRY}
        deps = [str(d).rstrip("/") for d in spec.get("deps", [])]
        for file in sorted(runs):
            if not any(file == d or file.startswith(d + "/") for d in deps):
                problems.append(
                    f"stage {stage}: `cytoops {sub}` runs {file}, which the stage's deps do not cover "
                    f"(editing it would not rerun the stage); fix: add `- {file}` to its deps in dvc.yaml"
                )
        for dep in deps:
            if dep != PACKAGE and not dep.startswith(PACKAGE + "/"):
                continue
            path = root / dep
            if not path.exists():
                problems.append(f"stage {stage}: dep {dep} does not exist; fix: remove it from dvc.yaml")
                continue
            listed = package_files(path) if path.is_dir() else {path}
            for file in sorted(p.relative_to(root).as_posix() for p in listed):
                if file not in runs:
                    fix = f"remove `- {dep}`" if dep == file else f"list the files of {dep} it runs instead"
                    problems.append(
                        f"stage {stage}: dep {dep} holds {file}, which `cytoops {sub}` never runs "
                        f"(editing it would rerun the stage for nothing); fix: {fix} in dvc.yaml"
                    )
    return problems


def repo_stages() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def test_every_stage_depends_on_exactly_the_code_it_runs():
    problems = check(repo_stages(), cli_commands(), REPO)
    assert not problems, "dvc.yaml's code deps disagree with the code its stages run:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("stage", "remove", "add", "pattern"),
    [
        # train.py imports models inside functions only
        ("train", "cytoops/models.py", None, r"stage train: `cytoops train` runs cytoops/models\.py, .*add"),
        ("wrangle", "cytoops/cli.py", None, r"stage wrangle: `cytoops wrangle` runs cytoops/cli\.py, .*add"),
        # report.py reads templates/report.html.j2
        ("verdict", "cytoops/templates", None, r"stage verdict: .* runs cytoops/templates/report\.html\.j2"),
        ("evaluate", None, "cytoops/predict.py", r"stage evaluate: dep cytoops/predict\.py holds .*remove"),
        ("augment", None, "cytoops/gone.py", r"stage augment: dep cytoops/gone\.py does not exist"),
        # a folder dep holding files the stage never runs: one line per file
        ("profile", None, "cytoops/verdict", r"stage profile: dep cytoops/verdict holds .*files of"),
    ],
)
def test_check_reports_a_doctored_dvc_yaml(stage, remove, add, pattern):
    stages = repo_stages()
    doctored = copy.deepcopy(stages)
    if remove:
        doctored[stage]["deps"].remove(remove)
    if add:
        doctored[stage]["deps"].append(add)
    before = check(stages, cli_commands(), REPO)  # empty unless dvc.yaml drifted (the test above says so)
    new = [p for p in check(doctored, cli_commands(), REPO) if p not in before]
    changed = REPO / (remove or add)
    assert len(new) == (len(package_files(changed)) if changed.is_dir() else 1), new
    for problem in new:
        assert re.match(pattern, problem), problem


def test_check_reports_a_stage_it_cannot_derive():
    stages = {"plot": {"cmd": "python scripts/plot.py", "deps": ["cytoops/evaluate.py"]}}
    problems = check(stages, cli_commands(), REPO)
    assert len(problems) == 1 and problems[0].startswith("stage plot: cmd 'python scripts/plot.py' is not")
    problems = check({"x": {"cmd": "cytoops nope --out x"}}, cli_commands(), REPO)
    assert problems == ["stage x: `cytoops nope` is not a command of cytoops/cli.py; fix the cmd"]


def test_reached_follows_every_kind_of_import(tmp_path):
    files = {
        "__init__.py": "",
        # absolute at module level; `from package import module` and `from package import name` in a function
        "a.py": "import os\nimport cytoops.b\n\ndef f():\n    from cytoops import c\n"
        "    from cytoops.sub import x\n",
        "b.py": "",
        "c.py": "",
        "d.py": "import cytoops.a\n",  # imports a, but a does not import d
        "sub/__init__.py": "from .e import x\n",
        "sub/e.py": "from .. import b\nx = 'page.html.j2'\n",
        "templates/page.html.j2": "{% include 'part.html.j2' %}",
        "templates/part.html.j2": "",
        "templates/unused.html.j2": "",
    }
    for name, text in files.items():
        (tmp_path / PACKAGE / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / name).write_text(text)
    got = {p.relative_to(tmp_path / PACKAGE).as_posix() for p in reached("cytoops.a", tmp_path)}
    assert got == set(files) - {"d.py", "templates/unused.html.j2"}


def test_dvcignore_keeps_bytecode_out_of_folder_deps():
    # DVC hashes every file of a folder dep: a new __pycache__/*.pyc (another Python, a cleaned tree) would
    # rerun the stage although no code changed
    folders = [d for spec in repo_stages().values() for d in spec.get("deps", []) if (REPO / d).is_dir()]
    code_folders = [d for d in folders if d.startswith(PACKAGE + "/")]
    ignored = {line.strip() for line in (REPO / ".dvcignore").read_text(encoding="utf-8").splitlines()}
    pycache = {"__pycache__", "__pycache__/", "**/__pycache__", "**/__pycache__/"}
    assert not code_folders or ignored & pycache, (
        f"{code_folders} are folder deps; fix: add the line `__pycache__/` to .dvcignore"
    )


def test_the_stages_after_train_read_its_results_without_the_trainer():
    """evaluate, verdict, tracking, register and report read cross-validation through `cytoops.cvresult`: none
    of them runs cytoops.train (or its engines), so editing the trainer reruns none of their stages."""
    trainer = {REPO / PACKAGE / f"{name}.py" for name in ("train", "backends", "taskcache", "schedule")}
    for module in ("evaluate", "verdict.stage", "tracking", "register", "report"):
        runs = reached(f"{PACKAGE}.{module}", REPO)
        assert not runs & trainer, f"cytoops.{module} runs {sorted(p.name for p in runs & trainer)}"
