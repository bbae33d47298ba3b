"""Where the SEM dataset builder's files come from, and what each file's path says about it.

A *source* is one of:

- a folder: the archive as extracted (category folders, or flat ``L<k>_<md5>.jpg`` names), or a
  user's folder (category folders, or an ImageFolder with ``metadata.jsonl`` / ``metadata.csv``);
  archives lying inside the folder (e.g. one ``.tar`` per category, as downloaded) are read too;
- a ``.tar`` / ``.tar.gz`` / ``.tgz`` / ``.tar.bz2`` / ``.tar.xz`` / ``.zip`` holding the same.

:func:`iter_source` walks a source and yields one :class:`SourceFile` per regular file, or a
:class:`Reject` for an entry that cannot be a file (a link inside a tar, an encrypted zip member, ...).
Paths are relative and POSIX-style, so a dataset built from the same input is the same wherever the
input lives.

Nothing from outside the source gets in, and nothing that is not a regular file is read: in a folder,
a link to a file is followed only when it resolves inside the source, a linked folder is never
walked (each is a reject), and FIFOs, devices and sockets (or links to them, e.g. ``/dev/zero``) are
rejected by their type before anything opens them. Archive members with absolute paths or ``..`` are
rejected, and every member is checked against the per-file cap from its header, then streamed: a
member larger than ``MEMBER_IN_MEMORY_BYTES`` goes to a spool file in blocks, never whole into memory. :class:`ClassMatcher` turns folder names, ``L<k>_`` prefixes and metadata labels into
class names, and :func:`read_table` parses the metadata files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from emvision.vocabulary import ARCHIVE_PREFIX_TO_CATEGORY

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tbz2", ".txz", ".tar", ".zip")
METADATA_FILE_NAMES = ("metadata.jsonl", "metadata.csv")
CLASS_DESCRIPTION_FILE_NAMES = ("class_descriptions.jsonl", "class_descriptions.csv")
# Files larger than this are refused before being read into memory (a 1024x768 JPEG is ~300 kB).
MAX_FILE_BYTES = 1 << 30
# Archive members up to this size are read into memory; larger ones are streamed to a spool file
# (``spool_dir``), so a member's bytes never sit whole in the reading process.
MEMBER_IN_MEMORY_BYTES = 8 << 20
STREAM_BLOCK_BYTES = 1 << 20

# folder names that name a split in ImageFolder layouts (train/<class>/...), never a class
SPLIT_FOLDER_NAMES = frozenset({"train", "training", "test", "testing", "val", "valid", "validation", "dev", "eval", "evaluation"})
ARCHIVE_FILE_NAME = re.compile(r"^L(\d)_[0-9a-fA-F]{32}\.[A-Za-z]+$")
_ARCHIVE_PREFIX = re.compile(r"^L(\d)_")


@dataclass(frozen=True)
class Reject:
    """A file (or metadata row) that did not make it into the dataset, and why."""

    path: str
    kind: str  # empty, not_image, corrupt, truncated, decompression_bomb, too_large, unknown_class, duplicate, label_conflict, metadata, unreadable
    reason: str

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "reason": self.reason}


class NotRegularFile(OSError):
    """The path is (or became) something other than a regular file: nothing is read from it."""


@dataclass(frozen=True)
class SourceFile:
    """One regular file of a source: its bytes are either on disk (``local_path``) or already read (``data``).

    ``spooled``: ``local_path`` is a temporary copy of an archive member, for the reader to remove
    once it is done with it.
    """

    path: str  # relative POSIX path inside the source
    size: int
    local_path: str | None = None
    data: bytes | None = None
    spooled: bool = False

    def open(self):
        """A binary file object on ``local_path``, opened only if it is a regular file (see :func:`open_regular`)."""
        return open_regular(self.local_path)

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        with self.open() as handle:
            size = os.fstat(handle.fileno()).st_size
            return handle.read(size + 1)  # +1: a file that grew since it was listed is read to its end, not cut


def open_regular(path: str | os.PathLike):
    """Open ``path`` for reading only if it is a regular file; never blocks, never follows a final link.

    ``O_NONBLOCK`` keeps a FIFO that replaced the file since it was listed from blocking the open,
    ``O_NOFOLLOW`` keeps a link that replaced it from being followed, and the type is checked on the
    open descriptor, so what is read is what was checked.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    descriptor = os.open(path, flags)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(0, f"not a regular file ({file_type(mode)})")
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def file_type(mode: int) -> str:
    """What ``stat``'s mode says a path is, in words."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "special file"


def archive_stem(name: str) -> str | None:
    """'Biological.tar.gz' -> 'Biological'; None when ``name`` is not an archive's name."""
    lowered = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_archive(path: str | os.PathLike) -> bool:
    return archive_stem(Path(path).name) is not None


