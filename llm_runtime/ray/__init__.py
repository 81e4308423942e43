"""Offline batch on Ray Data (the optional `ray` extra); the server's replicas on Ray Serve are server/ray_serve.py.

Importing this package needs Ray; without it the import raises RayMissingError, which says how to install it.
The rest of llm_runtime never imports Ray.
"""
from __future__ import annotations


class RayMissingError(ValueError):
    """Ray is not installed: the `ray` extra is needed."""


try:
    import ray  # noqa: F401
    import ray.data  # noqa: F401
except ImportError as e:
    raise RayMissingError(f"this needs Ray ({e.name or e}): pip install 'llm-runtime[ray]' "
                          "(or pip install -e '.[ray]' in a checkout)") from None

from .batch import batch  # noqa: E402
from .file_job import run_file  # noqa: E402

__all__ = ["batch", "run_file", "RayMissingError"]
