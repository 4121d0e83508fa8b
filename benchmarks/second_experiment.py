"""The demo's champions on a second experiment (issue 18's done-when; benchmarks/second_experiment.json).

Run in a clone after `make demo` and the README's two commands (`cytoops demo-plate other --seed 1`,
`cytoops predict other --out other-predictions.csv`):

    python benchmarks/second_experiment.py --other other --predictions other-predictions.csv --serve CCL2

Checks that every predictable cytokine's @champion is the verdict's best predictor (its version tags against
reports/predictable.csv), the champions' ROC AUC on the second plate over the cytokines its truth.json marks
'morphology', and, with --serve, `mlflow models serve` of that cytokine's champion on raw thumbnails of the
second plate (and on a 1x1 px image, which must be refused with its reason).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cytoops import store
from cytoops.plate import read_data
from cytoops.registry import ALIAS, model_name


def champions(client, called: pd.DataFrame) -> list[dict]:
    rows = []
    for r in called.itertuples():
        version = client.get_model_version_by_alias(model_name(r.cytokine), ALIAS)
        tags = version.tags
        rows.append(
            {
                "cytokine": r.cytokine,
                "verdict_best": r.best_predictor,
                "champion_best": tags.get("best_predictor"),
                "family": tags.get("family"),
                "version": version.version,
                "cv_roc_auc": tags.get("cv_roc_auc"),
            }
        )
    return rows


def _post(port: int, inputs) -> tuple[str, dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"inputs": inputs}, f)  # a plate's thumbnails are too long for a command line
    done = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", f"http://127.0.0.1:{port}/invocations",
         "-H", "Content-Type: application/json", "--data-binary", f"@{f.name}"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    os.unlink(f.name)
    body, status = done.stdout.rsplit("\n", 1)
    return status, json.loads(body)


def served(cytokine: str, other: Path, n: int = 8) -> dict:
    """`mlflow models serve` of the cytokine's champion, asked about n raw thumbnails and a 1x1 px image."""
    raw = read_data(other, image_size=64, require_readouts=False)[0].images[:n]  # as read, not scaled
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"models:/{model_name(cytokine)}@{ALIAS}"
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    t0 = time.monotonic()
    try:
        while subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/ping"],
            capture_output=True, text=True, check=False,
        ).stdout != "200":  # fmt: skip
            if server.poll() is not None or time.monotonic() - t0 > 300:
                raise SystemExit(
                    f"mlflow models serve of {uri} did not start: {server.stdout.read()[-2000:]}"
                )
            time.sleep(1)
        ready = time.monotonic() - t0
        status, answer = _post(port, raw.tolist())
        tiny_status, tiny = _post(port, [[[[1.0]], [[1.0]], [[1.0]]]])
    finally:
        server.terminate()
        server.wait(30)
    probs = [row["p_responder"] for row in answer["predictions"]]
    return {
        "model": uri,
        "server_ready_s": round(ready, 1),
        "status": status,
        "raw_thumbnails": list(raw.shape),
        "p_responder": [round(p, 4) for p in probs],
        "all_in_0_1": all(0 <= p <= 1 for p in probs),
        "one_pixel_image": {"status": tiny_status, "answer": tiny},
    }


def main() -> None:
    import mlflow

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", type=Path, required=True, help="the second plate's data folder")
    parser.add_argument("--predictions", type=Path, required=True, help="what `cytoops predict --out` wrote")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="the demo's reports folder")
    parser.add_argument("--serve", metavar="CYTOKINE", help="also serve this cytokine's champion")
    a = parser.parse_args()
    store.connect()
    table = pd.read_csv(a.reports / "predictable.csv")
    called = table[table.predictable]
    rows = champions(mlflow.MlflowClient(), called)
    truth = json.loads(next(a.other.glob("*/truth.json")).read_text(encoding="utf-8"))["cytokines"]
    morphology = sorted(c for c, t in truth.items() if t["cause"] == "morphology")
    moved = pd.read_csv(a.predictions.with_name(a.predictions.stem + "_transfer.csv")).set_index("cytokine")
    auc = {c: round(float(moved.roc_auc[c]), 3) for c in morphology if c in moved.index}
    out = {
        "predictable": sorted(called.cytokine),
        "every_champion_is_the_verdicts_best": all(r["verdict_best"] == r["champion_best"] for r in rows),
        "champions": rows,
        "morphology_cytokines": morphology,
        "transfer_roc_auc": auc,
        "transfer_mean": round(sum(auc.values()) / len(auc), 3) if auc else None,
        "transfer_min": min(auc.values()) if auc else None,
        "noise_called": sorted(set(called.cytokine) - set(morphology)),
    }
    if a.serve:
        out["served_champion"] = served(a.serve, a.other)
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False, default=str)


if __name__ == "__main__":
    main()
