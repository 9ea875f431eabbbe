"""`mlflow models serve` of a model in a subprocess, for the serve test and bench/serve.py."""

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

READY_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, payload: dict) -> tuple:
    """(HTTP status, decoded JSON body) of POSTing ``payload`` as JSON."""
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def audio_payload(path, top_k: int = 5) -> dict:
    """The scoring protocol's request for one audio file, base64-encoded."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return {"dataframe_records": [{"audio": data}], "params": {"top_k": top_k}}


@contextmanager
def serving(model_uri: str, env: dict, log):
    """Yield the /invocations URL of ``mlflow models serve -m model_uri`` (local env)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping").close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the model server did not start: {cmd}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        server.terminate()
        server.wait(timeout=30)
