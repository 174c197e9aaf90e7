"""Drawing one demo person as a pedestrian crop with Pillow: pose, scale, position, light and noise vary."""

from __future__ import annotations

import math
import random

from PIL import Image, ImageChops, ImageDraw, ImageEnhance

from timam.sources.demo.people import COLOURS, HAIR_COLOURS, Colour, DemoPerson

_SUPERSAMPLING = 2  # draw at twice the size, then downsample: cheap anti-aliasing

Point = tuple[float, float]


def _shade(c: Colour, k: float) -> Colour:
    return tuple(max(0, min(255, round(v * k))) for v in c)  # type: ignore[return-value]


def _muted(rng: random.Random) -> Colour:
    g = rng.randint(60, 200)
    return tuple(max(0, min(255, g + rng.randint(-35, 35))) for _ in range(3))  # type: ignore[return-value]


def _background(rng: random.Random, w: int, h: int) -> Image.Image:
    if rng.random() < 0.5:  # colour gradient with a few faint blocks
        mask = Image.linear_gradient("L").resize((w, h))
        img = Image.composite(Image.new("RGB", (w, h), _muted(rng)), Image.new("RGB", (w, h), _muted(rng)), mask)
        d = ImageDraw.Draw(img)
        for _ in range(rng.randint(0, 3)):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            d.rectangle([x, y, x + rng.uniform(10, w / 2), y + rng.uniform(10, h / 3)], fill=_muted(rng))
        return img
    horizon = rng.uniform(0.55, 0.8) * h  # "street": wall with windows/signs, ground with stripes
    img = Image.new("RGB", (w, h), _muted(rng))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):
        x, y = rng.uniform(-10, w), rng.uniform(-10, horizon - 20)
        d.rectangle([x, y, x + rng.uniform(15, w / 2), y + rng.uniform(15, h / 4)], fill=_muted(rng))
    d.rectangle([0, horizon, w, h], fill=_shade(_muted(rng), 0.8))
    for _ in range(rng.randint(0, 4)):
        y = rng.uniform(horizon + 5, h)
        d.rectangle([0, y, w, y + rng.uniform(3, 12)], fill=_muted(rng))
    return img


