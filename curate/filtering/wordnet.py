"""Princeton WordNet 3.0 for NLTK, from the Debian packages, with no download.

DataComp's text_based baseline calls `nltk.download("wordnet")`; we read the same WordNet 3.0 from
`apt-get install wordnet-base wordnet-sense-index` instead. NLTK cannot read `/usr/share/wordnet` in
place: its path sandbox only trusts NLTK data dirs, it refuses symlinks, and it needs a `lexnames`
file the Debian packages do not ship. So the files are copied once into `<cache>/nltk_data/corpora/
wordnet/` (cache = $CURATE_CACHE, else $XDG_CACHE_HOME/curate, else ~/.cache/curate) with
`lexnames` written beside them, and that data dir is added to `nltk.data.path`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from functools import cache
from pathlib import Path
from typing import Any

from curate.errors import PreflightError

APT_PACKAGES = "wordnet-base wordnet-sense-index"
DEBIAN_WORDNET = Path("/usr/share/wordnet")
_POS = ("noun", "verb", "adj", "adv")
REQUIRED = (
    *(f"data.{p}" for p in _POS),
    *(f"index.{p}" for p in _POS),
    *(f"{p}.exc" for p in _POS),
    "index.sense",
)
# The lexicographer files of WordNet 3.0 by number, as in the man page lexnames(5WN) of wordnet-base.
# Built in (not parsed from the man page) because minimal Docker images drop /usr/share/man.
# fmt: off
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change",
    "verb.cognition", "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social",
    "verb.stative", "verb.weather", "adj.ppl",
)
# fmt: on
_STAMP = ".curate-source.json"


def cache_dir() -> Path:
    """Where curate keeps derived files it may rebuild: $CURATE_CACHE or the XDG cache dir."""
    if os.environ.get("CURATE_CACHE"):
        return Path(os.environ["CURATE_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "curate"


def source_dir() -> Path:
    """The WordNet 3.0 dict dir to copy from ($CURATE_WORDNET_DIR overrides the Debian location)."""
    return Path(os.environ.get("CURATE_WORDNET_DIR") or DEBIAN_WORDNET)


def nltk_data_dir() -> Path:
    return cache_dir() / "nltk_data"


def lexnames_text() -> str:
    """The `lexnames` file NLTK reads: number, name, syntactic category (1 noun … 4 adverb)."""
    category = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    return "".join(f"{i:02d}\t{n}\t{category[n.split('.')[0]]}\n" for i, n in enumerate(LEXNAMES))


def _source_stamp(src: Path) -> dict[str, Any]:
    files = {p.name: p.stat().st_size for p in sorted(src.iterdir()) if p.is_file()}
    return {"source": str(src), "files": files}


def _is_current(corpus: Path, src: Path) -> bool:
    """A complete copy exists; when the source is readable, it is a copy of that source."""
    if not all((corpus / name).is_file() for name in (*REQUIRED, "lexnames", _STAMP)):
        return False
    if not src.is_dir():
        return True
    try:
        return json.loads((corpus / _STAMP).read_text()) == _source_stamp(src)
    except (OSError, ValueError):
        return False


def problems() -> list[str]:
    """Why WordNet cannot be loaded here (for a filter's preflight); empty when it can."""
    try:
        import nltk  # noqa: F401
    except ImportError:
        return ["WordNet needs NLTK: pip install nltk (or pip install -e . in the curate checkout)"]
    src = source_dir()
    if _is_current(nltk_data_dir() / "corpora" / "wordnet", src):
        return []
    missing = [name for name in REQUIRED if not (src / name).is_file()]
    if missing:
        return [
            f"WordNet 3.0 not found in {src} (missing {', '.join(missing)}): install the Debian packages "
            f"{APT_PACKAGES} (sudo apt-get install {APT_PACKAGES}), or set CURATE_WORDNET_DIR to a "
            "WordNet 3.0 dict directory"
        ]
    return []


def install() -> Path:
    """Copy WordNet into our NLTK data dir (once; safe when several workers race) and return it."""
    corpora = nltk_data_dir() / "corpora"
    corpus = corpora / "wordnet"
    src = source_dir()
    if _is_current(corpus, src):
        return corpus
    if found := problems():
        raise PreflightError("WordNet is not available", found)
    corpora.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=corpora, prefix=".wordnet."))
    try:
        for path in src.iterdir():
            if path.is_file():
                shutil.copyfile(path, staging / path.name)  # real files: NLTK refuses symlinks
        (staging / "lexnames").write_text(lexnames_text())
        (staging / _STAMP).write_text(json.dumps(_source_stamp(src)))
        if corpus.exists() and not _is_current(corpus, src):  # a stale copy: move it aside first
            corpus.rename(corpora / f".wordnet.old.{os.getpid()}")
        try:
            staging.rename(corpus)
        except OSError:  # another worker renamed its copy into place first
            if not _is_current(corpus, src):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for old in corpora.glob(f".wordnet.old.{os.getpid()}"):
            shutil.rmtree(old, ignore_errors=True)
    return corpus


@cache
def wordnet() -> Any:
    """NLTK's WordNetCorpusReader over our copy (one per process; loading takes a few seconds)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    corpus = install()
    data_dir = str(corpus.parent.parent)
    if data_dir not in nltk.data.path:
        nltk.data.path.append(data_dir)  # NLTK only reads corpora under its data path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed
        return WordNetCorpusReader(str(corpus), None)
