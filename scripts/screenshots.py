"""Screenshots for the docs, made with headless Chromium: the report and MLflow's runs comparison.

    python scripts/screenshots.py                       # reports/index.html and ./mlflow.db -> docs/*.png
    python scripts/screenshots.py --report out/reports/index.html --store sqlite:////abs/mlflow.db

A developer tool, not a test (CI needs no browser): it needs Chromium (Debian: `apt-get install chromium`),
starts `mlflow ui` on 127.0.0.1 (a free port, stopped at the end), and writes

- docs/report.png: the top of reports/index.html;
- docs/mlflow_runs.png: MLflow's "Compare runs" page of the latest pipeline run's nested runs (one per
  architecture x augmentation): their params and metrics side by side.

Look at the PNGs before committing them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("no Chromium found: apt-get install chromium (or put chromium on PATH)")


def shoot(url: str, out: Path, width: int, height: int, wait_ms: int) -> None:
    """One screenshot of `url` by headless Chromium, after `wait_ms` of page time (JavaScript apps load)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out}",
            url,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not out.is_file():
        raise SystemExit(f"chromium could not screenshot {url}: {result.stderr.strip()[-500:]}")
    print(f"wrote {out} ({url})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(store: str, port: int) -> subprocess.Popen:
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)]
    # its own process group: `mlflow ui` starts uvicorn workers, stopped with it (stop_ui)
    server = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
        if server.poll() is not None:
            raise SystemExit(f"mlflow ui exited with status {server.returncode}")
    stop_ui(server)
    raise SystemExit("mlflow ui did not answer within 180 s")


def stop_ui(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def latest_pipeline(store: str, experiment: str) -> tuple[str, str]:
    """(experiment id, the latest pipeline run's id) in the store."""
    import mlflow

    client = mlflow.MlflowClient(store)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {store}: run the pipeline first")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`cytoops.role` = 'pipeline'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SystemExit(f"no pipeline run in experiment {experiment!r}: run the pipeline first")
    return exp.experiment_id, runs[0].info.run_id


def children(store: str, parent: str) -> list[str]:
    """The nested runs of a pipeline run (one per architecture x augmentation), by name."""
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    return [r.info.run_id for r in sorted(runs, key=lambda r: r.info.run_name or "")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=REPO / "reports" / "index.html")
    parser.add_argument(
        "--store", default=None, help="tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    parser.add_argument("--experiment", default="cytoops")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    store = args.store or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{REPO / 'mlflow.db'}"
    args.out.mkdir(parents=True, exist_ok=True)

    if not args.report.is_file():
        raise SystemExit(f"{args.report} does not exist: run the pipeline first")
    shoot(args.report.resolve().as_uri(), args.out / "report.png", 1280, 1100, 3000)

    experiment_id, parent = latest_pipeline(store, args.experiment)
    port = free_port()
    server = start_ui(store, port)
    try:
        runs = json.dumps(children(store, parent))
        query = urllib.parse.urlencode({"runs": runs, "experiments": json.dumps([experiment_id])})
        url = f"http://127.0.0.1:{port}/#/compare-runs?{query}"
        shoot(url, args.out / "mlflow_runs.png", 1800, 1000, 90000)
    finally:
        stop_ui(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
