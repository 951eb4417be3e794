"""Depth maps laid out as one captioned image, so a user sees what CLIP sees."""

from __future__ import annotations

import numpy as np


def depth_montage(cloud: np.ndarray, views, *, image_size: int = 224, columns: int = 5):
    """A PIL image of the cloud's depth maps (one tile per view, captioned with elevation/azimuth)."""
    import torch
    from PIL import Image, ImageDraw

    from clip2point.kernels import render_depth

    from ..defaults import POINT_RADIUS
    from ..views import camera_bases

    points = torch.from_numpy(np.ascontiguousarray(cloud, dtype=np.float32))[None]
    maps = render_depth(points, camera_bases(list(views)), image_size=image_size, radius=POINT_RADIUS, channels=1)
    maps = maps[0, :, 0].clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    columns = max(1, min(columns, len(views)))
    rows = -(-len(views) // columns)
    caption, pad = 14, 2
    tile_w, tile_h = image_size + 2 * pad, image_size + caption + 2 * pad
    sheet = Image.new("L", (columns * tile_w, rows * tile_h), color=160)
    draw = ImageDraw.Draw(sheet)
    for k, ((elev, azim), depth) in enumerate(zip(views, maps, strict=True)):
        x, y = (k % columns) * tile_w + pad, (k // columns) * tile_h + pad
        sheet.paste(Image.fromarray(depth, mode="L"), (x, y + caption))
        draw.text((x + 2, y), f"view {k}: elev {elev:g}, azim {azim:g}", fill=0)
    return sheet