def clean_member_path(name: str) -> str | None:
    """An archive member's name as a relative POSIX path; None for names that escape the archive."""
    name = name.replace("\\", "/")
    cleaned = posixpath.normpath(name.lstrip("/"))
    if cleaned in ("", ".") or cleaned == ".." or cleaned.startswith("../"):
        return None
    return cleaned


def count_source_files(source: Path) -> int | None:
    """Number of entries :func:`iter_source` will yield when cheap to know (folders, zips), else None."""
    if source.is_dir():
        total = 0
        for folder, dirs, files in os.walk(source):
            if any(is_archive(name) for name in files):
                return None  # archives inside the folder: their members are counted as they are read
            total += len(files) + sum(os.path.islink(os.path.join(folder, name)) for name in dirs)  # linked folders: one reject each
        return total
    if not source.is_file():  # a FIFO or a device: iter_source says what it is, without opening it
        return None
    try:
        if source.suffix.lower() == ".zip":
            with zipfile.ZipFile(source) as archive:
                return sum(not info.is_dir() for info in archive.infolist())
        if source.suffix.lower() == ".tar":  # uncompressed: listing skips from header to header
            with tarfile.open(source) as archive:
                return sum(not member.isdir() for member in archive.getmembers())
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError):
        return None  # iter_source reports what is wrong with the archive
    return None


def iter_source(source: Path, max_file_bytes: int = MAX_FILE_BYTES, spool_dir: str | os.PathLike | None = None) -> Iterator[SourceFile | Reject]:
    """Every regular file of ``source`` (a folder or an archive), as :class:`SourceFile` or :class:`Reject`.

    Folders are walked in sorted order; a tar is streamed in its own order (one pass, so a
    compressed archive is decompressed once). Callers must not rely on the order. With ``spool_dir``,
    archive members larger than ``MEMBER_IN_MEMORY_BYTES`` are streamed to files there
    (``SourceFile.spooled``; the caller removes them); without it they are read into memory.
    """
    source = Path(source)
    if source.is_dir():
        yield from _iter_folder(source, max_file_bytes, spool_dir)
    elif source.is_file() and is_archive(source):
        yield from _iter_archive(source, prefix="", max_file_bytes=max_file_bytes, nested=False, spool_dir=spool_dir)
    elif source.is_file():
        raise ValueError(
            f"{source}: not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)}); "
            "pass the archive as extracted, the archive itself, or your image folder"
        )
    elif source.exists():
        raise ValueError(f"{source}: not a folder or a regular file ({file_type(source.stat().st_mode)}); nothing was read from it")
    else:
        raise FileNotFoundError(f"{source}: no such file or folder")


def _inside(real: str, root: str) -> bool:
    return real != root and os.path.commonpath([real, root]) == root


def _iter_folder(source: Path, max_file_bytes: int, spool_dir) -> Iterator[SourceFile | Reject]:
    root = os.path.realpath(source)  # SOURCE itself may be a link; everything below must stay inside what it points to
    for folder, dirs, files in os.walk(root):
        relative_folder = Path(folder).relative_to(root).as_posix()

        def relative(name: str) -> str:
            return name if relative_folder == "." else f"{relative_folder}/{name}"

        # os.walk never descends into a linked folder: say so, rather than leave its files out silently
        for name in sorted(name for name in dirs if os.path.islink(os.path.join(folder, name))):
            dirs.remove(name)
            where = "inside the source (its files are read where they lie)" if _inside(os.path.realpath(os.path.join(folder, name)), root) else "outside the source"
            yield Reject(relative(name), "unreadable", f"symbolic link to a folder {where}: linked folders are not followed")
        dirs.sort()
        for name in sorted(files):
            yield from _folder_entry(os.path.join(folder, name), relative(name), root, max_file_bytes, spool_dir)