class _Pen:
    """ImageDraw in figure units: x from the body's centre line, y down from the top of the head,
    both as fractions of the figure height (the feet end near y = 0.975)."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, figure_height: float) -> None:
        self.d, self.cx, self.top, self.figure_height = draw, cx, top, figure_height

    def pt(self, x: float, y: float) -> Point:
        return (self.cx + x * self.figure_height, self.top + y * self.figure_height)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[Point]:
        return [self.pt(min(x0, x1), min(y0, y1)), self.pt(max(x0, x1), max(y0, y1))]

    def w(self, k: float) -> int:
        return max(1, round(k * self.figure_height))

    def poly(self, pts: list[Point], fill: Colour) -> None:
        self.d.polygon([self.pt(*q) for q in pts], fill=fill)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        self.d.ellipse(self.box(x0, y0, x1, y1), fill=fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour, radius: float = 0.0) -> None:
        self.d.rounded_rectangle(self.box(x0, y0, x1, y1), radius=self.w(radius) if radius else 0, fill=fill)

    def line(self, pts: list[Point], k: float, fill: Colour) -> None:
        self.d.line([self.pt(*q) for q in pts], fill=fill, width=self.w(k), joint="curve")

    def limb(self, pts: list[Point], k: float, fill: Colour) -> None:
        self.line(pts, k, fill)
        for x, y in pts:  # round joints and ends
            self.ellipse(x - k / 2, y - k / 2, x + k / 2, y + k / 2, fill)


def _draw_legs(pen: _Pen, person: DemoPerson, rng: random.Random) -> None:
    lo = COLOURS[person.lower_colour]
    for i in (-1, 1):
        hip, ankle = (i * 0.05, 0.47), (i * (0.045 + rng.uniform(0, 0.05)), 0.935)
        pen.limb([hip, ankle], 0.062, person.skin)
        if person.lower in ("jeans", "trousers"):
            pen.limb([hip, ankle], 0.08 if person.lower == "trousers" else 0.072, lo)
            if person.lower == "jeans":  # seams
                pen.line([hip, ankle], 0.01, _shade(lo, 0.7))
        elif person.lower == "shorts":
            pen.limb([hip, (hip[0] + (ankle[0] - hip[0]) * 0.33, 0.62)], 0.085, lo)
        pen.ellipse(ankle[0] - 0.047, 0.915, ankle[0] + 0.047, 0.975, COLOURS[person.shoes_colour])
    if person.lower == "skirt":
        pen.poly([(-0.095, 0.44), (0.095, 0.44), (0.15, 0.67), (-0.15, 0.67)], lo)
    else:
        pen.poly([(-0.095, 0.44), (0.095, 0.44), (0.1, 0.55), (-0.1, 0.55)], lo)


def _draw_torso(pen: _Pen, person: DemoPerson) -> None:
    up = COLOURS[person.upper_colour]
    dark = _shade(up, 0.65) if sum(up) > 150 else _shade(up, 2.5)
    hem, flare = (0.70, 0.14) if person.upper == "coat" else (0.49, 0.1)
    pen.rect(-0.025, 0.11, 0.025, 0.17, person.skin)  # neck
    pen.poly([(-0.12, 0.155), (0.12, 0.155), (flare, hem), (-flare, hem)], up)
    for i in (-1, 1):
        pen.ellipse(i * 0.137, 0.145, i * 0.075, 0.215, up)  # shoulders
    if person.upper == "jacket":  # open front over an inner top
        pen.poly(
            [(-0.03, 0.155), (0.03, 0.155), (0.025, hem), (-0.025, hem)],
            (40, 40, 45) if sum(up) > 600 else (235, 235, 230),
        )
    elif person.upper == "coat":  # buttons and lapels
        for y in (0.26, 0.36, 0.46, 0.56):
            for x in (-0.03, 0.03):
                pen.ellipse(x - 0.009, y - 0.009, x + 0.009, y + 0.009, dark)
        for i in (-1, 1):
            pen.line([(0, 0.16), (i * 0.055, 0.3)], 0.012, dark)
    elif person.upper == "hoodie":  # pocket and drawstrings (the hood is drawn behind the head)
        pen.poly([(-0.07, 0.36), (0.07, 0.36), (0.085, 0.46), (-0.085, 0.46)], _shade(up, 0.8))
        for i in (-1, 1):
            pen.line([(i * 0.02, 0.16), (i * 0.02, 0.27)], 0.009, (235, 235, 235))
    elif person.upper == "shirt":  # collar and buttons
        for i in (-1, 1):
            pen.poly([(i * 0.048, 0.145), (0, 0.2), (i * 0.005, 0.15)], _shade(up, 1.25) if sum(up) < 600 else dark)
        for y in (0.23, 0.29, 0.35, 0.41):
            pen.ellipse(-0.007, y - 0.007, 0.007, y + 0.007, dark)
    elif person.upper == "sweater":  # ribbed hem and crew neck
        pen.rect(-0.1, hem - 0.035, 0.1, hem, dark)
        pen.d.chord(pen.box(-0.04, 0.12, 0.04, 0.19), 0, 180, fill=dark)


def _draw_arms_and_bag(pen: _Pen, person: DemoPerson, rng: random.Random, bag_sign: int) -> None:
    """Both arms (sleeves by garment) and the bag's straps or handle on the side ``bag_sign`` names."""
    up, bag = COLOURS[person.upper_colour], COLOURS[person.bag_colour]
    hands: dict[int, Point] = {}
    for i in (-1, 1):
        holds = person.bag == "handbag" and i == bag_sign
        a = math.radians(rng.uniform(8, 14) if holds else rng.uniform(3, 24))  # upper arm from vertical
        b = a + (0.0 if holds else math.radians(rng.uniform(-25, 10)))  # forearm
        sh = (i * 0.11, 0.18)
        el = (sh[0] + i * 0.16 * math.sin(a), sh[1] + 0.16 * math.cos(a))
        hands[i] = ha = (el[0] + i * 0.15 * math.sin(b), el[1] + 0.15 * math.cos(b))
        if person.upper == "t-shirt":  # short sleeves
            pen.limb([sh, el, ha], 0.042, person.skin)
            pen.limb([sh, (sh[0] + (el[0] - sh[0]) * 0.55, sh[1] + (el[1] - sh[1]) * 0.55)], 0.064, up)
        else:
            pen.limb([sh, el, ha], 0.056, up)
        pen.ellipse(ha[0] - 0.024, ha[1] - 0.02, ha[0] + 0.024, ha[1] + 0.034, person.skin)
    if person.bag == "backpack":  # straps (the pack itself is drawn behind the body)
        for i in (-1, 1):
            pen.line([(i * 0.075, 0.155), (i * 0.085, 0.36)], 0.024, _shade(bag, 0.85))
    elif person.bag == "shoulder bag":
        pen.line([(-bag_sign * 0.08, 0.16), (bag_sign * 0.14, 0.44)], 0.018, _shade(bag, 0.85))
        pen.rect(bag_sign * 0.085, 0.42, bag_sign * 0.22, 0.56, bag, radius=0.015)
    elif person.bag == "handbag":
        hx, hy = hands[bag_sign]
        pen.line([(hx - 0.035, hy + 0.04), (hx, hy), (hx + 0.035, hy + 0.04)], 0.012, _shade(bag, 0.75))
        pen.rect(hx - 0.06, hy + 0.035, hx + 0.06, hy + 0.135, bag, radius=0.012)


