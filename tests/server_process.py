"""A `llm-runtime serve` process on loopback, for the server's tests."""
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

CLI = str(Path(sys.executable).parent / "llm-runtime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    base: str  # its URL
    log: IO[str]

    def output(self) -> str:
        """Everything the process has written so far."""
        self.log.seek(0)
        return self.log.read()


@contextlib.contextmanager
def launched(folder, *args):
    """A `llm-runtime serve` process on a free loopback port, once /health is 200. Without a `--data-dir` its
    stored responses go to a fresh temporary folder, never the user's. Stopped (SIGTERM: a drain) on leaving, if
    still running; killed if it has not exited a minute later."""
    port = free_port()
    data = None if "--data-dir" in args else tempfile.TemporaryDirectory()
    args = args if data is None else (*args, "--data-dir", data.name)
    log = tempfile.TemporaryFile("w+")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen([CLI, "serve", "--model", str(folder), "--port", str(port), *args],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{server.base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            proc.kill()
            proc.wait()
            pytest.fail(f"the server did not start:\n{server.output()}")
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if data is not None:
            data.cleanup()
        log.close()


@contextlib.contextmanager
def serving(folder, *args, logs: list[str] | None = None):
    """`launched`, yielding only its base URL. `logs`: gets the process's whole output appended once it has
    stopped."""
    with launched(folder, *args) as server:
        try:
            yield server.base
        finally:
            if server.proc.poll() is None:
                server.proc.terminate()
                server.proc.wait(timeout=60)
            if "Traceback" in (text := server.output()):
                print(text)  # shown with a failing test
            if logs is not None:
                logs.append(text)
