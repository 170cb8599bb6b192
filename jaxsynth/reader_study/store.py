"""The reader study's SQLite file: the one place that knows which image is real.

Everything a study needs lives in `<STUDY>/study.sqlite` next to `<STUDY>/images/`. The web app
reads and writes it on every request (one short-lived connection each, WAL journal), so an answer
is on disk before the browser is told it was saved and a crash or closed tab loses nothing.

Tables:
- `meta(key, value)`: seed, counts, creation time, the Flask session secret, the skip report;
- `images(image_id, file_name, origin, source_path, width, height, sha256)`: `origin` is the
  ground truth ("real" / "synthetic"); `file_name` is an opaque random name under `images/`;
- `raters(rater_id, name, token)`: `token` is the private link's secret;
- `items(rater_id, position, item_token, image_id, first_shown_at)`: each rater's own shuffled
  order; `item_token` is a fresh random token per (rater, image), so URLs never repeat across
  raters and say nothing about the image;
- `answers(rater_id, position, call, score, answered_at)`: one final answer per item.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from jaxsynth.errors import UserError

DB_NAME = "study.sqlite"
IMAGES_DIR = "images"
ORIGINS = ("real", "synthetic")
CALLS = ORIGINS  # what a rater may answer
SCORES = (1, 2, 3, 4, 5)

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (
  image_id INTEGER PRIMARY KEY,
  file_name TEXT NOT NULL UNIQUE,
  origin TEXT NOT NULL CHECK (origin IN ('real', 'synthetic')),
  source_path TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  sha256 TEXT NOT NULL
);
CREATE TABLE raters (
  rater_id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  token TEXT NOT NULL UNIQUE
);
CREATE TABLE items (
  rater_id INTEGER NOT NULL REFERENCES raters(rater_id),
  position INTEGER NOT NULL,
  item_token TEXT NOT NULL UNIQUE,
  image_id INTEGER NOT NULL REFERENCES images(image_id),
  first_shown_at TEXT,
  PRIMARY KEY (rater_id, position),
  UNIQUE (rater_id, image_id)
);
CREATE TABLE answers (
  rater_id INTEGER NOT NULL,
  position INTEGER NOT NULL,
  call TEXT NOT NULL CHECK (call IN ('real', 'synthetic')),
  score INTEGER CHECK (score IS NULL OR score BETWEEN 1 AND 5),
  answered_at TEXT NOT NULL,
  PRIMARY KEY (rater_id, position),
  FOREIGN KEY (rater_id, position) REFERENCES items(rater_id, position)
);
"""


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def db_path(study_dir: str | os.PathLike) -> Path:
    return Path(study_dir) / DB_NAME


def connect(study_dir: str | os.PathLike, *, create: bool = False) -> sqlite3.Connection:
    """Open the study database (autocommit; use `transaction`). `create` makes a new, empty one."""
    path = db_path(study_dir)
    if not create and not path.is_file():
        raise UserError(
            f"{study_dir}: not a reader study (no {DB_NAME}; run `reader-study create`)"
        )
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if not create and path not in _CHECKED:  # once per process: a damaged file is one line
        _check_intact(conn, path)
        _CHECKED.add(path)
    conn.execute("PRAGMA foreign_keys = ON")
    if create:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA)
        os.chmod(path, 0o600)  # holds the ground truth and the rater tokens
    return conn


_CHECKED: set[Path] = set()


def _check_intact(conn: sqlite3.Connection, path: Path) -> None:
    """`PRAGMA quick_check` + the schema: a truncated or foreign file is a one-line error
    instead of a `DatabaseError` deep inside a request or a results export."""
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        verdict, tables = str(e), set()
    if verdict != "ok" or "meta" not in tables:
        conn.close()
        why = verdict if verdict != "ok" else "no study tables"
        raise UserError(
            f"{path}: the study database is damaged ({why}); restore it from a backup "
            f"(the answers live only in this file)"
        )


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT: check-then-write is atomic across server threads."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row["value"]


@dataclasses.dataclass(frozen=True)
class Rater:
    rater_id: int
    name: str
    token: str


@dataclasses.dataclass(frozen=True)
class Item:
    """One of a rater's items as the web app may see it: no origin, no file name."""

    position: int  # 0-based place in this rater's order
    item_token: str


def rater_by_token(conn: sqlite3.Connection, token: str) -> Rater | None:
    row = conn.execute(
        "SELECT rater_id, name, token FROM raters WHERE token = ?", (token,)
    ).fetchone()
    return None if row is None else Rater(row["rater_id"], row["name"], row["token"])


def raters(conn: sqlite3.Connection) -> list[Rater]:
    rows = conn.execute("SELECT rater_id, name, token FROM raters ORDER BY rater_id").fetchall()
    return [Rater(r["rater_id"], r["name"], r["token"]) for r in rows]


def progress(conn: sqlite3.Connection, rater_id: int) -> tuple[int, int]:
    """(answered, total) for one rater."""
    total = conn.execute("SELECT COUNT(*) FROM items WHERE rater_id = ?", (rater_id,)).fetchone()[0]
    done = conn.execute("SELECT COUNT(*) FROM answers WHERE rater_id = ?", (rater_id,)).fetchone()[
        0
    ]
    return int(done), int(total)


def next_unanswered(conn: sqlite3.Connection, rater_id: int) -> Item | None:
    """The rater's first item without an answer (where a paused rater resumes), or None."""
    row = conn.execute(
        "SELECT i.position, i.item_token FROM items i "
        "LEFT JOIN answers a ON a.rater_id = i.rater_id AND a.position = i.position "
        "WHERE i.rater_id = ? AND a.position IS NULL ORDER BY i.position LIMIT 1",
        (rater_id,),
    ).fetchone()
    return None if row is None else Item(row["position"], row["item_token"])


def item_of_rater(conn: sqlite3.Connection, rater_id: int, item_token: str) -> Item | None:
    """The item with this token if it belongs to this rater; None for anyone else's or a forgery."""
    row = conn.execute(
        "SELECT position, item_token FROM items WHERE rater_id = ? AND item_token = ?",
        (rater_id, item_token),
    ).fetchone()
    return None if row is None else Item(row["position"], row["item_token"])


def image_file_of_item(conn: sqlite3.Connection, rater_id: int, item_token: str) -> str | None:
    row = conn.execute(
        "SELECT im.file_name FROM items i JOIN images im ON im.image_id = i.image_id "
        "WHERE i.rater_id = ? AND i.item_token = ?",
        (rater_id, item_token),
    ).fetchone()
    return None if row is None else row["file_name"]


def mark_shown(conn: sqlite3.Connection, rater_id: int, position: int) -> None:
    conn.execute(
        "UPDATE items SET first_shown_at = ? "
        "WHERE rater_id = ? AND position = ? AND first_shown_at IS NULL",
        (now_utc(), rater_id, position),
    )
