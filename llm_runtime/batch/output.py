"""A batch job's output file: OpenAI batch output lines, one per custom_id, durable as each is written."""
from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory lock on the output file
    fcntl = None

log = logging.getLogger(__name__)


class BatchOutput:
    """The output JSONL, opened for appending under an exclusive lock. Each line is flushed and fsync'd
    before the next, so a kill loses at most the line being written, which the next open cuts off."""

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "ab")
        if fcntl is not None:
            try:
                fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.f.close()
                raise ValueError(f"{path} is being written by another batch job") from None
        try:
            self.answered = self._scan()  # custom_ids already in the file
        except ValueError:
            self.f.close()
            raise

    def _scan(self) -> set[str]:
        """Read the ids answered so far; a torn last line (no newline, or not a result) is truncated away."""
        ids, good_end, torn_at = set(), 0, None
        with open(self.path, "rb") as f:
            for line_no, line in enumerate(f, 1):
                complete = line.endswith(b"\n")
                if complete and not line.strip():
                    good_end += 0 if torn_at else len(line)
                    continue
                if torn_at is not None:
                    raise ValueError(f"{self.path} line {torn_at} is not a batch result line; fix or remove it")
                cid = _answered_id(line) if complete else None
                if cid is None:
                    torn_at = line_no
                    continue
                ids.add(cid)
                good_end += len(line)
        if torn_at is not None:
            log.warning("%s: dropping the torn line %d left by an interrupted run", self.path, torn_at)
            self.f.truncate(good_end)
        return ids

    def append(self, custom_id: str, response: dict | None = None, error: dict | None = None) -> None:
        self.write(result_line(custom_id, response, error))

    def write(self, line: dict) -> None:
        """Append one result line (`result_line`'s shape), durable before this returns."""
        self.f.write(json.dumps(line).encode() + b"\n")  # ASCII: no U+2028 or lone surrogate to split or fail on
        self.f.flush()
        os.fsync(self.f.fileno())
        self.answered.add(line["custom_id"])

    def close(self) -> None:
        self.f.close()


def result_line(custom_id: str, response: dict | None = None, error: dict | None = None) -> dict:
    """One OpenAI batch output line: a response body or an error, under `custom_id`."""
    return {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id, "response": response, "error": error}


def _answered_id(line: bytes) -> str | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    cid = obj.get("custom_id") if isinstance(obj, dict) else None
    return cid if isinstance(cid, str) else None
