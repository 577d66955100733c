"""Drawing: camera scenes, pedestrians, occluders, and the rendering of planned images to JPEG files.

Each image is drawn from a generator seeded by ``(seed, split, index)`` only, so the bytes do not
depend on the order or the number of worker processes.
"""
from __future__ import annotations

import math
import multiprocessing
import os
from io import BytesIO
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .people import appearance, sample_identity
from .schema import (BODY_REGIONS, IMAGE_HEIGHT, IMAGE_WIDTH, JPEG_QUALITY, OCCLUDER_TYPES, OCCLUSION_RANGE,
                     REGION_HIDDEN_SHARE, STREAM)

__all__ = ["make_cameras", "occlude", "render_images"]

# Drawn at twice the size and reduced, which anti-aliases the Pillow shapes.
_SUPERSAMPLE = 2
_BACKGROUND_STYLES = ("street", "brick", "park", "mall", "road", "glass", "plaza", "night")


def make_cameras(num_cameras: int, seed: int, stream: str = "camera") -> Dict[int, Dict[str, Any]]:
    """Per camera: colour cast, brightness, blur, person scale, noise and a background picture.

    ``stream`` names the seed stream (``STREAM``): the caption corpus has cameras of its own.
    Returns ``{camid: camera}`` for camids 1..num_cameras, the ``cameras`` of :func:`render_images`.
    """
    cameras = {}
    for camid in range(1, num_cameras + 1):
        rng = np.random.default_rng([seed, STREAM[stream], camid])
        cameras[camid] = {
            "cast": rng.uniform(0.86, 1.14, 3),
            "brightness": float(rng.uniform(0.8, 1.15)),
            "blur": float(rng.uniform(0.0, 0.8)),
            "scale": float(rng.uniform(0.8, 0.92)),
            "noise": float(rng.uniform(1.5, 4.0)),
            "background": _draw_background(_BACKGROUND_STYLES[(camid - 1) % len(_BACKGROUND_STYLES)], rng),
        }
    return cameras



