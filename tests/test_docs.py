"""Every fenced block of README.md and docs/*.md runs as written, on the default model (docs/testing.md).

A block's info string is a language and an optional role: ```python and ```bash run in a fresh temporary
folder with the venv's `llm-runtime` on PATH; ```text is not run; ```bash install is not run but must be lines of
.ci/run; ```bash serve starts a server in the background for the rest of its page; ```python server and
```bash server run against it, with `127.0.0.1:8000` pointing at the port the test picked.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python", "bash", "sh", "text"}
ROLES = {"", "install", "serve", "server"}
DOCUMENTED_PORT = "127.0.0.1:8000"
BLOCK_TIMEOUT_S = 180


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    role: str
    text: str

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The page's fenced blocks, in order; fences inside a block are not nested."""
    found, opening, body = [], None, []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        if opening is None:
            if m := re.match(r"^```(.*)$", line):
                opening, body = (number, m.group(1).split()), []
        elif line.rstrip() == "```":
            info = opening[1] + ["", ""]
            found.append(Block(page, opening[0], info[0], info[1], "\n".join(body) + "\n"))
            opening = None
        else:
            body.append(line)
    assert opening is None, f"{page.name}:{opening[0]}: a fence that never closes"
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def ci_lines() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_every_block_says_what_it_is():
    bad = [f"{b.where()}: ```{b.language} {b.role}".rstrip() for b in ALL_BLOCKS
           if b.language not in LANGUAGES or b.role not in ROLES
           or (b.role in ("install", "serve") and b.language != "bash")]
    assert not bad, "fences need a language of " + ", ".join(sorted(LANGUAGES)) + " and a role of install, serve, " \
                    "server or none (docs/testing.md):\n" + "\n".join(bad)


def test_install_blocks_are_the_lines_of_ci_run():
    installs = [b for b in ALL_BLOCKS if b.role == "install"]
    assert installs, "README's set-up commands are a ```bash install block"
    lines = ci_lines()
    for block in installs:
        for line in block.text.strip().splitlines():
            assert line.strip() in lines, f"{block.where()}: {line!r} is not a line of .ci/run"
    readme = [b for b in installs if b.page.name == "README.md"]
    assert [line.strip() for line in readme[0].text.strip().splitlines()] == lines[-2:], \
        "README's set-up block is .ci/run's two commands, in order"


def test_commands_run_outside_install_blocks_install_nothing():
    bad = [b.where() for b in ALL_BLOCKS if b.role != "install" and b.language in ("bash", "sh")
           and re.search(r"\b(pip install|apt-get|apt install)\b", b.text)]
    assert not bad, "install commands belong in ```bash install blocks, which must be .ci/run's lines: " + str(bad)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_block(block: Block, folder: Path, port: int | None) -> None:
    text = block.text if port is None else block.text.replace(DOCUMENTED_PORT, f"127.0.0.1:{port}")
    if block.language == "python":
        script = folder / f"block_{block.page.stem}_{block.line}.py"
        script.write_text(text)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", text]
    done = subprocess.run(cmd, cwd=folder, env=environment(), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)
    assert done.returncode == 0, (f"{block.where()} exited {done.returncode}:\n{text}\n--- stdout\n"
                                  f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


class Server:
    """A page's ```bash serve block, run in the background on a free port until the page is done."""

    def __init__(self, block: Block, folder: Path):
        self.port = free_port()
        command = f"{block.text.strip()} --port {self.port} --data-dir {folder / 'server-data'}"
        self.log = open(folder / "server.log", "w+")
        self.process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=folder, env=environment(),
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(block)

    def wait_ready(self, block: Block, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{block.where()}: the server exited:\n{self.output()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{block.where()}: the server was not ready in {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


RUNNABLE = [page for page in PAGES if any(b.language != "text" and b.role != "install" for b in blocks_of(page))]


@pytest.mark.parametrize("page", RUNNABLE, ids=[p.name for p in RUNNABLE])
def test_page_runs(page: Path, tmp_path: Path):
    """The page's blocks, in order, in one folder: a block may use files an earlier one wrote."""
    server = None
    try:
        for block in blocks_of(page):
            if block.language == "text" or block.role == "install":
                continue
            if block.role == "serve":
                if server:
                    server.stop()
                server = Server(block, tmp_path)
            elif block.role == "server":
                assert server, f"{block.where()}: a server block needs a ```bash serve block before it on its page"
                run_block(block, tmp_path, server.port)
            else:
                run_block(block, tmp_path, None)
    finally:
        if server:
            server.stop()
