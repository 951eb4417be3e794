"""Depth maps laid out as one captioned image, so a user sees what CLIP sees."""

from __future__ import annotations

import math

import numpy as np

FRAME = 160  # grey between tiles: the maps' background is white


def depth_maps(cloud: np.ndarray, views, *, image_size: int = 224) -> np.ndarray:
    """The cloud's depth maps [V, S, S] float32, exactly as the encoder receives them before CLIP's
    mean / std normalisation: covered pixels (d - min) / max * 200/255, the background 1.0."""
    import torch

    from clip2point.kernels import render_depth

    from ..defaults import POINT_RADIUS
    from ..views import camera_bases

    points = torch.from_numpy(np.ascontiguousarray(cloud, dtype=np.float32))[None]
    maps = render_depth(points, camera_bases(list(views)), image_size=image_size, radius=POINT_RADIUS, channels=1)
    return maps[0, :, 0].numpy()


def grid_shape(n_views: int, columns: int | None = None) -> tuple[int, int]:
    """(columns, rows) of the montage: two rows by default (6 views 3 x 2, 10 views 5 x 2)."""
    if columns is None:
        columns = math.ceil(n_views / 2)
    columns = max(1, min(columns, n_views))
    return columns, math.ceil(n_views / columns)


def depth_montage(maps: np.ndarray, views, *, columns: int | None = None, title: str = ""):
    """A greyscale PIL image of depth maps [V, S, S] (one tile per view, captioned with its
    elevation / azimuth), `title` above them."""
    from PIL import Image, ImageDraw

    from ._plots import font, text_box

    size = maps.shape[-1]
    pixels = (np.clip(maps, 0, 1) * 255).round().astype(np.uint8)
    columns, rows = grid_shape(len(views), columns)
    caption_face, title_face = font(max(9, min(13, size // 16))), font(max(10, min(15, size // 14)))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    caption, pad = text_box(probe, "view 0: elev", caption_face)[1] + 8, 3
    header = text_box(probe, title, title_face)[1] + 12 if title else 0
    tile_w, tile_h = size + 2 * pad, size + caption + 2 * pad
    width = max(columns * tile_w, text_box(probe, title, title_face)[0] + 12 if title else 0)
    sheet = Image.new("L", (width, header + rows * tile_h), color=FRAME)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 6), title, fill=0, font=title_face)
    for k, ((elev, azim), depth) in enumerate(zip(views, pixels, strict=True)):
        x, y = (k % columns) * tile_w + pad, header + (k // columns) * tile_h + pad
        sheet.paste(Image.fromarray(depth), (x, y + caption))
        draw.text((x + 2, y + caption / 2), f"view {k}: elev {elev:g}, azim {azim:g}", fill=0, font=caption_face, anchor="lm")
    return sheet
