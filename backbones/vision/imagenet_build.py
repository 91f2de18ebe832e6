"""Build the ImageNet-1k class tables shipped in ``backbones/vision/imagenet/`` (not needed at run time).

    pip download --no-deps timm==1.0.31 -d /tmp/timm && unzip -q /tmp/timm/timm-*.whl -d /tmp/timm/x
    apt-get install wordnet-base                      # WordNet 3.0 database in /usr/share/wordnet
    python -m backbones.vision.imagenet_build --timm-info /tmp/timm/x/timm --wordnet /usr/share/wordnet

Inputs: timm's ``data/_info`` files (the 1000 synset ids in class-index order, their lemmas and
definitions, the 100 mini-ImageNet ids) and WordNet 3.0's ``data.noun`` (an ImageNet id is ``'n'`` +
the 8-digit noun offset). Outputs, all sorted and byte-for-byte reproducible:

- ``classes.tsv``: index, synset, name (first lemma, made unique), lemmas, definition; 1000 rows.
- ``hypernyms.tsv``: synset, name, parents (``@`` and ``@i`` pointers in WordNet order, the first one
  is the primary hypernym), depth (shortest path to ``entity``); every noun synset reachable upward
  from the 1000 classes, the classes included.
- ``mini_imagenet.txt``: the 100 mini-ImageNet ids, one per line.
- ``README.md`` (provenance, input checksums, counts) and ``WORDNET_LICENSE``.
"""
from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import re
from pathlib import Path

from backbones.cli_errors import add_debug_flag, cli_main

TIMM_FILES = ("imagenet_synsets.txt", "imagenet_synset_to_lemma.txt",
              "imagenet_synset_to_definition.txt", "mini_imagenet_synsets.txt")
TABLES = ("classes.tsv", "hypernyms.tsv", "mini_imagenet.txt")
DEFAULT_OUT = Path(__file__).resolve().parent / "imagenet"
_MARKER = re.compile(r"\([a-z]+\)$")  # syntactic marker on a WordNet word, e.g. 'galore(ip)'


def find_timm_info(path: str | Path | None) -> Path:
    """The folder holding timm's ImageNet info files, given it, a ``timm`` package dir, or None (installed timm)."""
    if path is None:
        spec = importlib.util.find_spec("timm")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("timm is not installed: pass --timm-info (pip download --no-deps timm; unzip)")
        path = list(spec.submodule_search_locations)[0]
    root = Path(path)
    for cand in (root, root / "data" / "_info", root / "timm" / "data" / "_info"):
        if all((cand / f).is_file() for f in TIMM_FILES):
            return cand
    raise FileNotFoundError(f"no {TIMM_FILES[0]} (and friends) in {root}, {root}/data/_info or {root}/timm/data/_info")


def timm_version(info: Path) -> str:
    """'1.0.31' from ``timm/version.py`` two levels above the info folder, else 'unknown'."""
    ver = info.parent.parent / "version.py"
    m = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", ver.read_text()) if ver.is_file() else None
    return m.group(1) if m else "unknown"


def _tsv_dict(path: Path) -> dict[str, str]:
    """Two-column ``key\\tvalue`` file -> dict."""
    return dict(line.rstrip("\n").split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if line)


def wn_name(word: str) -> str:
    """WordNet word -> readable lemma: drop a syntactic marker, '_' -> ' '."""
    return _MARKER.sub("", word).replace("_", " ")


def read_nouns(wordnet: Path) -> tuple[dict[str, tuple[str, tuple[str, ...]]], list[str]]:
    """Parse ``data.noun``: {'n' + offset: (first lemma, hypernym ids in file order)}, license header lines."""
    nouns, header = {}, []
    for line in (wordnet / "data.noun").read_text(encoding="utf-8").splitlines():
        if line.startswith("  "):  # '  N text  ' license header
            parts = line.split(None, 1)  # line number, text
            header.append(parts[1].rstrip() if len(parts) > 1 else "")
            continue
        f = line.split(" | ", 1)[0].split()
        w_cnt = int(f[3], 16)
        p_at = 4 + 2 * w_cnt
        ptrs = [f[p_at + 1 + 4 * i: p_at + 5 + 4 * i] for i in range(int(f[p_at]))]
        parents = tuple("n" + off for sym, off, pos, _ in ptrs if sym in ("@", "@i") and pos == "n")
        nouns["n" + f[0]] = (wn_name(f[4]), parents)
    return nouns, header


