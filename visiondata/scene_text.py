"""Captions and question-answer pairs for a scene graph (see `visiondata.scenes`).

    captions(graph, rng) -> list[str]                 6 captions, one per template family
    questions(graph, rng) -> list[(question, answer, qtype)]

Objects in a scene have distinct colour-shape pairs, so "the red circle" always names one
object. Other references ("the star", "the large star", "the star on the left") are used only
when they pick out exactly one object. Answers are one word: a colour, a shape, "small" /
"large", a digit, "yes" / "no", or "left" / "right". Question types (qtype):
color, shape, size, count, exist, relation, side, verify.
"""

from __future__ import annotations

import numpy as np

PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "diamond": "diamonds",
          "star": "stars", "cross": "crosses"}
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six"]
# A relation ("left of", "above") is stated only when the centres are this far apart, as a
# fraction of the image side, along that axis.
CLEAR_GAP = 0.12


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(obj, with_size: bool = True) -> str:
    """Noun phrase with an indefinite article: "a large red circle"."""
    words = ([obj["size"]] if with_size else []) + [obj["color"], obj["shape"]]
    return f"{_article(words[0])} {' '.join(words)}"


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def place_phrase(obj) -> str:
    """Where an object is: "in the center", "on the left", "at the top right", ..."""
    h, v = obj["hpos"], obj["vpos"]
    if v == "middle":
        return "in the center" if h == "center" else f"on the {h}"
    return f"at the {v}" if h == "center" else f"at the {v} {h}"


def _background_phrase(graph) -> str:
    bg = graph["background"]
    if bg["kind"] == "photo":
        return "over a photograph"
    return f"on a {bg['tone']} gray background"


def relation(a, b) -> str | None:
    """The clearer of "to the left of"/"to the right of"/"above"/"below" for a relative to b."""
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if max(abs(dx), abs(dy)) < CLEAR_GAP:
        return None
    if abs(dx) >= abs(dy):
        return "to the left of" if dx < 0 else "to the right of"
    return "above" if dy < 0 else "below"


def captions(graph, rng: np.random.Generator) -> list[str]:
    objs = graph["objects"]
    main = objs[graph["main"]]
    n = len(objs)
    others = [o for i, o in enumerate(objs) if i != graph["main"]]
    listing = _join([_np(o) for o in objs])
    out = []
    # 1. Inventory.
    out.append(_cap(listing) + ".")
    # 2. Count.
    noun = "shape" if n == 1 else "shapes"
    lead = rng.choice(["There is", "The image shows"]) if n == 1 else rng.choice(["There are", "The image shows"])
    out.append(f"{lead} {NUMBER_WORDS[n]} {noun}: {_join([_np(o, False) for o in objs])}.")
    # 3. Main object and where it is.
    verb = rng.choice(["A picture of", "An image of", "A drawing of"])
    out.append(f"{verb} {_np(main)} {place_phrase(main)}.")
    # 4. Spatial relation of the main object to another, or solitude.
    rel_sent = None
    for o in (others if others else []):
        rel = relation(main, o)
        if rel:
            rel_sent = f"{_cap(_np(main, False))} {rel} {_np(o, False)}."
            break
    if rel_sent is None:
        rel_sent = (f"A lone {main['color']} {main['shape']}." if n == 1 else
                    f"{_cap(_np(main, False))} close to {_join([_np(o, False) for o in others])}.")
    out.append(rel_sent)
    # 5. Background and colours.
    colors = sorted({o["color"] for o in objs})
    out.append(f"{_cap(NUMBER_WORDS[n])} {noun} {_background_phrase(graph)}, colored {_join(colors)}.")
    # 6. Attribute statement about the main object.
    out.append(f"The biggest shape is {_article(main['color'])} {main['color']} {main['shape']}"
               f" and it is {main['size']}." if n > 1 else
               f"The only shape is {_article(main['color'])} {main['color']} {main['shape']} and it is {main['size']}.")
    return out


def _matches(o, desc: dict) -> bool:
    return all(o[k] == v for k, v in desc.items())


