"""The sample as the microscope sees it (:class:`Scene`: a height map and a material map) and the shapes renderers draw on it."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .fields import round_significant, smooth_noise


class Scene:
    """The sample as the microscope sees it: a height map and a material (electron-yield) map.

    Vector drawing (``scene.h`` / ``scene.m``: PIL ``ImageDraw`` on float layers) happens at the
    render size, in render pixels, heights included; fields computed with numpy (``arrays`` /
    ``set_arrays``) live on the stored-size grid, heights in grid pixels. Switching between the two
    box-filters the render layers down (anti-aliasing every drawn edge) or repeats grid pixels up.
    """

    def __init__(self, grid_width: int, grid_height: int, scale: int, visible_rows: int, nm_per_grid_px: float, rng: np.random.Generator):
        self.gw, self.gh, self.scale = grid_width, grid_height, scale
        self.width, self.height = grid_width * scale, grid_height * scale  # render size
        self.visible_rows = visible_rows  # grid rows above the information bar
        self.visible_render_rows = visible_rows * scale
        self.nm_per_gpx = nm_per_grid_px
        self.nm_per_px = nm_per_grid_px / scale
        self.rng = rng
        self._grid = (np.zeros((grid_height, grid_width), np.float32), np.full((grid_height, grid_width), 0.5, np.float32))
        self._grid_current = True
        self._layers: tuple[Image.Image, Image.Image] | None = None
        self._draws: tuple[ImageDraw.ImageDraw, ImageDraw.ImageDraw] | None = None
        self.substrate_roughness_nm: float | None = None

    # --- vector drawing at render size ---
    def _drawing(self) -> tuple[ImageDraw.ImageDraw, ImageDraw.ImageDraw]:
        if self._layers is None:
            height, material = self._grid
            size = (self.width, self.height)
            # nearest-neighbour up, box down: undrawn pixels come back exactly as they were
            self._layers = (Image.fromarray(height * self.scale, mode="F").resize(size, Image.NEAREST),
                            Image.fromarray(material, mode="F").resize(size, Image.NEAREST))
            self._draws = (ImageDraw.Draw(self._layers[0]), ImageDraw.Draw(self._layers[1]))
        self._grid_current = False
        return self._draws

    @property
    def h(self) -> ImageDraw.ImageDraw:
        """Draws heights (render px) at render size."""
        return self._drawing()[0]

    @property
    def m(self) -> ImageDraw.ImageDraw:
        """Draws materials (relative electron yield) at render size."""
        return self._drawing()[1]

    # --- numpy fields on the grid ---
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(height in grid px, material) on the stored-size grid."""
        if not self._grid_current:
            size = (self.gw, self.gh)
            height = np.array(self._layers[0].resize(size, Image.BOX), dtype=np.float32) / self.scale
            material = np.array(self._layers[1].resize(size, Image.BOX), dtype=np.float32)
            self._grid = (height, material)
            self._grid_current = True
        return self._grid

    def set_arrays(self, height: np.ndarray, material: np.ndarray) -> None:
        self._grid = (np.ascontiguousarray(height, dtype=np.float32), np.ascontiguousarray(material, dtype=np.float32))
        self._grid_current = True
        self._layers = None

    # --- units ---
    def px(self, fraction_of_width: float) -> float:
        """A fraction of the field width in render px."""
        return fraction_of_width * self.width

    def nm(self, render_px: float) -> float:
        return round_significant(render_px * self.nm_per_px, 3)

    def gnm(self, grid_px: float) -> float:
        return round_significant(grid_px * self.nm_per_gpx, 3)

    def visible(self, y_render) -> np.ndarray:
        return np.asarray(y_render) < self.visible_render_rows

    def grid_coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        ys, xs = np.mgrid[0 : self.gh, 0 : self.gw].astype(np.float32)
        return xs, ys

    # --- common pieces ---
    def substrate(self, material: float, roughness: float, correlation: float = 3.0) -> None:
        """A flat substrate with fine random relief (RMS height ``roughness`` grid px)."""
        relief = roughness * smooth_noise(self.rng, self.gw, self.gh, correlation, octaves=2)
        self.set_arrays(relief, np.full((self.gh, self.gw), material, dtype=np.float32))
        self.substrate_roughness_nm = self.gnm(roughness)

    def add_debris(self, count: int, size_px: float, z: float = 0.0) -> int:
        """Small foreign particles (dust, contamination); returns how many landed in view."""
        xs = self.rng.uniform(0, self.width, count)
        ys = self.rng.uniform(0, self.height, count)
        for x, y in zip(xs, ys):
            r = max(1.0, size_px * self.rng.uniform(0.4, 1.3))
            self.h.ellipse((x - r, y - r, x + r, y + r), fill=float(z + r))
            self.m.ellipse((x - r, y - r, x + r, y + r), fill=float(self.rng.uniform(0.8, 1.3)))
        return int(self.visible(ys).sum())

    def visible_fraction(self, mask: np.ndarray) -> float:
        """Share of the visible (above the bar) grid covered by a mask."""
        return round(float(mask[: self.visible_rows].mean()), 3)