def _noise_texture(rng: np.random.Generator, height: int, width: int, amplitude: float) -> np.ndarray:
    coarse = rng.normal(0, amplitude, (height // 8 + 2, width // 8 + 2)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))
    return coarse[..., None] + rng.normal(0, amplitude / 2, (height, width, 1)).astype(np.float32)


def _draw_background(style: str, rng: np.random.Generator) -> np.ndarray:
    """A camera's scene, larger than an image so that each image takes a shifted crop of it."""
    width, height = (IMAGE_WIDTH + 32) * _SUPERSAMPLE, (IMAGE_HEIGHT + 32) * _SUPERSAMPLE
    horizon = int(height * rng.uniform(0.4, 0.55))

    def tone(rgb: Sequence[int], spread: int = 18) -> Tuple[int, ...]:
        return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in rgb)

    image = Image.new("RGB", (width, height), tone((128, 128, 128)))
    draw = ImageDraw.Draw(image)
    if style == "street":
        draw.rectangle([0, 0, width, horizon], fill=tone((176, 160, 140)))
        for x in range(6, width, 40):
            for y in range(8, horizon - 24, 48):
                draw.rectangle([x, y, x + 22, y + 30], fill=tone((60, 70, 84)))
        draw.rectangle([0, horizon, width, height], fill=tone((150, 150, 146)))
        for y in range(horizon, height, 22):
            draw.line([0, y, width, y], fill=tone((120, 120, 118)), width=2)
    elif style == "brick":
        brick, mortar = tone((150, 70, 52)), tone((196, 186, 170))
        draw.rectangle([0, 0, width, horizon], fill=mortar)
        for row, y in enumerate(range(0, horizon, 14)):
            for x in range(-20 + (row % 2) * 16, width, 32):
                draw.rectangle([x, y, x + 28, y + 10], fill=tone(brick, 12))
        draw.rectangle([0, horizon, width, height], fill=tone((110, 104, 100)))
    elif style == "park":
        draw.rectangle([0, 0, width, horizon], fill=tone((170, 200, 226)))
        for _ in range(6):
            x, y, r = rng.integers(0, width), rng.integers(0, horizon), rng.integers(24, 50)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tone((50, 100, 50), 24))
        draw.rectangle([0, horizon, width, height], fill=tone((96, 150, 70)))
    elif style == "mall":
        draw.rectangle([0, 0, width, horizon], fill=tone((220, 210, 190)))
        for x in range(0, width, 64):
            draw.rectangle([x + 4, 16, x + 58, horizon - 8], fill=tone((200, 120, 80), 60))
        draw.rectangle([0, horizon, width, height], fill=tone((210, 200, 180)))
        for x in range(0, width, 32):
            draw.line([x, horizon, x, height], fill=tone((180, 170, 150)), width=2)
    elif style == "road":
        draw.rectangle([0, 0, width, horizon], fill=tone((120, 130, 120)))
        draw.rectangle([0, horizon, width, height], fill=tone((70, 70, 74)))
        for y in range(horizon + 30, height, 60):
            draw.rectangle([0, y, width, y + 10], fill=tone((220, 220, 210)))
    elif style == "glass":
        draw.rectangle([0, 0, width, height], fill=tone((100, 130, 160)))
        for x in range(0, width, 36):
            draw.line([x, 0, x, horizon], fill=tone((200, 210, 220)), width=3)
        for y in range(0, horizon, 50):
            draw.line([0, y, width, y], fill=tone((200, 210, 220)), width=3)
        draw.rectangle([0, horizon, width, height], fill=tone((140, 140, 150)))
    elif style == "plaza":
        draw.rectangle([0, 0, width, height], fill=tone((200, 196, 186)))
        for x in range(0, width, 56):
            draw.line([x, 0, x, height], fill=tone((170, 166, 156)), width=2)
        for y in range(0, height, 56):
            draw.line([0, y, width, y], fill=tone((170, 166, 156)), width=2)
    else:  # night
        draw.rectangle([0, 0, width, height], fill=tone((26, 30, 48)))
        for _ in range(8):
            x, y, r = rng.integers(0, width), rng.integers(0, horizon), rng.integers(4, 12)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=tone((250, 220, 150), 10))
        draw.rectangle([0, horizon, width, height], fill=tone((50, 50, 58)))
    pixels = np.asarray(image, dtype=np.float32) + _noise_texture(rng, height, width, 6.0)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _draw_person(size: Tuple[int, int], appearance: Dict[str, Any], attributes: Dict[str, str],
                 pose: Dict[str, float]) -> Tuple[Image.Image, Dict[str, float]]:
    """One pedestrian on a transparent layer, and the pixel rows where its body regions end.

    Coordinates are given in units of the person's height from the top of the head and
    from the body axis; ``pose["lean"]`` shears them around the feet.
    """
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    unit, center_x, feet_y, lean = pose["unit"], pose["center_x"], pose["feet_y"], pose["lean"]
    top = feet_y - unit
    back_view = pose["back_view"] > 0.5

    def point(fx: float, fy: float) -> Tuple[float, float]:
        y = top + fy * unit
        return center_x + fx * unit + (feet_y - y) * lean, y

    def ellipse(fx: float, fy: float, rx: float, ry: float, fill: Tuple[int, ...], target=draw) -> None:
        x, y = point(fx, fy)
        target.ellipse([x - rx * unit, y - ry * unit, x + rx * unit, y + ry * unit], fill=fill)

    def chord(fx: float, fy: float, rx: float, ry: float, start: float, end: float, fill) -> None:
        x, y = point(fx, fy)
        draw.chord([x - rx * unit, y - ry * unit, x + rx * unit, y + ry * unit], start, end, fill=fill)

    def polygon(points: Sequence[Tuple[float, float]], fill, target=draw) -> None:
        target.polygon([point(*p) for p in points], fill=fill)

    def line(points: Sequence[Tuple[float, float]], width: float, fill, target=draw) -> None:
        target.line([point(*p) for p in points], fill=fill, width=max(1, round(width * unit)), joint="curve")

    def opaque(rgb: Sequence[int]) -> Tuple[int, ...]:
        return tuple(int(c) for c in rgb) + (255,)

    skin, hair, lower = (opaque(appearance[key]) for key in ("skin_rgb", "hair_color_rgb", "lower_color_rgb"))
    shoes, bag_rgb = opaque(appearance["shoes_rgb"]), opaque(appearance["bag_rgb"])
    shoulder = {"slim": 0.098, "average": 0.118, "broad": 0.145}[attributes["body_shape"]] + appearance["width_jitter"]
    waist = shoulder * {"slim": 0.74, "average": 0.8, "broad": 0.9}[attributes["body_shape"]]
    limb = {"slim": 0.038, "average": 0.046, "broad": 0.056}[attributes["body_shape"]]
    ankle = 0.962
    hip = ankle - {"short": 0.42, "average": 0.455, "tall": 0.49}[attributes["height"]]
    shoulder_y, head_y, head_rx, head_ry = 0.165, 0.068, 0.05, 0.062
    long_hair = attributes["hair_length"] == "long"

    if long_hair and not back_view:
        polygon([(-0.062, 0.05), (0.062, 0.05), (0.07, 0.25), (-0.07, 0.25)], hair)
    if attributes["bag"] == "backpack" and not back_view:
        polygon([(-shoulder - 0.025, 0.2), (shoulder + 0.025, 0.2), (shoulder + 0.02, 0.42),
                 (-shoulder - 0.02, 0.42)], bag_rgb)

    # Legs: thigh to ankle, feet apart by the stance.
    stance = pose["stance"]
    for side in (-1, 1):
        ankle_x = side * (0.03 + stance)
        leg_color = lower if attributes["lower_length"] == "trousers" else skin
        polygon([(side * 0.004, hip), (side * waist, hip), (ankle_x + side * 0.028, ankle),
                 (ankle_x - side * 0.022, ankle)], leg_color)
        if attributes["lower_length"] == "shorts":
            knee_x = side * (0.03 + stance * 0.4)
            polygon([(side * 0.004, hip), (side * waist, hip), (knee_x + side * 0.045, hip + 0.16),
                     (knee_x - side * 0.03, hip + 0.16)], lower)
        ellipse(ankle_x + side * 0.008, ankle + 0.014, 0.04, 0.022, shoes)
    polygon([(-waist, hip - 0.04), (waist, hip - 0.04), (waist * 1.02, hip + 0.05), (-waist * 1.02, hip + 0.05)],
            lower)
    if attributes["lower_length"] == "skirt":
        polygon([(-waist, hip - 0.04), (waist, hip - 0.04), (waist * 1.7, hip + 0.2), (-waist * 1.7, hip + 0.2)],
                lower)

    # Arms in skin first; the upper garment (torso and sleeves) is pasted over them with its pattern.
    garment = Image.new("L", size, 0)
    garment_draw = ImageDraw.Draw(garment)
    sleeve_end = 1.0 if attributes["upper_sleeve"] == "long" else 0.45
    for side, swing in ((-1, pose["arm_swing"]), (1, -pose["arm_swing"])):
        angle = math.radians(10 + swing)
        shoulder_point = (side * (shoulder - 0.018), shoulder_y + 0.02)
        elbow = (shoulder_point[0] + side * 0.15 * math.sin(angle), shoulder_point[1] + 0.15 * math.cos(angle))
        bend = angle - math.radians(8) * side * np.sign(swing)
        hand = (elbow[0] + side * 0.14 * math.sin(bend), elbow[1] + 0.14 * math.cos(bend))
        line([shoulder_point, elbow, hand], limb, skin)
        ellipse(hand[0], hand[1] + 0.01, 0.022, 0.028, skin)
        if sleeve_end >= 1.0:
            line([shoulder_point, elbow, hand], limb * 1.15, 255, target=garment_draw)
        else:
            cuff = (shoulder_point[0] + (elbow[0] - shoulder_point[0]) * sleeve_end * 1.4,
                    shoulder_point[1] + (elbow[1] - shoulder_point[1]) * sleeve_end * 1.4)
            line([shoulder_point, cuff], limb * 1.25, 255, target=garment_draw)
        if attributes["bag"] == "handbag" and side == 1:
            x, y = hand
            line([(x - 0.02, y + 0.02), (x, y - 0.005), (x + 0.02, y + 0.02)], 0.01, bag_rgb)
            polygon([(x - 0.045, y + 0.02), (x + 0.045, y + 0.02), (x + 0.05, y + 0.1), (x - 0.05, y + 0.1)], bag_rgb)
    polygon([(-shoulder, shoulder_y), (shoulder, shoulder_y), (waist, hip - 0.02), (-waist, hip - 0.02)],
            255, target=garment_draw)
    ellipse(-shoulder + 0.03, shoulder_y + 0.025, 0.035, 0.028, 255, target=garment_draw)
    ellipse(shoulder - 0.03, shoulder_y + 0.025, 0.035, 0.028, 255, target=garment_draw)
    layer.paste(_garment_pattern(size, appearance, attributes["upper_pattern"], point, unit), mask=garment)

    # Neck, head, hair, hat.
    polygon([(-0.022, 0.1), (0.022, 0.1), (0.024, shoulder_y + 0.01), (-0.024, shoulder_y + 0.01)], skin)
    ellipse(0, head_y, head_rx, head_ry, hair if back_view else skin)
    if back_view:
        if long_hair:
            polygon([(-0.058, 0.07), (0.058, 0.07), (0.068, 0.27), (-0.068, 0.27)], hair)
    else:
        chord(0, head_y + 0.004, head_rx * 1.08, head_ry * 1.1, 180, 360, hair)
        if long_hair:
            polygon([(-0.056, 0.06), (-0.04, 0.06), (-0.046, 0.2), (-0.066, 0.2)], hair)
            polygon([(0.056, 0.06), (0.04, 0.06), (0.046, 0.2), (0.066, 0.2)], hair)
        eye = (40, 30, 30, 255)
        ellipse(-0.018, head_y + 0.008, 0.007, 0.006, eye)
        ellipse(0.018, head_y + 0.008, 0.007, 0.006, eye)
    hat = opaque(appearance["hat_rgb"])
    if attributes["hat"] == "cap":
        chord(0, head_y - 0.004, head_rx * 1.12, head_ry * 1.06, 180, 360, hat)
        if not back_view:
            polygon([(-0.056, head_y - 0.01), (0.056, head_y - 0.01), (0.075, head_y + 0.006),
                     (-0.075, head_y + 0.006)], hat)
    elif attributes["hat"] == "beanie":
        chord(0, head_y + 0.01, head_rx * 1.12, head_ry * 1.22, 180, 360, hat)
        line([(-0.056, head_y + 0.004), (0.056, head_y + 0.004)], 0.016, hat)

    # Bags worn over the clothes.
    if attributes["bag"] == "backpack":
        if back_view:
            polygon([(-shoulder * 0.85, 0.19), (shoulder * 0.85, 0.19), (shoulder * 0.9, 0.44),
                     (-shoulder * 0.9, 0.44)], bag_rgb)
            polygon([(-shoulder * 0.55, 0.34), (shoulder * 0.55, 0.34), (shoulder * 0.55, 0.42),
                     (-shoulder * 0.55, 0.42)], opaque(np.clip(np.array(appearance["bag_rgb"]) + 40, 0, 255)))
        else:
            line([(-shoulder * 0.6, shoulder_y), (-shoulder * 0.68, 0.42)], 0.018, bag_rgb)
            line([(shoulder * 0.6, shoulder_y), (shoulder * 0.68, 0.42)], 0.018, bag_rgb)
    elif attributes["bag"] == "shoulder_bag":
        line([(-shoulder * 0.7, shoulder_y), (waist * 1.05, hip - 0.06)], 0.016, bag_rgb)
        polygon([(waist * 0.6, hip - 0.09), (waist * 1.5, hip - 0.09), (waist * 1.5, hip + 0.03),
                 (waist * 0.6, hip + 0.03)], bag_rgb)

    bands = {"head": top + 0.15 * unit, "upper": top + hip * unit, "lower": top + (ankle - 0.005) * unit}
    return layer, bands