def referring(objs, i: int, exclude: str) -> str | None:
    """Shortest description naming object i uniquely without attribute `exclude`, or None."""
    o = objs[i]
    cands = [
        {"shape": o["shape"]},
        {"color": o["color"]},
        {"size": o["size"], "shape": o["shape"]},
        {"size": o["size"], "color": o["color"]},
        {"color": o["color"], "shape": o["shape"]},
        {"shape": o["shape"], "hpos": o["hpos"]},
        {"shape": o["shape"], "vpos": o["vpos"]},
    ]
    for desc in cands:
        if exclude in desc or ("hpos" in desc and o["hpos"] == "center") or ("vpos" in desc and o["vpos"] == "middle"):
            continue
        if sum(_matches(p, desc) for p in objs) == 1:
            words = [desc[k] for k in ("size", "color") if k in desc]
            words.append(desc.get("shape", "object"))
            phrase = "the " + " ".join(words)
            if "hpos" in desc:
                phrase += f" on the {desc['hpos']}"
            if "vpos" in desc:
                phrase += f" at the {desc['vpos']}"
            return phrase
    return None


def questions(graph, rng: np.random.Generator, colors: list[str], shapes: list[str]) -> list[tuple[str, str, str]]:
    objs = graph["objects"]
    n = len(objs)
    qa: list[tuple[str, str, str]] = []
    order = rng.permutation(n)
    # Colour, shape and size of up to two objects.
    for i in order[:2]:
        o = objs[i]
        ref = referring(objs, i, "color")
        if ref:
            qa.append((f"What color is {ref}?", o["color"], "color"))
        ref = referring(objs, i, "shape")
        if ref:
            qa.append((f"What shape is {ref}?", o["shape"], "shape"))
        qa.append((f"What size is the {o['color']} {o['shape']}?", o["size"], "size"))
    # Counts: all objects, one shape, one colour; the shape or colour asked about is one in the
    # scene half the time and any (possibly absent, answer 0) otherwise.
    qa.append(("How many shapes are there?", str(n), "count"))
    pick = objs[int(rng.integers(n))]
    s = pick["shape"] if rng.random() < 0.5 else shapes[int(rng.integers(len(shapes)))]
    qa.append((f"How many {PLURAL[s]} are there?", str(sum(o["shape"] == s for o in objs)), "count"))
    c = pick["color"] if rng.random() < 0.5 else colors[int(rng.integers(len(colors)))]
    qa.append((f"How many {c} shapes are there?", str(sum(o["color"] == c for o in objs)), "count"))
    # Existence: one present pair, one absent pair sharing a colour or shape with the scene.
    o = objs[int(order[0])]
    qa.append((f"Is there {_np(o, False)}?", "yes", "exist"))
    present = {(p["color"], p["shape"]) for p in objs}
    for _ in range(50):
        if rng.random() < 0.5:
            pair = (o["color"], shapes[int(rng.integers(len(shapes)))])
        else:
            pair = (colors[int(rng.integers(len(colors)))], o["shape"])
        if pair not in present:
            qa.append((f"Is there {_article(pair[0])} {pair[0]} {pair[1]}?", "no", "exist"))
            break
    # Verification: is <ref> <colour>? (yes or no, balanced)
    i = int(order[-1])
    ref = referring(objs, i, "color")
    if ref:
        truth = objs[i]["color"]
        ask = truth if rng.random() < 0.5 else colors[int(rng.choice([k for k, c in enumerate(colors) if c != truth]))]
        qa.append((f"Is {ref} {ask}?", "yes" if ask == truth else "no", "verify"))
    # Side of the image.
    i = int(order[0])
    if objs[i]["hpos"] != "center":
        qa.append((f"Is the {objs[i]['color']} {objs[i]['shape']} on the left or the right?", objs[i]["hpos"], "side"))
    # Relative position of two objects, when it is clear.
    if n >= 2:
        a, b = objs[int(order[0])], objs[int(order[1])]
        dx, dy = a["x"] - b["x"], a["y"] - b["y"]
        an, bn = f"the {a['color']} {a['shape']}", f"the {b['color']} {b['shape']}"
        if abs(dx) >= CLEAR_GAP:
            if rng.random() < 0.5:
                qa.append((f"Is {an} to the left of {bn}?", "yes" if dx < 0 else "no", "relation"))
            else:
                qa.append((f"Is {an} to the right of {bn}?", "yes" if dx > 0 else "no", "relation"))
        if abs(dy) >= CLEAR_GAP:
            if rng.random() < 0.5:
                qa.append((f"Is {an} above {bn}?", "yes" if dy < 0 else "no", "relation"))
            else:
                qa.append((f"Is {an} below {bn}?", "yes" if dy > 0 else "no", "relation"))
    return qa
