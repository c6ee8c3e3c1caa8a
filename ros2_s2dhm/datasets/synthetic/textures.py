"""Procedural textures of the synthetic street, deterministic for a given generator.

A texture is a float32 array [H, W, 5]: channels 0-2 albedo RGB in [0, 1], channel 3 a
"ledge" mask (horizontal surfaces that collect snow), channel 4 an emission mask (windows
and signs that light up at night). Row 0 is the top of a facade. Patterns mix several
scales (bricks, windows, posters, grime, cracks) and every element is randomised, so that
no two places of the street look alike and matching stays unambiguous.
"""
from __future__ import annotations

import cv2
import numpy as np

CHANNELS = 5
LEDGE = 3
EMISSION = 4


def value_noise(rng: np.random.Generator, height: int, width: int,
                cell_sizes=(64, 16, 4), weights=None) -> np.ndarray:
    """Multi-octave smooth noise [height, width] float32 with values roughly in [0, 1]."""
    weights = weights if weights is not None else [1.0 / (i + 1) for i in range(len(cell_sizes))]
    out = np.zeros((height, width), np.float32)
    for cell, weight in zip(cell_sizes, weights):
        cell = max(int(cell), 1)
        small = rng.random((height // cell + 2, width // cell + 2)).astype(np.float32)
        big = cv2.resize(small, ((width // cell + 2) * cell, (height // cell + 2) * cell),
                         interpolation=cv2.INTER_CUBIC)
        out += weight * big[:height, :width]
    out /= float(sum(weights))
    return np.clip(out, 0.0, 1.0)


def _blank(height: int, width: int, color) -> np.ndarray:
    tex = np.zeros((height, width, CHANNELS), np.float32)
    tex[..., :3] = np.asarray(color, np.float32)
    return tex


def random_color(rng: np.random.Generator, saturation=(0.2, 0.7), value=(0.3, 0.9)) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation) * 255,
                      rng.uniform(*value) * 255]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return rgb[0, 0].astype(np.float32) / 255.0


def _fill(tex: np.ndarray, x0: int, y0: int, x1: int, y1: int, value, channels=slice(0, 3)):
    h, w = tex.shape[:2]
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    if x1 > x0 and y1 > y0:
        tex[y0:y1, x0:x1, channels] = value


def _rgb_view(tex: np.ndarray):
    """Contiguous copy of the albedo channels for OpenCV drawing; write back with ``tex[..., :3] = rgb``."""
    return np.ascontiguousarray(tex[..., :3])


def random_pattern(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A poster-like RGB pattern [height, width, 3]: stripes, discs, blocks and "text" lines."""
    height, width = max(height, 2), max(width, 2)
    img = np.empty((height, width, 3), np.float32)
    img[:] = random_color(rng, value=(0.5, 1.0))
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == 0:  # stripes of random frequency and angle
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, max(6.0, width / 3))
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        mask = (phase % 1.0) < rng.uniform(0.3, 0.7)
        img[mask] = random_color(rng)
    elif kind == 1:  # gradient with a contrasting blob
        color = random_color(rng)
        ramp = (xx / width)[..., None]
        img = img * (1 - ramp) + color * ramp
    for _ in range(int(rng.integers(3, 9))):  # discs and blocks
        color = tuple(float(c) for c in random_color(rng, value=(0.1, 1.0)))
        if rng.random() < 0.5:
            center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            radius = int(rng.integers(2, max(3, min(height, width) // 3)))
            cv2.circle(img, center, radius, color, -1, lineType=cv2.LINE_AA)
        else:
            p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            p1 = (int(p0[0] + rng.integers(3, max(4, width // 2))),
                  int(p0[1] + rng.integers(3, max(4, height // 2))))
            cv2.rectangle(img, p0, p1, color, -1)
    n_lines = int(rng.integers(1, 5))  # "text": rows of short dark dashes
    for i in range(n_lines):
        y = int((i + 1) * height / (n_lines + 2))
        x = int(rng.integers(1, max(2, width // 6)))
        thick = max(1, height // 30)
        color = tuple(float(c) for c in random_color(rng, value=(0.0, 0.3)))
        while x < width - 4:
            length = int(rng.integers(2, max(3, width // 8)))
            cv2.rectangle(img, (x, y), (min(width - 2, x + length), y + thick), color, -1)
            x += length + int(rng.integers(2, 5))
    return np.clip(img, 0, 1)


def _bricks(rng: np.random.Generator, height: int, width: int, texel: float) -> np.ndarray:
    """Brick wall albedo [height, width, 3] with a random colour per brick and mortar joints."""
    bw, bh = max(3, int(round(0.24 / texel))), max(2, int(round(0.08 / texel)))
    base = random_color(rng, saturation=(0.3, 0.7), value=(0.35, 0.7))
    yy, xx = np.mgrid[0:height, 0:width]
    row = yy // bh
    xs = xx + (row % 2) * (bw // 2)
    col = xs // bw
    table = rng.normal(0.0, 0.08, (height // bh + 2, width // bw + 3, 3)).astype(np.float32)
    img = base + table[row, col]
    mortar = ((xs % bw) < 1) | ((yy % bh) < 1)
    img[mortar] = np.array([0.75, 0.73, 0.7], np.float32) * rng.uniform(0.7, 1.0)
    return img


def facade_texture(rng: np.random.Generator, width_m: float, height_m: float,
                   texel: float = 0.04) -> np.ndarray:
    """Facade of one building: wall, windows with sills and curtains, shop front, posters."""
    w, h = max(8, int(round(width_m / texel))), max(8, int(round(height_m / texel)))
    px = 1.0 / texel
    style = rng.integers(0, 3)
    if style == 0:
        tex = _blank(h, w, 0)
        tex[..., :3] = _bricks(rng, h, w, texel)
    else:
        tex = _blank(h, w, random_color(rng, saturation=(0.05, 0.5), value=(0.45, 0.95)))
        if style == 2:  # panels
            step = int(rng.uniform(0.8, 1.6) * px)
            tex[::step, :, :3] *= 0.6
            tex[:, ::max(2, int(step * rng.uniform(1, 2))), :3] *= 0.6
    grime = value_noise(rng, h, w, cell_sizes=(int(2 * px), int(0.5 * px), int(0.1 * px) + 1))
    tex[..., :3] *= (0.65 + 0.6 * grime)[..., None]

    floor_h = rng.uniform(2.8, 3.6)
    n_floors = int(height_m // floor_h)
    win_w, win_h = rng.uniform(0.8, 1.6), rng.uniform(1.2, 1.9)
    spacing = rng.uniform(max(win_w + 0.6, 1.8), 3.2)
    frame_color = random_color(rng, saturation=(0.0, 0.3), value=(0.2, 0.95))
    for floor in range(1, n_floors):
        y_floor = height_m - floor * floor_h  # metres from the top of the facade
        # cornice: a ledge along the whole floor line
        yc = int((y_floor - floor_h) * px)
        _fill(tex, 0, yc, w, yc + max(1, int(0.12 * px)), frame_color * 0.9)
        _fill(tex, 0, yc, w, yc + max(1, int(0.12 * px)), 1.0, LEDGE)
        n_win = int((width_m - 0.8) // spacing)
        offset = (width_m - n_win * spacing) / 2 + spacing / 2
        for i in range(n_win):
            cx = offset + i * spacing + rng.uniform(-0.05, 0.05)
            x0, x1 = int((cx - win_w / 2) * px), int((cx + win_w / 2) * px)
            y1 = int((y_floor - 0.9) * px)
            y0 = int(y1 - win_h * px)
            f = max(1, int(0.08 * px))
            _fill(tex, x0 - f, y0 - f, x1 + f, y1 + f, frame_color)
            gh, gw = max(1, y1 - y0), max(1, x1 - x0)
            glass = (np.array([0.15, 0.2, 0.28], np.float32) * rng.uniform(0.6, 1.4)
                     + 0.25 * value_noise(rng, gh, gw, cell_sizes=(max(2, gw // 2), max(1, gw // 8)))[..., None])
            glass += np.linspace(0.15, 0.0, gh, dtype=np.float32)[:, None, None]
            if rng.random() < 0.6:  # curtain of a random colour covering part of the window
                cw = max(1, int(gw * rng.uniform(0.2, 0.6)))
                sl = slice(0, cw) if rng.random() < 0.5 else slice(gw - cw, gw)
                shade = 0.7 + 0.3 * value_noise(rng, gh, cw, cell_sizes=(3, 1))
                glass[:, sl] = random_color(rng) * shade[..., None]
            if rng.random() < 0.5:  # mullion
                glass[:, gw // 2 - max(1, f // 2): gw // 2 + max(1, f // 2)] = frame_color
            _fill(tex, x0, y0, x1, y1, np.clip(glass, 0, 1))
            if rng.random() < 0.4:
                _fill(tex, x0, y0, x1, y1, rng.uniform(0.6, 1.0), EMISSION)
            # sill: collects snow
            _fill(tex, x0 - 2 * f, y1 + f, x1 + 2 * f, y1 + 3 * f, frame_color * 1.1)
            _fill(tex, x0 - 2 * f, y1 + f, x1 + 2 * f, y1 + 3 * f, 1.0, LEDGE)
    # ground floor: door, shop window and posters at eye level
    y_ground = int((height_m - 0.0) * px)
    door_x = rng.uniform(0.5, max(0.6, width_m - 1.8))
    _fill(tex, int(door_x * px), int(y_ground - 2.2 * px), int((door_x + 1.1) * px), y_ground,
          random_color(rng, value=(0.1, 0.5)))
    shop_x = rng.uniform(0.3, max(0.4, width_m - 4.0))
    if abs(shop_x - door_x) > 1.5:
        shop = random_pattern(rng, int(1.6 * px), int(rng.uniform(2.0, 3.5) * px)) * 0.5 + 0.1
        sy = int(y_ground - 2.4 * px)
        sx = int(shop_x * px)
        hh, ww = shop.shape[:2]
        ww = min(ww, w - sx)
        if ww > 0:
            tex[sy:sy + hh, sx:sx + ww, :3] = shop[:, :ww]
            tex[sy:sy + hh, sx:sx + ww, EMISSION] = 0.8
    for _ in range(int(rng.integers(2, 6))):  # posters
        pw, ph = rng.uniform(0.5, 1.4), rng.uniform(0.6, 1.6)
        x0 = int(rng.uniform(0, max(0.1, width_m - pw)) * px)
        y0 = int(y_ground - rng.uniform(ph + 0.5, ph + 1.6) * px)
        poster = random_pattern(rng, int(ph * px), int(pw * px))
        hh, ww = poster.shape[:2]
        ww, hh = min(ww, w - x0), min(hh, h - y0)
        if ww > 0 and hh > 0 and y0 >= 0:
            tex[y0:y0 + hh, x0:x0 + ww, :3] = poster[:hh, :ww]
    rgb = _rgb_view(tex)
    for _ in range(int(rng.integers(0, 3))):  # graffiti strokes
        start = [rng.uniform(0, w), y_ground - rng.uniform(0.3, 1.8) * px]
        pts = np.cumsum(rng.normal(0, 0.25 * px, (8, 2)), axis=0) + start
        cv2.polylines(rgb, [pts.astype(np.int32)], False,
                      tuple(float(c) for c in random_color(rng, saturation=(0.6, 1.0))),
                      max(1, int(0.05 * px)), lineType=cv2.LINE_AA)
    tex[..., :3] = rgb
    return tex


def ground_texture(rng: np.random.Generator, length_m: float, width_m: float, road_half_m: float,
                   texel: float = 0.04) -> np.ndarray:
    """Street surface: asphalt with patches and cracks, lane markings, tiled sidewalks.

    Texture columns run along the street (x), rows across it, row 0 at y = +width_m/2.
    """
    w, h = max(8, int(round(length_m / texel))), max(8, int(round(width_m / texel)))
    px = 1.0 / texel
    tex = _blank(h, w, 0)
    noise = value_noise(rng, h, w, cell_sizes=(int(4 * px), int(0.6 * px), int(0.1 * px) + 1, 1),
                        weights=(1.0, 0.6, 0.4, 0.3))
    tex[..., :3] = (0.18 + 0.25 * noise)[..., None] * np.array([1.0, 1.0, 1.03], np.float32)
    ys = (np.arange(h) + 0.5) * texel - width_m / 2  # distance across the street (+ = row 0 side)
    road = np.abs(ys) <= road_half_m
    # tiled sidewalks with a random shade per tile
    tile = max(2, int(0.4 * px))
    yy, xx = np.mgrid[0:h, 0:w]
    shades = rng.uniform(0.45, 0.7, (h // tile + 2, w // tile + 2)).astype(np.float32)
    side = (shades[yy // tile, xx // tile] * (0.85 + 0.3 * noise))[..., None] * np.array([1.0, 0.97, 0.92], np.float32)
    joints = ((yy % tile) == 0) | ((xx % tile) == 0)
    side[joints] *= 0.6
    tex[~road, :, :3] = side[~road]
    # curb lines
    for sign in (-1, 1):
        r = int((width_m / 2 - sign * road_half_m) / texel)
        _fill(tex, 0, r - max(1, int(0.15 * px)) // 2, w, r + max(1, int(0.15 * px)) // 2, 0.8)
    # asphalt repairs and manholes
    rgb = _rgb_view(tex)
    for _ in range(int(length_m / 4)):
        x0, y0 = rng.uniform(0, length_m), rng.uniform(-road_half_m, road_half_m) + width_m / 2
        if rng.random() < 0.5:
            x1, y1 = x0 + rng.uniform(0.5, 2.5), y0 + rng.uniform(0.3, 1.5)
            rgb[int(y0 * px):int(y1 * px), int(x0 * px):int(x1 * px)] = rng.uniform(0.08, 0.3)
        else:
            cv2.circle(rgb, (int(x0 * px), int(y0 * px)), int(0.35 * px),
                       (0.12, 0.12, 0.12), -1, lineType=cv2.LINE_AA)
            cv2.circle(rgb, (int(x0 * px), int(y0 * px)), int(0.3 * px),
                       (0.3, 0.3, 0.28), max(1, int(0.03 * px)), lineType=cv2.LINE_AA)
    for _ in range(int(length_m / 3)):  # cracks
        pts = np.cumsum(rng.normal(0, 0.3 * px, (10, 2)), axis=0) + [rng.uniform(0, w), rng.uniform(0, h)]
        cv2.polylines(rgb, [pts.astype(np.int32)], False, (0.07, 0.07, 0.07), 1)
    tex[..., :3] = rgb
    # lane markings: dashed centre line with random dash lengths, edge lines
    centre = int(h / 2)
    lw = max(1, int(0.12 * px))
    x = rng.uniform(0, 2)
    while x < length_m:
        length = rng.uniform(1.5, 3.5)
        _fill(tex, int(x * px), centre - lw // 2, int((x + length) * px), centre + lw // 2 + 1,
              np.array([0.92, 0.9, 0.8], np.float32) * rng.uniform(0.8, 1.0))
        x += length + rng.uniform(2.0, 5.0)
    for sign in (-1, 1):
        r = int((width_m / 2 - sign * (road_half_m - 0.3)) / texel)
        _fill(tex, 0, r - lw // 2, w, r + lw // 2 + 1, 0.85)
    # a zebra crossing and painted arrows at random places
    zx = rng.uniform(0.2, 0.8) * length_m
    for k in range(int(2 * road_half_m / 1.0)):
        r0 = int((width_m / 2 - road_half_m + k * 1.0 + 0.2) / texel)
        _fill(tex, int(zx * px), r0, int((zx + 3.0) * px), r0 + int(0.5 * px), 0.9)
    rgb = _rgb_view(tex)
    for _ in range(max(1, int(length_m / 15))):
        ax, ay = rng.uniform(0, length_m) * px, (width_m / 2 + rng.choice([-1, 1]) * road_half_m / 2) * px
        d = rng.choice([-1, 1]) * px
        cv2.arrowedLine(rgb, (int(ax), int(ay)), (int(ax + 2.0 * d), int(ay)), (0.9, 0.9, 0.85),
                        max(1, int(0.15 * px)), tipLength=0.3)
    tex[..., :3] = np.clip(rgb, 0, 1)
    return tex


def object_texture(rng: np.random.Generator, width_m: float, height_m: float,
                   texel: float = 0.04, metal: bool = False) -> np.ndarray:
    """Face of a box-like object (kiosk, container, car body, pole): paint, dirt, stickers."""
    w, h = max(4, int(round(width_m / texel))), max(4, int(round(height_m / texel)))
    color = (random_color(rng, saturation=(0.0, 0.2), value=(0.3, 0.6)) if metal
             else random_color(rng, saturation=(0.3, 0.9), value=(0.3, 0.9)))
    tex = _blank(h, w, color)
    tex[..., :3] *= (0.7 + 0.5 * value_noise(rng, h, w, cell_sizes=(max(2, w // 2), max(1, w // 10), 1)))[..., None]
    if metal:  # reflective bands
        for _ in range(int(rng.integers(1, 4))):
            y0 = int(rng.integers(0, h))
            _fill(tex, 0, y0, w, y0 + max(1, h // 30), random_color(rng, saturation=(0.5, 1.0)))
    else:
        for _ in range(int(rng.integers(1, 4))):
            pw, ph = int(rng.integers(2, max(3, w // 2))), int(rng.integers(2, max(3, h // 2)))
            x0, y0 = int(rng.integers(0, max(1, w - pw))), int(rng.integers(0, max(1, h - ph)))
            tex[y0:y0 + ph, x0:x0 + pw, :3] = random_pattern(rng, ph, pw)[:h - y0, :w - x0]
    tex[..., :3] = np.clip(tex[..., :3], 0, 1)
    return tex


def car_texture(rng: np.random.Generator, width_m: float, height_m: float, body: np.ndarray,
                texel: float = 0.04, long_side: bool = True) -> np.ndarray:
    """Face of a parked car: body paint, window band, wheels (long sides) or lights and plate (ends)."""
    w, h = max(4, int(round(width_m / texel))), max(4, int(round(height_m / texel)))
    tex = _blank(h, w, body)
    tex[..., :3] *= (0.8 + 0.35 * value_noise(rng, h, w, cell_sizes=(max(2, w // 3), max(1, w // 12), 1)))[..., None]
    glass_top, glass_bottom = int(0.08 * h), int(0.42 * h)
    inset = int((0.15 if long_side else 0.1) * w)
    glass = 0.12 + 0.25 * value_noise(rng, glass_bottom - glass_top, w - 2 * inset, cell_sizes=(8, 2))
    tex[glass_top:glass_bottom, inset:w - inset, :3] = glass[..., None] * np.array([0.8, 0.9, 1.0], np.float32)
    rgb = _rgb_view(tex)
    if long_side:
        pillar = int(rng.uniform(0.45, 0.55) * w)
        rgb[glass_top:glass_bottom, pillar - 1:pillar + 2] = body * 0.6
        cv2.line(rgb, (int(0.5 * w), int(0.5 * h)), (int(0.5 * w), h - 1), (0.1, 0.1, 0.1), 1)  # door gap
        for x in (0.18, 0.82):
            cv2.circle(rgb, (int(x * w), h - 1), int(0.22 * h), (0.05, 0.05, 0.05), -1, lineType=cv2.LINE_AA)
            cv2.circle(rgb, (int(x * w), h - 1), int(0.11 * h), (0.55, 0.55, 0.58), -1, lineType=cv2.LINE_AA)
    else:
        light = (0.9, 0.15, 0.1) if rng.random() < 0.5 else (0.95, 0.92, 0.8)
        for x in (0.15, 0.85):
            cv2.rectangle(rgb, (int((x - 0.08) * w), int(0.5 * h)), (int((x + 0.08) * w), int(0.62 * h)), light, -1)
        cv2.rectangle(rgb, (int(0.38 * w), int(0.68 * h)), (int(0.62 * w), int(0.78 * h)), (0.95, 0.95, 0.9), -1)
        x = int(0.4 * w)
        while x < int(0.6 * w):  # plate characters
            cv2.rectangle(rgb, (x, int(0.7 * h)), (x + 1, int(0.76 * h)), (0.05, 0.05, 0.05), -1)
            x += int(rng.integers(2, 4))
    tex[..., :3] = np.clip(rgb, 0, 1)
    return tex
