"""server/response_store.py: rows by id and owner in one SQLite file, many writers at once, a hashed key."""
import argparse
import concurrent.futures
import multiprocessing
import sqlite3
import time

import pytest

from llm_runtime.server.response_store import ResponseStore, owner_of
from llm_runtime.server.retention import Retention, parse_duration


def write_rows(path, process: int) -> None:
    """Four threads of one process, each writing 25 rows through this process's store at once."""
    store = ResponseStore(path)

    def write(t: int) -> None:
        for i in range(25):
            store.put(f"owner{t % 3}", {"id": f"resp_{process}_{t}_{i}", "created_at": i}, [{"role": "user"}])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))


def test_many_writers_at_once_keep_every_row(tmp_path):
    """Two processes of four threads each write to one file at the same time; every row is kept, by its owner."""
    path = tmp_path / "r.sqlite3"
    ResponseStore(path)
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=write_rows, args=(path, p)) for p in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)  # spawned children import the package: slow on a loaded machine
    assert [p.exitcode for p in procs] == [0, 0]
    store = ResponseStore(path)
    for p in range(2):
        for t in range(4):
            for i in range(25):
                assert store.get(f"owner{t % 3}", f"resp_{p}_{t}_{i}") == {"id": f"resp_{p}_{t}_{i}", "created_at": i}
                assert store.get(f"owner{(t + 1) % 3}", f"resp_{p}_{t}_{i}") is None


def open_fresh_files(paths, barrier) -> None:
    """One row into each of `paths`, each a new file, at the moment the other processes write theirs."""
    for k, path in enumerate(paths):
        store = ResponseStore(path)
        barrier.wait(60)
        store.put("", {"id": f"resp_{multiprocessing.current_process().name}_{k}", "created_at": k}, [])


