"""A `llm-runtime serve` process on loopback, for the server's tests."""
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

CLI = str(Path(sys.executable).parent / "llm-runtime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(folder, *args, logs: list[str] | None = None):
    """A `llm-runtime serve` process on a free loopback port; yields its base URL once /health is 200. Without a
    `--data-dir` its stored responses go to a fresh temporary folder, never the user's. `logs`: gets the
    process's whole output appended once it has stopped."""
    port = free_port()
    data = None if "--data-dir" in args else tempfile.TemporaryDirectory()
    args = args if data is None else (*args, "--data-dir", data.name)
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([CLI, "serve", "--model", str(folder), "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            proc.kill()
            proc.wait()
            log.seek(0)
            pytest.fail(f"the server did not start:\n{log.read()}")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if data is not None:
            data.cleanup()
        log.seek(0)
        if "Traceback" in (text := log.read()):
            print(text)  # shown with a failing test
        if logs is not None:
            logs.append(text)
        log.close()