def _garment_pattern(size: Tuple[int, int], appearance: Dict[str, Any], pattern: str,
                     point: Callable[[float, float], Tuple[float, float]], unit: float) -> Image.Image:
    """The upper garment's cloth: base colour with stripes, checks or a chest logo."""
    cloth = Image.new("RGBA", size, tuple(appearance["upper_color_rgb"]) + (255,))
    draw = ImageDraw.Draw(cloth)
    second = tuple(appearance["pattern_rgb"]) + (255,)
    width, height = size
    phase = appearance["pattern_phase"]
    if pattern == "stripes":
        period = 0.05 * unit
        for row in range(int(height / period) + 2):
            y = (row + phase) * period
            draw.rectangle([0, y, width, y + 0.45 * period], fill=second)
    elif pattern == "checks":
        period = 0.06 * unit
        for index in range(int(max(width, height) / period) + 2):
            offset = (index + phase) * period
            draw.rectangle([offset, 0, offset + 0.3 * period, height], fill=second)
            draw.rectangle([0, offset, width, offset + 0.3 * period], fill=second)
    elif pattern == "logo":
        x, y = point(0.0, 0.27)
        radius = 0.045 * unit
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=second)
        radius *= 0.55
        draw.rectangle([x - radius, y - radius, x + radius, y + radius], fill=tuple(appearance["logo_rgb"]) + (255,))
    return cloth


