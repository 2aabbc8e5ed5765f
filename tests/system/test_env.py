"""The run's fingerprint: which source tree a run came from (segbench.system.env)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from segbench.system.env import fingerprint, git_state


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_a_dirty_tree_is_recorded_with_a_hash_of_its_diff(tmp_path: Path) -> None:
    """Issue 27 item 13: a run from a dirty tree recorded only '<commit>-dirty', so two different edits of one commit
    read the same. The fingerprint now holds a hash of `git diff HEAD` and whether untracked files exist."""
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    clean = git_state(tmp_path)
    assert clean["dirty"] is False and clean["diff_sha256"] is None and clean["untracked_files"] is False
    assert len(clean["commit"]) == 40
    (tmp_path / "a.py").write_text("x = 2\n")
    first = git_state(tmp_path)
    (tmp_path / "a.py").write_text("x = 3\n")
    second = git_state(tmp_path)
    assert first["dirty"] and second["dirty"] and first["diff_sha256"] != second["diff_sha256"]
    (tmp_path / "new.py").write_text("")
    assert git_state(tmp_path)["untracked_files"] is True
    assert git_state(tmp_path / "not-a-repo") == dict.fromkeys(("commit", "dirty", "diff_sha256", "untracked_files"))


def test_the_fingerprint_carries_the_source_state() -> None:
    source = fingerprint()["segbench"]
    assert {"version", "commit", "dirty", "diff_sha256", "untracked_files"} <= set(source)
    assert source["commit"] is None or source["commit"].endswith("-dirty") == bool(source["dirty"])


class _FakeNvml:
    """pynvml's three calls device_identity makes, as an old pynvml returns them (bytes)."""

    @staticmethod
    def nvmlDeviceGetHandleByIndex(index: int) -> int:
        return index

    @staticmethod
    def nvmlDeviceGetName(handle: int) -> bytes:
        return b"NVIDIA H200"

    @staticmethod
    def nvmlDeviceGetUUID(handle: int) -> bytes:
        return b"GPU-5f3c0000-1111-2222-3333-444455556666"


def test_a_gpu_is_named_by_uuid_without_a_cuda_context(monkeypatch) -> None:
    """Issue 27 item 13: memory probes and GPU run logs named no device, UUID or time. The fit search's parent asks
    NVML only (a CUDA context there would hold the memory its probes measure)."""
    import torch

    from segbench.measure import nvml
    from segbench.system.env import device_identity, identity_line

    def no_context(*args: object) -> None:
        raise AssertionError("device_identity(cuda_context=False) touched CUDA")

    monkeypatch.setattr(nvml, "module", lambda: _FakeNvml)
    monkeypatch.setattr(torch.cuda, "get_device_properties", no_context)
    identity = device_identity("cuda:1", cuda_context=False)
    assert identity["name"] == "NVIDIA H200" and identity["uuid"] == "GPU-5f3c0000-1111-2222-3333-444455556666"
    assert identity["time"].endswith("+00:00")
    assert identity_line(identity).startswith("cuda:1: NVIDIA H200 (GPU-5f3c0000-")
    cpu = device_identity("cpu")
    assert cpu["uuid"] is None and cpu["name"] and identity_line(cpu).startswith("cpu: ")


def test_a_cell_log_starts_with_the_device_and_time(write_suite, tmp_path: Path) -> None:
    from segbench.results.runs import load_run
    from segbench.run.runner import run_suite
    from segbench.suite.schema import load_suite

    suite = write_suite()
    outcome = run_suite(load_suite(suite), suite, out_dir=tmp_path / "results")
    [log] = list((outcome.run_dir / "logs").glob("*.log"))
    first = log.read_text().splitlines()[0]
    assert first.startswith("segbench cell test-tiny on cpu: ") and "+00:00" in first
    assert load_run(outcome.run_dir).meta["fingerprint"]["segbench"]["commit"]
