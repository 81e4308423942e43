"""Run as a script in a fresh interpreter: imports modules each in a fresh process and prints a JSON report.

    python fresh_imports.py '{"loaded": [...], "alone": [...], "preload": [...], "path": [...]}'

`loaded`: each module is imported in a fork of this bare interpreter (nothing but the standard library loaded);
the report lists every module it brought into `sys.modules`. `alone`: the third-party modules in `preload` are
imported once, then each module is imported in its own fork, the first of our modules to load there, so an
import cycle among ours fails as it would in a fresh interpreter; the report gives each failure's traceback, and
apart from them the modules that need a package which is not installed (an optional extra's), with its name.
"""
from __future__ import annotations

import importlib
import importlib.util
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


def import_alone(name: str, missing: set[str]) -> str:
    """'' once imported, or the missing package that stopped it (also behind the module's own error about it,
    as `llm_runtime.ray` raises when Ray is not installed)."""
    try:
        importlib.import_module(name)
    except Exception as e:
        link = e
        while link is not None:
            if isinstance(link, ModuleNotFoundError) and (link.name or "").split(".")[0] in missing:
                return link.name.split(".")[0]
            link = link.__cause__ or link.__context__
        raise
    return ""


def main(request: dict) -> dict:
    sys.path[:0] = request.get("path", [])  # folders to import from besides the installed packages
    loaded = {}
    for name in request["loaded"]:
        code, out = in_child(lambda: loaded_by(name))
        loaded[name] = json.loads(out) if code == 0 else out
    missing = {name for name in request["preload"] if importlib.util.find_spec(name) is None}
    for name in sorted(set(request["preload"]) - missing):
        importlib.import_module(name)
    failed, unavailable = {}, {}
    for name in request["alone"]:
        code, out = in_child(lambda: import_alone(name, missing))
        if code != 0:
            failed[name] = out
        elif out:
            unavailable[name] = out
    return {"loaded": loaded, "failed": failed, "unavailable": unavailable}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