def _draw_occluder(kind: str, size: Tuple[int, int], params: Dict[str, Any], amount: float) -> Image.Image:
    """An occluder on a transparent layer; a larger ``amount`` in [0, 1] hides more of the frame."""
    width, height = size
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    color = tuple(params["rgb"]) + (255,)
    dark = tuple(int(c * 0.6) for c in params["rgb"]) + (255,)
    if kind == "pole":
        half = 0.5 * amount * 0.7 * width
        x = params["x"] * width
        draw.rectangle([x - half, 0, x + half, height], fill=color)
        draw.rectangle([x - half, 0, x - half * 0.6, height], fill=dark)
        draw.rectangle([x + half * 0.5, 0, x + half * 0.7, height], fill=tuple(min(255, c + 50) for c in color))
    elif kind == "car":
        car_height = amount * 0.8 * height
        roof = height - car_height
        body = roof + 0.38 * car_height
        cabin_left, cabin_right = params["cabin"] * width
        draw.polygon([(cabin_left, roof), (cabin_right, roof), (cabin_right + 0.12 * width, body),
                      (cabin_left - 0.12 * width, body)], fill=color)
        window = (150, 180, 200, 255)
        inset = 0.06 * car_height
        draw.polygon([(cabin_left + inset, roof + inset), (cabin_right - inset, roof + inset),
                      (cabin_right + 0.06 * width, body), (cabin_left - 0.06 * width, body)], fill=window)
        draw.rounded_rectangle([-0.3 * width, body, 1.3 * width, height + 2], radius=0.08 * car_height, fill=color)
        draw.line([(0, body + 0.35 * car_height), (width, body + 0.35 * car_height)], fill=dark, width=2)
        for wheel_x in params["wheels"] * width:
            radius = 0.17 * car_height
            draw.ellipse([wheel_x - radius, height - radius, wheel_x + radius, height + radius],
                         fill=(20, 20, 22, 255))
    elif kind == "person":
        shift = params["side"] * (1.0 - amount) * 0.75 * width
        layer.paste(params["layer"], (int(round(shift)), 0), params["layer"])
    elif kind == "umbrella":
        x, y = params["x"] * width, params["y"] * height
        radius = amount * 0.9 * width
        draw.pieslice([x - radius, y - 0.7 * radius, x + radius, y + 0.7 * radius], 180, 360, fill=color)
        for rib in np.linspace(-1, 1, 5):
            draw.line([(x, y - 0.7 * radius), (x + rib * radius, y)], fill=dark, width=2)
        draw.line([(x, y), (x, y + 1.1 * radius)], fill=(40, 40, 40, 255), width=3)
    else:  # board: a sign or fence panel coming in from one side
        edge = amount * 1.1 * width
        left, right = (-2, edge) if params["side"] < 0 else (width - edge, width + 2)
        draw.rectangle([left, params["top"] * height, right, height], fill=color)
        draw.rectangle([left, params["top"] * height, right, params["top"] * height + 6], fill=dark)
        for stripe in range(3):
            y = params["top"] * height + (stripe + 1) * 0.12 * height
            draw.line([(left + 4, y), (right - 4, y)], fill=(240, 240, 230, 255), width=3)
    return layer


