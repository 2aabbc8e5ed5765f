"""A deterministic demo with trained weights, so accuracy and quantization figures mean something.

`python -m segbench.demo generate --out demo-data` writes a synthetic labelled dataset in the plain
layout: crops of the photographs scikit-image ships, with shapes and textures painted on them (class 0
is the photograph; 1 disc, 2 square, 3 triangle, 4 checkered ellipse), 300 training and 100 validation
images of 128 x 128. The same seed always gives the same pixels.

`python -m segbench.demo train --data demo-data` trains Fast-SCNN and SegFormer-B0 on it (seeded, on
the CPU) and YOLOv8n-seg with ultralytics' own trainer on the same images in its polygon format
(written beside the masks as `labels/`), and writes fp16 weights to `segbench/demo/weights/`, which are
committed; the images are not.
"""

from __future__ import annotations

from pathlib import Path

CLASS_NAMES = ("background", "disc", "square", "triangle", "checkered")
SIZE = 128
TRAIN_IMAGES = 300
VAL_IMAGES = 100
WEIGHTS_DIR = Path(__file__).parent / "weights"

# Validation mIoU each committed weights file reached when it was trained (filled in by whoever trains them,
# from `python -m segbench.demo train`'s last line); tests/demo/test_demo.py checks the committed files against it.
# Trained on the 2-core Intel Xeon (AVX-512 VNNI) dev VM, torch 2.14.1, 2 threads: Fast-SCNN 60 epochs in 508 s
# (pixel accuracy 0.979), SegFormer-B0 30 epochs in 625 s (pixel accuracy 0.931; from random weights the
# transformer learns the shapes far more slowly than the CNN: its loss plateaus at ~0.19 from epoch 12).
# YOLOv8n-seg, ultralytics' own trainer, 40 epochs in 532 s (pixel accuracy 0.973; ultralytics' own mask mAP50 0.83).
STATED_MIOU: dict[str, float] = {"fast-scnn": 0.7694, "segformer-b0": 0.3118, "yolov8n-seg": 0.7295}
