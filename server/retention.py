"""How long, and how much of, the stored responses (/v1/responses) the server keeps: `--responses-ttl` and
`--responses-max-mb`. Standard library only: parsing `serve`'s flags loads this, not the app."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MB = 1 << 20


@dataclass(frozen=True)
class Retention:
    """A stored response is gone `ttl_s` seconds after it was created (30 days, as OpenAI keeps them); past
    `max_bytes` of stored JSON, the oldest go first."""
    ttl_s: float = 30 * UNITS["d"]
    max_bytes: int = 1024 * MB


def parse_duration(text: str) -> float:
    """'30d', '12h', '15m', '3600s' or '3600' (seconds) -> seconds, > 0."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhd]?)\s*", text.lower())
    if not found or float(found[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration > 0 like 30d, 12h, 15m, 3600s or 3600")
    return float(found[1]) * UNITS[found[2] or "s"]


def _megabytes(text: str) -> int:
    try:
        size = float(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in MB > 0")
    return int(size * MB)


def add_arguments(p) -> None:
    """`--responses-ttl` and `--responses-max-mb`, their defaults read from Retention."""
    default = Retention()
    days, mb = default.ttl_s / UNITS["d"], default.max_bytes // MB
    p.add_argument("--responses-ttl", type=parse_duration, default=default.ttl_s, metavar="DURATION",
                   help=f"stored responses are deleted this long after they were created: 30d, 12h, 15m, 3600s or "
                        f"seconds (default: {days:g}d)")
    p.add_argument("--responses-max-mb", type=_megabytes, default=default.max_bytes, metavar="MB",
                   help=f"past this many MB (2^20 bytes) of stored responses, the oldest are deleted first "
                        f"(default: {mb})")


def retention(args) -> Retention:
    """The Retention the parsed flags ask for."""
    return Retention(ttl_s=args.responses_ttl, max_bytes=args.responses_max_mb)