def _folder_entry(local_path: str, path: str, root: str, max_file_bytes: int, spool_dir) -> Iterator[SourceFile | Reject]:
    """One directory entry: checked by type (and, for a link, by where it leads) before anything opens it."""
    try:
        info = os.lstat(local_path)
        if stat.S_ISLNK(info.st_mode):
            real = os.path.realpath(local_path)
            if not _inside(real, root):
                yield Reject(path, "unreadable", "symbolic link that resolves outside the source: not read")
                return
            local_path = real  # read the target where it lies: no link is followed when it is opened
            info = os.stat(real)
    except OSError as error:  # a dangling link, a file removed meanwhile
        yield Reject(path, "unreadable", f"cannot read file: {error.strerror or error}")
        return
    if not stat.S_ISREG(info.st_mode):
        yield Reject(path, "unreadable", f"not a regular file ({file_type(info.st_mode)}): not read")
    elif is_archive(path):
        yield from _iter_archive(Path(local_path), prefix=path + "/", max_file_bytes=max_file_bytes, nested=True, spool_dir=spool_dir)
    elif info.st_size > max_file_bytes:
        yield Reject(path, "too_large", f"file of {info.st_size:,} bytes is larger than the {max_file_bytes:,}-byte limit")
    else:
        yield SourceFile(path=path, size=info.st_size, local_path=local_path)


def _iter_archive(archive: Path, prefix: str, max_file_bytes: int, nested: bool, spool_dir=None) -> Iterator[SourceFile | Reject]:
    """Members of a tar or zip.

    An archive that cannot be opened is an error when it is the SOURCE itself and one reject when it
    lies inside a folder; an archive that breaks part-way (truncated download) keeps the members read
    so far and adds one reject for the rest.
    """
    if archive.name.lower().endswith(".zip"):
        members = _iter_zip(archive, prefix, max_file_bytes, spool_dir)
    else:
        members = _iter_tar(archive, prefix, max_file_bytes, spool_dir)
    read_any = False
    try:
        for entry in members:
            read_any = True
            yield entry
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        if not nested and not read_any:
            raise ValueError(f"{archive}: cannot read archive: {error}") from error
        where = "after the members read so far" if read_any else "at its start"
        yield Reject(prefix.rstrip("/") or archive.name, "corrupt", f"archive is broken {where}: {_scrub(str(error))}")


_ABSOLUTE = re.compile(r"^(?:/|[A-Za-z]:/|//)")


def _member(prefix: str, name: str) -> str | None:
    """The member's path in the source; None when it is absolute or leaves the archive."""
    if _ABSOLUTE.match(name.replace("\\", "/")):
        return None
    cleaned = clean_member_path(name)
    return None if cleaned is None else prefix + cleaned


def _length_mismatch(path: str, length: int, declared: int) -> Reject:
    if length < declared:
        return Reject(path, "truncated", f"archive member ends after {length:,} of {declared:,} bytes")
    return Reject(path, "corrupt", f"archive member holds more than the {declared:,} bytes its header declares")


def _stream_member(stream, path: str, declared: int, spool_dir) -> SourceFile | Reject:
    """A member's bytes, read in blocks up to its declared size: into memory when small, else into a spool file."""
    if spool_dir is None or declared <= MEMBER_IN_MEMORY_BYTES:
        blocks, total = [], 0
        while total <= declared and (block := stream.read(min(STREAM_BLOCK_BYTES, declared + 1 - total))):
            blocks.append(block)
            total += len(block)
        data = b"".join(blocks)
        if len(data) != declared:
            return _length_mismatch(path, len(data), declared)
        return SourceFile(path=path, size=len(data), data=data)
    descriptor, spool_path = tempfile.mkstemp(prefix="member-", dir=spool_dir)
    total = 0
    try:
        with os.fdopen(descriptor, "wb") as spool:
            while total <= declared and (block := stream.read(min(STREAM_BLOCK_BYTES, declared + 1 - total))):
                spool.write(block)
                total += len(block)
    except BaseException:
        os.unlink(spool_path)
        raise
    if total != declared:
        os.unlink(spool_path)
        return _length_mismatch(path, total, declared)
    return SourceFile(path=path, size=total, local_path=spool_path, spooled=True)