def domes(scene: Scene, xs, ys, radii, z0, material, terraces: int = 3, squash: float = 1.0) -> None:
    """Hemispherical caps drawn as a few terraces (anti-aliased into smooth domes on the grid)."""
    count = len(xs)
    h, m = scene.h, scene.m
    for x, y, r, z, mat in zip(xs, ys, radii, np.broadcast_to(z0, count), np.broadcast_to(material, count)):
        m.ellipse((x - r, y - r * squash, x + r, y + r * squash), fill=float(mat))
        for k in range(terraces):
            rk = r * math.cos(0.5 * math.pi * k / terraces)
            zk = z + r * math.sin(0.5 * math.pi * (k + 1) / terraces)
            h.ellipse((x - rk, y - rk * squash, x + rk, y + rk * squash), fill=float(zk))


def touching_fraction(xs, ys, radii, slack: float = 1.05) -> float:
    """Share of objects that overlap or touch at least one other."""
    n = len(xs)
    if n < 2:
        return 0.0
    xs, ys, radii = (np.asarray(v, dtype=np.float32) for v in (xs, ys, radii))
    d2 = (xs[:, None] - xs[None]) ** 2 + (ys[:, None] - ys[None]) ** 2
    reach = (radii[:, None] + radii[None]) * slack
    touching = d2 < reach**2
    np.fill_diagonal(touching, False)
    return round(float(touching.any(axis=1).mean()), 3)


def path_contacts(paths, width: float) -> np.ndarray:
    """For each path (a polyline in render px), whether it touches or crosses another path: both
    pass through a common cell of a grid as fine as the paths are wide."""
    cell = max(2.0, float(width))
    cell_ids, owners = [], []
    for k, path in enumerate(paths):
        pts = np.asarray(path, dtype=np.float64)
        run = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pts, axis=0).T))])
        along = np.arange(0.0, run[-1] + 1e-9, cell / 2)
        xs, ys = np.interp(along, run, pts[:, 0]), np.interp(along, run, pts[:, 1])
        ids = np.unique(np.floor(xs / cell).astype(np.int64) * 1_000_003 + np.floor(ys / cell).astype(np.int64))
        cell_ids.append(ids)
        owners.append(np.full(ids.size, k))
    if not paths:
        return np.zeros(0, dtype=bool)
    cell_ids, owners = np.concatenate(cell_ids), np.concatenate(owners)
    shared_cells, counts = np.unique(cell_ids, return_counts=True)
    shared = np.isin(cell_ids, shared_cells[counts > 1])
    touching = np.zeros(len(paths), dtype=bool)
    touching[np.unique(owners[shared])] = True
    return touching


def cluster_positions(rng, n, width, height, clusters, spread):
    centres = np.stack([rng.uniform(0, width, clusters), rng.uniform(0, height, clusters)], axis=1)
    which = rng.integers(0, clusters, n)
    pos = centres[which] + rng.normal(0, spread, (n, 2))
    return pos[:, 0], pos[:, 1]


def random_walk(rng, start, heading, step, steps, curvature) -> list[tuple[float, float]]:
    """A smooth random path: the turning rate is an AR(1) process (std ``curvature`` rad/step)."""
    noise = rng.normal(0, curvature, steps)
    turn = np.convolve(noise, 0.8 ** np.arange(min(steps, 40)))[:steps]
    headings = heading + np.cumsum(turn)
    xs = start[0] + np.concatenate([[0.0], np.cumsum(step * np.cos(headings))])
    ys = start[1] + np.concatenate([[0.0], np.cumsum(step * np.sin(headings))])
    return list(zip(xs.tolist(), ys.tolist()))


def capsule(scene: Scene, x, y, length, radius, angle, z0, material) -> None:
    """A rod with hemispherical ends (two terraces for a rounded cross-section)."""
    dx, dy = (length / 2 - radius) * math.cos(angle), (length / 2 - radius) * math.sin(angle)
    ends = ((x - dx, y - dy), (x + dx, y + dy))
    scene.m.line(ends, fill=float(material), width=max(1, int(round(2 * radius))))
    for frac, z in ((1.0, z0 + 0.6 * radius), (0.6, z0 + radius)):
        r = radius * frac
        scene.h.line(ends, fill=float(z), width=max(1, int(round(2 * r))))
        for ex, ey in ends:
            scene.h.ellipse((ex - r, ey - r, ex + r, ey + r), fill=float(z))
    for ex, ey in ends:
        scene.m.ellipse((ex - radius, ey - radius, ex + radius, ey + radius), fill=float(material))


def draw_wire(scene: Scene, points, width: float, z_low: float, material: float) -> None:
    """A wire or fibre along a polyline; concentric strokes approximate a round cross-section."""
    # (no rounded joints: PIL draws those in Python, and paths here turn by small angles per step)
    steps = max(1, min(3, int(width / 5)))
    scene.m.line(points, fill=float(material), width=max(1, int(round(width))))
    for k in range(steps):
        w = width * math.sqrt(1 - (k / (steps + 0.5)) ** 2)
        z = z_low + 0.5 * width * (k + 1) / steps
        scene.h.line(points, fill=float(z), width=max(1, int(round(w))))


def mean_intercept(mask: np.ndarray) -> float:
    """Mean length (px) of the runs of True along rows: the intercept (chord) size of a phase."""
    m = mask.astype(np.int8)
    starts = int(np.count_nonzero(np.diff(m, axis=1) == 1) + np.count_nonzero(m[:, 0]))
    return float(m.sum()) / max(starts, 1)
