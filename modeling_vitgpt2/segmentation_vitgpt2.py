"""Finding the text lines of a page, so that a line reader can read it: a projection-profile segmenter.

The page is made grey and binarised at Otsu's threshold (dark ink on light paper; a light-on-dark page is inverted
first). A small skew (up to 3 degrees either way) is taken out by trying angles and keeping the one whose row
profile of ink pixels is sharpest (`estimate_skew`). Rows holding ink form bands; bands much thinner than the page's
typical line are noise (specks, rules) and dropped. Each line is cut around the middle of the space between its
neighbours' gaps, 1.3 typical line heights tall, so every line is framed alike (the reader sees its text at one
scale, whether or not the line has capitals or descenders); its ink columns give the left and right ends. Lines come
back top to bottom, from the (de-skewed) page. Single-column text only: side-by-side columns are read as one line
each row.
"""

import numpy as np
from PIL import Image, ImageFilter

MAX_SKEW_DEGREES = 3.0


def _otsu(grey: np.ndarray) -> float:
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    weights = histogram.cumsum()
    means = (histogram * np.arange(256)).cumsum()
    total, total_mean = weights[-1], means[-1]
    between = (total_mean * weights - total * means) ** 2 / np.maximum(weights * (total - weights), 1e-9)
    return float(np.argmax(between[:-1]))


def ink_mask(page: Image.Image) -> np.ndarray:
    grey = np.asarray(page.convert("L"), dtype=np.uint8)
    threshold = _otsu(grey)
    ink = grey <= threshold
    if ink.mean() > 0.5:  # light text on a dark background
        ink = ~ink
    return ink


def _profile_sharpness(rows: np.ndarray, columns: np.ndarray, angle: float, tent: np.ndarray) -> float:
    """How sharp the row profile of ink pixels at (`rows`, `columns`) (in bins) is once turned by `angle` degrees."""
    radians = np.radians(angle)
    turned = columns * np.sin(radians) + rows * np.cos(radians)
    turned -= turned.min()
    below = np.floor(turned).astype(np.int64)
    above_share = turned - below
    length = below.max() + 2
    profile = np.bincount(below, 1.0 - above_share, length) + np.bincount(below + 1, above_share, length)
    return float(np.square(np.diff(np.convolve(profile, tent))).sum())


def estimate_skew(ink: np.ndarray) -> float:
    """Degrees to rotate the page (counter-clockwise) so that its lines run level: the angle whose row profile is
    sharpest (sum of squared differences), over half degrees within MAX_SKEW_DEGREES, then quarter degrees around the
    best (15 trials). The ink pixels' centres are projected into bins of a quarter pixel or less (at least 256 over
    the image's height), and the profile smoothed by a tent one pixel wide each side, a pixel's footprint as bilinear
    interpolation sees it: without it the pixel grid itself makes 0 degrees the sharpest for small or short lines
    (rows' edges line up only there). That bias, and a shortcut that answered 0 when half a degree either way was no
    sharper, left 1 in 8 short 12 px lines turned by 0.6 to 2.4 degrees, and 1 in 20 32 px lines turned by 2, off
    level (README, Straightening lines)."""
    rows, columns = np.nonzero(ink)
    if rows.size == 0:
        return 0.0
    bin_size = min(0.25, ink.shape[0] / 256)
    rows, columns = (rows - ink.shape[0] / 2) / bin_size, (columns - ink.shape[1] / 2) / bin_size
    reach = 1.0 / bin_size
    tent = np.clip(1.0 - np.abs(np.arange(-np.ceil(reach), np.ceil(reach) + 1)) / reach, 0.0, None)

    def best(angles):
        angles = np.clip(angles, -MAX_SKEW_DEGREES, MAX_SKEW_DEGREES)
        return float(angles[np.argmax([_profile_sharpness(rows, columns, angle, tent) for angle in angles])])

    coarse = best(np.arange(-MAX_SKEW_DEGREES, MAX_SKEW_DEGREES + 1e-6, 0.5))
    return best(coarse + np.array([0.0, -0.25, 0.25]))


def _steady_ink(image: Image.Image, ink: np.ndarray) -> np.ndarray:
    """The pixels of `ink` that are still ink in a lightly smoothed copy of `image`: letters, without noise or JPEG
    speckle."""
    return ink & ink_mask(image.filter(ImageFilter.BoxBlur(1)))


def _levelled(image: Image.Image, expand: bool) -> tuple[Image.Image, np.ndarray, float]:
    """`image` in grey, turned by `estimate_skew` (the corners it uncovers filled with its median grey), its ink mask,
    and the angle it was turned by (0: already level)."""
    image = image.convert("L")
    ink = ink_mask(image)
    angle = estimate_skew(_steady_ink(image, ink))  # noise and JPEG speckle would otherwise blur every profile
    if angle:
        background = int(np.median(np.asarray(image)))
        image = image.rotate(-angle, resample=Image.BILINEAR, expand=expand, fillcolor=background)
        ink = ink_mask(image)
    return image, ink, angle


