"""The teacher's answer cache: one SQLite row per request key, committed durably as each answer arrives.

A run of days over 21k images x 10 prompts will be killed at some point. Every answer is committed
(WAL journal, ``synchronous=FULL``) the moment it is received, before anything else is done with it,
so a run killed at any instant loses at most the answers that were still on the wire, and a restart
asks only for the keys the cache lacks: no pair is lost, duplicated, or paid for twice once stored.

The key is the sha256 of everything the answer depends on (:func:`cache_key`): image, prompt text,
caption, model, sampling parameters and prompt version. Change any of them and the old answers are
simply not found. The cache never holds the API key or the image bytes.

Besides answers, ``usage`` logs the tokens of every response the server was paid for, including
refusals and empty answers that were not kept, so the cost of a run can always be recomputed.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,               -- "vqa" or "class_description"
    image_id TEXT,                    -- vqa only
    question_id INTEGER,              -- vqa: prompt family; class_description: sample index
    label TEXT NOT NULL,              -- category name
    model TEXT NOT NULL,              -- the model name requested
    answer TEXT NOT NULL,
    finish_reason TEXT,
    response_model TEXT,              -- the model name the server reported
    response_id TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    attempts INTEGER NOT NULL,        -- requests sent for this key, including failed ones
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (
    key TEXT NOT NULL,
    outcome TEXT NOT NULL,            -- "stored", "refused", "empty", ...
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    created REAL NOT NULL
);
"""


def cache_key(fields: Mapping[str, object]) -> str:
    """sha256 of the canonical JSON of ``fields`` (sorted keys, so the order they are given in is irrelevant)."""
    return hashlib.sha256(json.dumps(dict(fields), sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class CachedAnswer:
    key: str
    kind: str
    image_id: str | None
    question_id: int
    label: str
    model: str
    answer: str
    finish_reason: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    created: float = 0.0


_ANSWER_COLUMNS = tuple(CachedAnswer.__dataclass_fields__)


class TeacherCache:
    """``with TeacherCache(path) as cache: cache.put(answer); cache.get(key)``.

    One process writes at a time (``generate_qa`` holds a lock on its output folder); readers in other
    processes see every committed answer (WAL).
    """

    def __init__(self, path: str | Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise FileNotFoundError(f"teacher cache {self.path} does not exist")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
            if not readonly:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            version = self._db.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
        except sqlite3.DatabaseError as error:
            raise ValueError(f"{self.path} is not a teacher cache ({error})") from error
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise ValueError(f"{self.path}: cache schema version {version and version[0]} is not {SCHEMA_VERSION}; use another --cache file")

    # ---- reading
    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM answers")}

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM answers WHERE key=?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute(f"SELECT {', '.join(_ANSWER_COLUMNS)} FROM answers WHERE key=?", (key,)).fetchone()
        return None if row is None else CachedAnswer(*row)

    def answers(self) -> Iterator[CachedAnswer]:
        for row in self._db.execute(f"SELECT {', '.join(_ANSWER_COLUMNS)} FROM answers ORDER BY created"):
            yield CachedAnswer(*row)

    def total_cost_usd(self) -> float:
        return self._db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM usage").fetchone()[0]

    def mean_completion_tokens(self) -> float | None:
        return self._db.execute("SELECT AVG(completion_tokens) FROM answers WHERE completion_tokens IS NOT NULL").fetchone()[0]

    # ---- writing (each call is one durable transaction)
    def put(self, answer: CachedAnswer, *, cost_usd: float | None = None) -> bool:
        """Store an answer and its usage in one transaction. False if the key was already there (kept as is)."""
        values = tuple(getattr(answer, name) for name in _ANSWER_COLUMNS)
        with self._transaction():
            inserted = self._db.execute(f"INSERT OR IGNORE INTO answers VALUES ({', '.join('?' * len(values))})", values).rowcount == 1
            self._db.execute(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?)",
                (answer.key, "stored" if inserted else "duplicate", answer.prompt_tokens, answer.completion_tokens, cost_usd, answer.created),
            )
        return inserted

    def record_usage(self, key: str, outcome: str, prompt_tokens: int | None, completion_tokens: int | None, cost_usd: float | None) -> None:
        """Log a paid response that was not kept (a refusal, an empty answer)."""
        with self._transaction():
            self._db.execute("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?)", (key, outcome, prompt_tokens, completion_tokens, cost_usd, time.time()))

    def _transaction(self):
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TeacherCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self):
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *exc):
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