def _nested_archive_reject(path: str) -> Reject:
    return Reject(path, "not_image", "archive inside an archive: extract the outer archive first")


def _iter_tar(archive: Path, prefix: str, max_file_bytes: int, spool_dir) -> Iterator[SourceFile | Reject]:
    with tarfile.open(archive, mode="r|*") as tar:  # streaming: one pass over a compressed archive
        for member in tar:
            if member.isdir():
                continue
            path = _member(prefix, member.name)
            if path is None:
                yield Reject(prefix + member.name, "unreadable", "member path leaves the archive (absolute or '..')")
            elif not member.isreg():
                kind = "link" if (member.issym() or member.islnk()) else "special file"
                yield Reject(path, "unreadable", f"not a regular file ({kind} in the tar)")
            elif is_archive(member.name):
                yield _nested_archive_reject(path)
            elif member.size > max_file_bytes:
                yield Reject(path, "too_large", f"file of {member.size:,} bytes is larger than the {max_file_bytes:,}-byte limit")
            else:  # checked against the cap from its header above; streamed from here
                yield _stream_member(tar.extractfile(member), path, member.size, spool_dir)


def _iter_zip(archive: Path, prefix: str, max_file_bytes: int, spool_dir) -> Iterator[SourceFile | Reject]:
    with zipfile.ZipFile(archive) as zipped:
        for info in sorted(zipped.infolist(), key=lambda item: item.filename):
            if info.is_dir():
                continue
            path = _member(prefix, info.filename)
            if path is None:
                yield Reject(prefix + info.filename, "unreadable", "member path leaves the archive (absolute or '..')")
            elif info.flag_bits & 0x1:
                yield Reject(path, "unreadable", "encrypted zip member")
            elif is_archive(info.filename):
                yield _nested_archive_reject(path)
            elif info.file_size > max_file_bytes:
                yield Reject(path, "too_large", f"file of {info.file_size:,} bytes is larger than the {max_file_bytes:,}-byte limit")
            else:  # checked against the cap from its header above; streamed from here (the CRC is checked at its end)
                try:
                    with zipped.open(info) as stream:
                        entry = _stream_member(stream, path, info.file_size, spool_dir)
                except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError, zlib.error) as error:
                    yield Reject(path, "corrupt", f"cannot extract zip member: {_scrub(str(error))}")
                    continue
                yield entry


