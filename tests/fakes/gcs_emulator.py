"""Start and stop ``gcp-storage-emulator`` on 127.0.0.1 for a test.

``with GcsEmulator("celo-test") as gcs:`` runs the emulator in memory on a
free port with one bucket; ``gcs.env`` holds the ``STORAGE_EMULATOR_HOST``
setting clients need (with the scheme). The process is stopped on exit.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsEmulator:
    """A throwaway in-memory GCS emulator process."""

    def __init__(self, bucket: str = "celo-test", start_timeout: float = 20.0):
        self.bucket = bucket
        self.port = _free_port()
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.url}

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as r:
                names = [b["name"] for b in json.load(r).get("items", [])]
                return self.bucket in names
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return False

    def __enter__(self) -> GcsEmulator:
        cmd = [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--default-bucket",
            self.bucket,
            "--in-memory",
            "-q",
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"gcp-storage-emulator exited ({self._proc.returncode}): {err}")
            if time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"gcp-storage-emulator not ready after {self.start_timeout}s")
            time.sleep(0.1)
        return self

    def __exit__(self, *exc) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()
