"""WordNet 3.0 for METEOR, set up offline from Debian's packages.

NLTK's METEOR matches synonyms through WordNet; without it NLTK silently skips that stage and
every METEOR figure comes out lower. NLTK's own downloader needs the internet,
but Debian's ``wordnet-base`` and ``wordnet-sense-index`` packages ship the same WordNet 3.0
database (``/usr/share/wordnet``). ``install`` copies those files into NLTK's layout,
``<NLTK_DATA or ~/nltk_data>/corpora/wordnet/``, adds the ``lexnames`` file that Debian leaves out
(the 45 lexicographer file names of lexnames(5WN)), and checks that NLTK loads WordNet 3.0::

    apt-get install wordnet-base wordnet-sense-index
    python -m emvision.train.metrics.wordnet_data install
    python -m emvision.train.metrics.wordnet_data check

``load_wordnet()`` is what METEOR calls: it returns NLTK's WordNet reader or raises
``WordNetNotFoundError`` naming the fix; there is no fallback.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")
LEXNAMES_MAN_PAGES = (
    Path("/usr/share/man/man5/lexnames.5WN.gz"),
    Path("/usr/share/man/man5/lexnames.5WN"),
)
WORDNET_VERSION = "3.0"

# The database files NLTK's WordNetCorpusReader reads; index.sense comes from wordnet-sense-index.
DATABASE_FILES = tuple(
    [f"data.{pos}" for pos in ("adj", "adv", "noun", "verb")]
    + [f"index.{pos}" for pos in ("adj", "adv", "noun", "verb")]
    + [f"{pos}.exc" for pos in ("adj", "adv", "noun", "verb")]
    + ["index.sense"]
)
# Copied when present (sense frequencies for Lemma.count()); NLTK works without them.
OPTIONAL_FILES = ("cntlist.rev",)

# lexnames(5WN) of WordNet 3.0: file number = position, syntactic category from the name's prefix.
WORDNET30_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_SYNTACTIC_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

INSTALL_HINT = (
    "apt-get install wordnet-base wordnet-sense-index && "
    "python -m emvision.train.metrics.wordnet_data install"
)


class WordNetNotFoundError(LookupError):
    """WordNet 3.0 is not loadable by NLTK (missing, incomplete or another version)."""


def nltk_data_root() -> Path:
    """Where ``install`` writes: the first directory in ``NLTK_DATA``, else ``~/nltk_data``."""
    for entry in os.environ.get("NLTK_DATA", "").split(os.pathsep):
        if entry:
            return Path(entry).expanduser()
    return Path.home() / "nltk_data"


def lexnames_from_man_page(man_page: Path) -> list[str]:
    """The lexicographer file names listed (in number order) by the lexnames(5WN) man page."""
    opener = gzip.open if man_page.suffix == ".gz" else open
    with opener(man_page, "rt", encoding="utf-8", errors="replace") as f:
        rows = re.findall(r"^(\d\d)\t(\S+)", f.read(), flags=re.MULTILINE)
    numbers = [int(number) for number, _ in rows]
    if numbers != list(range(len(rows))):
        raise ValueError(f"{man_page}: lexicographer file numbers are not 00, 01, ... in order: {numbers}")
    return [name for _, name in rows]


def lexnames_text(man_page: Path | None = None) -> tuple[str, str]:
    """NLTK's ``lexnames`` file (``NN<TAB>name<TAB>category`` per line) and where the names came from.

    The names are read from the lexnames(5WN) man page when one is installed (``man_page`` or the
    Debian location), else taken from the WordNet 3.0 list built into this module. A man page that
    disagrees with WordNet 3.0's list is an error: the database would not be 3.0 either.
    """
    candidates = [man_page] if man_page is not None else [p for p in LEXNAMES_MAN_PAGES if p.is_file()]
    if candidates:
        names, origin = lexnames_from_man_page(candidates[0]), str(candidates[0])
        if tuple(names) != WORDNET30_LEXNAMES:
            raise ValueError(
                f"{origin} lists {len(names)} lexicographer files that differ from WordNet 3.0's 45; "
                "is this WordNet 3.0?"
            )
    else:
        names, origin = list(WORDNET30_LEXNAMES), "the WordNet 3.0 list built into emvision"
    lines = [f"{number:02d}\t{name}\t{_SYNTACTIC_CATEGORY[name.split('.')[0]]}\n" for number, name in enumerate(names)]
    return "".join(lines), origin


def _check_source(source_dir: Path) -> None:
    missing = [name for name in DATABASE_FILES if not (source_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet 3.0 database files not found in {source_dir} (missing: {', '.join(missing)}). "
            f"Install Debian's packages first: apt-get install {' '.join(DEBIAN_PACKAGES)}"
        )
    with open(source_dir / "data.adj", encoding="utf-8", errors="replace") as f:
        header = "".join(f.readline() for _ in range(30))
    if f"WordNet {WORDNET_VERSION} Copyright" not in header:
        raise ValueError(f"{source_dir / 'data.adj'} is not WordNet {WORDNET_VERSION} (no version line in its header)")


def install(
    source_dir: str | os.PathLike = DEBIAN_WORDNET_DIR,
    data_root: str | os.PathLike | None = None,
    man_page: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Convert Debian's WordNet 3.0 files into ``<data_root>/corpora/wordnet`` and verify NLTK loads it.

    Returns the installed directory. An existing directory that already loads as WordNet 3.0 is
    kept unless ``force``; anything else there is replaced. The copy is built beside the target and
    moved into place, so an interrupted install never leaves a half-written corpus behind.
    """
    source_dir = Path(source_dir)
    data_root = Path(data_root).expanduser() if data_root is not None else nltk_data_root()
    target = data_root / "corpora" / "wordnet"
    _check_source(source_dir)
    if target.is_dir() and not force:
        try:
            open_wordnet(target)
            return target
        except WordNetNotFoundError:
            pass  # incomplete or another version: rebuild it

    lexnames, _ = lexnames_text(Path(man_page) if man_page is not None else None)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    try:
        for name in DATABASE_FILES + OPTIONAL_FILES:
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, staging / name)
        (staging / "lexnames").write_text(lexnames, encoding="utf-8")
        license_file = Path("/usr/share/doc/wordnet-base/copyright")
        if license_file.is_file():
            shutil.copyfile(license_file, staging / "LICENSE")
        (staging / "README").write_text(
            f"WordNet {WORDNET_VERSION} (Princeton University), converted for NLTK from {source_dir} "
            "by `python -m emvision.train.metrics.wordnet_data install`.\n",
            encoding="utf-8",
        )
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # else a concurrent install finished first; it is verified below
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    open_wordnet(target)
    return target


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        """NLTK's reader, minus a wasted pass at load time.

        NLTK compares ``get_version()`` ("3.0") with the corpus *name* ("wordnet") to decide
        whether Open Multilingual WordNet data needs a synset mapping, so every load re-reads
        index.sense twice to map WordNet 3.0 onto itself (about 60% of the load time). OMW is
        keyed to WordNet 3.0, so for 3.0 the mapping is the identity, which NLTK spells ``None``.
        """

        def map_wn(self, version="wordnet"):
            if self.get_version() == WORDNET_VERSION:
                return None
            return super().map_wn(version)

    return WordNet30Reader