def upward(ids: list[str], nouns: dict) -> dict[str, int]:
    """Every synset reachable upward from ``ids`` (included) -> depth (shortest path to a root)."""
    seen, stack = set(), list(ids)
    while stack:
        s = stack.pop()
        if s in seen:
            continue
        if s not in nouns:
            raise ValueError(f"{s} is not a WordNet 3.0 noun synset")
        seen.add(s)
        stack.extend(nouns[s][1])
    depth: dict[str, int] = {}

    def d(s: str) -> int:
        if s not in depth:
            depth[s] = 1 + min(d(p) for p in nouns[s][1]) if nouns[s][1] else 0
        return depth[s]

    return {s: d(s) for s in sorted(seen)}


def unique_names(ids: list[str], lemmas: dict[str, str], nouns: dict) -> tuple[list[str], dict[str, str]]:
    """First lemma per class; a first lemma shared by several classes gets '(primary parent)' appended.

    Returns (1000 names in index order, {synset: resolved name} for the renamed ones)."""
    first = [lemmas[s].split(", ")[0] for s in ids]
    count = collections.Counter(n.lower() for n in first)
    names, renamed = [], {}
    for s, n in zip(ids, first):
        if count[n.lower()] > 1:
            n = f"{n} ({nouns[nouns[s][1][0]][0]})"
            renamed[s] = n
        names.append(n)
    dup = [n for n, c in collections.Counter(n.lower() for n in names).items() if c > 1]
    if dup:
        raise ValueError(f"class names still not unique: {dup}")
    return names, renamed


