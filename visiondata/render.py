"""NumPy rasteriser for the synthetic scenes: anti-aliased shapes from signed distances.

Each shape is defined in a unit frame (its centre at 0, its extent about 1, y pointing down)
by a signed distance function; a pixel's coverage is clip(0.5 - d_px, 0, 1) where d_px is the
signed distance in pixels, so pixels well inside a shape hold exactly its colour and only the
one-pixel rim is blended with the background. Only each object's bounding box is evaluated.

    SHAPES                                    names, in class order
    BOUND                                     every shape lies inside radius BOUND of its frame
    draw(canvas, shape, cx, cy, r, rgb)       in place; canvas float32 (S, S, 3), pixels units
    draw_many(canvases, objects)              many non-overlapping objects at once, vectorised per shape
    coverage(shape, S, cx, cy, r) -> float32 (S, S)   alpha of one shape on an S x S grid
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ["circle", "square", "triangle", "diamond", "star", "cross"]
BOUND = 1.25  # all shapes lie inside this radius (in units of r)


def _regular(k: int, radius: float, start_deg: float = -90.0) -> np.ndarray:
    a = np.deg2rad(start_deg) + 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)], -1) * radius


def _star_vertices(points: int = 5, outer: float = 1.15, inner: float = 0.48) -> np.ndarray:
    outer_v = _regular(points, outer)
    inner_v = _regular(points, inner, -90.0 + 180.0 / points)
    return np.stack([outer_v, inner_v], 1).reshape(-1, 2)


_POLYGONS = {
    # Equilateral, pointing up, centroid at the origin, circumradius 1.2.
    "triangle": _regular(3, 1.2),
    "star": _star_vertices() + np.array([0.0, 0.1]),
}


def _sd_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (u, v) to a simple polygon."""
    d2 = np.full(u.shape, np.inf, np.float32)
    inside = np.zeros(u.shape, bool)
    k = len(verts)
    for i in range(k):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % k]
        ex, ey = bx - ax, by - ay
        wx, wy = u - ax, v - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dx, dy = wx - ex * t, wy - ey * t
        np.minimum(d2, dx * dx + dy * dy, out=d2)
        # Even-odd rule: does a ray towards +u cross edge (a, b)?
        crosses = (ay > v) != (by > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = ax + (v - ay) * ex / (ey if ey != 0 else 1e-12)
        inside ^= crosses & (u < xint)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def _half_planes(verts: np.ndarray) -> np.ndarray:
    """Outward unit normals n and offsets c of a convex polygon's edges (n . p <= c inside)."""
    planes = []
    k = len(verts)
    centroid = verts.mean(0)
    for i in range(k):
        a, b = verts[i], verts[(i + 1) % k]
        n = np.array([b[1] - a[1], a[0] - b[0]])
        n /= np.linalg.norm(n)
        if n @ (centroid - a) > 0:
            n = -n
        planes.append((n[0], n[1], n @ a))
    return np.array(planes)


_TRIANGLE_PLANES = _half_planes(_POLYGONS["triangle"])


def _sd_convex(u, v, planes: np.ndarray):
    """Largest signed distance to the edge lines: exact inside and along the edges (near
    corners, outside, a slight underestimate, which only touches the anti-aliased rim)."""
    d = None
    for nx, ny, c in planes:
        e = u * nx + v * ny - c
        d = e if d is None else np.maximum(d, e)
    return d


def _sd_star5(u, v, outer: float, inner: float):
    """Exact signed distance to a five-pointed star pointing up (y down), by folding the plane
    into one half-spike and measuring the distance to its edge."""
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36, -sin 36)
    k2x = -k1x
    x, y = np.abs(u), -v  # y up from here
    d = np.maximum(k1x * x + k1y * y, 0.0) * 2.0
    x, y = x - d * k1x, y - d * k1y
    d = np.maximum(k2x * x + k1y * y, 0.0) * 2.0
    x, y = x - d * k2x, y - d * k1y
    x = np.abs(x)
    y = y - outer
    # The spike edge runs from the tip (0, outer) to the inner vertex at angle 36 deg off the axis.
    bax, bay = inner * -k1y, inner * k1x - outer  # inner vertex minus tip
    h = np.clip((x * bax + y * bay) / (bax * bax + bay * bay), 0.0, 1.0)
    dist = np.hypot(x - bax * h, y - bay * h)
    return dist * np.sign(y * bax - x * bay)