def open_wordnet(root):
    """NLTK's WordNet reader on ``root`` (a directory or an NLTK path pointer), verified as WordNet 3.0.

    NLTK refuses to read corpora outside ``nltk.data.path``; a directory outside it is appended to
    ``nltk.data.path`` (the directory itself, so what ``nltk.data.find`` returns is unchanged).
    """
    import nltk

    if isinstance(root, os.PathLike) or type(root) is str:
        root = Path(root).resolve()
        if not any(root.is_relative_to(Path(p).expanduser().resolve()) for p in nltk.data.path if isinstance(p, str)):
            nltk.data.path.append(str(root))
        root = str(root)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The multilingual functions are not available")
            reader = _reader_class()(root, None)
        _verify_loaded(reader, str(root))
    except WordNetNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 (NLTK raises OSError, LookupError, AssertionError, ...)
        raise WordNetNotFoundError(f"NLTK cannot load WordNet from {root}: {error!r}. Fix: {INSTALL_HINT}") from error
    return reader


def _verify_loaded(reader, where: str) -> None:
    version = reader.get_version()
    if version != WORDNET_VERSION:
        raise WordNetNotFoundError(
            f"{where} holds WordNet {version}, but the project's METEOR figures use WordNet {WORDNET_VERSION}. "
            f"Fix: {INSTALL_HINT} --force"
        )
    dog = reader.synset("dog.n.01")
    if dog.offset() != 2084071 or dog.lexname() != "noun.animal":
        raise WordNetNotFoundError(f"{where}: dog.n.01 is not WordNet 3.0's (offset {dog.offset()}, {dog.lexname()})")
    if "automobile" not in {lemma.name() for lemma in reader.synset("car.n.01").lemmas()}:
        raise WordNetNotFoundError(f"{where}: car.n.01 lacks the synonym 'automobile'; the database is damaged")


_loaded = {}


def load_wordnet():
    """NLTK's WordNet 3.0 reader, found the way NLTK finds it (``NLTK_DATA``, ``~/nltk_data``, ...).

    Raises ``WordNetNotFoundError`` with the install command when it is missing, incomplete or not
    version 3.0. The verified reader is cached per location for the life of the process.
    """
    import nltk

    try:
        location = nltk.data.find("corpora/wordnet")
    except LookupError:
        raise WordNetNotFoundError(
            "WordNet 3.0 is not installed where NLTK looks for it "
            f"({', '.join(map(str, nltk.data.path))}). METEOR needs it for synonym matching and will not run without it. "
            f"Install it offline: {INSTALL_HINT}"
        ) from None
    key = str(location)
    if key not in _loaded:
        _loaded[key] = open_wordnet(location)
    return _loaded[key]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emvision.train.metrics.wordnet_data",
        description="Set up WordNet 3.0 for METEOR offline, from Debian's wordnet-base + wordnet-sense-index.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    install_parser = commands.add_parser("install", help="convert /usr/share/wordnet into NLTK's layout and verify it")
    install_parser.add_argument(
        "--source", default=str(DEBIAN_WORDNET_DIR), help="Debian WordNet directory (default: %(default)s)"
    )
    install_parser.add_argument("--nltk-data", default=None, help="NLTK data root (default: $NLTK_DATA or ~/nltk_data)")
    install_parser.add_argument("--force", action="store_true", help="rebuild even if a working copy is there")
    commands.add_parser("check", help="exit non-zero unless NLTK loads WordNet 3.0")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    try:
        if args.command == "install":
            target = install(args.source, args.nltk_data, force=args.force)
            import nltk

            if str(target.parent.parent) not in nltk.data.path:
                print(f"note: {target.parent.parent} is not on NLTK's search path; set NLTK_DATA={target.parent.parent}")
            print(f"WordNet {WORDNET_VERSION} ready at {target} ({time.perf_counter() - start:.1f} s)")
        else:
            wordnet = load_wordnet()
            print(f"WordNet {wordnet.get_version()} loads from {wordnet.root} ({time.perf_counter() - start:.1f} s)")
    except (WordNetNotFoundError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
