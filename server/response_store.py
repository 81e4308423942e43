"""Stored responses: one SQLite file (standard library) in the server's data directory.

Each row is a finished response object, its conversation (the chat messages up to and including its reply, without
instructions: `previous_response_id` continues from them) and its own input items. A row belongs to its owner, a
hash of the API key that created it (the key itself is never stored); another owner sees nothing. The file is in WAL
mode and every thread has its own connection, so concurrent requests (and several processes on one data directory)
write safely; callers run these methods in worker threads, off the event loop.

A store with a Retention (server/retention.py) hides rows past its time to live at once, and `sweep` deletes them
and, while the stored JSON is over the size cap, the oldest rows (server/response_sweeper.py runs it)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from .retention import Retention

SCHEMA = """CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    response TEXT NOT NULL,
    conversation TEXT NOT NULL,
    input_items TEXT NOT NULL DEFAULT '[]',
    bytes INTEGER NOT NULL DEFAULT 0
)"""
# a file from before a column was kept gains it: (column, its definition, how to fill it in for the rows it has)
ADDED = (("input_items", "TEXT NOT NULL DEFAULT '[]'", None),
         ("bytes", "INTEGER NOT NULL DEFAULT 0", ("length(CAST(response AS BLOB)) + length(CAST(conversation AS BLOB)) "
                                                  "+ length(CAST(input_items AS BLOB))")))


def owner_of(key: str | None) -> str:
    """The owner of what `key` stores: a salted SHA-256 of the key ("" without a key)."""
    return hashlib.sha256(b"llm-runtime response owner\0" + key.encode()).hexdigest() if key else ""


LOCK_WAIT_S = 30


def _prepare(db: sqlite3.Connection) -> None:
    """WAL mode, the table, its index, and the columns an older file lacks. Retried while another
    connection holds a lock it needs: switching a new file to WAL takes one that SQLite's busy timeout does not
    wait for (two processes opening a fresh file at once)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(responses)")}
            for column, definition, fill in ADDED:
                if column not in columns:
                    db.execute(f"ALTER TABLE responses ADD COLUMN {column} {definition}")
                    if fill:
                        db.execute(f"UPDATE responses SET {column} = {fill}")
            db.execute("CREATE INDEX IF NOT EXISTS responses_by_age ON responses (created_at, bytes)")
            db.commit()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class ResponseStore:
    """Responses by id and owner in the SQLite file `path` (made, with its folder, on first use); with
    `retention`, kept for its time to live and within its size cap (without: kept until deleted)."""

    def __init__(self, path: Path, retention: Retention | None = None):
        self.path, self.retention = Path(path), retention
        self._local = threading.local()
        self._ready = threading.Lock()
        self._made = False
        self._open: dict[threading.Thread, sqlite3.Connection] = {}

    def _db(self) -> sqlite3.Connection:
        """This thread's connection; the first one makes the folder, the file and its table. A new one closes those
        of threads that have ended: worker threads come and go, and theirs would hold two file descriptors each
        until the cyclic garbage collector found them."""
        db = getattr(self._local, "db", None)
        if db is None:
            with self._ready:
                if not self._made:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                # another thread closes it once this one has ended; until then only this one uses it
                db = sqlite3.connect(self.path, timeout=LOCK_WAIT_S, check_same_thread=False)
                if not self._made:
                    _prepare(db)
                    self._made = True
                for ended in [t for t in self._open if not t.is_alive()]:
                    self._open.pop(ended).close()
                self._open[threading.current_thread()] = db
            db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable at each checkpoint, never corrupt
            self._local.db = db
        return db

    def put(self, owner: str, response: dict, conversation: list[dict], input_items: list[dict] = ()) -> None:
        texts = json.dumps(response), json.dumps(conversation), json.dumps(list(input_items))
        size = sum(len(t.encode()) for t in texts)
        with self._db() as db:  # one transaction, committed on leaving
            db.execute("INSERT OR REPLACE INTO responses (id, owner, created_at, response, conversation, input_items, "
                       "bytes) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (response["id"], owner, response["created_at"], *texts, size))

    def get(self, owner: str, response_id: str) -> dict | None:
        """The stored response object, or None (absent, or another owner's)."""
        row = self._row("response", owner, response_id)
        return None if row is None else json.loads(row)

    def conversation(self, owner: str, response_id: str) -> list[dict] | None:
        """The chat messages up to and including the response's reply, or None."""
        row = self._row("conversation", owner, response_id)
        return None if row is None else json.loads(row)

    def input_items(self, owner: str, response_id: str) -> list[dict] | None:
        """The input items the response was created with (not those of the responses before it), or None."""
        row = self._row("input_items", owner, response_id)
        return None if row is None else json.loads(row)

    def _row(self, column: str, owner: str, response_id: str) -> str | None:
        row = self._db().execute(f"SELECT {column} FROM responses WHERE id = ? AND owner = ? AND created_at >= ?",
                                 (response_id, owner, self._oldest_kept())).fetchone()
        return None if row is None else row[0]

    def _oldest_kept(self) -> float:
        """The creation time of the oldest response still alive (-inf without a time to live)."""
        return time.time() - self.retention.ttl_s if self.retention else float("-inf")

    def delete(self, owner: str, response_id: str) -> bool:
        """Forget a response; False when there was none of this owner's."""
        with self._db() as db:
            return db.execute("DELETE FROM responses WHERE id = ? AND owner = ? AND created_at >= ?",
                              (response_id, owner, self._oldest_kept())).rowcount > 0

    def purge(self, owner: str) -> int:
        """Forget every response of this owner's; how many there were."""
        with self._db() as db:
            return db.execute("DELETE FROM responses WHERE owner = ? AND created_at >= ?",
                              (owner, self._oldest_kept())).rowcount

    def size(self) -> int:
        """Bytes of stored JSON, every owner's."""
        return self._db().execute("SELECT coalesce(sum(bytes), 0) FROM responses").fetchone()[0]

    def sweep(self) -> tuple[int, int]:
        """Delete the expired rows, then, while the rest is over the size cap, the oldest (created first, then
        stored first); (expired, evicted). One transaction each."""
        if self.retention is None:
            return 0, 0
        with self._db() as db:
            expired = db.execute("DELETE FROM responses WHERE created_at < ?", (self._oldest_kept(),)).rowcount
        with self._db() as db:  # `kept`: the bytes of this row and every newer one
            evicted = db.execute("DELETE FROM responses WHERE rowid IN (SELECT rowid FROM (SELECT rowid, sum(bytes) "
                                 "OVER (ORDER BY created_at DESC, rowid DESC) AS kept FROM responses) WHERE kept > ?)",
                                 (self.retention.max_bytes,)).rowcount
        return expired, evicted

    def flush(self) -> None:
        """Move the write-ahead log into the database file and empty it (at shutdown; nothing if never used)."""
        if self.path.exists():
            self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