def _occluder_params(kind: str, size: Tuple[int, int], rng: np.random.Generator,
                     person_rng_seed: Sequence[int]) -> Dict[str, Any]:
    rgb = [int(c) for c in rng.integers(30, 230, 3)]
    if kind == "pole":
        return {"rgb": [int(v) for v in rng.integers(90, 150) + rng.integers(-10, 10, 3)], "x": rng.uniform(0.3, 0.7)}
    if kind == "car":
        left = rng.uniform(-0.2, 0.4)
        return {"rgb": rgb, "cabin": np.array([left, left + rng.uniform(0.6, 0.9)]),
                "wheels": np.array([rng.uniform(-0.1, 0.2), rng.uniform(0.8, 1.1)])}
    if kind == "person":
        other_rng = np.random.default_rng(person_rng_seed)
        attributes, params = sample_identity(other_rng)
        width, height = size
        unit = height * other_rng.uniform(0.95, 1.1)
        pose = {"unit": unit, "center_x": width / 2, "feet_y": height + unit * other_rng.uniform(0.05, 0.25),
                "lean": other_rng.uniform(-0.05, 0.05), "stance": other_rng.uniform(0, 0.05),
                "arm_swing": other_rng.uniform(-12, 12), "back_view": other_rng.uniform()}
        layer, _ = _draw_person(size, appearance(attributes, params), attributes, pose)
        return {"rgb": rgb, "side": -1 if rng.uniform() < 0.5 else 1, "layer": layer}
    if kind == "umbrella":
        return {"rgb": rgb, "x": rng.uniform(0.2, 0.8), "y": rng.uniform(0.3, 0.6)}
    return {"rgb": rgb, "side": -1 if rng.uniform() < 0.5 else 1, "top": rng.uniform(-0.1, 0.5)}


