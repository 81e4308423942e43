"""Run as a script in a fresh interpreter: imports modules each in a fresh process and prints a JSON report.

    python fresh_imports.py '{"loaded": [...], "alone": [...], "preload": [...], "path": [...]}'

`loaded`: each module is imported in a fork of this bare interpreter (nothing but the standard library loaded);
the report lists every module it brought into `sys.modules`. `alone`: the third-party modules in `preload` are
imported once, then each module is imported in its own fork, the first of our modules to load there, so an
import cycle among ours fails as it would in a fresh interpreter; the report gives each failure's traceback.
"""
from __future__ import annotations

import importlib
import json
import os
import sys
import traceback


def in_child(work) -> tuple[int, str]:
    """(exit status, what the child wrote) of work() run in a fork."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out, code = work(), 0
        except BaseException:
            out, code = traceback.format_exc(), 1
        os.write(write, out.encode())
        os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def loaded_by(name: str) -> str:
    before = set(sys.modules)
    importlib.import_module(name)
    return json.dumps(sorted(set(sys.modules) - before))


def main(request: dict) -> dict:
    sys.path[:0] = request.get("path", [])  # folders to import from besides the installed packages
    loaded = {}
    for name in request["loaded"]:
        code, out = in_child(lambda: loaded_by(name))
        loaded[name] = json.loads(out) if code == 0 else out
    for name in request["preload"]:
        importlib.import_module(name)
    failed = {}
    for name in request["alone"]:
        code, out = in_child(lambda: importlib.import_module(name) and "")
        if code != 0:
            failed[name] = out
    return {"loaded": loaded, "failed": failed}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