def _draw_head(pen: _Pen, person: DemoPerson, face: float) -> None:
    hair = HAIR_COLOURS[person.hair_colour]
    if person.long_hair:
        pen.poly([(-0.07, 0.03), (0.07, 0.03), (0.085, 0.27), (-0.085, 0.27)], hair)
    pen.ellipse(-0.052, 0.01, 0.052, 0.135, person.skin)
    pen.d.chord(pen.box(-0.057 + face, -0.003, 0.057 + face, 0.12), 180, 360, fill=hair)
    for i in (-1, 1):  # sideburns keep the hair colour visible under a hat
        pen.ellipse(i * 0.056, 0.025, i * 0.036, 0.09, hair)
    for i in (-1, 1):
        ex = face + i * 0.021
        pen.ellipse(ex - 0.006, 0.068, ex + 0.006, 0.08, (40, 30, 30))
        if person.glasses:
            pen.d.rectangle(pen.box(ex - 0.017, 0.061, ex + 0.017, 0.087), outline=(12, 12, 12), width=pen.w(0.009))
    if person.glasses:
        pen.line([(face - 0.004, 0.068), (face + 0.004, 0.068)], 0.009, (12, 12, 12))
    if person.hat == "cap":
        hc = COLOURS[person.hat_colour]
        pen.d.chord(pen.box(-0.059, -0.022, 0.059, 0.09), 180, 360, fill=hc)
        side = (face > 0) - (face < 0)  # the peak points where the face turns
        brim = (side * 0.015, 0.025, side * 0.11, 0.05) if side else (-0.065, 0.026, 0.065, 0.05)
        pen.ellipse(*brim, _shade(hc, 0.8))
    elif person.hat == "hat":
        hc = COLOURS[person.hat_colour]
        pen.ellipse(-0.1, 0.018, 0.1, 0.052, hc)
        pen.rect(-0.052, -0.04, 0.052, 0.04, hc, radius=0.015)
        pen.rect(-0.052, 0.022, 0.052, 0.034, _shade(hc, 0.6))


def render_person(person: DemoPerson, rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """One image of ``person``: pose, scale, position, facing, background, lighting and noise vary."""
    w, h = size[0] * _SUPERSAMPLING, size[1] * _SUPERSAMPLING
    img = _background(rng, w, h)
    figure_height = h * rng.uniform(0.70, 0.95)  # figure height
    top = rng.uniform(0.035 * figure_height, max(0.035 * figure_height, h - figure_height))
    pen = _Pen(
        ImageDraw.Draw(img),
        rng.uniform(min(0.22 * figure_height, w / 2), max(w - 0.22 * figure_height, w / 2)),
        top,
        figure_height,
    )
    face = rng.choice((-1, 0, 0, 1)) * 0.012  # slight left/right facing
    bag_sign = 1 if person.bag_side == "left" else -1  # +1: the bag is on the image's right
    if person.bag == "backpack":
        pen.rect(bag_sign * 0.03, 0.13, bag_sign * 0.19, 0.43, COLOURS[person.bag_colour], radius=0.03)
    if person.upper == "hoodie":  # hood behind the head
        pen.ellipse(-0.088, 0.012, 0.088, 0.19, _shade(COLOURS[person.upper_colour], 0.85))
    _draw_legs(pen, person, rng)
    _draw_torso(pen, person)
    _draw_arms_and_bag(pen, person, rng, bag_sign)
    _draw_head(pen, person, face)
    img = img.reduce(_SUPERSAMPLING)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.85, 1.15))  # lighting
    noise = Image.frombytes("RGB", img.size, rng.randbytes(img.width * img.height * 3)).point(lambda v: v * 17 // 256)
    return ImageChops.add(img, noise, 1.0, -8)  # mild noise in [-8, 8]
