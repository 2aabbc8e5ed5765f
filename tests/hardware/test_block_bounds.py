"""Each profiled block's bound: the lower of the compute and memory roofs at its intensity, or overhead far below."""

from __future__ import annotations

from segbench.hardware.bounds import block_bound, profile_bounds

CEILING = {"matmul": {"fp32": {"gflops": 100.0}}, "copy": {"device_copy_gbs": 10.0}}  # ridge at 10 FLOP/byte


def _block(flops: float, elements: float, self_ms: float) -> dict[str, float]:
    return {"flops": flops, "parameter_elements": elements, "activation_elements": 0.0, "self_ms": self_ms}


def test_a_block_below_the_ridge_is_memory_bound_and_above_it_compute_bound() -> None:
    # 1e9 FLOPs over 2e8 bytes (5e7 fp32 elements): 5 FLOP/byte, memory roof 50 GFLOP/s; 25 ms is 40 of them.
    memory = block_bound(_block(1e9, 5e7, 25.0), 1, CEILING, "fp32")
    assert memory["bound"] == "memory" and memory["attainable_gflops"] == 50.0
    assert memory["percent_of_attainable"] == 80.0
    # 1e9 FLOPs over 4e6 bytes: 250 FLOP/byte, compute roof 100 GFLOP/s; 12.5 ms is 80.
    compute = block_bound(_block(1e9, 1e6, 12.5), 1, CEILING, "fp32")
    assert compute["bound"] == "compute" and compute["attainable_gflops"] == 100.0


def test_a_block_far_below_both_roofs_is_overhead_bound() -> None:
    slow = block_bound(_block(1e9, 1e6, 500.0), 1, CEILING, "fp32")  # 2 GFLOP/s against a 100 GFLOP/s roof
    assert slow["bound"] == "overhead" and slow["percent_of_attainable"] == 2.0


def test_int8_moves_a_quarter_of_the_bytes_and_missing_figures_say_why() -> None:
    assert block_bound(_block(1e9, 1e6, 10.0), 1, CEILING, "int8")["bytes"] == 1e6
    assert block_bound(_block(1e9, 1e6, 10.0), 1, CEILING, "fp32")["bytes"] == 4e6
    assert block_bound(_block(0.0, 1e6, 10.0), 1, CEILING, "fp32")["bound_unavailable"].startswith("no FLOPs")
    unmeasured = block_bound(_block(1e9, 1e6, 10.0), 1, None, "fp32")
    assert unmeasured["bound_unavailable"] == "no measured ceiling in this run"
    bounded = profile_bounds({"blocks": [_block(1e9, 5e7, 25.0)]}, 1, CEILING, "fp32")
    assert bounded["blocks"][0]["bound"] == "memory" and bounded["matmul_class"] == "fp32"