def occlude(body: np.ndarray, region_of_row: np.ndarray, size: Tuple[int, int], rng: np.random.Generator,
            person_rng_seed: Sequence[int]) -> Tuple[Image.Image, Dict[str, Any]]:
    """Find an occluder covering a random 20-60% share of the body by bisection on its size.

    Args:
        body: ``(height, width)`` mask of the person's pixels.
        region_of_row: for every pixel row, the index in ``BODY_REGIONS`` of the region it belongs to.
        size: ``(width, height)`` of the layer to draw.
        rng: the image's generator (occluder kind, target share, occluder parameters).
        person_rng_seed: seed prefix of the person drawn when the occluder is another person.

    Returns:
        The occluder on a transparent RGBA layer, and its record ``{"occluder", "fraction",
        "regions", "region_fractions"}`` (``regions``: those hidden at least ``REGION_HIDDEN_SHARE``).
    """
    low_target, high_target = OCCLUSION_RANGE[0] + 0.01, OCCLUSION_RANGE[1] - 0.01
    body_pixels = body.sum()
    for attempt in range(20):
        kind = OCCLUDER_TYPES[int(rng.integers(len(OCCLUDER_TYPES)))] if attempt < 10 else "board"
        target = rng.uniform(0.25, 0.55)
        params = _occluder_params(kind, size, rng, list(person_rng_seed) + [attempt])

        def coverage(amount: float) -> Tuple[float, Image.Image, np.ndarray]:
            layer = _draw_occluder(kind, size, params, amount)
            hidden = np.asarray(layer.getchannel("A")) > 0
            return float((hidden & body).sum() / body_pixels), layer, hidden

        low, high = 0.0, 1.0
        for _ in range(12):
            middle = 0.5 * (low + high)
            if coverage(middle)[0] < target:
                low = middle
            else:
                high = middle
        fraction, layer, hidden = coverage(0.5 * (low + high))
        if low_target <= fraction <= high_target:
            region_fractions = {}
            for index, region in enumerate(BODY_REGIONS):
                in_region = body & (region_of_row == index)[:, None]
                region_fractions[region] = round(float((hidden & in_region).sum() / max(in_region.sum(), 1)), 4)
            regions = [region for region in BODY_REGIONS if region_fractions[region] >= REGION_HIDDEN_SHARE]
            return layer, {"occluder": kind, "fraction": round(fraction, 4), "regions": regions,
                           "region_fractions": region_fractions}
    raise RuntimeError("no occluder hides 20-60% of this body")  # the board fallback always fits


