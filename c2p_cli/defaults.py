"""One source of truth for the method's defaults (the CLIP2Point paper; the README describes them in
"The rendering" and "Reproducing the paper", with the table of differences from the official code).

Every checkpoint and exported model records the values it was made with, read from here.
"""

from __future__ import annotations

IMAGE_SIZE = 224
# Splat radius in normalised device coordinates (NDC spans [-1, 1]): about 2.2 px at 224 px.
POINT_RADIUS = 0.02
CAMERA_DISTANCE = 1.0
# Foreground depth is scaled into [0, 200/255] so that the nearest surface is black and the
# farthest is a light grey, distinct from the white (1.0) background.
DEPTH_SCALE = 200.0 / 255.0
BACKGROUND = 1.0

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

NUM_POINTS = 1024
ZERO_SHOT_VIEWS = 6
FEW_SHOT_VIEWS = 10
PRETRAIN_VIEWS = 10

# The official zeroshot.py / fewshot.py prompt: 'image of a ' + name, no period.
PROMPT_TEMPLATE = "image of a {}"

MODEL = "ViT-B-32"
PRETRAINED = "openai"
TINY_MODEL = "c2p-tiny"

UP_AXIS = "z"

# Reading untrusted files: the most points (vertices, triangles) a file may declare, and the
# float32 columns of a KITTI-style .bin scan (KITTI 4: x y z intensity; nuScenes 5: + ring).
MAX_POINTS = 50_000_000
BIN_COLUMNS = 4
