"""Energy, CO2, size and latency measurement.

NVML is faked at the library boundary (this machine has no NVIDIA GPU); that fake is the only
mock in the suite. RAPL is read from a fake sysfs tree written by the test.
"""

from __future__ import annotations

import math
import time

import pytest

from squeeze import measure, telemetry


class FakeNvml:
    """Stands in for the ``pynvml`` module: two GPUs with scripted power and energy counters."""

    class NVMLError_LibraryNotFound(Exception):
        pass

    def __init__(self, power_mw=None, energy_mj=None, counter=True, missing=False):
        self.devices = {"GPU-aaa": 0, "GPU-bbb": 1}
        self.power_mw, self.energy_mj, self.counter, self.missing = power_mw or {}, energy_mj or {}, counter, missing
        self.power_calls = 0

    def nvmlInit(self):
        if self.missing:
            raise self.NVMLError_LibraryNotFound("libnvidia-ml.so.1 not found")

    def nvmlDeviceGetHandleByIndex(self, i):
        return ("h", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("h", self.devices[uuid])

    def nvmlDeviceGetUUID(self, handle):
        return {v: k for k, v in self.devices.items()}[handle[1]]

    def nvmlDeviceGetPowerUsage(self, handle):
        self.power_calls += 1
        seq = self.power_mw[handle[1]]
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counter:
            raise RuntimeError("not supported")
        return self.energy_mj[handle[1]].pop(0)


def test_trapezoid_integrates_known_steps_exactly():
    # 100 W for 2 s, ramp to 300 W over 2 s, 300 W for 1 s: 200 + 400 + 300 = 900 J
    samples = [(0, 100), (2, 100), (4, 300), (5, 300)]
    assert telemetry.trapezoid_joules(samples) == pytest.approx(900.0)


def test_meter_samples_and_prefers_the_energy_counter(tmp_path):
    nvml = FakeNvml(power_mw={1: [150_000]}, energy_mj={1: [1_000_000, 1_000_000 + 7_200_000]})
    meter = telemetry.EnergyMeter(power_interval_s=0.01, gpu_ids=["GPU-bbb"], nvml=nvml, rapl_root=str(tmp_path))
    meter.start()
    time.sleep(0.1)
    meter.stop()
    m, tags = meter.metrics()
    assert tags["energy/gpu_source"] == "nvml_counter" and tags["energy/gpus"] == "GPU-bbb"
    assert m["energy/gpu_kwh_counter"] == pytest.approx(7200.0 / 3.6e6)  # 7,200 J from the counter delta
    assert m["energy/gpu_kwh"] == m["energy/gpu_kwh_counter"]
    assert nvml.power_calls >= 4  # start, several background samples, stop
    assert m["power/gpu_avg_w"] == pytest.approx(150.0)
    assert m["energy/gpu_kwh_sampled"] == pytest.approx(150.0 * (meter.t1 - meter.t0) / 3.6e6)
    assert m["energy/gpu_disagreement"] == pytest.approx((m["energy/gpu_kwh_sampled"] - m["energy/gpu_kwh_counter"]) / m["energy/gpu_kwh_counter"])
    assert math.isnan(m["energy/cpu_kwh"]) and tags["energy/cpu_source"] == "unavailable"


def test_meter_without_counter_integrates_the_trace_and_scales_by_share(tmp_path):
    nvml = FakeNvml(power_mw={0: [100_000]}, counter=False)
    meter = telemetry.EnergyMeter(power_interval_s=0.01, gpu_share=0.5, gpu_ids=["0"], nvml=nvml, rapl_root=str(tmp_path))
    meter.start()
    time.sleep(0.05)
    meter.stop()
    m, tags = meter.metrics()
    assert tags["energy/gpu_source"] == "nvml_sampled" and tags["energy/gpu_shared"] == "0.5"
    assert m["energy/gpu_kwh"] == pytest.approx(0.5 * 100.0 * (meter.t1 - meter.t0) / 3.6e6)
    assert all(w == pytest.approx(50.0) for _, w in meter.trace())


def test_gpus_are_mapped_by_uuid_and_index():
    nvml = FakeNvml()
    assert [u for u, _ in telemetry.gpu_handles(nvml, ["GPU-bbb", "0"])] == ["GPU-bbb", "GPU-aaa"]


def test_assigned_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbb")
    assert telemetry.assigned_gpus() == ["GPU-bbb"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert telemetry.assigned_gpus() == []


def test_missing_nvml_library_is_handled(tmp_path):
    meter = telemetry.EnergyMeter(gpu_ids=["0"], nvml=FakeNvml(missing=True), rapl_root=str(tmp_path)).start().stop()
    m, tags = meter.metrics()
    assert tags["energy/gpu_source"] == "unavailable" and math.isnan(m["energy/gpu_kwh"])
    assert "NVMLError_LibraryNotFound" in meter.gpu_error


def _rapl(root, name, energy, max_range):
    d = root / f"intel-rapl:{name}"
    d.mkdir(parents=True)
    (d / "name").write_text({"0": "package-0", "0:0": "core", "1": "dram"}.get(name, name))
    (d / "energy_uj").write_text(str(energy))
    (d / "max_energy_range_uj").write_text(str(max_range))
    return d


def test_rapl_counts_package_and_dram_with_wraparound(tmp_path):
    pkg = _rapl(tmp_path, "0", 999_000_000, 1_000_000_000)
    dram = _rapl(tmp_path, "1", 5_000_000, 1_000_000_000)
    _rapl(tmp_path, "0:0", 0, 1_000_000_000)  # 'core' is inside the package: not counted twice
    meter = telemetry.EnergyMeter(gpu_ids=[], rapl_root=str(tmp_path)).start()
    (pkg / "energy_uj").write_text(str(2_000_000))        # wrapped: 1,000,000 + 2,000,000 uJ = 3 J
    (dram / "energy_uj").write_text(str(6_000_000))       # 1 J
    meter.stop()
    m, tags = meter.metrics()
    assert tags["energy/cpu_source"] == "rapl" and len(meter.rapl) == 2
    assert m["energy/cpu_kwh"] == pytest.approx(4.0 / 3.6e6)
    assert m["energy/total_kwh"] == pytest.approx(4.0 / 3.6e6)


def test_co2_arithmetic():
    assert telemetry.co2_kg(2.0) == pytest.approx(0.86)                       # 2 kWh x 430 g
    assert telemetry.co2_kg(2.0, 275.0, pue=1.58) == pytest.approx(2.0 * 1.58 * 0.275)
    out = telemetry.with_co2({"energy/total_kwh": 1.0}, 430.0, 1.0)
    assert out["co2/kg"] == pytest.approx(0.43)
    assert math.isnan(telemetry.with_co2({"energy/total_kwh": float("nan")}, 430.0, 1.0)["co2/kg"])


def test_latency_harness_warms_up_and_takes_the_median():
    calls, now = [], [0.0]
    durations = iter([99.0, 99.0] + [0.001, 0.005, 0.002, 0.004, 0.003])  # 2 slow warm-ups, 5 timed runs

    def clock():
        return now[0]

    def work():
        calls.append(1)
        now[0] += next(durations)

    r = measure.time_cpu(work, warmup=2, repeats=5, threads=1, clock=clock)
    assert len(calls) == 7
    assert r["median_ms"] == pytest.approx(3.0) and r["threads"] == 1
    assert r["p90_ms"] == pytest.approx(4.6)


def test_sizes_of_real_saved_models(tmp_path):
    from helpers import prepared_for, tiny_model, tiny_sweep
    from squeeze import formats
    from squeeze.techniques.dq import quantize

    sweep = tiny_sweep("sentiment", size=60)
    model = tiny_model(sweep, prepared_for(sweep, tmp_path)).eval()
    dense = measure.size(model)
    formats.save(model, tmp_path / "fp32", auto_class="AutoModelForSequenceClassification")
    q, _ = quantize(model, embeddings=True)
    int8 = measure.size(q)
    formats.save(q, tmp_path / "int8", auto_class="AutoModelForSequenceClassification")
    assert int8["size/params"] == pytest.approx(dense["size/params"], rel=0.01)  # int8 weights still count
    assert int8["size/memory_mb"] < 0.4 * dense["size/memory_mb"]
    assert formats.disk_bytes(tmp_path / "int8") < 0.4 * formats.disk_bytes(tmp_path / "fp32")
    assert dense["size/memory_mb"] * 2**20 == pytest.approx(formats.disk_bytes(tmp_path / "fp32"), rel=0.05)


def test_power_trace_is_logged_as_a_step_metric(tmp_path):
    from squeeze import tracking

    nvml = FakeNvml(power_mw={0: [120_000]}, counter=False)
    meter = telemetry.EnergyMeter(power_interval_s=0.01, gpu_ids=["0"], nvml=nvml, rapl_root=str(tmp_path)).start()
    time.sleep(0.05)
    meter.stop()
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    exp = tracking.ensure_experiment(uri, "trace")
    run = tracking.TrialRun(uri, exp, tracking.start_parent(uri, exp, "s", "x: 1", {}), "t", "t", {})
    run.log_series("power/gpu_w", meter.trace())
    history = tracking.mlflow_client(uri).get_metric_history(run.run_id, "power/gpu_w")
    assert len(history) == len(meter.trace()) >= 3 and all(m.value == 120.0 for m in history)