def straighten_line(line: Image.Image) -> Image.Image:
    """A text line turned level (skew up to 3 degrees, as for pages) and cut to its text's rows plus a margin of a
    quarter of their height; a level line (or one without ink) is returned as it is. Grey ("L") either way."""
    line, ink, angle = _levelled(line, expand=True)
    if not angle:
        return line
    rows = np.flatnonzero(ink.any(axis=1))
    if rows.size == 0:
        return line
    margin = max(1, round(0.25 * (rows[-1] - rows[0] + 1)))
    return line.crop((0, max(0, int(rows[0]) - margin), line.width, min(line.height, int(rows[-1]) + 1 + margin)))


# A framed line, in x-heights: from 0.9 above the x-height band (ascenders, capitals, accents) to 0.75 below it
# (descenders), and half an x-height of paper left and right of the ink. The x-height is then 38% of the frame.
FRAME_ABOVE, FRAME_BELOW, FRAME_SIDES = 0.9, 0.75, 0.5


def x_height_band(ink: np.ndarray) -> tuple[int, int] | None:
    """Rows (top, bottom) of a line's x-height band, from where its ink columns start and end: most columns of
    lowercase text belong to letters without ascenders or descenders (a, c, e, m, n, o, r, s, u, ...), so the median
    column starts at the x-height and ends on the baseline, whatever the font, however short the line (a profile of
    row densities is not as robust: serifs and crossbars make single rows dense). None for a line without ink."""
    columns = np.flatnonzero(ink.any(axis=0))
    if columns.size == 0:
        return None
    inked = ink[:, columns]
    tops = inked.argmax(axis=0)
    bottoms = ink.shape[0] - inked[::-1].argmax(axis=0)
    top, bottom = int(np.median(tops)), int(np.median(bottoms))
    return (top, bottom) if bottom > top else None


def frame_line(line: Image.Image) -> Image.Image:
    """A text line framed by its own letters: turned level (as `straighten_line`), then cut (or padded with its
    background) to FRAME_ABOVE x-heights above the x-height band, FRAME_BELOW below it, and FRAME_SIDES beside the
    ink. Whatever the font's metrics, the margins of the scan or crop, or the line's height in pixels, the reader
    then sees lowercase letters at one size and one height in the frame (a reader trained on one framing misreads
    another: see README, Reading). A line without ink is returned level and uncut. Grey ("L")."""
    line, ink, _ = _levelled(line, expand=True)
    band = x_height_band(_steady_ink(line, ink))  # noise and JPEG speckle do not count as ink
    if band is None:
        return line
    x_height = band[1] - band[0]
    top, bottom = band[0] - round(FRAME_ABOVE * x_height), band[1] + round(FRAME_BELOW * x_height)
    columns = np.flatnonzero(ink[max(0, top) : max(0, bottom)].any(axis=0))
    if columns.size == 0:
        return line
    side = max(1, round(FRAME_SIDES * x_height))
    box = (int(columns[0]) - side, top, int(columns[-1]) + 1 + side, bottom)
    background = int(np.median(np.asarray(line)[~ink])) if (~ink).any() else 255
    framed = Image.new("L", (box[2] - box[0], box[3] - box[1]), background)
    framed.paste(line.crop((max(0, box[0]), max(0, box[1]), min(line.width, box[2]), min(line.height, box[3]))),
                 (max(0, -box[0]), max(0, -box[1])))  # fmt: skip
    return framed


def find_lines(page: Image.Image, deskew: bool = True) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) of the page's text lines, top to bottom, in the page as given (if
    `deskew`, in the page rotated by `estimate_skew`: use `line_images`, which cuts from the same rotation)."""
    return _lines(page, deskew)[1]


def _lines(page: Image.Image, deskew: bool):
    if deskew:
        page, ink, _ = _levelled(page, expand=False)
    else:
        page = page.convert("L")
        ink = ink_mask(page)
    rows = ink.sum(axis=1)
    text_rows = rows > max(1, 0.002 * ink.shape[1])
    bands, start = [], None
    for y, has_ink in enumerate(np.append(text_rows, False)):
        if has_ink and start is None:
            start = y
        elif not has_ink and start is not None:
            bands.append((start, y))
            start = None
    if not bands:
        return page, []
    typical = float(np.median([bottom - top for top, bottom in bands]))
    # A speck, a rule, or the dot of an i that the row scan cut off is not a line of its own.
    bands = [(top, bottom) for top, bottom in bands if bottom - top >= 0.4 * typical]
    gaps = [(bottom + next_top) / 2 for (_, bottom), (next_top, _) in zip(bands, bands[1:])]
    boxes = []
    for index, (top, bottom) in enumerate(bands):
        above = gaps[index - 1] if index else top - typical / 4
        below = gaps[index] if index < len(gaps) else bottom + typical / 4
        centre, half = (above + below) / 2, 0.65 * typical
        columns = np.flatnonzero(ink[top:bottom].any(axis=0))
        margin = max(2, round(0.25 * typical))
        boxes.append((
            max(0, int(columns[0]) - margin), max(0, round(centre - half)),
            min(page.width, int(columns[-1]) + 1 + margin), min(page.height, round(centre + half)),
        ))  # fmt: skip
    return page, boxes


def line_images(page: Image.Image, deskew: bool = True) -> list[Image.Image]:
    """The page's text lines as images, top to bottom (none for an empty page)."""
    page, boxes = _lines(page, deskew)
    return [page.crop(box) for box in boxes]