def license_text(wordnet: Path, header: list[str]) -> str:
    """The WordNet 3.0 license: Debian's ``copyright`` stanza beside the database, else data.noun's header."""
    deb = wordnet.parent / "doc" / "wordnet-base" / "copyright"
    if deb.is_file():
        stanza = next(st for st in deb.read_text(encoding="utf-8").split("\n\n") if st.startswith("Files: *"))
        lines = [ln for ln in stanza.splitlines() if not ln.startswith("Files:")]
        lines = ["" if ln == " ." else ln[1:] if ln.startswith(" ") else ln for ln in lines]
        src = "Debian package wordnet-base, /usr/share/doc/wordnet-base/copyright"
    else:
        lines, src = header, "the header of WordNet 3.0 data.noun"
    return f"WordNet 3.0 license (from {src}):\n\n" + "\n".join(lines).strip() + "\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(timm_info: str | Path | None, wordnet: str | Path, out: str | Path = DEFAULT_OUT) -> dict[str, str]:
    """Write the tables into ``out``; returns {synset: name} of the disambiguated class names."""
    info, wordnet, out = find_timm_info(timm_info), Path(wordnet), Path(out)
    if not (wordnet / "data.noun").is_file():
        raise FileNotFoundError(f"no data.noun in {wordnet} (apt-get install wordnet-base, or pass --wordnet)")
    ids = (info / TIMM_FILES[0]).read_text().split()
    lemmas, defs = _tsv_dict(info / TIMM_FILES[1]), _tsv_dict(info / TIMM_FILES[2])
    mini = (info / TIMM_FILES[3]).read_text().split()
    if len(ids) != 1000 or len(set(ids)) != 1000 or len(mini) != 100 or not set(mini) <= set(ids):
        raise ValueError(f"unexpected timm info in {info}: {len(ids)} classes, {len(mini)} mini-ImageNet ids")
    nouns, header = read_nouns(wordnet)
    depth = upward(ids, nouns)
    names, renamed = unique_names(ids, lemmas, nouns)

    out.mkdir(parents=True, exist_ok=True)
    rows = ["index\tsynset\tname\tlemmas\tdefinition"]
    rows += [f"{i}\t{s}\t{n}\t{lemmas[s]}\t{defs[s]}" for i, (s, n) in enumerate(zip(ids, names))]
    (out / "classes.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rows = ["synset\tname\tparents\tdepth"]
    rows += [f"{s}\t{nouns[s][0]}\t{','.join(nouns[s][1])}\t{d}" for s, d in depth.items()]
    (out / "hypernyms.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "mini_imagenet.txt").write_text("\n".join(mini) + "\n", encoding="utf-8")
    (out / "WORDNET_LICENSE").write_text(license_text(wordnet, header), encoding="utf-8")

    n_multi = sum(len(nouns[s][1]) > 1 for s in depth)
    sums = "\n".join(f"    {sha256(p)}  {p.name}" for p in [info / f for f in TIMM_FILES] + [wordnet / "data.noun"])
    ren = "\n".join(f"- `{s}` {lemmas[s]!r} -> **{n}**" for s, n in renamed.items())
    (out / "README.md").write_text(f"""# ImageNet-1k class tables

Small data tables read by `backbones/vision/imagenet.py`; rebuilt, byte for byte, by
`backbones/vision/imagenet_build.py` (which is not needed at run time):

    pip download --no-deps timm=={timm_version(info)} -d /tmp/timm && unzip -q /tmp/timm/timm-*.whl -d /tmp/timm/x
    apt-get install wordnet-base    # WordNet 3.0 in /usr/share/wordnet
    python -m backbones.vision.imagenet_build --timm-info /tmp/timm/x/timm --wordnet /usr/share/wordnet

| file | rows | columns |
| --- | --- | --- |
| `classes.tsv` | {len(ids)} classes, index order | index, synset, name, lemmas, definition |
| `hypernyms.tsv` | {len(depth)} WordNet noun synsets (the classes and all their hypernyms; {n_multi} with several parents) | synset, name, parents, depth |
| `mini_imagenet.txt` | {len(mini)} mini-ImageNet synset ids | |

Each file has a header line (except `mini_imagenet.txt`) and tab-separated rows.
`name` in `classes.tsv` is the first lemma; where two classes share it, the primary parent's name is appended:

{ren}

`parents` in `hypernyms.tsv` lists the hypernym (`@`) and instance-hypernym (`@i`) pointers in WordNet's order;
the first is the primary hypernym, the one `hypernym_chain` follows. `depth` is the shortest path to `entity` (0).

## Provenance

- Synset ids (class-index order), lemmas, definitions and the mini-ImageNet split: the `timm/data/_info/` files of
  the timm {timm_version(info)} wheel (Apache-2.0, https://github.com/huggingface/pytorch-image-models).
- Hypernyms and their names: WordNet 3.0 `data.noun` (Princeton University; Debian package `wordnet-base`),
  under the WordNet 3.0 license, which permits use, copying and distribution provided that its copyright notice
  and statements, disclaimer included, appear on all copies: they are in `WORDNET_LICENSE` beside this file.

sha256 of the inputs:

{sums}
""", encoding="utf-8")
    return renamed


@cli_main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timm-info", default=None, help="timm package dir or folder with its data/_info files "
                    "(default: the installed timm)")
    ap.add_argument("--wordnet", default="/usr/share/wordnet", help="WordNet 3.0 database dir holding data.noun")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: %(default)s)")
    add_debug_flag(ap)
    a = ap.parse_args(argv)
    renamed = build(a.timm_info, a.wordnet, a.out)   # FileNotFoundError, ValueError: one line, exit 2
    for s, n in renamed.items():
        print(f"renamed {s} -> {n}")
    print(f"wrote {', '.join(TABLES)}, README.md, WORDNET_LICENSE to {a.out}")


if __name__ == "__main__":
    main()