def test_processes_opening_a_new_file_at_once_all_write(tmp_path):
    """Making a new file WAL takes a lock SQLite's busy timeout does not wait for: four processes that open the
    same fresh file at once (30 times over) all write their row (before the store retried, about 5% failed)."""
    paths = [tmp_path / f"r{k}.sqlite3" for k in range(30)]
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    procs = [spawn.Process(target=open_fresh_files, args=(paths, barrier), name=f"p{p}") for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
    assert [p.exitcode for p in procs] == [0] * 4
    for k, path in enumerate(paths):
        assert all(ResponseStore(path).get("", f"resp_p{p}_{k}") for p in range(4))


def test_owners_are_hashes_and_rows_survive_reopening(tmp_path):
    path = tmp_path / "sub" / "r.sqlite3"
    store = ResponseStore(path)
    owner = owner_of("sk-secret-key")
    store.put(owner, {"id": "resp_1", "created_at": 1, "status": "completed"}, [{"role": "user", "content": "hi"}])
    assert owner != "sk-secret-key" and len(owner) == 64 and owner_of(None) == ""
    again = ResponseStore(path)
    assert again.get(owner, "resp_1")["status"] == "completed"
    assert again.conversation(owner, "resp_1") == [{"role": "user", "content": "hi"}]
    assert again.get(owner_of("another-key"), "resp_1") is None and again.get("", "resp_1") is None
    assert not again.delete(owner_of("another-key"), "resp_1") and again.delete(owner, "resp_1")
    assert again.get(owner, "resp_1") is None and not again.delete(owner, "resp_1")
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert b"sk-secret-key" not in path.read_bytes()


def old_file(path, columns: str, values: str):
    """A store file from an older version: its table with `columns` after the first four, one row."""
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE responses (id TEXT PRIMARY KEY, owner TEXT NOT NULL, created_at INTEGER NOT NULL, "
                f"response TEXT NOT NULL, {columns})")
    old.execute(f"INSERT INTO responses VALUES ('resp_old', '', 1, '{{\"id\": \"resp_old\"}}', {values})")
    old.commit()
    old.close()
    return path


def test_a_file_from_before_input_items_gains_the_column(tmp_path):
    path = old_file(tmp_path / "old.sqlite3", "conversation TEXT NOT NULL", "'[]'")
    store = ResponseStore(path)
    assert store.get("", "resp_old") == {"id": "resp_old"} and store.input_items("", "resp_old") == []
    store.put("", {"id": "resp_new", "created_at": 2}, [], [{"id": "msg_1", "type": "message"}])
    assert store.input_items("", "resp_new") == [{"id": "msg_1", "type": "message"}]


def row(response_id: str, created_at: float, text: str = "") -> dict:
    return {"id": response_id, "created_at": int(created_at), "text": text}


def test_a_response_past_its_time_to_live_is_gone_and_swept(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite3", Retention(ttl_s=60))
    now = time.time()
    store.put("a", row("resp_old", now - 120), [])
    store.put("a", row("resp_new", now - 5), [])
    assert store.get("a", "resp_old") is None and store.conversation("a", "resp_old") is None  # hidden at once
    assert not store.delete("a", "resp_old") and store.get("a", "resp_new")["id"] == "resp_new"
    assert store.sweep() == (1, 0)
    assert [r[0] for r in sqlite3.connect(store.path).execute("SELECT id FROM responses")] == ["resp_new"]


def test_over_the_size_cap_the_oldest_go_first(tmp_path):
    """Rows of ~1 kB under a 2.5 kB cap: the two newest stay, whoever owns them; of two created in the same
    second, the one stored first goes first."""
    store = ResponseStore(tmp_path / "r.sqlite3", Retention(max_bytes=2500))
    now = time.time()
    for k, created in enumerate([now - 50, now - 10, now - 40, now - 30, now - 30]):
        store.put(f"owner{k % 2}", row(f"resp_{k}", created, "x" * 1000), [])
    assert store.size() > 5000
    assert store.sweep() == (0, 3)
    left = {r[0] for r in sqlite3.connect(store.path).execute("SELECT id FROM responses")}
    assert left == {"resp_1", "resp_4"} and 2000 < store.size() <= 2500
    assert store.sweep() == (0, 0)


def test_purge_forgets_one_owner_only(tmp_path):
    store = ResponseStore(tmp_path / "r.sqlite3", Retention())
    for k in range(6):
        store.put(f"owner{k % 2}", row(f"resp_{k}", time.time()), [])
    assert store.purge("owner0") == 3 and store.purge("owner0") == 0
    assert [store.get("owner1", f"resp_{k}") is not None for k in range(6)] == [False, True] * 3
    assert all(store.get("owner0", f"resp_{k}") is None for k in range(6))


def test_an_older_file_gains_the_size_column_filled_in(tmp_path):
    path = old_file(tmp_path / "old.sqlite3", "conversation TEXT NOT NULL, input_items TEXT NOT NULL DEFAULT '[]'",
                    "'[]', '[]'")
    assert ResponseStore(path).size() == len('{"id": "resp_old"}') + 4


def test_durations_read_as_the_flags_take_them():
    assert [parse_duration(t) for t in ("30d", "12h", "15m", "3600s", "3600", "1.5")] == [
        2592000, 43200, 900, 3600, 3600, 1.5]
    for bad in ("0", "-1s", "3w", "soon", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_connections_of_ended_threads_are_closed(tmp_path):
    """Each thread has its own connection; one of a thread that has ended is closed when another thread opens its
    own, so worker threads that come and go hold no file descriptors (found by benchmarks/soak.py: the server's
    descriptors climbed between garbage collections)."""
    import os
    import threading

    store = ResponseStore(tmp_path / "r.sqlite3")
    store.put("", {"id": "resp_1", "created_at": 1}, [])

    def descriptors() -> int:
        """This process's open files in tmp_path."""
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                count += str(tmp_path) in os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # listdir's own descriptor, closed since
                pass
        return count

    held = descriptors()
    for _ in range(20):
        t = threading.Thread(target=store.get, args=("", "resp_1"))
        t.start()
        t.join()
    # the last thread's connection (its file and write-ahead log), and a closed one's file that SQLite keeps open
    # while another connection holds a lock on it (the next connection reuses it); 43 when none were closed
    assert descriptors() <= held + 4
