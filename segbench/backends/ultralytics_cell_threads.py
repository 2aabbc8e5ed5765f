"""ultralytics' own paths at segbench's thread count: `ultralytics-predict-cell-threads`,
`ultralytics-onnx-cell-threads`, `ultralytics-openvino-cell-threads`.

ultralytics picks torch's thread count itself (min(8, cores - 1) on a CPU: one thread on two cores), and
its default predict runs the model in torch, so a comparison at one thread count alone flatters one side.
These peers are the same calls with torch put back to the cell's count after each, so a report shows each
of ultralytics' paths both as a user gets it and at the thread count segbench's paths ran with. The
exports' own runtimes (ONNX Runtime, OpenVINO) pick their threads the same way in both.
"""

from __future__ import annotations

from segbench.backends.ultralytics_export import UltralyticsOnnx, UltralyticsOpenVino
from segbench.backends.ultralytics_predict import UltralyticsPredict

SUFFIX = " (torch at the cell's thread count, not ultralytics' pick)"


class UltralyticsPredictCellThreads(UltralyticsPredict):
    name = "ultralytics-predict-cell-threads"
    description = UltralyticsPredict.description + SUFFIX
    cell_threads = True


class UltralyticsOnnxCellThreads(UltralyticsOnnx):
    name = "ultralytics-onnx-cell-threads"
    description = UltralyticsOnnx.description + SUFFIX
    cell_threads = True


class UltralyticsOpenVinoCellThreads(UltralyticsOpenVino):
    name = "ultralytics-openvino-cell-threads"
    description = UltralyticsOpenVino.description + SUFFIX
    cell_threads = True
