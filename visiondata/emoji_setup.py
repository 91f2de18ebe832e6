"""Fetch the emoji packages with npm, check their SHA-256, unpack them and rasterise the Fluent SVGs.

    python -m visiondata.emoji_setup [--force] [--keep-tarballs]

Run once (the Makefile's setup step does it); it is idempotent: a finished cache (its
`READY.json` names the same package versions and hashes) is left alone. Each package is fetched
with `npm pack NAME@VERSION` into a temporary folder (no project, no node_modules), its SHA-256
compared with `PACKAGES` below, and only what the loaders read is kept, under
`$LLMSIGHT_CACHE/emoji` (default `~/.cache/llmsight/emoji`):

    google/emoji.json, google/64/<image>.png       Noto, 64x64 RGBA, skin tones included
    twitter/emoji.json, twitter/64/<image>.png     Twemoji, same layout
    fluent/<flat|modern|high-contrast>/64/<slug>.png   Fluent SVGs rasterised (resvg) to 64x64 RGBA
    cldr/data-by-emoji.json                        emoji -> CLDR name, slug, group
    <package>.LICENSE                              each package's license file
    READY.json                                     versions, hashes, counts

Without npm, or when npm cannot reach its registry, it prints one warning line and exits 0: the
emoji data is then absent and `visiondata.emoji.load` says how to get it. A tarball whose
SHA-256 differs from the recorded one is an error (exit status 1) and nothing is unpacked.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

from backbones.cli_errors import UserError, add_debug_flag, cli_main

# npm name -> (version, SHA-256 of the tarball `npm pack` writes, pictures (or JSON files) kept).
PACKAGES = {
    "emoji-datasource-google": ("16.0.0", "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438", 3786),
    "emoji-datasource-twitter": ("16.0.0", "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877", 3786),
    "fluentui-emoji": ("1.3.0", "ec892e607e854859b812c7d827801756adc19955b0ef56d4ae8afcddd19492c5", 7885),
    "unicode-emoji-json": ("0.9.0", "ae7efacb55533385bf8767d613dbd36c71226669759d95919a6e9059f5e4c401", 1),
}
FLUENT_STYLES = ("flat", "modern", "high-contrast")
SIZE = 64                 # pixels a side of every cached picture
SETUP_COMMAND = "python -m visiondata.emoji_setup"
NPM_TIMEOUT_S = 900


def cache_dir() -> str:
    """`$LLMSIGHT_CACHE/emoji` (default `~/.cache/llmsight/emoji`); not created here."""
    from backbones.clip.cache import cache_root  # the repo's one rule for where caches live

    return os.path.join(cache_root(), "emoji")


def expected_ready() -> dict:
    """What READY.json must say for the cache to count as finished."""
    return {name: {"version": v, "sha256": h} for name, (v, h, _) in PACKAGES.items()}


def is_ready(root: str | None = None) -> bool:
    path = os.path.join(root or cache_dir(), "READY.json")
    try:
        with open(path) as f:
            return json.load(f).get("packages") == expected_ready()
    except (OSError, ValueError):
        return False


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rasterise(svg: bytes | str, size: int = SIZE) -> np.ndarray:
    """SVG text -> uint8 (size, size, 4) RGBA, the drawing fitted (aspect kept) and centred."""
    import resvg_py
    from PIL import Image

    text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
    png = bytes(resvg_py.svg_to_bytes(svg_string=text, width=size, height=size, skip_system_fonts=True))
    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2))
    return np.asarray(canvas)


class FetchError(RuntimeError, UserError):
    """npm is missing or could not fetch a package (the data is then left absent)."""


def npm_pack(name: str, version: str, dest: str) -> str:
    """Fetch NAME@VERSION's tarball into `dest` with `npm pack`; its path. `FetchError` if npm fails."""
    npm = shutil.which("npm")
    if npm is None:
        raise FetchError("npm is not installed")
    cmd = [npm, "pack", f"{name}@{version}", "--pack-destination", dest, "--cache", os.path.join(dest, "npm-cache"),
           "--loglevel", "error", "--json", "--fetch-retries", "1"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=NPM_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise FetchError(f"`npm pack {name}@{version}` took over {NPM_TIMEOUT_S} s") from e
    path = os.path.join(dest, f"{name}-{version}.tgz")
    if r.returncode != 0 or not os.path.isfile(path):
        raise FetchError(f"`npm pack {name}@{version}` failed ({_npm_error(r.stdout, r.stderr)})")
    return path


def _npm_error(stdout: str, stderr: str) -> str:
    """npm's one-line error summary (its --json error object, else its first stderr line)."""
    try:
        err = json.loads(stdout)["error"]
        return f"{err.get('code')}: {err.get('summary')}"
    except (ValueError, KeyError, TypeError):
        return (stderr.strip().splitlines() or ["no output"])[0]


def _members(tgz: str, desc: str):
    """Yield (path inside the package, file bytes) of every regular file of a .tgz, with a progress bar."""
    from tqdm import tqdm

    with tarfile.open(tgz, "r:gz") as tar, tqdm(desc=desc, unit="file", disable=None) as bar:
        for m in tar:
            if m.isfile():
                yield m.name.removeprefix("package/"), tar.extractfile(m).read()
                bar.update(1)


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _svg_to_png(svg: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rasterise(svg)).save(buf, "png")
    return buf.getvalue()


def _rasterise_all(svgs: dict[str, bytes]) -> None:
    """Write each {png path: SVG text} rasterised, on all cores (fresh processes), with a progress bar."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    paths = list(svgs)
    if len(paths) < 64:
        for path in paths:
            _write(path, _svg_to_png(svgs[path]))
        return
    with ProcessPoolExecutor(os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pngs = pool.map(_svg_to_png, [svgs[p] for p in paths], chunksize=32)
        for path, png in tqdm(zip(paths, pngs), total=len(paths), desc="rasterising Fluent", unit="icon",
                              disable=None):
            _write(path, png)


def unpack(name: str, tgz: str, out: str) -> int:
    """Write what the loaders need from package `name`'s tarball under `out`; the number of pictures."""
    n = 0
    total = PACKAGES[name][2]
    svgs = {}
    for path, data in _members(tgz, name):
        if path == "LICENSE":
            _write(os.path.join(out, f"{name}.LICENSE"), data)
        elif name.startswith("emoji-datasource-"):
            style = name.removeprefix("emoji-datasource-")
            if path == "emoji.json":
                _write(os.path.join(out, style, "emoji.json"), data)
            elif path.startswith(f"img/{style}/{SIZE}/") and path.endswith(".png"):
                _write(os.path.join(out, style, str(SIZE), os.path.basename(path)), data)
                n += 1
        elif name == "fluentui-emoji":
            parts = path.split("/")  # icons/<style>/<slug>.svg
            if len(parts) == 3 and parts[0] == "icons" and parts[1] in FLUENT_STYLES and parts[2].endswith(".svg"):
                svgs[os.path.join(out, "fluent", parts[1], str(SIZE), parts[2][:-4] + ".png")] = data
                n += 1
        elif name == "unicode-emoji-json" and path == "data-by-emoji.json":
            _write(os.path.join(out, "cldr", path), data)
            n += 1
    if n != total:
        raise RuntimeError(f"{name}: expected {total} pictures in the tarball, found {n}")
    _rasterise_all(svgs)
    return n


def fetch_all(downloads: str) -> dict[str, str]:
    """{package: tarball path} in `downloads`, fetched where missing, every one SHA-256 checked.
    `FetchError` when npm cannot fetch; `ValueError` when a tarball's hash is not the recorded one."""
    os.makedirs(downloads, exist_ok=True)
    tarballs = {}
    for name, (version, want, _) in PACKAGES.items():
        path = os.path.join(downloads, f"{name}-{version}.tgz")
        if not (os.path.isfile(path) and sha256_file(path) == want):
            print(f"fetching {name}@{version} with npm pack ...", flush=True)
            with tempfile.TemporaryDirectory(dir=downloads) as tmp:
                got = npm_pack(name, version, tmp)
                if (h := sha256_file(got)) != want:
                    raise ValueError(f"{name}@{version}: SHA-256 {h} differs from the recorded {want}; "
                                     "nothing unpacked")
                os.replace(got, path)
        tarballs[name] = path
    return tarballs


def setup(root: str | None = None, force: bool = False, keep_tarballs: bool = False) -> int:
    """Fill the cache; the process exit status (0 also when npm is missing or unreachable)."""
    root = root or cache_dir()
    if is_ready(root) and not force:
        print(f"emoji data already set up in {root}")
        return 0
    t0 = time.time()
    downloads = os.path.join(root, "downloads")
    try:
        tarballs = fetch_all(downloads)
    except FetchError as e:
        print(f"warning: emoji data not installed: {e}; run `{SETUP_COMMAND}` where npm can "
              "reach its registry (the emoji tests skip until then)")
        for d in (downloads, root):  # leave no empty folders behind (fetched tarballs stay, for next time)
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        return 0
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t_fetch = time.time() - t0
    # Unpack into a fresh folder beside the cache, then swap it in, so a half-done run never looks ready.
    stage = root + ".partial"
    shutil.rmtree(stage, ignore_errors=True)
    counts = {}
    for name, path in tarballs.items():
        counts[name] = unpack(name, path, stage)
    ready = {"packages": expected_ready(), "files": counts, "size": SIZE,
             "seconds": {"fetch": round(t_fetch, 1), "total": round(time.time() - t0, 1)}}
    with open(os.path.join(stage, "READY.json"), "w") as f:
        json.dump(ready, f, indent=1)
    if keep_tarballs:
        os.replace(downloads, os.path.join(stage, "downloads"))
    shutil.rmtree(root, ignore_errors=True)
    os.replace(stage, root)
    print(f"emoji data ready in {root} ({time.time() - t0:.0f} s): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=SETUP_COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("--force", action="store_true", help="redo everything even if the cache is ready")
    p.add_argument("--keep-tarballs", action="store_true", help="keep the npm tarballs in <cache>/downloads")
    add_debug_flag(p)
    a = p.parse_args(argv)
    return setup(force=a.force, keep_tarballs=a.keep_tarballs)


if __name__ == "__main__":
    sys.exit(main())
