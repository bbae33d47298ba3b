"""One renderer per class: each fills a :class:`~.scene.Scene` and returns what it drew.

A renderer draws the sample as a height map and a material map (the secondary-electron yield of
each phase) and returns a JSON-able dict of its measurements: sizes in nm, counts, arrangement,
coverage, aggregation, ... (``metadata["structure"]`` of the image, which the oracle answers from).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .fields import blur, choice, hash_unit, loguniform, smooth_noise, stats_nm, worley
from .scene import (
    Scene,
    capsule,
    cluster_positions,
    domes,
    draw_wire,
    mean_intercept,
    path_contacts,
    random_walk,
    touching_fraction,
)
from .specs import ClassSpec


def _render_particles(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    W, H = scene.width, scene.height
    arrangements = ("random", "clustered", "close-packed") if variant == "spheres" else ("random", "clustered")
    arrangement = choice(rng, arrangements, (0.45, 0.35, 0.2) if variant == "spheres" else (0.55, 0.45))
    low, high = spec.size_fraction
    if arrangement == "close-packed":
        low = max(low, 0.03)
    mean_d = scene.px(loguniform(rng, low, high))
    cv = rng.uniform(0.02, 0.07) if arrangement == "close-packed" else rng.uniform(0.04, 0.35)
    scene.substrate(rng.uniform(0.3, 0.65), roughness=rng.uniform(0.03, 0.2))
    aspect = rng.uniform(2.0, 5.0) if variant == "rods" else 1.0
    if arrangement == "close-packed":
        pitch = mean_d * rng.uniform(1.0, 1.08)
        angle = rng.uniform(0, math.pi / 3)
        n_side = int(math.hypot(W, H) / pitch) + 2
        i, j = np.meshgrid(np.arange(-n_side, n_side), np.arange(-n_side, n_side))
        u, v = (i + 0.5 * j) * pitch, j * pitch * math.sqrt(3) / 2
        xs = W / 2 + u * math.cos(angle) - v * math.sin(angle)
        ys = H / 2 + u * math.sin(angle) + v * math.cos(angle)
        keep = (xs > -mean_d) & (xs < W + mean_d) & (ys > -mean_d) & (ys < H + mean_d)
        keep &= rng.random(keep.shape) >= rng.uniform(0.01, 0.12)  # vacancies
        xs, ys = xs[keep] + rng.normal(0, 0.04 * pitch, keep.sum()), ys[keep] + rng.normal(0, 0.04 * pitch, keep.sum())
        diam = np.clip(rng.normal(mean_d, cv * mean_d, xs.size), 0.6 * mean_d, 1.4 * mean_d)
    else:
        coverage = rng.uniform(0.06, 0.45)
        n = int(np.clip(coverage * W * H / (aspect * math.pi * mean_d**2 / 4), 4, 900))
        diam = np.clip(rng.lognormal(np.log(mean_d), cv, n), 2.0, None)
        if arrangement == "clustered":
            clusters = int(rng.integers(2, 9))
            xs, ys = cluster_positions(rng, n, W, H, clusters, rng.uniform(0.6, 2.0) * mean_d * math.sqrt(n / clusters) / 2)
        else:
            xs, ys = rng.uniform(0, W, n), rng.uniform(0, H, n)
    order = np.argsort(ys)  # painter's order
    xs, ys, diam = xs[order], ys[order], diam[order]
    radii = diam / 2
    materials = rng.uniform(0.85, 1.15) + rng.normal(0, 0.04, xs.size)
    extra: dict = {}
    if variant == "spheres":
        domes(scene, xs, ys, radii, 0.0, materials)
    elif variant in ("cubes", "faceted"):
        h, m = scene.h, scene.m
        n = xs.size
        if variant == "cubes":  # a square outline around a raised top face, four bevel facets
            sides = np.full(n, 4)
            angles = rng.uniform(0, math.pi / 2) + rng.normal(0, 0.5, (n, 1)) + np.arange(4) * math.pi / 2
            reach = np.repeat(1.1 * radii[:, None], 4, axis=1)
            centres_x, centres_y = xs, ys
            facet_m = materials[:, None] * rng.uniform(0.7, 1.1, (n, 4))
        else:  # irregular polyhedra: an off-centre apex joined to 5-8 corners
            sides = rng.integers(5, 9, n)
            angles = np.sort(rng.uniform(0, 2 * math.pi, (n, 8)), axis=1)
            reach = radii[:, None] * rng.uniform(0.75, 1.2, (n, 8))
            centres_x, centres_y = xs + rng.normal(0, 0.2, n) * radii, ys + rng.normal(0, 0.2, n) * radii
            facet_m = materials[:, None] * rng.uniform(0.6, 1.2, (n, 8))
        corner_x, corner_y = xs[:, None] + reach * np.cos(angles), ys[:, None] + reach * np.sin(angles)
        for i in range(n):
            k = sides[i]
            corners = list(zip(corner_x[i, :k].tolist(), corner_y[i, :k].tolist()))
            if variant == "cubes":
                inner = [(xs[i] + 0.65 * (cx - xs[i]), ys[i] + 0.65 * (cy - ys[i])) for cx, cy in corners]
            else:
                inner = [(float(centres_x[i]), float(centres_y[i]))] * k
            h.polygon(corners, fill=float(radii[i]))
            for q in range(k):
                m.polygon([corners[q], corners[(q + 1) % k], inner[(q + 1) % k], inner[q]], fill=float(facet_m[i, q]))
            if variant == "cubes":
                h.polygon(inner, fill=float(1.25 * radii[i]))
                m.polygon(inner, fill=float(materials[i]))
        extra["faceted"] = True
    else:  # short rods
        lengths = diam * aspect
        for x, y, r, length, a, mat in zip(xs, ys, radii, lengths, rng.uniform(0, math.pi, xs.size), materials):
            capsule(scene, x, y, length, r, a, 0.0, mat)
        extra["length_nm"] = stats_nm(lengths[scene.visible(ys)], scene.nm_per_px)
        extra["aspect_ratio"] = round(float(aspect), 2)
    vis = scene.visible(ys) & (xs >= 0) & (xs < W) & (ys >= 0)
    height, _ = scene.arrays()
    covered = height > 0.3 * float(np.median(radii)) / scene.scale
    debris = scene.add_debris(int(rng.integers(0, 4)), max(1.0, 0.15 * mean_d))
    return {
        "shape": {"spheres": "spherical particles", "cubes": "cubic particles", "faceted": "faceted polyhedral particles", "rods": "short rod-like particles"}[variant],
        "arrangement": arrangement,
        "count": int(vis.sum()),
        "size_nm": stats_nm(diam[vis], scene.nm_per_px),
        "size_cv": round(float(np.std(diam[vis]) / np.mean(diam[vis])), 3) if vis.any() else 0.0,
        "coverage": scene.visible_fraction(covered),
        "aggregation": touching_fraction(xs[vis], ys[vis], radii[vis] * (0.5 + 0.5 * aspect)),
        "debris": debris,
        **extra,
    }


def _render_powder(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    grain = scene.px(loguniform(rng, *spec.size_fraction))  # render px
    cv = rng.uniform(0.3, 0.6)
    scene.substrate(rng.uniform(0.15, 0.35), roughness=0.15)
    extra: dict = {}
    if variant in ("granular", "agglomerates"):
        gw, gh, g = scene.gw, scene.gh, grain / scene.scale  # grid px
        warp_amp = g * rng.uniform(0.25, 0.6)
        warp = (warp_amp * smooth_noise(rng, gw, gh, g * 1.5), warp_amp * smooth_noise(rng, gw, gh, g * 1.5))
        layers = []
        for layer in range(2):
            cell = g * (1.0 + 0.4 * layer) * rng.uniform(0.9, 1.1)
            f1, _, ids, seeds = worley(rng, gw, gh, cell, warp=warp)
            radius = cell * 0.5 * np.clip(1 + cv * (2 * rng.random(seeds, dtype=np.float32) - 1), 0.35, 1.8)[ids]
            brightness = rng.uniform(0.8, 1.15, seeds).astype(np.float32)[ids]  # grain-to-grain contrast
            layers.append((np.sqrt(np.clip(radius**2 - f1**2, 0, None)), brightness, cell))
        (top, top_m, _), (bottom, bottom_m, bottom_cell) = layers
        surface = np.where(top > 0, top + 0.6 * bottom_cell, bottom)
        if variant == "agglomerates":
            clump = g * rng.uniform(5, 12)
            clumps = smooth_noise(rng, gw, gh, clump, octaves=2) > rng.uniform(-0.6, 0.3)
            surface = np.where(clumps, surface + 2 * g, 0.3 * bottom)
            covered = clumps
            extra["agglomerate_size_nm"] = scene.gnm(clump)
        else:
            covered = surface > 0
        height, material = scene.arrays()
        scene.set_arrays(height + surface, np.where(surface > 0, np.where(top > 0, top_m, bottom_m), material))
        coverage = scene.visible_fraction(covered)
        count = int(round(scene.visible_rows * gw * coverage / (math.pi * (0.5 * g) ** 2)))
        sizes_px = rng.lognormal(np.log(grain), cv * 0.8, 400)
        shape = "irregular rounded grains"
    else:  # flakes: overlapping platelets with thin bright edges
        W, H = scene.width, scene.height
        n = int(np.clip(rng.uniform(1.2, 3.0) * W * H / (grain * 2.5) ** 2, 40, 700))
        xs, ys = rng.uniform(-grain, W + grain, n), rng.uniform(-grain, H + grain, n)
        sizes_px = rng.lognormal(np.log(grain * 2.5), cv, n)
        h, m = scene.h, scene.m
        # all random draws up front: up to 7 corners per flake, of which the first k are used
        corners = rng.integers(4, 8, n)
        angles = np.sort(rng.uniform(0, 2 * math.pi, (n, 7)), axis=1)
        radii = 0.5 * sizes_px[:, None] * rng.uniform(0.5, 1.2, (n, 7))
        px_, py_ = xs[:, None] + radii * np.cos(angles), ys[:, None] + radii * np.sin(angles)
        heights = 1.5 * sizes_px * np.arange(n) / n + rng.uniform(0.5, 2.0, n)
        materials = rng.uniform(0.75, 1.15, n)
        for i in range(n):
            k = corners[i]
            poly = list(zip(px_[i, :k].tolist(), py_[i, :k].tolist()))
            h.polygon(poly, fill=float(heights[i]))
            m.polygon(poly, fill=float(materials[i]))
        height, _ = scene.arrays()
        coverage = scene.visible_fraction(height > 0.5 / scene.scale)
        vis = scene.visible(ys)
        count, sizes_px = int(vis.sum()), sizes_px[vis]
        shape = "plate-like flakes"
    return {
        "shape": shape,
        "arrangement": "agglomerated clumps" if variant == "agglomerates" else "densely packed",
        "count": count,
        "size_nm": stats_nm(sizes_px, scene.nm_per_px),
        "size_cv": round(float(cv), 3),
        "coverage": coverage,
        "aggregation": coverage,  # grains touch wherever they cover the field
        "layers": "multilayer",
        **extra,
    }


def _render_nanowires(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    W, H = scene.width, scene.height
    diameter = scene.px(loguniform(rng, *spec.size_fraction))
    cv = rng.uniform(0.05, 0.3)
    scene.substrate(rng.uniform(0.15, 0.45), roughness=rng.uniform(0.15, 0.7), correlation=2.0)
    wire_m = rng.uniform(0.9, 1.2)
    extra: dict = {}
    if variant == "forest":  # vertical wires seen with the stage tilted
        tilt = float(rng.choice([20, 30, 35, 45, 52]))
        n = int(rng.integers(80, 380))
        length = scene.px(rng.uniform(0.08, 0.4))
        main = math.radians(rng.normal(0, 12))
        spread = math.radians(rng.uniform(1.5, 10))
        bx, by = rng.uniform(-0.1 * W, 1.1 * W, n), rng.uniform(0.0, 1.35 * H, n)
        order = np.argsort(by)  # far (top) to near (bottom)
        bx, by = bx[order], by[order]
        lengths = np.clip(rng.normal(length, 0.25 * length, n), 0.2 * length, None)
        diam = np.clip(rng.normal(diameter, cv * diameter, n), 1.2, None)
        projected = lengths * math.sin(math.radians(tilt))
        dirs = main + rng.normal(0, spread, n)
        tips_x, tips_y = bx + projected * np.sin(dirs), by - projected * np.cos(dirs)
        m = scene.m
        for i in range(n):
            z_base = by[i] / H * 4
            for s in range(3):  # rising towards the tip, brighter towards the tip
                a, b = s / 3, (s + 1) / 3
                p0 = (bx[i] + a * (tips_x[i] - bx[i]), by[i] + a * (tips_y[i] - by[i]))
                p1 = (bx[i] + b * (tips_x[i] - bx[i]), by[i] + b * (tips_y[i] - by[i]))
                draw_wire(scene, [p0, p1], diam[i], z_base + lengths[i] * b * 0.3, wire_m * (0.75 + 0.3 * b))
            r = diam[i] / 2
            m.ellipse((tips_x[i] - r, tips_y[i] - r, tips_x[i] + r, tips_y[i] + r), fill=float(wire_m * 1.25))
        mid_y = 0.5 * (by + tips_y)
        # standing wires touch when their bases (foreshortened by the tilt) nearly meet
        base_y = by / math.cos(math.radians(tilt))
        touching = np.zeros(n, dtype=bool)
        if n > 1:
            d2 = (bx[:, None] - bx[None]) ** 2 + (base_y[:, None] - base_y[None]) ** 2
            np.fill_diagonal(d2, np.inf)
            touching = (d2 < (1.2 * (diam[:, None] + diam[None]) / 2) ** 2).any(axis=1)
        arrangement = "vertically aligned array"
        extra.update(tilt_deg=tilt, orientation_spread_deg=round(math.degrees(spread), 1))
    else:
        n = int(rng.integers(25, 220)) if variant == "lying" else int(rng.integers(8, 30))
        length = scene.px(rng.uniform(0.12, 0.7))
        lengths = np.clip(rng.normal(length, 0.35 * length, n), 0.15 * length, None)
        diam = np.clip(rng.normal(diameter, cv * diameter, n), 1.2, None)
        cx, cy = rng.uniform(-0.05 * W, 1.05 * W, n), rng.uniform(-0.05 * H, 1.05 * H, n)
        angles = rng.uniform(0, math.pi, n)
        if variant == "bundled":
            per_bundle = rng.integers(3, 10, n)
            extra["bundles"] = int(scene.visible(cy).sum())
            extra["wires_per_bundle"] = round(float(per_bundle.mean()), 1)
            wires = []
            for i in range(n):
                normal = (-math.sin(angles[i]), math.cos(angles[i]))
                for k in range(per_bundle[i]):
                    off = (k - per_bundle[i] / 2) * diam[i] * 1.05
                    slide = rng.normal(0, 0.15 * lengths[i])
                    wires.append((cx[i] + off * normal[0] + slide * math.cos(angles[i]), cy[i] + off * normal[1] + slide * math.sin(angles[i]),
                                  angles[i] + rng.normal(0, 0.02), lengths[i] * rng.uniform(0.7, 1.1), diam[i] * rng.uniform(0.9, 1.1)))
            cx, cy, angles, lengths, diam = (np.array(v) for v in zip(*wires))
            n = len(cx)
        bend = rng.uniform(0, 0.002)
        paths = []
        for i in range(n):
            half = lengths[i] / 2
            ux, uy = math.cos(angles[i]), math.sin(angles[i])
            t = np.linspace(-half, half, 6)
            sag = bend * (half**2 - t**2)
            paths.append(list(zip((cx[i] + t * ux - sag * uy).tolist(), (cy[i] + t * uy + sag * ux).tolist())))
            draw_wire(scene, paths[-1], diam[i], 3.0 * i / n * diameter, wire_m)
        mid_y = cy
        touching = path_contacts(paths, float(np.median(diam)) * 1.1)
        arrangement = "randomly oriented, lying on the substrate" if variant == "lying" else "parallel bundles"
    vis = scene.visible(mid_y)
    return {
        "shape": "high-aspect-ratio wires",
        "arrangement": arrangement,
        "count": int(vis.sum()),
        "size_nm": stats_nm(diam[vis], scene.nm_per_px),
        "length_nm": stats_nm(lengths[vis], scene.nm_per_px),
        "aspect_ratio": round(float(np.mean(lengths[vis] / diam[vis])), 1) if vis.any() else 0.0,
        "size_cv": round(float(cv), 3),
        "aggregation": round(float(touching[vis].mean()), 3) if vis.any() else 0.0,
        **extra,
    }


def _render_fibres(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    W, H = scene.width, scene.height
    diameter = scene.px(loguniform(rng, *spec.size_fraction))
    cv = rng.uniform(0.08, 0.4)
    scene.substrate(rng.uniform(0.05, 0.3), roughness=0.25)
    fibre_m = rng.uniform(0.85, 1.15)
    extra: dict = {}
    if variant == "woven":
        xs, ys = scene.grid_coordinates()
        d = diameter / scene.scale
        pitch = d * rng.uniform(6, 14)
        angle = rng.uniform(0, math.pi)
        u = xs * math.cos(angle) + ys * math.sin(angle)
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        fill = rng.uniform(0.75, 0.95)
        strands = int(max(3, pitch * fill / d))
        twist = rng.uniform(0.3, 1.0)

        def bundle(across_coord, along_coord):
            phase = (across_coord / pitch) % 1.0
            across = (phase - 0.5) / (fill / 2)
            inside = np.abs(across) < 1
            dome = np.sqrt(np.clip(1 - across**2, 0, None)) * pitch * fill * 0.25
            ripple = np.abs(np.sin(math.pi * (strands * (phase - 0.5) / fill + twist * along_coord / d / strands)))
            return inside, dome * (0.8 + 0.2 * ripple)

        warp_in, warp_h = bundle(u, v)
        weft_in, weft_h = bundle(v, u)
        over = ((np.floor(u / pitch) + np.floor(v / pitch)).astype(np.int32) % 2 == 0)
        lift = pitch * 0.12 * np.where(over, 1.0, -1.0)
        top = np.where(warp_in & weft_in, np.where(over, warp_h + lift, weft_h - lift),
                       np.where(warp_in, warp_h + lift, np.where(weft_in, weft_h - lift, -pitch * 0.3)))
        _, material = scene.arrays()
        covered = warp_in | weft_in
        scene.set_arrays(top, np.where(covered, fibre_m, material))
        n_visible = int(round((scene.visible_rows + scene.gw) / pitch * strands))
        diam = diameter * np.clip(rng.normal(1, cv * 0.3, 50), 0.5, 1.5)
        arrangement = "woven bundles"
        curvature = "straight strands twisted into bundles"
        extra.update(bundle_width_nm=scene.gnm(pitch * fill), fibres_per_bundle=strands)
        coverage = scene.visible_fraction(covered)
        aggregation = 1.0  # every fibre lies in a bundle
    else:
        n = int(rng.integers(12, 60)) if variant == "nonwoven" else int(rng.integers(10, 40))
        diam = np.clip(rng.lognormal(np.log(diameter), cv, n), 2.0, None)
        kappa = rng.uniform(0.002, 0.012) if variant == "nonwoven" else rng.uniform(0.0005, 0.003)  # rad per px
        main = rng.uniform(0, math.pi)
        mids, paths = [], []
        reach = math.hypot(W, H)
        beads = 0
        for i in range(n):
            heading = rng.uniform(0, 2 * math.pi) if variant == "nonwoven" else main + rng.normal(0, 0.15) + math.pi * (rng.random() < 0.5)
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            start = (cx - 0.5 * reach * math.cos(heading), cy - 0.5 * reach * math.sin(heading))
            step = max(4.0, 0.5 * diam[i])
            # thick fibres are stiffer: they bend less per unit length
            pts = random_walk(rng, start, heading, step=step, steps=int(reach / step) + 1, curvature=kappa * step * min(1.0, 6.0 / diam[i]))
            z0 = 2.0 * diameter * i / n
            draw_wire(scene, pts, diam[i], z0, fibre_m * rng.uniform(0.9, 1.1))
            mids.append(cy)
            paths.append(pts)
            if variant == "nonwoven" and rng.random() < 0.15:  # electrospinning beads
                bx, by = pts[int(rng.integers(1, len(pts) - 1))]
                domes(scene, [bx], [by], [diam[i] * rng.uniform(1.2, 2.2)], z0, fibre_m, squash=0.7)
                beads += 1
        height, _ = scene.arrays()
        coverage = scene.visible_fraction(height > 0.5)
        vis = scene.visible(np.array(mids))
        n_visible = int(vis.sum())
        aggregation = round(float(path_contacts(paths, float(np.median(diam)))[vis].mean()), 3) if vis.any() else 0.0
        arrangement = "random nonwoven mat" if variant == "nonwoven" else "aligned"
        curvature = "nearly straight" if variant == "aligned" else ("gently curved" if kappa < 0.006 else "strongly curved and entangled")
        if variant == "aligned":
            extra["orientation_deg"] = round(math.degrees(main) % 180, 1)
        if beads:
            extra["beads"] = beads
    return {
        "shape": "long continuous fibres",
        "arrangement": arrangement,
        "count": n_visible,
        "size_nm": stats_nm(diam, scene.nm_per_px),
        "size_cv": round(float(cv), 3),
        "curvature": curvature,
        "coverage": coverage,
        "aggregation": aggregation,
        **extra,
    }


def _render_porous(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    pore = scene.px(loguniform(rng, *spec.size_fraction))  # render px
    wall_m = rng.uniform(0.7, 1.1)
    scene.substrate(wall_m, roughness=rng.uniform(0.1, 0.5), correlation=2.0)
    depth = pore * rng.uniform(0.5, 1.0)
    extra: dict = {}
    if variant == "bicontinuous":
        gw, gh, p, depth = scene.gw, scene.gh, pore / scene.scale, depth / scene.scale
        target = rng.uniform(0.3, 0.65)
        field_ = smooth_noise(rng, gw, gh, p * 1.3, octaves=2)
        threshold = float(np.quantile(field_[::2, ::2], target))
        pores = field_ < threshold
        wall = np.tanh((field_ - threshold) * 3.0)
        deeper = smooth_noise(rng, gw, gh, p * 0.9) > 0.3  # the next layer down, seen through a pore
        height, material = scene.arrays()
        scene.set_arrays(np.where(pores, np.where(deeper, -0.6 * depth, -depth), depth * 0.3 * wall) + height,
                         np.where(pores, np.where(deeper, 0.6 * wall_m, 0.3 * wall_m), material))
        size_px = 1.5 * mean_intercept(pores[: scene.visible_rows]) * scene.scale
        sizes = [size_px]
        size_kind = "mean pore width"
        arrangement = "interconnected random network"
        count = int(round(scene.visible_render_rows * scene.width * target / max(size_px, 1) ** 2))
    else:
        W, H = scene.width, scene.height
        if variant == "foam":
            target, cv = rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.6)
        else:
            target, cv = rng.uniform(0.05, 0.25), rng.uniform(0.1, 0.4)
        n = int(np.clip(target * W * H / (math.pi * pore**2 / 4) * (1.3 if variant == "foam" else 1.0), 5, 1500))
        sizes = np.clip(rng.lognormal(np.log(pore), cv, n), 3.0, None)
        xs, ys = rng.uniform(0, W, n), rng.uniform(0, H, n)
        ecc = rng.uniform(0.75, 1.0, n)
        h, m = scene.h, scene.m
        for x, y, d, e in zip(xs, ys, sizes, ecc):
            r = d / 2
            h.ellipse((x - r, y - r * e, x + r, y + r * e), fill=float(-depth))
            m.ellipse((x - r, y - r * e, x + r, y + r * e), fill=float(0.25 * wall_m))
            if variant == "foam" and rng.random() < 0.55:  # a window into the next cell down
                ri = r * rng.uniform(0.3, 0.6)
                ox, oy = x + rng.normal(0, 0.2 * r), y + rng.normal(0, 0.2 * r)
                h.ellipse((ox - ri, oy - ri * e, ox + ri, oy + ri * e), fill=float(-2.5 * depth))
                m.ellipse((ox - ri, oy - ri * e, ox + ri, oy + ri * e), fill=float(0.1 * wall_m))
        vis = scene.visible(ys)
        sizes = sizes[vis]
        size_kind = "pore diameter"
        arrangement = "random, partly merged pores" if variant == "foam" else "isolated random pores"
        count = int(vis.sum())
        extra["aggregation"] = touching_fraction(xs[vis], ys[vis], sizes / 2)
        height, _ = scene.arrays()
        pores = height < -0.5 * depth / scene.scale
    result = {
        "shape": {"foam": "rounded cells and holes", "bicontinuous": "a sponge-like interconnected network", "membrane": "round pores in a flat film"}[variant],
        "arrangement": arrangement,
        "count": count,
        "size_kind": size_kind,
        "size_nm": stats_nm(sizes, scene.nm_per_px),
        "pore_fraction": scene.visible_fraction(pores),
        "wall_thickness_nm": scene.gnm(mean_intercept(~pores[: scene.visible_rows])),
        **extra,
    }
    result.setdefault("aggregation", 1.0)  # a bicontinuous network is connected throughout
    return result


def _render_films(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    gw, gh = scene.gw, scene.gh
    grain = scene.px(loguniform(rng, *spec.size_fraction)) / scene.scale  # grid px
    base_m = rng.uniform(0.55, 0.9)
    roughness = rng.uniform(0.05, 0.4)
    scene.substrate(base_m, roughness=roughness, correlation=1.5)
    height, material = scene.arrays()
    warp_amp = grain * rng.uniform(0.1, 0.35)
    warp = (warp_amp * smooth_noise(rng, gw, gh, grain), warp_amp * smooth_noise(rng, gw, gh, grain))
    extra: dict = {}
    cracks = 0
    if variant in ("polycrystalline", "faceted"):
        f1, f2, ids, seeds = worley(rng, gw, gh, grain, warp=warp)
        gap = f2 - f1
        orientation = rng.random(seeds, dtype=np.float32)[ids]  # crystal orientation contrast
        if variant == "faceted":
            boundary_w = 0.4
            height = height + np.maximum(grain * 0.6 - f1, 0) * rng.uniform(0.6, 1.2) * (0.6 + 0.8 * orientation)
            material = base_m * (0.75 + 0.5 * rng.random(seeds, dtype=np.float32)[ids])
        else:
            boundary_w = rng.uniform(0.4, 1.2)
            height = height - 0.06 * f1 + np.where(gap < boundary_w, -grain * 0.15, 0.0)
            material = base_m * (0.85 + 0.3 * orientation)
        material = np.where(gap < boundary_w, material * 0.6, material)
        count = len(np.unique(ids[: scene.visible_rows]))
        size_px = math.sqrt(4 * scene.visible_rows * gw / (math.pi * max(count, 1)))
        extra["grain_boundary_width_nm"] = scene.gnm(boundary_w)
        arrangement = "space-filling grains"
        shape = "faceted crystallites" if variant == "faceted" else "equiaxed grains with grooved boundaries"
        size_kind = "grain size"
    elif variant == "cracked":
        island = grain * rng.uniform(3, 8)
        f1, f2, ids, _ = worley(rng, gw, gh, island, warp=(warp[0] * 3, warp[1] * 3))
        crack_w = rng.uniform(0.5, 2.0)
        gap = f2 - f1
        crack = gap < crack_w
        curl = grain * 0.3 * np.exp(-gap / (0.3 * island))  # island edges curl up
        height = np.where(crack, -island * 0.4, height + curl)
        material = np.where(crack, 0.15 * base_m, material)
        count = cracks = len(np.unique(ids[: scene.visible_rows]))
        size_px = math.sqrt(4 * scene.visible_rows * gw / (math.pi * max(count, 1)))
        extra.update(crack_width_nm=scene.gnm(crack_w), crack_fraction=scene.visible_fraction(crack))
        arrangement = "islands separated by a crack network"
        shape = "a continuous film broken into polygonal islands"
        size_kind = "island size"
    else:  # a smooth coating with nodules and pinholes
        scene.set_arrays(height + grain * 0.15 * smooth_noise(rng, gw, gh, grain * 2), material)
        W, H = scene.width, scene.height
        n_nodules = int(rng.integers(5, 60))
        xs, ys = rng.uniform(0, W, n_nodules), rng.uniform(0, H, n_nodules)
        sizes = np.clip(rng.lognormal(np.log(grain * scene.scale * 0.6), 0.4, n_nodules), 2, None)
        domes(scene, xs, ys, sizes / 2, 0.0, base_m * 1.05)
        n_pin = int(rng.integers(0, 15))
        for x, y in zip(rng.uniform(0, W, n_pin), rng.uniform(0, H, n_pin)):
            r = rng.uniform(1.0, 0.2 * grain * scene.scale + 1.5)
            scene.h.ellipse((x - r, y - r, x + r, y + r), fill=float(-3 * r))
            scene.m.ellipse((x - r, y - r, x + r, y + r), fill=float(0.2 * base_m))
        height, material = scene.arrays()
        vis = scene.visible(ys)
        count = int(vis.sum())
        size_px = float(np.mean(sizes[vis] if vis.any() else sizes)) / scene.scale
        extra["pinholes"] = n_pin
        roughness = roughness + 0.15 * grain
        arrangement = "scattered nodules on a continuous coating"
        shape = "a smooth continuous coating"
        size_kind = "nodule diameter"
    scene.set_arrays(height, material)
    return {
        "shape": shape,
        "arrangement": arrangement,
        "count": count,
        "size_kind": size_kind,
        "size_nm": stats_nm([size_px], scene.nm_per_gpx),
        "roughness_nm": scene.gnm(roughness),
        "cracks": cracks,
        "coverage": 1.0,
        "aggregation": 1.0,
        **extra,
    }


def _render_patterned(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    pitch = scene.px(loguniform(rng, *spec.size_fraction))  # render px
    lattice = choice(rng, ("square", "hexagonal")) if variant != "gratings" else "line grating"
    fill = rng.uniform(0.3, 0.7)
    base_m = rng.uniform(0.45, 0.85)
    scene.substrate(base_m, roughness=rng.uniform(0.03, 0.15))
    element = pitch * fill
    jitter = rng.uniform(0.0, 0.04)
    missing_p = float(choice(rng, (0.0, 0.0, rng.uniform(0.005, 0.04))))
    extra: dict = {}
    if variant == "pillars":  # seen with the stage tilted, drawn back to front
        W, H = scene.width, scene.height
        tilt = float(rng.choice([30, 40, 45, 52]))
        azimuth = rng.uniform(0, math.pi / 2)
        foreshorten = math.cos(math.radians(tilt))
        row_b = pitch * (math.sqrt(3) / 2 if lattice == "hexagonal" else 1.0)
        pillar_h = min(element * rng.uniform(1.5, 5.0), 1.8 * row_b / math.sin(math.radians(tilt)))
        rise = pillar_h * math.sin(math.radians(tilt))
        n_side = int(math.hypot(W, H / foreshorten + rise) / min(pitch, row_b)) + 3
        i, j = np.meshgrid(np.arange(-n_side, n_side), np.arange(-n_side, n_side))
        u = i * pitch + (0.5 * pitch * (j % 2) if lattice == "hexagonal" else 0.0)
        v = j * row_b
        x = W / 2 + u * math.cos(azimuth) - v * math.sin(azimuth)
        y = (H / 2 + u * math.sin(azimuth) + v * math.cos(azimuth)) * 1.0
        y = H / 2 + (y - H / 2) * foreshorten + rise / 2
        keep = (x > -element) & (x < W + element) & (y > -element) & (y < H + rise + element)
        x, y = x[keep], y[keep]
        present = rng.random(x.size) >= missing_p
        missing = int((~present & scene.visible(y - rise / 2)).sum())
        x, y = x[present], y[present]
        order = np.argsort(y)
        x, y = x[order], y[order]
        square = rng.random() < 0.5
        side_a, side_b = rng.uniform(0.55, 0.8), rng.uniform(0.8, 1.05)
        h, m = scene.h, scene.m
        for xb, yb in zip(x, y):
            w = element * (1 + rng.normal(0, jitter))
            top_y = yb - rise
            z = yb / H * 10
            h.rectangle((xb - w / 2, top_y, xb + w / 2, yb), fill=float(z + 2 * w))
            if square:
                m.rectangle((xb - w / 2, top_y, xb, yb), fill=float(base_m * side_a))
                m.rectangle((xb, top_y, xb + w / 2, yb), fill=float(base_m * side_b))
            else:
                for k, frac in enumerate((1.0, 0.7, 0.35)):
                    m.rectangle((xb - w / 2 * frac, top_y, xb + w / 2 * frac, yb), fill=float(base_m * (side_a + 0.25 * k)))
            cap = (xb - w / 2, top_y - w / 2 * foreshorten, xb + w / 2, top_y + w / 2 * foreshorten)
            (h.rectangle if square else h.ellipse)(cap, fill=float(z + 2.5 * w))
            (m.rectangle if square else m.ellipse)(cap, fill=float(base_m * 1.25))
        count = int((scene.visible(y - rise / 2) & (x >= 0) & (x < W)).sum())
        extra.update(tilt_deg=tilt, element_height_nm=scene.nm(pillar_h))
        shape = f"{'square' if square else 'cylindrical'} pillars"
    else:
        xs, ys = scene.grid_coordinates()
        p, e = pitch / scene.scale, element / scene.scale  # grid px
        angle = float(choice(rng, (0.0, 0.0, math.pi / 4, rng.uniform(-0.2, 0.2))))
        u = xs * math.cos(angle) + ys * math.sin(angle)
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        if variant == "gratings":
            edge_roughness = rng.uniform(0.0, 0.3)
            u = u + edge_roughness * smooth_noise(rng, scene.gw, scene.gh, 2)
            distance = np.abs((u / p) % 1.0 - 0.5) * p
            inside = np.clip(e / 2 - distance + 0.5, 0, 1)  # anti-aliased edges
            count = int(round((scene.gw * abs(math.cos(angle)) + scene.visible_rows * abs(math.sin(angle))) / p))
            missing = 0
            extra["line_edge_roughness_nm"] = scene.gnm(edge_roughness)
            shape = "parallel lines (grating)"
        else:
            b = p * (math.sqrt(3) if lattice == "hexagonal" else 1.0)
            offsets = ((0.0, 0.0), (0.5, 0.5)) if lattice == "hexagonal" else ((0.0, 0.0),)
            square = variant == "dots" and rng.random() < 0.4
            best = np.full(xs.shape, np.inf, dtype=np.float32)
            idx = np.zeros(xs.shape, dtype=np.int64)
            for k, (ou, ov) in enumerate(offsets):
                iu, iv = np.round(u / p - ou), np.round(v / b - ov)
                du, dv = u - (iu + ou) * p, v - (iv + ov) * b
                d = np.maximum(np.abs(du), np.abs(dv)) if square else np.sqrt(du * du + dv * dv)
                closer = d < best
                best = np.where(closer, d, best)
                idx = np.where(closer, (iu.astype(np.int64) * 7919 + iv.astype(np.int64)) * 2 + k, idx)
            radius = e / 2 * (1 + jitter * (2 * hash_unit(idx, 17) - 1))
            inside = np.clip(radius - best + 0.5, 0, 1) * (hash_unit(idx, 23) >= missing_p)
            count = int(round(scene.visible_rows * scene.gw / (p * b / len(offsets))))
            missing = int(round(count * missing_p))
            shape = ("square" if square else "round") + (" holes" if variant == "holes" else " dots")
        height, material = scene.arrays()
        if variant == "holes":
            scene.set_arrays(height - inside * e * 0.8, material * (1 - 0.75 * inside))
        else:
            scene.set_arrays(height + inside * e * 0.3, material * (1 + rng.uniform(0.1, 0.4) * inside))
        extra["rotation_deg"] = round(math.degrees(angle), 1)
    return {
        "shape": shape,
        "arrangement": f"{lattice} lattice" if lattice != "line grating" else "periodic line grating",
        "count": int(count),
        "size_kind": "pitch",
        "size_nm": stats_nm([pitch], scene.nm_per_px),
        "element_size_nm": scene.nm(element),
        "fill_factor": round(float(fill), 3),
        "missing_elements": int(missing),
        "size_cv": round(float(jitter), 3),
        "aggregation": 0.0,
        **extra,
    }


def _render_mems(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    W, H = scene.width, scene.height
    line = scene.px(loguniform(rng, *spec.size_fraction))
    gap = line * rng.uniform(0.6, 2.0)
    sub_m = rng.uniform(0.25, 0.55)
    metal_m = rng.uniform(0.85, 1.2)
    scene.substrate(sub_m, roughness=rng.uniform(0.1, 0.4), correlation=1.5)
    thick = line * rng.uniform(0.15, 0.5)
    angle = math.radians(float(choice(rng, (0.0, 0.0, 90.0, rng.uniform(-8, 8)))))
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    h, m = scene.h, scene.m

    def place(points):  # layout coordinates (origin at the frame centre) -> rotated render px
        return [(W / 2 + x * cos_a - y * sin_a, H / 2 + x * sin_a + y * cos_a) for x, y in points]

    def rect(x0, y0, x1, y1, z=thick, mat=metal_m):
        corners = place([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
        h.polygon(corners, fill=float(z))
        m.polygon(corners, fill=float(mat))

    def trace(points, z=thick, mat=metal_m):
        placed = place(points)
        h.line(placed, fill=float(z), width=max(1, int(round(line))), joint="curve")
        m.line(placed, fill=float(mat), width=max(1, int(round(line))), joint="curve")

    extra: dict = {}
    if variant == "interdigitated":
        n = int(rng.integers(6, 40))
        finger = line * rng.uniform(8, 30)
        span = n * (line + gap)
        x0 = -span / 2
        pad = line * rng.uniform(8, 20)
        rect(x0 - line, -finger / 2 - gap - 3 * line, x0 + span + line, -finger / 2 - gap)  # bus bars
        rect(x0 - line, finger / 2 + gap, x0 + span + line, finger / 2 + gap + 3 * line)
        rect(x0 - pad - line, -finger / 2 - gap - pad, x0 - line, -finger / 2 - gap)  # contact pads
        rect(x0 + span + line, finger / 2 + gap, x0 + span + line + pad, finger / 2 + gap + pad)
        for k in range(n):
            x = x0 + k * (line + gap)
            rect(x, -finger / 2 - gap, x + line, finger / 2) if k % 2 == 0 else rect(x, -finger / 2, x + line, finger / 2 + gap)
        count = n
        extra.update(finger_count=n, finger_length_nm=scene.nm(finger), gap_nm=scene.nm(gap), pad_size_nm=scene.nm(pad))
        shape = "interdigitated comb electrodes"
    elif variant == "pads_and_leads":
        per_side = int(rng.integers(3, 9))
        pad = line * rng.uniform(5, 12)
        ring = max(pad * per_side * 1.6, 0.8 * min(W, H))
        inner = ring * rng.uniform(0.12, 0.3)
        rect(-inner * 0.6, -inner * 0.6, inner * 0.6, inner * 0.6, z=thick * 0.5, mat=metal_m * 0.8)
        for side in range(4):
            c, s = math.cos(side * math.pi / 2), math.sin(side * math.pi / 2)
            for k in range(per_side):
                t = (k - (per_side - 1) / 2) / per_side
                pts = [(t * ring, -ring / 2), (t * ring, -ring / 2 + (ring - inner) * 0.25), (t * inner, -inner / 2)]
                pts = [(x * c - y * s, x * s + y * c) for x, y in pts]
                trace(pts)
                rect(pts[0][0] - pad / 2, pts[0][1] - pad / 2, pts[0][0] + pad / 2, pts[0][1] + pad / 2)
        count = 4 * per_side
        extra.update(pad_count=count, pad_size_nm=scene.nm(pad), gap_nm=scene.nm(ring / per_side - line))
        shape = "bond pads with fan-out leads"
    elif variant == "comb_drive":
        rect(-W, -H, W, H, z=-3 * thick, mat=sub_m * 0.35)  # released area: a deep, dark trench
        shuttle_w, shuttle_h = line * rng.uniform(10, 25), line * rng.uniform(6, 12)
        rect(-shuttle_w / 2, -shuttle_h / 2, shuttle_w / 2, shuttle_h / 2)
        hole, hole_pitch = line * 0.5, line * 1.6
        for hx in np.arange(-shuttle_w / 2 + hole_pitch, shuttle_w / 2 - hole_pitch / 2, hole_pitch):
            for hy in np.arange(-shuttle_h / 2 + hole_pitch, shuttle_h / 2 - hole_pitch / 2, hole_pitch):
                rect(hx - hole / 2, hy - hole / 2, hx + hole / 2, hy + hole / 2, z=-3 * thick, mat=sub_m * 0.35)
        n = int(rng.integers(5, 16))
        finger = line * rng.uniform(4, 10)
        for side in (-1, 1):
            base_y = side * shuttle_h / 2
            for k in range(n):
                x = -shuttle_w / 2 + (k + 0.5) * shuttle_w / n
                rect(x - line / 4, base_y, x + line / 4, base_y + side * finger)
                fixed = x + shuttle_w / n / 2
                rect(fixed - line / 4, base_y + side * finger * 0.3, fixed + line / 4, base_y + side * (finger * 1.3 + line))
            rect(-shuttle_w / 2, base_y + side * (finger * 1.3 + line), shuttle_w / 2, base_y + side * (finger * 1.3 + 3 * line))
        for sx in (-1, 1):  # folded springs and their anchors
            x = sx * shuttle_w / 2
            for k in range(4):
                xx = x + sx * (k + 1) * line * 1.2
                rect(xx - line / 6, -shuttle_h, xx + line / 6, shuttle_h)
            rect(x + sx * line * 6, -shuttle_h * 1.5, x + sx * line * 9, shuttle_h * 1.5)
        count = 2 * n
        extra.update(finger_count=2 * n, release_hole_pitch_nm=scene.nm(hole_pitch), gap_nm=scene.nm(line / 2))
        shape = "a suspended comb-drive actuator with release holes and folded springs"
    else:  # serpentine heater / resistor between two pads
        turns = int(rng.integers(4, 16))
        run = line * rng.uniform(10, 30)
        x = -turns * (line + gap) / 2
        pts = []
        for k in range(turns):
            pts += [(x, -run / 2), (x, run / 2)] if k % 2 == 0 else [(x, run / 2), (x, -run / 2)]
            x += line + gap
        trace(pts)
        pad = line * rng.uniform(6, 14)
        (fx, fy), (lx, ly) = pts[0], pts[-1]
        rect(fx - pad, fy - pad, fx, fy + pad / 4)
        rect(lx, ly - pad / 4, lx + pad, ly + pad)
        count = turns
        extra.update(turns=turns, gap_nm=scene.nm(gap), pad_size_nm=scene.nm(pad))
        shape = "a meander (serpentine) line between two pads"
    height, _ = scene.arrays()
    return {
        "shape": shape,
        "arrangement": "lithographically defined layout",
        "count": int(count),
        "size_kind": "line width",
        "size_nm": stats_nm([line], scene.nm_per_px),
        "film_thickness_nm": scene.nm(thick),
        "coverage": scene.visible_fraction(height > 0.5 * thick / scene.scale),
        "rotation_deg": round(math.degrees(angle), 1),
        "aggregation": 0.0,
        **extra,
    }


def _render_tips(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    gw = scene.gw
    apex = max(0.3, scene.px(loguniform(rng, *spec.size_fraction)) / scene.scale)  # grid px
    scene.substrate(rng.uniform(0.05, 0.35), roughness=0.1, correlation=15)
    height, material = scene.arrays()
    xs, ys = scene.grid_coordinates()
    ax, ay = rng.uniform(0.2 * gw, 0.8 * gw), rng.uniform(0.2, 0.85) * scene.visible_rows  # apex in view
    direction = rng.uniform(0, 2 * math.pi)  # from the apex back along the shank
    ux, uy = math.cos(direction), math.sin(direction)
    s = (xs - ax) * ux + (ys - ay) * uy  # distance along the axis from the apex
    d = np.abs(-(xs - ax) * uy + (ys - ay) * ux)  # distance from the axis
    half_angle = rng.uniform(17.0, 35.0) if variant == "pyramid" else rng.uniform(2.0, 20.0)
    tan_a = math.tan(math.radians(half_angle))
    radius = apex + np.maximum(s, 0) * tan_a
    extra: dict = {}
    if variant == "etched_wire":
        shank = scene.px(rng.uniform(0.06, 0.18)) / scene.scale / 2
        radius = np.minimum(radius, shank)
        extra["shank_diameter_nm"] = scene.gnm(2 * shank)
    inside = (d < radius) & (s > -apex)
    cap = np.where(s < 0, np.sqrt(np.clip(apex**2 - s**2, 0, None)), radius)
    soft = np.clip(np.minimum(radius, cap) - d + 0.5, 0, 1)  # anti-aliased silhouette
    soft *= np.clip(s + apex + 0.5, 0, 1)
    tip_m = rng.uniform(0.7, 1.0)
    if variant == "pyramid":
        side = np.sign(-(xs - ax) * uy + (ys - ay) * ux)
        facet = np.where(side > 0, rng.uniform(0.6, 0.85), rng.uniform(0.95, 1.2))
        height = height + soft * np.maximum(radius - d, 0) * 0.7
        material = material + soft * (tip_m * facet - material)
        base_len = scene.px(rng.uniform(0.15, 0.35)) / scene.scale
        beam = (s > base_len) & (d < scene.px(rng.uniform(0.12, 0.25)) / scene.scale)
        height = np.where(beam, height + base_len * tan_a, height)
        material = np.where(beam, tip_m * 0.9, material)
        extra["cantilever"] = True
    else:
        profile = np.sqrt(np.clip(np.minimum(radius, cap) ** 2 - d**2, 0, None))
        height = height + soft * (profile + 0.3 * smooth_noise(rng, gw, scene.gh, 3))  # slight surface roughness
        material = material + soft * (tip_m - material)
    scene.set_arrays(height, material)
    visible = inside[: scene.visible_rows]
    length_visible = float(np.max(np.where(visible, s[: scene.visible_rows], 0)))
    return {
        "shape": {"needle": "a conical needle", "pyramid": "a pyramidal tip on a cantilever", "etched_wire": "an etched wire tapering to a sharp apex"}[variant],
        "arrangement": "single isolated tip",
        "count": 1,
        "size_kind": "apex radius",
        "size_nm": stats_nm([apex], scene.nm_per_gpx),
        "cone_half_angle_deg": round(half_angle, 1),
        "visible_length_nm": scene.gnm(length_visible),
        "axis_direction_deg": round(math.degrees(direction) % 360, 1),
        "coverage": scene.visible_fraction(inside),
        "aggregation": 0.0,
        **extra,
    }


def _blob_polygon(rng, x, y, radius, irregularity, points=48):
    angles = np.linspace(0, 2 * math.pi, points, endpoint=False)
    harmonics = sum(rng.normal(0, irregularity / (k + 1)) * np.cos(k * angles + rng.uniform(0, 2 * math.pi)) for k in range(1, 6))
    rad = radius * np.clip(1 + harmonics, 0.4, 1.8)
    return list(zip((x + rad * np.cos(angles)).tolist(), (y + rad * np.sin(angles)).tolist()))


def _render_biological(scene: Scene, variant: str, spec: ClassSpec) -> dict:
    rng = scene.rng
    W, H, gw, gh = scene.width, scene.height, scene.gw, scene.gh
    sub_m = rng.uniform(0.35, 0.65)
    scene.substrate(sub_m, roughness=rng.uniform(0.05, 0.2), correlation=2.5)
    extra: dict = {}
    if variant == "cells":
        n = int(rng.integers(1, 5))
        sizes = scene.px(rng.uniform(0.15, 0.45)) * rng.uniform(0.7, 1.2, n)
        xs, ys = rng.uniform(0.1 * W, 0.9 * W, n), rng.uniform(0.1, 0.9, n) * scene.visible_render_rows
        body_img = Image.new("F", (W, H), 0.0)
        body_draw = ImageDraw.Draw(body_img)
        filopodia = 0
        for x, y, size in zip(xs, ys, sizes):
            outline = _blob_polygon(rng, x, y, size / 2, rng.uniform(0.08, 0.25))
            body_draw.polygon(outline, fill=1.0)
            for _ in range(int(rng.integers(4, 30))):  # filopodia reaching out from the membrane
                px_, py_ = outline[int(rng.integers(len(outline)))]
                heading = math.atan2(py_ - y, px_ - x) + rng.normal(0, 0.4)
                pts = random_walk(rng, (px_, py_), heading, step=4.0, steps=max(2, int(rng.uniform(0.05, 0.35) * W / 4)), curvature=0.08)
                width = max(1.0, rng.uniform(0.003, 0.01) * W)
                scene.h.line(pts, fill=float(width), width=int(round(width)))
                scene.m.line(pts, fill=float(sub_m * 1.5), width=int(round(width)))
                filopodia += 1
        body = np.asarray(body_img.resize((gw, gh), Image.BOX), dtype=np.float32)
        g_size = float(np.mean(sizes)) / scene.scale
        dome = blur(body, g_size / 6) * g_size * 0.25
        gx_, gy_ = scene.grid_coordinates()
        nucleus = np.zeros((gh, gw), dtype=np.float32)
        for x, y, size in zip(xs / scene.scale, ys / scene.scale, sizes / scene.scale):  # a raised nucleus
            cx, cy = x + rng.normal(0, 0.08 * size), y + rng.normal(0, 0.08 * size)
            nucleus += np.exp(-((gx_ - cx) ** 2 + (gy_ - cy) ** 2) / (2 * (0.15 * size) ** 2)) * size * 0.12
        texture = smooth_noise(rng, gw, gh, rng.uniform(1.0, 3.0), octaves=2) * rng.uniform(0.3, 1.0)
        height, material = scene.arrays()
        inside = body > 0.5
        scene.set_arrays(np.where(body > 0.01, body * (dome + nucleus + texture + g_size * 0.02) + (1 - body) * height, height),
                         material + body * (sub_m * rng.uniform(1.3, 1.8) - material))
        vis = scene.visible(ys)
        sizes_px, count = sizes[vis], int(vis.sum())
        covered = inside
        extra.update(filopodia=filopodia, aggregation=touching_fraction(xs[vis], ys[vis], sizes[vis] / 2))
        shape = "spread cells with membrane protrusions"
        arrangement = "isolated cells" if n <= 2 else "scattered cells"
        size_kind = "cell diameter"
    elif variant == "bacteria":
        rod = rng.random() < 0.65
        width = scene.px(loguniform(rng, 0.008, 0.05))
        aspect = rng.uniform(1.8, 4.5) if rod else 1.0
        n = int(np.clip(rng.uniform(0.05, 0.35) * W * H / (width * width * aspect * 1.2), 5, 500))
        clusters = int(rng.integers(1, 6))
        xs, ys = cluster_positions(rng, n, W, H, clusters, width * aspect * math.sqrt(n / clusters) * 0.6)
        order = np.argsort(ys)
        xs, ys = xs[order], ys[order]
        lengths = width * aspect * rng.uniform(0.75, 1.25, n)
        for x, y, length in zip(xs, ys, lengths):
            if rod:
                capsule(scene, x, y, length, width / 2, rng.uniform(0, math.pi), 0.0, sub_m * 1.6)
            else:
                domes(scene, [x], [y], [width / 2], 0.0, sub_m * 1.6)
        height, material = scene.arrays()
        covered = height > 0.25 * width / scene.scale
        scene.set_arrays(height + covered * 0.15 * smooth_noise(rng, gw, gh, 1.2), material)
        vis = scene.visible(ys)
        sizes_px, count = lengths[vis], int(vis.sum())
        extra.update(cell_width_nm=scene.nm(width), aggregation=touching_fraction(xs[vis], ys[vis], lengths[vis] / 2, slack=0.8))
        shape = "rod-shaped bacteria (bacilli)" if rod else "spherical bacteria (cocci)"
        arrangement = "clustered colonies" if clusters <= 3 else "scattered small clusters"
        size_kind = "cell length"
    else:  # tissue: a folded, wrinkled surface, often with cell boundaries
        fold = scene.px(rng.uniform(0.06, 0.25)) / scene.scale
        ridges = 1 - np.abs(smooth_noise(rng, gw, gh, fold, octaves=2))
        height = ridges * fold * 0.35 + 0.2 * smooth_noise(rng, gw, gh, 1.5)
        if rng.random() < 0.6:
            f1, f2, _, _ = worley(rng, gw, gh, fold * rng.uniform(0.4, 0.9))
            height = height + np.where(f2 - f1 < 0.7, -0.8, 0.0)
            extra["cell_boundaries"] = True
        scene.set_arrays(height, np.full((gh, gw), sub_m * rng.uniform(1.1, 1.5), dtype=np.float32))
        sizes_px, count = np.array([fold * scene.scale]), int(round(gw * scene.visible_rows / fold**2))
        covered = np.ones((gh, gw), bool)
        shape = "a folded, wrinkled tissue surface"
        extra["aggregation"] = 1.0  # one continuous sheet
        arrangement = "continuous tissue"
        size_kind = "fold spacing"
    debris = scene.add_debris(int(rng.integers(0, 8)), max(1.0, 0.004 * W))
    return {
        "shape": shape,
        "arrangement": arrangement,
        "count": count,
        "size_kind": size_kind,
        "size_nm": stats_nm(sizes_px, scene.nm_per_px),
        "coverage": scene.visible_fraction(covered),
        "debris": debris,
        **extra,
    }


RENDERERS = {
    "Biological": _render_biological,
    "Fibres": _render_fibres,
    "Films_Coated_Surface": _render_films,
    "MEMS_devices_and_electrodes": _render_mems,
    "Nanowires": _render_nanowires,
    "Particles": _render_particles,
    "Patterned_surface": _render_patterned,
    "Porous_Sponge": _render_porous,
    "Powder": _render_powder,
    "Tips": _render_tips,
}
