"""Screenshot of the MLflow UI comparison view of the two latest local pipeline runs.

    .venv/bin/python docs/mlflow_compare.py [--store mlruns.db] [--experiment celo-smoke]
        [--out docs/mlflow_compare.png]

Starts ``mlflow ui`` on the sqlite store (127.0.0.1, one worker), opens the
compare page of the two most recent pipeline (parent) runs in headless Debian
``chromium``, switches the Parameters and Metrics tables to "Show diff only"
(so what differs between the runs is on screen, not the first rows of an
alphabetical list), closes the assistant side panel, and saves the window
(tall, because the UI scrolls inside its main panel, not the page). The
browser is driven over the Chrome DevTools Protocol with ``websocket-client``
(a dependency of the kubernetes client that kfp installs).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket
from mlflow import MlflowClient

from celo.tracking_mlflow import latest_pipeline_runs

#: Clicks the "Show diff only" switches and the assistant panel's close button.
PREPARE_JS = """
(() => {
  const wanted = ['Parameters - Show diff only', 'Metrics - Show diff only', 'Close'];
  const buttons = [...document.querySelectorAll('button[aria-label]')]
    .filter(b => wanted.includes(b.getAttribute('aria-label')));
  buttons.forEach(b => b.click());
  return buttons.map(b => b.getAttribute('aria-label'));
})()
"""


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(url)


class Page:
    """The smallest CDP client: send a command, wait for its answer."""

    def __init__(self, ws_url: str):
        self.ws, self.n = websocket.create_connection(ws_url, timeout=60), 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})


def two_latest_runs(uri: str, experiment: str) -> tuple[str, list[str]]:
    client = MlflowClient(tracking_uri=uri)
    runs = latest_pipeline_runs(client, experiment, 2)
    if len(runs) < 2:
        sys.exit(f"need two pipeline runs in {experiment!r}, found {len(runs)}")
    return runs[0].info.experiment_id, [runs[1].info.run_id, runs[0].info.run_id]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--store", default="mlruns.db")
    p.add_argument("--experiment", default="celo-smoke")
    p.add_argument("--out", default="docs/mlflow_compare.png")
    p.add_argument("--port", type=int, default=5077)
    p.add_argument("--size", default="1600,2300", help="window; the UI scrolls inside it")
    args = p.parse_args()
    uri = "sqlite:///" + os.path.abspath(args.store)
    exp_id, runs = two_latest_runs(uri, args.experiment)
    mlflow_exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    ui = subprocess.Popen(
        [
            mlflow_exe,
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    profile = tempfile.mkdtemp()
    browser = None
    try:
        _wait_http(f"http://127.0.0.1:{args.port}/health")
        browser = subprocess.Popen(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={args.size}",
                "--remote-debugging-port=9333",
                "--remote-allow-origins=http://127.0.0.1:9333",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_http("http://127.0.0.1:9333/json/version")
        with urllib.request.urlopen("http://127.0.0.1:9333/json") as r:
            target = next(t for t in json.load(r) if t["type"] == "page")
        page = Page(target["webSocketDebuggerUrl"])
        quoted = ",".join(f"%22{r}%22" for r in runs)
        url = (
            f"http://127.0.0.1:{args.port}/#/compare-runs?runs=[{quoted}]"
            f"&experiments=[%22{exp_id}%22]"
        )
        page.call("Page.enable")
        page.call("Page.navigate", url=url)
        time.sleep(12)  # the UI loads runs, params and metrics asynchronously
        clicked = page.call("Runtime.evaluate", expression=PREPARE_JS, returnByValue=True)
        time.sleep(3)
        shot = page.call("Page.captureScreenshot", format="png")
        with open(args.out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(
            f"compared runs {runs[0]} and {runs[1]} of {args.experiment} "
            f"(clicked {clicked.get('result', {}).get('value')}): {args.out}"
        )
        return 0
    finally:
        for proc in (browser, ui):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
