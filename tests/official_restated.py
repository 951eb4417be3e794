"""The official CLIP2Point pipeline, restated for the parity tests from its definition
(PAPER_NOTES.md sec. 1, 2, 4, 6 and the official code it describes), without any clip2point module.

- pytorch3d's `look_at_view_transform` in float32 (camera_position_from_spherical_angles,
  look_at_rotation with F.normalize eps 1e-5 and its near-zero x-axis fallback, T = -R^T C);
- a brute-force `PointsRasterizer` (orthographic, NDC +X left / +Y up, pixel centres
  1 - (2i + 1) / S, a point covers a pixel when dist^2 < r^2, points with view z < 0 skipped, one
  point per pixel = the smallest z, background zbuf -1);
- `Renderer.norm` as render/render.py writes it, then CLIP's 3-channel mean / std;
- `pc_normalize`, the ModelNet rotation `points @ Rx(+90) @ Ry(-90)`, the fixed views;
- zero-shot (zeroshot.py): per-view features L2-normalised, cosines with the prompt features
  summed over the views;
- DPA (models/dpa.py, models/adapter.py): `SimplifiedAdapter` on RAW per-view features of each
  path, the two paths averaged, L2-normalised, dotted with the prompt features (scale 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEWS6 = ((0, 0), (0, 90), (0, 180), (0, 270), (90, 0), (-90, 180))  # (elevation, azimuth)
VIEWS10 = ((0, 0), (90, 0), (180, 0), (270, 0), (225, -45), (225, 45), (315, -45), (315, 45), (0, -90), (0, 90))
MODELNET40 = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower pot", "glass box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night stand", "person", "piano", "plant", "radio", "range hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv stand", "vase", "wardrobe", "xbox",
]


# --- pytorch3d cameras ---------------------------------------------------------------------------


def camera_position_from_spherical_angles(dist, elev, azim):
    elev = math.pi / 180.0 * elev
    azim = math.pi / 180.0 * azim
    x = dist * torch.cos(elev) * torch.sin(azim)
    y = dist * torch.sin(elev)
    z = dist * torch.cos(elev) * torch.cos(azim)
    return torch.stack([x, y, z], dim=1)


def look_at_rotation(camera_position):
    at = torch.zeros_like(camera_position)
    up = torch.tensor([[0.0, 1.0, 0.0]]).expand_as(camera_position)
    z_axis = F.normalize(at - camera_position, eps=1e-5)
    x_axis = F.normalize(torch.cross(up, z_axis, dim=1), eps=1e-5)
    y_axis = F.normalize(torch.cross(z_axis, x_axis, dim=1), eps=1e-5)
    is_close = torch.isclose(x_axis, torch.tensor(0.0), atol=5e-3).all(dim=1, keepdim=True)
    if is_close.any():
        replacement = F.normalize(torch.cross(y_axis, z_axis, dim=1), eps=1e-5)
        x_axis = torch.where(is_close, replacement, x_axis)
    R = torch.cat((x_axis[:, None, :], y_axis[:, None, :], z_axis[:, None, :]), dim=1)
    return R.transpose(1, 2)


def look_at_view_transform(dist, views):
    """(R [V, 3, 3], T [V, 3]) in float32 for (elevation, azimuth) views at distance `dist`."""
    elev = torch.tensor([float(e) for e, _ in views])
    azim = torch.tensor([float(a) for _, a in views])
    C = camera_position_from_spherical_angles(torch.full_like(elev, float(dist)), elev, azim)
    R = look_at_rotation(C)
    T = -torch.bmm(R.transpose(1, 2), C[:, :, None])[:, :, 0]
    return R, T


# --- pytorch3d's PointsRasterizer (brute force) and CLIP2Point's Renderer ------------------------


def rasterize_points(points: torch.Tensor, views, dist: float = 1.0, size: int = 224, radius: float = 0.02) -> torch.Tensor:
    """zbuf [V, S, S] of one cloud [N, 3]: the nearest view z among points within `radius` (NDC) of
    each pixel centre, -1 where none."""
    R, T = look_at_view_transform(dist, views)
    view = points[None].float() @ R + T[:, None, :]  # X_view = X_world R + T (row vectors)
    centres = 1.0 - (2.0 * torch.arange(size, dtype=torch.float32) + 1.0) / size  # +X left, +Y up
    zbufs = []
    for v in range(len(views)):
        x, y, z = view[v, :, 0], view[v, :, 1], view[v, :, 2]
        keep = z >= 0
        x, y, z = x[keep], y[keep], z[keep]
        rows = []
        for start in range(0, size, 32):
            cy = centres[start:start + 32]
            d2 = (centres[None, :, None] - x[None, None, :]) ** 2 + (cy[:, None, None] - y[None, None, :]) ** 2
            depth = torch.where(d2 < radius * radius, z[None, None, :], torch.tensor(float("inf")))
            nearest = depth.amin(dim=-1) if len(z) else torch.full((len(cy), size), float("inf"))
            rows.append(torch.where(torch.isfinite(nearest), nearest, torch.tensor(-1.0)))
        zbufs.append(torch.cat(rows))
    return torch.stack(zbufs)


def renderer_norm(img: torch.Tensor) -> torch.Tensor:
    """render/render.py `Renderer.norm`: [B, H, W] zbuf -> [B, 3, H, W] CLIP-normalised maps
    (in place on a copy, with its detach() sharing storage, as the original)."""
    img = img.clone()
    detached_img = img.detach()
    B, H, W = detached_img.shape
    mask = detached_img > 0
    batch_points = detached_img.reshape(B, -1)
    batch_max, _ = torch.max(batch_points, dim=1, keepdim=True)
    batch_max = batch_max.unsqueeze(-1).repeat(1, H, W)
    detached_img[~mask] = 1.0
    batch_points = detached_img.reshape(B, -1)
    batch_min, _ = torch.min(batch_points, dim=1, keepdim=True)
    batch_min = batch_min.unsqueeze(-1).repeat(1, H, W)
    img = img.sub_(batch_min).div_(batch_max) * 200.0 / 255.0
    img[~mask] = 1.0
    return clip_normalize(img.unsqueeze(1).repeat(1, 3, 1, 1))


def clip_normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def pc_normalize(pc: torch.Tensor) -> torch.Tensor:
    centroid = torch.mean(pc, dim=0)
    pc = pc - centroid
    m = torch.max(torch.sqrt(torch.sum(pc**2, dim=1)))
    return pc / m


def modelnet_rotation(points: torch.Tensor) -> torch.Tensor:
    """`points @ rota1 @ rota2`: rota1 = +90 deg about x, rota2 = -90 deg about y (standard matrices)."""
    rx = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    ry = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return points @ rx @ ry


def render(points: torch.Tensor, views, rot: bool) -> torch.Tensor:
    """[V, 3, S, S] network input of one cloud, as the official zero-shot / DPA forward makes it."""
    pts = pc_normalize(points.float())
    if rot:
        pts = modelnet_rotation(pts)
    return renderer_norm(rasterize_points(pts, views))


# --- zero-shot and DPA ---------------------------------------------------------------------------


def prompt_features(model, tokenizer, names) -> torch.Tensor:
    with torch.no_grad():
        feats = model.encode_text(tokenizer(["image of a " + n for n in names])).float()
    return feats / feats.norm(dim=-1, keepdim=True)


def zero_shot_logits(visual, prompt_feats, images: torch.Tensor) -> torch.Tensor:
    """zeroshot.py: images [B, V, 3, S, S] -> per-view features normalised, cosines summed over views."""
    b, n, c, h, w = images.shape
    with torch.no_grad():
        feats = visual(images.reshape(-1, c, h, w)).float()
    feats = feats / feats.norm(dim=-1, keepdim=True)
    return (feats @ prompt_feats.t()).reshape(b, n, -1).sum(dim=1)


class BatchNormPoint(nn.Module):
    def __init__(self, feat_size):
        super().__init__()
        self.feat_size = feat_size
        self.bn = nn.BatchNorm1d(feat_size)

    def forward(self, x):
        s1, s2, s3 = x.shape
        return self.bn(x.reshape(s1 * s2, self.feat_size)).reshape(s1, s2, s3)


class SimplifiedAdapter(nn.Module):
    def __init__(self, num_views=10, in_features=512):
        super().__init__()
        self.num_views, self.in_features = num_views, in_features
        self.fusion_ratio = nn.Parameter(torch.tensor([0.5] * num_views))
        self.global_f = nn.Sequential(
            BatchNormPoint(in_features), nn.Dropout(0.075), nn.Flatten(),
            nn.Linear(in_features * num_views, in_features), nn.BatchNorm1d(in_features), nn.ReLU(),
            nn.Dropout(0.075), nn.Linear(in_features, in_features),
        )

    def forward(self, feat):
        img_feat = feat.reshape(-1, self.num_views, self.in_features)
        return self.global_f(img_feat * self.fusion_ratio.reshape(1, -1, 1))


def dpa_logits(pre_model, ori_model, adapter1, adapter2, prompt_feats, images: torch.Tensor) -> torch.Tensor:
    """models/dpa.py + fewshot.py eval: images [B, V, 3, S, S] -> img_feats @ prompt_feats.T."""
    b, n, c, h, w = images.shape
    imgs = images.reshape(b * n, c, h, w)
    with torch.no_grad():
        img_feat1 = adapter1(pre_model(imgs))
        img_feat2 = adapter2(ori_model(imgs))
        img_feats = (img_feat1 + img_feat2) * 0.5
        img_feats = img_feats / img_feats.norm(dim=-1, keepdim=True)
    return img_feats @ prompt_feats.t()
