"""openvino-throughput: OpenVINO's THROUGHPUT hint, each image of the batch its own infer request.

The LATENCY hint (backend `openvino`) runs one stream with every thread on one request; the THROUGHPUT
hint splits the threads into the streams the CPU plugin picks and is meant to be fed several requests at
once (OpenVINO's "Optimizing for throughput": as many requests in flight as
OPTIMAL_NUMBER_OF_INFER_REQUESTS says). So the graph is reshaped to one image, and a forward of batch B
starts B requests on an `AsyncInferQueue` and waits for all: at batch 1 it is one stream's latency (the
price of the hint), at batch B what the streams sustain together. The record's `backend_info` says how
many streams, requests and threads ran.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from segbench.backends.base import ForwardFn
from segbench.backends.onnxruntime import OutputLayout
from segbench.backends.openvino import OpenVino
from segbench.errors import UnsupportedError


def one_image_graph(ov_model: Any, example: torch.Tensor) -> Any:
    """The graph at batch 1 (each request carries one image); refuses a graph whose batch is baked in."""
    import openvino as ov

    if example.shape[0] == 1:
        return ov_model
    try:
        ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([1, *example.shape[1:]])})
    except Exception as exc:  # noqa: BLE001 (a graph with the batch baked into a reshape cannot run per image)
        raise UnsupportedError(
            f"this graph cannot be reshaped to one image per request ({type(exc).__name__}); use backend openvino"
        ) from exc
    return ov_model


def queued_forward(compiled: Any, layout: OutputLayout) -> ForwardFn:
    """A forward that runs each image of the batch as its own request, as many in flight as the plugin advises."""
    import openvino as ov

    jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, jobs)
    outputs_count = len(compiled.outputs)
    results: dict[int, list[np.ndarray]] = {}

    def collect(request: Any, index: int) -> None:
        # Copies: the request's buffers are reused by the next image it runs.
        results[index] = [np.array(request.get_output_tensor(i).data) for i in range(outputs_count)]

    queue.set_callback(collect)

    def forward(inputs: torch.Tensor) -> Any:
        images = inputs.detach().contiguous().numpy()
        results.clear()
        for index in range(len(images)):
            queue.start_async({0: images[index : index + 1]}, userdata=index, share_inputs=True)
        queue.wait_all()
        ordered = [results[index] for index in range(len(images))]
        return layout.rebuild(
            [torch.from_numpy(np.concatenate([image[i] for image in ordered])) for i in range(outputs_count)]
        )

    return forward


class OpenVinoThroughput(OpenVino):
    name = "openvino-throughput"
    description = (
        "OpenVINO with the THROUGHPUT hint (the streams the CPU plugin picks, one request per image, as many in "
        "flight as it advises); for batches and several cameras, where `openvino` (LATENCY) serves one frame"
    )
    performance_hint = "THROUGHPUT"

    def shape_for_requests(self, ov_model: Any, example: torch.Tensor) -> Any:
        return one_image_graph(ov_model, example)

    def make_forward(self, compiled: Any, layout: OutputLayout) -> ForwardFn:
        return queued_forward(compiled, layout)