_WORKER_CONTEXT: Dict[str, Any] = {}


def _init_worker(context: Dict[str, Any]) -> None:
    _WORKER_CONTEXT.update(context)


def render_images(items: List[Dict[str, Any]], context: Dict[str, Any],
                  num_workers: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """Draw and write every planned image; returns ``{name: occlusion record}``.

    Args:
        items: planned images (``split``, ``index``, ``pid``, ``camid``, ``occluded``, ``name``).
        context: ``seed``, ``identities`` (pid -> attributes and appearance), ``cameras`` and
            ``dataset_dir`` (where the names are written).
        num_workers: drawing processes; by default one per CPU (at most 8) above 3,000 images,
            else one. The output does not depend on it.
    """
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8) if len(items) > 3000 else 1
    try:
        if num_workers > 1:
            with multiprocessing.get_context("fork").Pool(num_workers, _init_worker, (context,)) as pool:
                return dict(pool.imap_unordered(_render_image, items, chunksize=64))
        _init_worker(context)
        return dict(_render_image(item) for item in items)
    finally:
        _WORKER_CONTEXT.clear()


def _render_image(item: Dict[str, Any]) -> Tuple[str, Dict[str, Any]]:
    """Draw, write and describe one planned image; seeded by (seed, split, index) only."""
    context = _WORKER_CONTEXT
    seed = context["seed"]
    rng = np.random.default_rng([seed, STREAM[item["split"]], item["index"]])
    identity = context["identities"][item["pid"]]
    camera = context["cameras"][item["camid"]]
    size = (IMAGE_WIDTH * _SUPERSAMPLE, IMAGE_HEIGHT * _SUPERSAMPLE)
    width, height = size

    background = camera["background"]
    top = int(rng.integers(0, background.shape[0] - height + 1))
    left = int(rng.integers(0, background.shape[1] - width + 1))
    canvas = Image.fromarray(background[top:top + height, left:left + width])

    height_scale = {"short": 0.93, "average": 0.965, "tall": 1.0}[identity["attributes"]["height"]]
    pose = {"unit": height * camera["scale"] * height_scale * rng.uniform(0.96, 1.03),
            "center_x": width * (0.5 + rng.uniform(-0.07, 0.07)),
            "feet_y": height * rng.uniform(0.97, 1.0), "lean": rng.uniform(-0.04, 0.04),
            "stance": rng.uniform(0.0, 0.05), "arm_swing": rng.uniform(-14, 14), "back_view": rng.uniform()}
    person, bands = _draw_person(size, identity["appearance"], identity["attributes"], pose)
    canvas.paste(person, (0, 0), person)

    record = {"occluder": "none", "fraction": 0.0, "regions": [],
              "region_fractions": {region: 0.0 for region in BODY_REGIONS}}
    if item["occluded"]:
        body = np.asarray(person.getchannel("A")) > 0
        rows = np.arange(height)
        region_of_row = np.searchsorted([bands["head"], bands["upper"], bands["lower"]], rows, side="right")
        occluder, record = occlude(body, region_of_row, size, rng, [seed, STREAM[item["split"]], item["index"], 99])
        canvas.paste(occluder, (0, 0), occluder)

    small = canvas.reduce(_SUPERSAMPLE)
    pixels = np.asarray(small, dtype=np.float32) * camera["cast"] * camera["brightness"]
    pixels += rng.normal(0, camera["noise"], pixels.shape)
    small = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    blur = camera["blur"] + rng.uniform(0, 0.3)
    if blur > 0.05:
        small = small.filter(ImageFilter.GaussianBlur(blur))
    buffer = BytesIO()
    small.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    Path(context["dataset_dir"], item["name"]).write_bytes(buffer.getvalue())
    return item["name"], record