def _sd_box(u, v, hx: float, hy: float):
    qx, qy = np.abs(u) - hx, np.abs(v) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance in the shape's unit frame (negative inside)."""
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "square":
        return _sd_box(u, v, 0.85, 0.85)
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.2) / math.sqrt(2.0)
    if shape == "cross":
        return np.minimum(_sd_box(u, v, 1.1, 0.36), _sd_box(u, v, 0.36, 1.1))
    if shape == "triangle":
        return _sd_convex(u, v, _TRIANGLE_PLANES)
    if shape == "star":
        return _sd_star5(u, v - 0.1, 1.15, 0.48)
    if shape in _POLYGONS:
        return _sd_polygon(u, v, _POLYGONS[shape])
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _box(S: int, cx: float, cy: float, r: float):
    ext = BOUND * r + 1.0
    x0, x1 = max(0, int(math.floor(cx - ext))), min(S, int(math.ceil(cx + ext)))
    y0, y1 = max(0, int(math.floor(cy - ext))), min(S, int(math.ceil(cy + ext)))
    return x0, x1, y0, y1


def _alpha(shape: str, cx: float, cy: float, r: float, x0, x1, y0, y1) -> np.ndarray:
    xs = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx) / r
    ys = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy) / r
    u, v = np.meshgrid(xs, ys)  # (h, w)
    d_px = signed_distance(shape, u, v) * r
    return np.clip(0.5 - d_px, 0.0, 1.0).astype(np.float32)


def coverage(shape: str, S: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Coverage in [0, 1] of one shape (centre (cx, cy), scale r, pixels) on an S x S grid: (S, S)."""
    out = np.zeros((S, S), np.float32)
    x0, x1, y0, y1 = _box(S, cx, cy, r)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = _alpha(shape, cx, cy, r, x0, x1, y0, y1)
    return out


def draw(canvas: np.ndarray, shape: str, cx: float, cy: float, r: float, rgb) -> None:
    """Composite a shape of colour `rgb` over float32 canvas (S, S, 3) in place (pixel units)."""
    S = canvas.shape[0]
    x0, x1, y0, y1 = _box(S, cx, cy, r)
    if x1 <= x0 or y1 <= y0:
        return
    a = _alpha(shape, cx, cy, r, x0, x1, y0, y1)[..., None]  # (h, w, 1)
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - a
    region += a * np.asarray(rgb, np.float32)


def draw_many(canvases: np.ndarray, objects) -> None:
    """Composite many non-overlapping shapes in place.

    canvases: float32 (N, S, S, 3). objects: sequence of (image_index, shape, cx, cy, r, rgb) in
    pixel units. Coverage is computed for all objects of one shape and scale in one vectorised
    call on equal-sized patches, and every covered pixel is blended in one scatter. Shapes in
    the same image must not overlap (the scenes guarantee a gap); use `draw` for layering.
    """
    N, S = canvases.shape[:2]
    if not len(objects):
        return
    flat = canvases.reshape(-1, 3)  # (N*S*S, 3), a view
    groups: dict[tuple[str, float], list[int]] = {}
    for j, obj in enumerate(objects):
        groups.setdefault((obj[1], round(float(obj[4]), 1)), []).append(j)
    for (shape, _), idx in groups.items():
        n = np.array([objects[j][0] for j in idx], np.int64)
        cx = np.array([objects[j][2] for j in idx], np.float32)
        cy = np.array([objects[j][3] for j in idx], np.float32)
        r = np.array([objects[j][4] for j in idx], np.float32)
        rgb = np.array([objects[j][5] for j in idx], np.float32)  # (M, 3)
        P = int(math.ceil(2 * (BOUND * float(r.max()) + 1.0))) + 1  # patch side
        x0 = np.floor(cx - P / 2).astype(np.int64)
        y0 = np.floor(cy - P / 2).astype(np.int64)
        grid = np.arange(P)
        px = x0[:, None, None] + grid[None, None, :]  # (M, 1, P) pixel columns
        py = y0[:, None, None] + grid[None, :, None]  # (M, P, 1) pixel rows
        u = (px + np.float32(0.5) - cx[:, None, None]) / r[:, None, None]
        v = (py + np.float32(0.5) - cy[:, None, None]) / r[:, None, None]
        u, v = np.broadcast_arrays(u, v)  # (M, P, P)
        d_px = signed_distance(shape, u, v) * r[:, None, None]
        a = np.clip(0.5 - d_px, 0.0, 1.0).astype(np.float32)  # (M, P, P)
        keep = (a > 0) & (px >= 0) & (px < S) & (py >= 0) & (py < S)
        m, yy, xx = np.nonzero(keep)
        where = (n[m] * S + py[m, yy, 0]) * S + px[m, 0, xx]
        alpha = a[m, yy, xx][:, None]
        flat[where] = flat[where] * (1.0 - alpha) + alpha * rgb[m]
