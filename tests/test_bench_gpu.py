"""The GPU benchmark's timing, with a stand-in CUDA module (no GPU needed)."""

from __future__ import annotations

import argparse

import pytest

from l1backends.bench import gpu


class FakeCuda:
    """Events that log when they are recorded, and a fixed elapsed time."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.events = 0

    def event(self) -> FakeEvent:
        self.events += 1
        return FakeEvent(self.log, self.events)

    @staticmethod
    def event_elapsed_time(start: FakeEvent, stop: FakeEvent) -> float:
        assert start.recorded and stop.recorded and stop.synchronized
        return 12.0  # milliseconds


class FakeEvent:
    def __init__(self, log: list[str], number: int) -> None:
        self.log, self.number = log, number
        self.recorded = self.synchronized = False

    def record(self, stream: FakeStream) -> None:
        self.recorded = True
        self.log.append(f"record {self.number}")

    def synchronize(self) -> None:
        self.synchronized = True
        self.log.append(f"wait {self.number}")


class FakeStream:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    def synchronize(self) -> None:
        self.log.append("sync")


def test_calls_run_back_to_back_between_one_pair_of_events(monkeypatch) -> None:
    log: list[str] = []
    clock = iter([0.0, 0.001, 1.0, 1.003])  # issue times of the two repetitions
    monkeypatch.setattr(gpu, "perf_counter", lambda: next(clock))
    timing = gpu.time_calls(
        FakeCuda(log), FakeStream(log), lambda: log.append("call"), calls=10, repeat=2, warmup=3
    )
    assert log[:4] == ["call"] * 3 + ["sync"]
    repetition = ["record 1", *["call"] * 10, "record 2", "wait 2"]
    assert log[4:] == repetition + [
        entry.replace("1", "3").replace("2", "4") for entry in repetition
    ]
    assert timing.device == pytest.approx(12.0 / 1e3 / 10)  # event time over the 10 calls
    assert timing.host == pytest.approx(0.0002)  # median of 0.1 ms and 0.3 ms per call


def test_fewer_than_ten_calls_per_event_pair_are_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="at least 10"):
        gpu._calls("9")
    assert gpu._parser().parse_args([]).calls == 10


def test_rows_report_time_host_overhead_bandwidth_and_the_copy_reference() -> None:
    row = gpu._row("numba-cuda mean", gpu.Timing(1e-3, 5e-6), 3 * 10**9, 3.0, 3.2, 0.85)
    assert "1.000 ms" in row and "5.0 us" in row and "3.000 TB/s" in row
    assert "100.0%" in row and "93.8% of copy" in row and "target 85%: met" in row


def test_without_a_gpu_the_benchmark_says_why(monkeypatch, capsys) -> None:
    cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")
    from l1backends._backends import numba_cuda

    monkeypatch.setattr(cuda.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr(numba_cuda, "probe", lambda: "no usable CUDA device: (the stand-in)")
    assert gpu.run(["--n", "1000"]) == 2
    assert "skipped: no usable CUDA device: (the stand-in)" in capsys.readouterr().err
