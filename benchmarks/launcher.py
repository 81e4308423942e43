"""The benchmarks' one child-process launcher: each measurement runs in a fresh interpreter (its own load, peak
RSS and caches) and prints one JSON line. Standard library only: a child measuring onnxruntime-genai must not
import our package into the process whose memory it reports."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def run_child(script: str | Path, *args, python: str = sys.executable, timeout: float = 900):
    """Run `python SCRIPT --child ARGS_JSON` and return what its child function returned (parsed JSON)."""
    proc = subprocess.run([python, str(script), "--child", json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process {Path(script).name} {args!r} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_main(fn: Callable) -> bool:
    """In a script's `__main__`: when started by `run_child`, print `fn(*args)` as JSON and return True."""
    if sys.argv[1:2] != ["--child"]:
        return False
    print(json.dumps(fn(*json.loads(sys.argv[2]))))
    return True