def _scrub(message: str) -> str:
    """Drop object addresses from messages, so the same input always gives the same rejects.jsonl."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the file", message))


# ---------------------------------------------------------------------------------------------
# class names


def normalize_class_name(name: str) -> str:
    """The key under which spellings of one class meet: case, spaces, '_' and '-' and one final 's' dropped.

    'Porous Sponge', 'porous_sponge' and 'PorousSponge' all give 'poroussponge';
    'Fibres' and 'fibers' give 'fibre'.
    """
    key = re.sub(r"[^0-9a-z]+", "", name.lower())
    key = key.replace("fiber", "fibre")  # the archive's British spelling
    return key[:-1] if key.endswith("s") and len(key) > 1 else key


class ClassMatcher:
    """Resolves a file's class from an explicit label, its folders, or its archive-style name.

    Order: an explicit label (a metadata ``label`` column) wins, then the deepest folder whose name
    is a class (an archive's file name counts as a folder: ``Biological.tar``), then the archive's
    ``L<k>_`` file-name prefix. With ``allow_new_labels``, a label that is not a known class becomes
    a new class, and a file whose path names no class takes its parent folder's name.
    """

    def __init__(self, class_names: Sequence[str], allow_new_labels: bool = False):
        self.class_names = list(class_names)
        self.allow_new_labels = allow_new_labels
        self._by_key: dict[str, str] = {}
        for name in self.class_names:
            key = normalize_class_name(name)
            if not key:
                raise ValueError(f"class name {name!r} has no letters or digits")
            if key in self._by_key:
                raise ValueError(f"class names {self._by_key[key]!r} and {name!r} are the same class once case, spaces and '_' are ignored")
            self._by_key[key] = name
        self._new_spellings: dict[str, Counter] = {}  # classes found with allow_new_labels: key -> spellings seen

    @property
    def new_names(self) -> list[str]:
        """The classes found with ``allow_new_labels``, sorted; each spelled as most files spell it."""
        return sorted((self._spelling(key) for key in self._new_spellings), key=lambda name: (name.lower(), name))

    def _spelling(self, key: str) -> str:
        # the most common spelling, ties to the smallest: independent of the order files are seen in
        return min(self._new_spellings[key].items(), key=lambda item: (-item[1], item[0]))[0]

    def match(self, name: str) -> str | None:
        """The class ``name`` spells (a known class, or one found so far with ``allow_new_labels``), or None."""
        key = normalize_class_name(name)
        if key in self._by_key:
            return self._by_key[key]
        return self._spelling(key) if key in self._new_spellings else None

    def _new(self, name: str) -> str:
        name = name.strip()
        self._new_spellings.setdefault(normalize_class_name(name), Counter())[name] += 1
        return name

    def resolve(self, path: str, explicit_label: str | None = None, label_origin: str = "metadata") -> tuple[str | None, str]:
        """(class name, "") or (None, why not) for the file at ``path``.

        A new class comes back spelled as written here; :meth:`match` gives its final spelling
        once every file has been resolved.
        """
        if explicit_label is not None:
            found = self._by_key.get(normalize_class_name(explicit_label))
            if found is not None:
                return found, ""
            if self.allow_new_labels and normalize_class_name(explicit_label):
                return self._new(explicit_label), ""
            return None, f"label {explicit_label!r} from {label_origin} is not one of the classes ({self._known()}){self._hint()}"
        folders = path.split("/")[:-1]
        for folder in reversed(folders):
            found = self._by_key.get(normalize_class_name(archive_stem(folder) or folder))
            if found is not None:
                return found, ""
        prefix = _ARCHIVE_PREFIX.match(path.rsplit("/", 1)[-1])
        if prefix is not None:
            archive_class = ARCHIVE_PREFIX_TO_CATEGORY.get(int(prefix.group(1)))
            found = self._by_key.get(normalize_class_name(archive_class)) if archive_class else None
            if found is not None:
                return found, ""
            return None, f"archive prefix L{prefix.group(1)}_ means {archive_class}, which is not one of the classes ({self._known()})"
        if folders:
            parent = archive_stem(folders[-1]) or folders[-1]
            if parent.lower() in SPLIT_FOLDER_NAMES:
                return None, f"folder {parent!r} names a split, not a class, and no label was given for the file"
            if self.allow_new_labels and normalize_class_name(parent):
                return self._new(parent), ""
            return None, f"folder {parent!r} is not one of the classes ({self._known()}){self._hint()}"
        return None, "no folder names a class and the file name has no archive L<k>_ prefix"

    def _known(self) -> str:
        return ", ".join(self.class_names)

    def _hint(self) -> str:
        return "" if self.allow_new_labels else "; pass --labels or --allow_new_labels to build with your own classes"


# ---------------------------------------------------------------------------------------------
# metadata tables


def read_table(path: str, data: bytes) -> tuple[list[tuple[int, dict]], list[Reject]]:
    """Rows of a ``.jsonl`` or ``.csv`` table as (line or row number, row), plus a reject per bad line.

    Empty values (``""``, null) are dropped from each row, so "no label" reads the same in both formats.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return [], [Reject(path, "metadata", f"not UTF-8 text: {error}")]
    rows: list[tuple[int, dict]] = []
    rejects: list[Reject] = []
    if path.lower().endswith(".jsonl"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                rejects.append(Reject(path, "metadata", f"line {number}: invalid JSON ({error.msg})"))
                continue
            if not isinstance(row, dict):
                rejects.append(Reject(path, "metadata", f"line {number}: expected a JSON object, got {type(row).__name__}"))
                continue
            rows.append((number, _drop_empty(row)))
    else:
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            for row in reader:
                # row 1 is the header, so data rows count from 2 like a spreadsheet's
                rows.append((reader.line_num, _drop_empty({key: value for key, value in row.items() if key is not None})))
        except csv.Error as error:
            rejects.append(Reject(path, "metadata", f"invalid CSV: {error}"))
    return rows, rejects


def _drop_empty(row: dict) -> dict:
    cleaned = {}
    for key, value in row.items():
        key = str(key).strip()
        if isinstance(value, str):
            value = value.strip()
        if key and value is not None and value != "":
            cleaned[key] = value
    return cleaned
