"""The fingerprint of a raw ``--dataset`` folder or archive: every file's name, size and modification time,
plus the build options, stored with the copy built from it (``<output_dir>/dataset/source_fingerprint.json``).

A later start of the same run compares the source with it: an unchanged source reuses the copy, a changed
one is rebuilt (or, when resuming, refused with what changed), so a run never trains on stale data. Only
``stat`` is called: nothing is opened or read, so a special file cannot hang the check.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

FINGERPRINT_FILE = "source_fingerprint.json"


@dataclass
class SourceFingerprint:
    source: str  # the resolved source path
    options: dict  # build options that change the built copy (folds, seed)
    entries: dict[str, list[int]]  # relative path -> [size, mtime_ns]; links as [-1, mtime_ns]

    @property
    def digest(self) -> str:
        payload = json.dumps([self.options, sorted(self.entries.items())], sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()

    def to_json(self) -> dict:
        return {"source": self.source, "options": self.options, "num_files": len(self.entries), "digest": self.digest,
                "entries": self.entries}

    @classmethod
    def from_json(cls, data: dict) -> SourceFingerprint:
        return cls(source=data["source"], options=data["options"], entries={k: list(v) for k, v in data["entries"].items()})


def fingerprint_source(source: Path, **options) -> SourceFingerprint:
    source = Path(source)
    entries: dict[str, list[int]] = {}
    if source.is_dir():
        for folder, dirs, files in os.walk(source, followlinks=False):
            dirs.sort()
            for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                path = os.path.join(folder, name)
                try:
                    info = os.stat(path, follow_symlinks=False)
                except OSError:
                    continue
                size = -1 if os.path.islink(path) else info.st_size
                entries[os.path.relpath(path, source)] = [size, info.st_mtime_ns]
    else:
        info = source.stat()
        entries[source.name] = [info.st_size, info.st_mtime_ns]
    return SourceFingerprint(source=str(source.resolve()), options=dict(sorted(options.items())), entries=entries)


def read_fingerprint(built: Path) -> SourceFingerprint | None:
    try:
        return SourceFingerprint.from_json(json.loads((Path(built) / FINGERPRINT_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_fingerprint(built: Path, fingerprint: SourceFingerprint) -> None:
    path = Path(built) / FINGERPRINT_FILE
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(fingerprint.to_json()) + "\n")
    os.replace(partial, path)


def describe_change(old: SourceFingerprint | None, new: SourceFingerprint) -> str | None:
    """What differs between the source a copy was built from and the source now (None: nothing)."""
    if old is None:
        return "the copy records no fingerprint of its source"
    changes = []
    if old.source != new.source:
        changes.append(f"it was built from {old.source}")
    for key in sorted(set(old.options) | set(new.options)):
        if old.options.get(key) != new.options.get(key):
            changes.append(f"{key} {old.options.get(key)} -> {new.options.get(key)}")
    added = sorted(set(new.entries) - set(old.entries))
    removed = sorted(set(old.entries) - set(new.entries))
    modified = sorted(name for name in set(old.entries) & set(new.entries) if old.entries[name] != new.entries[name])
    for verb, names in (("added", added), ("removed", removed), ("changed", modified)):
        if names:
            changes.append(f"{len(names)} file{'s' if len(names) > 1 else ''} {verb} (e.g. {names[0]})")
    return "; ".join(changes) or None
