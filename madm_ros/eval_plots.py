"""The figures of an evaluation report, drawn with OpenCV: per-class IoU bars, confusion matrix, latency histogram, contact sheet.

OpenCV is already a core dependency (the nodes and preprocessing need it); matplotlib is not, and
adding it for three charts would grow every install, including the Jetson's. The charts are plain
PNGs readable in any viewer and embedded by ``report.md``; the contact sheet shows what the masks
look like, which no score does. The demo's side-by-side panels and their animation
(:func:`side_by_side_figure`, :func:`write_animation`) are drawn here for the same reasons.
``cv2`` is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from madm_ros.palettes import LabelSet

__all__ = ["PANEL_GAP", "PANEL_TITLE_HEIGHT", "confusion_figure", "contact_sheet_figure", "iou_bars_figure", "latency_figure",
           "legend_height", "side_by_side_figure", "write_animation"]

WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (120, 120, 120), (225, 225, 225)
FONT_SCALE = 0.45
PANEL_TITLE_HEIGHT = 20
"""Height of the title bar above the images of a :func:`side_by_side_figure` (the images start at this row)."""
PANEL_GAP = 4
"""White columns between the images of a :func:`side_by_side_figure`."""
_LEGEND_ROW, _SWATCH, _LEGEND_PAD, _LEGEND_GAP = 18, 10, 6, 14


def _text(image: np.ndarray, text: str, xy: tuple[int, int], color: tuple[int, int, int] = BLACK,
          scale: float = FONT_SCALE, anchor: str = "left") -> None:
    """Draw ``text`` with its baseline at ``xy``; ``anchor`` left, right or centre (of the text's width)."""
    import cv2

    (width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = xy[0] - (width if anchor == "right" else width // 2 if anchor == "centre" else 0)
    cv2.putText(image, text, (int(x), int(xy[1])), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _text_width(text: str, scale: float = FONT_SCALE) -> int:
    import cv2

    return int(cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0])


def iou_bars_figure(class_names: Sequence[str], iou: Sequence[float | None], colors: np.ndarray, title: str) -> np.ndarray:
    """Horizontal bars of per-class IoU in percent (classes without pixels are marked "–"), as an RGB image."""
    import cv2

    row, left, bar_width = 24, 12 + max(_text_width(n) for n in class_names), 400
    height, width = 50 + row * len(class_names) + 30, left + bar_width + 90
    image = np.full((height, width, 3), WHITE, np.uint8)
    _text(image, title, (10, 24), scale=0.55)
    top = 40
    for tick in range(0, 101, 20):
        x = left + 8 + bar_width * tick // 100
        cv2.line(image, (x, top), (x, top + row * len(class_names)), LIGHT, 1)
        _text(image, f"{tick}", (x, top + row * len(class_names) + 18), GREY, anchor="centre")
    for i, (name, value) in enumerate(zip(class_names, iou)):
        y = top + i * row
        _text(image, name, (left - 4, y + 17), anchor="right")
        if value is None or not np.isfinite(value):
            _text(image, "-", (left + 14, y + 17), GREY)
            continue
        x1 = left + 8 + round(bar_width * float(value))
        cv2.rectangle(image, (left + 8, y + 4), (max(x1, left + 9), y + row - 4), tuple(int(c) for c in colors[i]), -1)
        cv2.rectangle(image, (left + 8, y + 4), (max(x1, left + 9), y + row - 4), GREY, 1)
        _text(image, f"{100 * float(value):.1f}", (x1 + 6, y + 17))
    return image


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> np.ndarray:
    """Row-normalised confusion matrix (ground truth rows, prediction columns, last column "unlabelled") as RGB."""
    import cv2

    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(class_names)
    columns = [*class_names, "unlabelled"][: matrix.shape[1]]
    cell = 34
    left = 12 + max(_text_width(n) for n in class_names)
    label_height = 12 + max(_text_width(n) for n in columns)
    top = 40 + label_height
    image = np.full((top + cell * k + 40, left + cell * len(columns) + 20, 3), WHITE, np.uint8)
    _text(image, title, (10, 24), scale=0.55)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, matrix / np.maximum(totals, 1), np.nan)
    for r in range(k):
        _text(image, class_names[r], (left - 4, top + r * cell + cell // 2 + 5), anchor="right")
        for c in range(len(columns)):
            x, y = left + c * cell, top + r * cell
            value = share[r, c]
            shade = 255 if not np.isfinite(value) else round(255 * (1 - float(value)))
            color = (shade, shade, 255) if c == r else (255, shade, shade) if c == len(columns) - 1 else (shade, shade, shade)
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), color, -1)
            cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), LIGHT, 1)
            if np.isfinite(value) and value >= 0.005:
                _text(image, f"{round(100 * value)}", (x + cell // 2, y + cell // 2 + 4),
                      WHITE if value > 0.55 else BLACK, scale=0.35, anchor="centre")
    for c, name in enumerate(columns):  # column labels: drawn horizontally on a strip, then turned upright
        strip = np.full((cell, label_height, 3), WHITE, np.uint8)
        _text(strip, name, (label_height - 6, cell // 2 + 5), anchor="right")
        upright = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
        image[top - label_height - 4: top - 4, left + c * cell: left + (c + 1) * cell] = upright
    _text(image, "rows: ground truth, columns: prediction, % of the row's pixels", (10, image.shape[0] - 14), GREY)
    return image


def latency_figure(latencies_ms: Sequence[float], title: str, bins: int = 30) -> np.ndarray:
    """Histogram of per-frame processing times with the p50 and p99 marked, as RGB."""
    import cv2

    values = np.asarray(latencies_ms, dtype=np.float64)
    width, height, left, bottom, top = 640, 320, 56, 44, 40
    image = np.full((height, width, 3), WHITE, np.uint8)
    _text(image, title, (10, 24), scale=0.55)
    plot_w, plot_h = width - left - 20, height - top - bottom
    if values.size == 0:
        _text(image, "no frames", (left + plot_w // 2, top + plot_h // 2), GREY, anchor="centre")
        return image
    hi = float(values.max()) if values.max() > values.min() else float(values.min()) + 1.0
    lo = float(values.min()) if values.max() > values.min() else max(0.0, float(values.min()) - 1.0)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    peak = max(int(counts.max()), 1)

    def x_of(v: float) -> int:
        return left + round((float(v) - lo) / (hi - lo) * plot_w)

    for i, count in enumerate(counts):
        if count:
            y = top + plot_h - round(float(count) / peak * plot_h)
            cv2.rectangle(image, (x_of(edges[i]), y), (max(x_of(edges[i + 1]) - 1, x_of(edges[i])), top + plot_h),
                          (70, 130, 180), -1)
    cv2.line(image, (left, top + plot_h), (left + plot_w, top + plot_h), BLACK, 1)
    cv2.line(image, (left, top), (left, top + plot_h), BLACK, 1)
    for v in np.linspace(lo, hi, 5):
        _text(image, f"{v:.1f}", (x_of(v), top + plot_h + 18), GREY, anchor="centre")
    _text(image, "ms per frame", (left + plot_w // 2, height - 8), GREY, anchor="centre")
    _text(image, f"{peak}", (left - 6, top + 10), GREY, anchor="right")
    _text(image, "0", (left - 6, top + plot_h), GREY, anchor="right")
    legend_x = width - 10
    for name, color in (("p99", (200, 0, 0)), ("p50", (0, 140, 0))):  # legend right of the title, lines in the plot
        v = float(np.percentile(values, int(name[1:])))
        cv2.line(image, (x_of(v), top), (x_of(v), top + plot_h), color, 1)
        label = f"{name} {v:.1f} ms"
        _text(image, label, (legend_x, 24), color, anchor="right")
        legend_x -= _text_width(label) + 16
    return image


def contact_sheet_figure(tiles: Sequence[Sequence[np.ndarray]], captions: Sequence[str], title: str,
                         panel_height: int = 160, columns: int = 4, label_set: LabelSet | None = None) -> np.ndarray:
    """A grid of tiles, each one or more RGB panels side by side (e.g. overlay | ground truth) over its caption, as RGB.

    Panels are scaled to ``panel_height`` keeping their aspect (grey panels are drawn as RGB). With
    ``label_set`` a strip below names every class with its colour, so the sheet reads on its own.
    """
    import cv2

    if len(tiles) != len(captions):
        raise ValueError(f"{len(tiles)} tiles but {len(captions)} captions")
    gap, caption_h, top = 8, 22, 40
    rows_of_panels = []
    for panels in tiles:
        scaled = []
        for panel in panels:
            rgb = np.repeat(panel[:, :, None], 3, axis=2) if panel.ndim == 2 else panel
            width = max(1, round(rgb.shape[1] * panel_height / max(rgb.shape[0], 1)))
            scaled.append(cv2.resize(np.ascontiguousarray(rgb), (width, panel_height), interpolation=cv2.INTER_AREA))
        joined = scaled[0]
        for panel in scaled[1:]:
            joined = np.concatenate([joined, np.full((panel_height, 4, 3), WHITE, np.uint8), panel], axis=1)
        rows_of_panels.append(joined)
    if not rows_of_panels:
        image = np.full((top + 60, 400, 3), WHITE, np.uint8)
        _text(image, title, (10, 24), scale=0.55)
        _text(image, "no frames", (200, top + 30), GREY, anchor="centre")
        return image
    columns = max(1, min(columns, len(rows_of_panels)))
    cell_w = max(max(t.shape[1] for t in rows_of_panels), max(_text_width(c) for c in captions)) + gap
    cell_h = panel_height + caption_h + gap
    rows = -(-len(rows_of_panels) // columns)
    width = gap + columns * cell_w
    legend = legend_height(label_set.class_names, width) if label_set is not None else 0
    image = np.full((top + rows * cell_h + gap + legend, width, 3), WHITE, np.uint8)
    _text(image, title, (10, 24), scale=0.55)
    for i, (tile, caption) in enumerate(zip(rows_of_panels, captions)):
        x, y = gap + (i % columns) * cell_w, top + (i // columns) * cell_h
        image[y: y + panel_height, x: x + tile.shape[1]] = tile
        _text(image, caption, (x, y + panel_height + 16))
    if label_set is not None:
        _draw_legend(image, top + rows * cell_h + gap, range(label_set.num_classes), label_set)
    return image


def _legend_item_width(name: str) -> int:
    return _SWATCH + 4 + _text_width(name)


def _flow(widths: Sequence[int], width: int) -> list[tuple[int, int]]:
    """(x, row) of items of these widths laid left to right in a strip ``width`` wide, wrapping to a new row when full."""
    x, row, places = _LEGEND_PAD, 0, []
    for item in widths:
        if x > _LEGEND_PAD and x + item > width - _LEGEND_PAD:
            x, row = _LEGEND_PAD, row + 1
        places.append((x, row))
        x += item + _LEGEND_GAP
    return places


def legend_height(class_names: Sequence[str], width: int) -> int:
    """Height of a legend strip ``width`` wide with room for all of ``class_names``.

    Greedy wrapping never needs more rows for a subset in the same order, so a strip sized for the
    whole label set holds the classes of any frame, and every figure of a run has one size (the
    frames of an animation must).
    """
    places = _flow([_legend_item_width(n) for n in class_names], width)
    return (1 + max((row for _, row in places), default=0)) * _LEGEND_ROW + _LEGEND_PAD


def side_by_side_figure(images: Sequence[np.ndarray], titles: Sequence[str], legend: Sequence[int],
                        label_set: LabelSet) -> np.ndarray:
    """Images of one height side by side under their titles, over a strip naming the classes ``legend``, as RGB.

    The images are :data:`PANEL_GAP` apart and keep their pixels (grey ones are drawn as RGB), so a
    figure can be compared with the PNGs it was made from; the strip shows each class of ``legend``
    (ids of ``label_set``) with its colour and is :func:`legend_height` high.
    """
    if len(images) != len(titles):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    rgb = [np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image for image in images]
    height = rgb[0].shape[0]
    if any(image.shape[0] != height for image in rgb):
        raise ValueError(f"images of one figure need one height, got {[image.shape[0] for image in rgb]}")
    width = sum(image.shape[1] for image in rgb) + PANEL_GAP * (len(rgb) - 1)
    figure = np.full((PANEL_TITLE_HEIGHT + height + legend_height(label_set.class_names, width), width, 3), WHITE, np.uint8)
    left = 0
    for image, title in zip(rgb, titles):
        figure[PANEL_TITLE_HEIGHT: PANEL_TITLE_HEIGHT + height, left: left + image.shape[1]] = image
        _text(figure, title, (left + 4, PANEL_TITLE_HEIGHT - 6))
        left += image.shape[1] + PANEL_GAP
    _draw_legend(figure, PANEL_TITLE_HEIGHT + height, legend, label_set)
    return figure


def _draw_legend(figure: np.ndarray, top: int, classes: Sequence[int], label_set: LabelSet) -> None:
    """Swatch and name of each of ``classes`` (ids of ``label_set``), flowed across ``figure`` from row ``top`` down."""
    import cv2

    names = [label_set.class_names[c] for c in classes]
    for c, name, (x, line) in zip(classes, names, _flow([_legend_item_width(n) for n in names], figure.shape[1])):
        y = top + _LEGEND_PAD + line * _LEGEND_ROW
        color = tuple(int(v) for v in label_set.colors[c])
        cv2.rectangle(figure, (x, y + 1), (x + _SWATCH - 1, y + _SWATCH), color, -1)
        _text(figure, name, (x + _SWATCH + 4, y + _SWATCH))


def write_animation(stem: Path, frames: Sequence[np.ndarray], fps: float) -> Path | None:
    """Write RGB frames of one size as a looping animated GIF ``stem.gif``; return its path (``None``: no frames).

    A GIF plays inline on GitHub and in every browser. Pillow writes it, each frame on its own
    256-colour palette without dithering, which keeps figures of flat class colours exact and small;
    OpenCV's own GIF encoder dithers flat colours and is three times larger. The file appears whole.
    """
    from PIL import Image

    from madm_ros.atomic_io import atomic_write_bytes

    if not frames:
        return None
    images = [Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
              for frame in frames]
    data = io.BytesIO()
    images[0].save(data, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return atomic_write_bytes(stem.with_suffix(".gif"), data.getvalue())
