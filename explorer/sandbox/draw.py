"""Procedural pictures of the sandbox world, drawn with Pillow.

The family decides the structure of the picture (flowers are radial petals, vehicles are a body
on wheels, birds an ellipse body with wings...), the noun's shape parameters `params` (six floats
in [0, 1]) decide its proportions, the colour word its colour, and the adjective an `effect`.
Pose, scale, background clutter and pixel noise are jittered by `rng`, so that two pictures of
one concept differ while pictures of one class still share their structure.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageOps

RGB = tuple[int, int, int]
Params = Sequence[float]

# family -> (background colour, ground colour or None)
BACKGROUNDS: dict[str, tuple[RGB, RGB | None]] = {
    "flowers": ((120, 170, 90), None), "trees": ((150, 200, 235), (90, 140, 60)),
    "insects": ((170, 200, 130), None), "birds": ((140, 190, 235), None),
    "fish": ((30, 90, 160), None), "dogs": ((200, 190, 160), (110, 150, 80)),
    "cats": ((190, 170, 150), (150, 120, 90)), "vehicles": ((170, 200, 230), (90, 90, 95)),
    "boats": ((160, 200, 235), (40, 90, 170)), "buildings": ((150, 195, 235), (120, 120, 110)),
    "furniture": ((225, 215, 195), (160, 120, 80)), "tools": ((210, 210, 215), None),
    "food": ((180, 140, 100), None), "landscapes": ((120, 170, 230), None),
}


def shade(c: RGB, f: float) -> RGB:
    """Darker (f < 1) or lighter (f > 1) version of a colour."""
    if f <= 1:
        return tuple(int(v * f) for v in c)
    return tuple(int(v + (255 - v) * (f - 1)) for v in c)


def jitter(c: RGB, rng: random.Random, amount: int = 20) -> RGB:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)


def ellipse_poly(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 10):
    """Polygon points of an ellipse rotated by `angle` radians (Pillow cannot rotate ellipses)."""
    ca, sa = math.cos(angle), math.sin(angle)
    pts = []
    for k in range(n):
        t = 2 * math.pi * k / n
        x, y = rx * math.cos(t), ry * math.sin(t)
        pts.append((cx + x * ca - y * sa, cy + x * sa + y * ca))
    return pts


def circle(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill) -> None:
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)


# ---- one function per family: draw the object centred at (cx, cy) with size s -------------

def draw_flower(d, cx, cy, s, p, col, rng):
    R = s * 0.5
    d.line((cx, cy, cx + rng.uniform(-0.2, 0.2) * s, cy + s), fill=(40, 110, 40), width=max(1, int(s * 0.04)))
    n = 4 + int(p[0] * 9)
    length, width = (0.45 + 0.5 * p[1]) * R, (0.12 + 0.3 * p[2]) * R
    rot = rng.uniform(0, 2 * math.pi)
    layers = 2 if p[5] > 0.5 else 1
    for layer in range(layers):
        L = length * (1 - 0.4 * layer)
        c = shade(col, 1 + 0.35 * layer)
        for k in range(n):
            a = rot + 2 * math.pi * k / n + layer * math.pi / n
            d.polygon(ellipse_poly(cx + math.cos(a) * L * 0.55, cy + math.sin(a) * L * 0.55,
                                   L * 0.55, width, a, 8), fill=c)
    centre = (60, 35, 20) if p[4] < 0.5 else (235, 200, 40)
    circle(d, cx, cy, (0.08 + 0.25 * p[3]) * R, centre)


def draw_tree(d, cx, cy, s, p, col, rng):
    tw, th = s * (0.05 + 0.12 * p[0]), s * (0.3 + 0.3 * p[1])
    base = cy + s * 0.5
    d.rectangle((cx - tw / 2, base - th, cx + tw / 2, base), fill=(100, 65, 30))
    top = base - th
    if p[2] < 0.33:  # conifer: stacked triangles
        layers = 1 + int(p[3] * 3)
        for k in range(layers):
            w = s * (0.5 - 0.1 * k) * (0.7 + 0.5 * p[4])
            y0 = top + s * 0.1 - k * s * 0.18
            d.polygon([(cx - w / 2, y0), (cx + w / 2, y0), (cx, y0 - s * 0.35)], fill=shade(col, 0.9 + 0.1 * k))
    elif p[2] < 0.66:  # broadleaf: a cluster of blobs
        for _ in range(3 + int(p[3] * 5)):
            r = s * (0.12 + 0.12 * p[4])
            circle(d, cx + rng.uniform(-0.25, 0.25) * s, top - rng.uniform(0, 0.35) * s, r, jitter(col, rng, 15))
    else:  # palm: fronds
        for k in range(5 + int(p[3] * 5)):
            a = -math.pi * (0.1 + 0.8 * k / (4 + p[3] * 5))
            d.line((cx, top, cx + math.cos(a) * s * 0.4, top + math.sin(a) * s * 0.3 + s * 0.1),
                   fill=col, width=max(1, int(s * (0.03 + 0.05 * p[4]))))


def draw_insect(d, cx, cy, s, p, col, rng):
    a = rng.uniform(-0.5, 0.5)
    ca, sa = math.cos(a), math.sin(a)
    segs = 2 + int(p[0] * 2)
    seg = s * (0.1 + 0.08 * p[1])
    if p[2] > 0.3:  # wings
        ww = s * (0.15 + 0.25 * p[3])
        for side in (-1, 1):
            d.polygon(ellipse_poly(cx - sa * side * ww * 0.8, cy + ca * side * ww * 0.8,
                                   ww, ww * (0.4 + 0.4 * p[4]), a + side * 0.6, 8), fill=shade(col, 1.3))
    for k in range(segs):
        off = (k - (segs - 1) / 2) * seg * 1.5
        x, y = cx + ca * off, cy + sa * off
        for side in (-1, 1):
            d.line((x, y, x - sa * side * s * 0.3, y + ca * side * s * 0.3), fill=(30, 30, 30), width=1)
        circle(d, x, y, seg, col if k else shade(col, 0.5))
    if p[5] > 0.5:
        for side in (-1, 1):
            d.line((cx - ca * seg * segs, cy - sa * seg * segs, cx - ca * s * 0.45 + side * sa * s * 0.1,
                    cy - sa * s * 0.45 - side * ca * s * 0.1), fill=(30, 30, 30), width=1)


def draw_bird(d, cx, cy, s, p, col, rng):
    bw, bh = s * 0.35, s * (0.15 + 0.15 * p[0])
    d.line((cx - bw * 0.2, cy + bh, cx - bw * 0.2, cy + bh + s * 0.3 * p[5]), fill=(60, 40, 20), width=2)
    d.polygon([(cx - bw, cy), (cx - bw - s * (0.1 + 0.25 * p[4]), cy - bh), (cx - bw - s * 0.15 * p[4], cy + bh)],
              fill=shade(col, 0.7))
    d.ellipse((cx - bw, cy - bh, cx + bw, cy + bh), fill=col)
    hr = s * (0.08 + 0.1 * p[1])
    hx, hy = cx + bw * 0.9, cy - bh * 0.8
    d.polygon([(hx + hr * 0.8, hy - hr * 0.3), (hx + hr + s * (0.05 + 0.25 * p[2]), hy), (hx + hr * 0.8, hy + hr * 0.3)],
              fill=(240, 170, 30))
    circle(d, hx, hy, hr, col)
    circle(d, hx + hr * 0.4, hy - hr * 0.2, max(1, hr * 0.2), (10, 10, 10))
    span = s * (0.2 + 0.35 * p[3]) * rng.choice((1, -1))
    d.polygon([(cx - bw * 0.4, cy), (cx + bw * 0.3, cy), (cx - bw * 0.3, cy - span)], fill=shade(col, 0.8))


def draw_fish(d, cx, cy, s, p, col, rng):
    bw, bh = s * 0.4, s * (0.1 + 0.22 * p[0])
    t = s * (0.1 + 0.2 * p[1])
    d.polygon([(cx - bw * 0.8, cy), (cx - bw - t, cy - t), (cx - bw - t, cy + t)], fill=shade(col, 0.8))
    d.polygon([(cx - bw * 0.3, cy - bh * 0.8), (cx + bw * 0.2, cy - bh * 0.8), (cx - bw * 0.2, cy - bh - s * 0.25 * p[2])],
              fill=shade(col, 0.8))
    d.ellipse((cx - bw, cy - bh, cx + bw, cy + bh), fill=col)
    for k in range(int(p[3] * 4)):
        x = cx - bw * 0.5 + k * bw * 0.35
        d.line((x, cy - bh * 0.8, x, cy + bh * 0.8), fill=shade(col, 0.4 if p[4] < 0.5 else 1.6), width=max(1, int(s * 0.03)))
    circle(d, cx + bw * 0.6, cy - bh * 0.2, max(1, s * 0.03), (10, 10, 10))


def draw_quadruped(d, cx, cy, s, p, col, rng, cat: bool):
    bw, bh = s * (0.25 + 0.15 * p[0]), s * (0.12 + 0.08 * p[1])
    leg = s * (0.1 + 0.2 * p[2])
    for x in (cx - bw * 0.8, cx - bw * 0.5, cx + bw * 0.5, cx + bw * 0.8):
        d.rectangle((x - s * 0.025, cy, x + s * 0.025, cy + bh + leg), fill=shade(col, 0.8))
    tail = -1 if p[3] > 0.5 else 1
    d.line((cx - bw, cy, cx - bw - s * 0.15, cy - tail * s * 0.15), fill=col, width=max(1, int(s * 0.03)))
    d.ellipse((cx - bw, cy - bh, cx + bw, cy + bh), fill=col)
    hr = s * (0.09 + 0.08 * p[4])
    hx, hy = cx + bw, cy - bh - hr * 0.5
    if cat:
        for side in (-1, 1):
            d.polygon([(hx + side * hr * 0.9, hy - hr * 0.2), (hx + side * hr * 0.2, hy - hr * 0.6),
                       (hx + side * hr * 0.7, hy - hr * (1.3 + p[5]))], fill=shade(col, 0.8))
    else:
        d.ellipse((hx + hr * 0.3, hy - hr * 0.6, hx + hr * (0.6 + p[5]), hy + hr * 1.4 * (0.5 + p[5])), fill=shade(col, 0.7))
        d.ellipse((hx + hr * 0.3, hy - hr * 0.2, hx + hr * 1.6, hy + hr * 0.4), fill=col)  # snout
    circle(d, hx, hy, hr, col)
    circle(d, hx + hr * 0.4, hy - hr * 0.2, max(1, hr * 0.15), (10, 10, 10))
    if cat:
        for k in (-1, 1):
            d.line((hx + hr * 0.6, hy + hr * 0.3, hx + hr * 1.6, hy + hr * 0.3 * k), fill=(20, 20, 20), width=1)


def draw_vehicle(d, cx, cy, s, p, col, rng):
    L, H = s * (0.5 + 0.45 * p[0]), s * (0.12 + 0.18 * p[1])
    x0, y0 = cx - L / 2, cy - H / 2
    d.rectangle((x0, y0, x0 + L, y0 + H), fill=col)
    ch = s * (0.08 + 0.15 * p[2])
    if p[2] < 0.33:  # cab at the front
        d.rectangle((x0 + L * 0.7, y0 - ch, x0 + L, y0), fill=col)
        d.rectangle((x0 + L * 0.75, y0 - ch * 0.8, x0 + L * 0.95, y0 - ch * 0.2), fill=(170, 210, 240))
    elif p[2] < 0.66:  # cabin in the middle (car)
        d.polygon([(x0 + L * 0.2, y0), (x0 + L * 0.3, y0 - ch), (x0 + L * 0.7, y0 - ch), (x0 + L * 0.8, y0)], fill=col)
        d.polygon([(x0 + L * 0.3, y0), (x0 + L * 0.35, y0 - ch * 0.8), (x0 + L * 0.65, y0 - ch * 0.8), (x0 + L * 0.7, y0)],
                  fill=(170, 210, 240))
    else:  # a box with a row of windows (bus, van)
        for k in range(2 + int(p[5] * 5)):
            wx = x0 + L * 0.05 + k * L * 0.9 / (2 + p[5] * 5)
            d.rectangle((wx, y0 + H * 0.15, wx + L * 0.08, y0 + H * 0.45), fill=(170, 210, 240))
    r = s * (0.05 + 0.08 * p[4])
    axles = 2 if p[3] < 0.6 else 3
    for k in range(axles):
        wx = x0 + L * (0.15 + 0.7 * k / (axles - 1))
        circle(d, wx, y0 + H, r, (20, 20, 20))
        circle(d, wx, y0 + H, r * 0.45, (160, 160, 160))


def draw_boat(d, cx, cy, s, p, col, rng):
    L, H = s * (0.5 + 0.4 * p[0]), s * (0.08 + 0.14 * p[1])
    x0, y0 = cx - L / 2, cy
    taper = L * (0.05 + 0.2 * p[2])
    d.polygon([(x0, y0), (x0 + L, y0), (x0 + L - taper, y0 + H), (x0 + taper, y0 + H)], fill=col)
    if p[3] > 0.5:  # sails
        mh = s * (0.3 + 0.3 * p[4])
        d.line((cx, y0, cx, y0 - mh), fill=(90, 60, 30), width=max(1, int(s * 0.02)))
        d.polygon([(cx + 2, y0 - mh), (cx + 2, y0 - 4), (cx + L * 0.4, y0 - 4)], fill=(245, 245, 240))
        if p[5] > 0.5:
            d.polygon([(cx - 2, y0 - mh * 0.8), (cx - 2, y0 - 4), (cx - L * 0.3, y0 - 4)], fill=(230, 230, 220))
    else:  # cabin and funnel
        cw, chh = L * (0.2 + 0.4 * p[4]), s * (0.06 + 0.12 * p[5])
        d.rectangle((cx - cw / 2, y0 - chh, cx + cw / 2, y0), fill=(235, 235, 230))
        d.rectangle((cx - cw * 0.1, y0 - chh * 1.7, cx + cw * 0.1, y0 - chh), fill=shade(col, 0.6))


def draw_building(d, cx, cy, s, p, col, rng):
    W, H = s * (0.3 + 0.5 * p[0]), s * (0.3 + 0.6 * p[1])
    x0, y1 = cx - W / 2, cy + s * 0.45
    y0 = y1 - H
    d.rectangle((x0, y0, x0 + W, y1), fill=col)
    if p[2] < 0.33:
        d.polygon([(x0 - W * 0.05, y0), (x0 + W * 1.05, y0), (cx, y0 - s * (0.1 + 0.2 * p[5]))], fill=shade(col, 0.6))
    elif p[2] < 0.66:
        r = W * 0.3
        d.pieslice((cx - r, y0 - r, cx + r, y0 + r), 180, 360, fill=shade(col, 0.7))
    rows, cols = 1 + int(p[3] * 6), 1 + int(p[4] * 5)
    for i in range(rows):
        for j in range(cols):
            wx = x0 + W * (j + 0.3) / cols
            wy = y0 + H * (i + 0.2) / (rows + 1)
            d.rectangle((wx, wy, wx + W * 0.4 / cols, wy + H * 0.4 / (rows + 1)), fill=(250, 240, 170))
    d.rectangle((cx - W * 0.08, y1 - H * 0.15, cx + W * 0.08, y1), fill=(70, 45, 25))


def draw_furniture(d, cx, cy, s, p, col, rng):
    W = s * (0.3 + 0.5 * p[0])
    top = cy + s * (0.0 + 0.2 * p[1])
    th = s * (0.03 + 0.12 * p[2])
    floor = cy + s * 0.45
    legs = 2 + int(p[3] * 3)
    dark = shade(col, 0.6)
    for k in range(legs):
        x = cx - W / 2 + W * 0.05 + k * W * 0.85 / max(1, legs - 1)
        d.rectangle((x, top, x + s * 0.035, floor), fill=dark)
    if p[4] > 0.6:  # a body of drawers
        d.rectangle((cx - W / 2, top - s * 0.3, cx + W / 2, floor - s * 0.05), fill=col)
        for k in range(1 + int(p[5] * 4)):
            y = top - s * 0.28 + k * s * 0.1
            d.line((cx - W * 0.4, y, cx + W * 0.4, y), fill=dark, width=1)
    d.rectangle((cx - W / 2, top - th, cx + W / 2, top), fill=col)
    if p[5] > 0.4:  # a back
        bh = s * (0.15 + 0.3 * p[5])
        d.rectangle((cx - W / 2, top - th - bh, cx - W / 2 + s * 0.06, top), fill=col)


def draw_tool(d, cx, cy, s, p, col, rng):
    a = rng.uniform(-1.2, 1.2)
    ca, sa = math.cos(a), math.sin(a)
    hl = s * (0.35 + 0.25 * p[0])
    hw = s * (0.03 + 0.05 * p[1])
    x1, y1 = cx - ca * hl / 2, cy - sa * hl / 2
    x2, y2 = cx + ca * hl / 2, cy + sa * hl / 2
    d.line((x1, y1, x2, y2), fill=col if p[5] > 0.5 else (120, 80, 40), width=max(1, int(hw * 2)))
    head = s * (0.08 + 0.2 * p[2])
    steel = (150, 155, 165) if p[5] > 0.5 else col
    if p[3] < 0.33:  # a block across the handle (hammer, axe)
        d.polygon([(x2 - sa * head, y2 + ca * head), (x2 + sa * head * (0.5 + p[4]), y2 - ca * head * (0.5 + p[4])),
                   (x2 + ca * head * 0.5 + sa * head, y2 + sa * head * 0.5 - ca * head),
                   (x2 + ca * head * 0.5 - sa * head, y2 + sa * head * 0.5 + ca * head)], fill=steel)
    elif p[3] < 0.66:  # a blade along the handle (saw, chisel, screwdriver)
        w = head * (0.2 + 0.6 * p[4])
        d.polygon([(x2 - sa * w, y2 + ca * w), (x2 + sa * w, y2 - ca * w),
                   (x2 + ca * head * 2 + sa * w * 0.3, y2 + sa * head * 2 - ca * w * 0.3),
                   (x2 + ca * head * 2 - sa * w * 0.3, y2 + sa * head * 2 + ca * w * 0.3)], fill=steel)
    else:  # jaws (wrench, pliers, rake)
        for side in (-1, 1):
            d.line((x2, y2, x2 + ca * head + side * sa * head * (0.4 + p[4]), y2 + sa * head - side * ca * head * (0.4 + p[4])),
                   fill=steel, width=max(1, int(hw * 1.5)))


def draw_food(d, cx, cy, s, p, col, rng):
    R = s * 0.48
    circle(d, cx, cy + s * 0.05, R, (240, 240, 240))  # the plate
    if p[0] < 0.33:  # round and flat, with toppings (pizza, pie)
        circle(d, cx, cy, R * (0.6 + 0.3 * p[1]), col)
        for _ in range(3 + int(p[2] * 10)):
            circle(d, cx + rng.uniform(-0.4, 0.4) * R, cy + rng.uniform(-0.4, 0.4) * R, R * (0.04 + 0.08 * p[3]),
                   shade(col, 0.5))
    elif p[0] < 0.66:  # stacked layers (burger, cake, sandwich)
        layers = 2 + int(p[1] * 4)
        h = R * (0.12 + 0.1 * p[2])
        for k in range(layers):
            c = col if k % 2 == 0 else shade(col, 0.55 + 0.8 * p[3])
            w = R * (0.7 + 0.2 * p[4]) * (1 - 0.05 * k)
            d.rectangle((cx - w, cy + R * 0.3 - (k + 1) * h, cx + w, cy + R * 0.3 - k * h), fill=c)
    else:  # a heap of pieces (salad, pasta, sushi)
        for _ in range(6 + int(p[1] * 12)):
            x, y = cx + rng.uniform(-0.5, 0.5) * R, cy + rng.uniform(-0.5, 0.5) * R
            r = R * (0.08 + 0.12 * p[2])
            d.polygon(ellipse_poly(x, y, r, r * (0.3 + 0.7 * p[4]), rng.uniform(0, 3.14), 6), fill=jitter(col, rng, 40))


def draw_landscape_objects(d, cx, cy, s, p, col, rng, w, h):
    """Landscapes fill the frame: ground, mountains, sun, water."""
    horizon = h * (0.35 + 0.35 * p[0])
    d.rectangle((0, horizon, w, h), fill=col)
    for k in range(int(p[1] * 4)):
        px = rng.uniform(0, w)
        ph = h * (0.15 + 0.35 * p[2])
        d.polygon([(px - w * 0.3, horizon), (px + w * 0.3, horizon), (px, horizon - ph)], fill=shade(col, 0.6))
        if p[5] > 0.5:
            d.polygon([(px - w * 0.06, horizon - ph * 0.8), (px + w * 0.06, horizon - ph * 0.8), (px, horizon - ph)],
                      fill=(250, 250, 250))
    if p[3] > 0.3:
        circle(d, w * rng.uniform(0.1, 0.9), h * 0.15, min(w, h) * (0.05 + 0.1 * p[3]), (250, 220, 90))
    if p[4] > 0.5:
        d.rectangle((0, h * (0.8 - 0.2 * p[4]), w, h), fill=(50, 100, 180))


DRAWERS: dict[str, Callable] = {
    "flowers": draw_flower, "trees": draw_tree, "insects": draw_insect, "birds": draw_bird,
    "fish": draw_fish, "dogs": lambda *a: draw_quadruped(*a, cat=False),
    "cats": lambda *a: draw_quadruped(*a, cat=True), "vehicles": draw_vehicle, "boats": draw_boat,
    "buildings": draw_building, "furniture": draw_furniture, "tools": draw_tool, "food": draw_food,
}


def _clutter(d: ImageDraw.ImageDraw, w: int, h: int, rng: random.Random, count: int) -> None:
    for _ in range(count):
        c = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.03, 0.12) * min(w, h)
        if rng.random() < 0.5:
            d.ellipse((x - r, y - r, x + r, y + r), fill=c)
        else:
            d.rectangle((x - r, y - r * 0.5, x + r, y + r * 0.5), fill=c)


def draw_picture(family: str, params: Params, colour: RGB, effect: str | None, rng: random.Random,
                 size: tuple[int, int], noise: int = 12, backdrop: str | None = None) -> Image.Image:
    """One RGB picture of size `size` (w, h) of a family's object, before the background of family
    `backdrop` (its own by default); deterministic given `rng`."""
    w, h = size
    bg, ground = BACKGROUNDS[backdrop or family]
    bg = jitter(bg, rng, 30)
    if effect == "dark":
        bg = shade(bg, 0.35)
    elif effect == "bright":
        bg = shade(bg, 1.4)
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    if ground is not None:
        d.rectangle((0, h * rng.uniform(0.6, 0.8), w, h), fill=jitter(ground, rng, 20))
    _clutter(d, w, h, rng, rng.randint(2, 5) + (8 if effect == "crowded" else 0))
    colour = jitter(colour, rng, 25)
    scale = {"small": 0.45, "large": 1.05}.get(effect, rng.uniform(0.65, 0.9))
    s = min(w, h) * scale * rng.uniform(0.9, 1.1)
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    cy = h / 2 + rng.uniform(-0.1, 0.1) * h
    if family == "landscapes":
        draw_landscape_objects(d, cx, cy, s, params, colour, rng, w, h)
    else:
        DRAWERS[family](d, cx, cy, s, params, colour, rng)
    if effect in ("striped", "spotted"):
        _pattern(d, cx, cy, s, effect, shade(colour, 0.4), rng)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    if effect == "pale":
        img = Image.blend(img, Image.new("RGB", size, (235, 230, 220)), 0.45)
    if noise:
        a = np.asarray(img, dtype=np.int16)
        n = np.random.default_rng(rng.getrandbits(32)).integers(-noise, noise + 1, size=a.shape, dtype=np.int16)
        img = Image.fromarray(np.clip(a + n, 0, 255).astype(np.uint8))
    return img


def _pattern(d, cx, cy, s, effect, c, rng):
    if effect == "striped":
        for k in range(-3, 4):
            x = cx + k * s * 0.1
            d.line((x, cy - s * 0.2, x + s * 0.05, cy + s * 0.2), fill=c, width=max(1, int(s * 0.025)))
    else:
        for _ in range(8):
            circle(d, cx + rng.uniform(-0.3, 0.3) * s, cy + rng.uniform(-0.2, 0.2) * s, s * 0.03, c)
