"""The `llm-runtime` command itself (llm_runtime/cli/main.py): --version."""
import json
import subprocess
import sys
import tomllib
from pathlib import Path

from llm_runtime.cli.main import version

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("onnxruntime", "fastapi", "uvicorn", "starlette", "torch", "transformers", "numpy")


def test_version_is_the_projects():
    assert version() == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_version_prints_one_line_and_loads_no_runtime():
    """`llm-runtime --version` needs no subcommand, prints `llm-runtime X.Y.Z` and imports nothing heavy."""
    code = ("import json, sys\nfrom llm_runtime.cli.main import main\ntry:\n    main(['--version'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None)\n"
            "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"llm-runtime {version()}\n"
    loaded = json.loads(out.stderr.splitlines()[-1])
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m.startswith("llm_runtime.") and not m.startswith("llm_runtime.cli")]
