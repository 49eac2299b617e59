"""Energy of exactly a trial's devices, and CO2: the only NVML and RAPL code.

GPU: the GPUs Ray assigned to the trial (``ray.get_gpu_ids()``, else ``CUDA_VISIBLE_DEVICES``),
mapped to NVML handles by UUID or index. Power is sampled every ``power_interval_s`` in a
background thread and integrated with the trapezoid rule; where the GPU has an energy counter
(Volta and newer) the counter delta is the primary figure, because sampling misses spikes
(recent GPUs report a 1 s power average, A100/H100 sample power only part of the time). Both
are logged with their disagreement. A fractional GPU share scales the energy and is flagged.

CPU: RAPL package and DRAM counters from ``/sys/class/powercap/intel-rapl*`` when readable, with
counter wrap-around. Otherwise CPU energy is NaN with ``energy/cpu_source=unavailable``: an
estimate is never presented as a measurement.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_INTENSITY_G_PER_KWH = 430.0   # US EPA eGRID, the paper's figure
J_PER_KWH = 3.6e6


def co2_kg(kwh: float, intensity_g_per_kwh: float = DEFAULT_INTENSITY_G_PER_KWH, pue: float = 1.0) -> float:
    """kg CO2e = kWh x PUE x intensity (g/kWh) / 1000; NaN energy gives NaN."""
    return kwh * pue * intensity_g_per_kwh / 1000.0


def trapezoid_joules(samples: list[tuple[float, float]]) -> float:
    """Integrate (time s, power W) samples with the trapezoid rule."""
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


# ------------------------------------------------------------------ RAPL
@dataclass
class RaplDomain:
    path: Path
    max_uj: int
    last: int
    total_uj: int = 0

    def read(self) -> None:
        now = int((self.path / "energy_uj").read_text())
        delta = now - self.last
        if delta < 0:  # the counter wrapped around
            delta += self.max_uj
        self.total_uj += delta
        self.last = now


def rapl_domains(root: str | Path = "/sys/class/powercap") -> list[RaplDomain]:
    """Readable package and DRAM domains (sub-domains such as core are inside the package)."""
    out = []
    for d in sorted(Path(root).glob("intel-rapl*")):
        name_file = d / "name"
        try:
            name = name_file.read_text().strip()
            if not (name.startswith("package") or name == "dram"):
                continue
            out.append(RaplDomain(d, int((d / "max_energy_range_uj").read_text()), int((d / "energy_uj").read_text())))
        except (OSError, ValueError):
            continue
    return out


# ------------------------------------------------------------------ NVML
def _nvml():
    import pynvml

    return pynvml


def assigned_gpus() -> list[str]:
    """The GPU ids of this trial: Ray's assignment inside a Ray worker, else CUDA_VISIBLE_DEVICES."""
    try:
        import ray

        if ray.is_initialized():
            ids = [str(i) for i in ray.get_gpu_ids()]
            if ids:
                return ids
    except Exception:  # outside a Ray worker get_gpu_ids raises
        pass
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [x.strip() for x in env.split(",") if x.strip() and x.strip() != "-1"]


def gpu_handles(nvml, ids: list[str]) -> list[tuple[str, object]]:
    """(UUID, handle) per assigned id; ids are NVML indices or UUIDs (GPU-..., MIG-...)."""
    out = []
    for gid in ids:
        if gid.startswith(("GPU-", "MIG-")):
            handle = nvml.nvmlDeviceGetHandleByUUID(gid)
        else:
            handle = nvml.nvmlDeviceGetHandleByIndex(int(gid))
        uuid = nvml.nvmlDeviceGetUUID(handle)
        out.append((uuid.decode() if isinstance(uuid, bytes) else uuid, handle))
    return out


@dataclass
class EnergyMeter:
    """Start/stop around a phase (training, evaluation); ``metrics()`` afterwards.

    Args:
        power_interval_s: NVML power sampling period (the paper's nvidia-smi used 5 s).
        gpu_share: the trial's fraction of each GPU (Ray fractional GPUs); energy is scaled by it.
        gpu_ids: override the assignment (tests); default ``assigned_gpus()``.
        rapl_root: sysfs root of the powercap tree.
    """

    power_interval_s: float = 5.0
    gpu_share: float = 1.0
    gpu_ids: list[str] | None = None
    rapl_root: str = "/sys/class/powercap"
    nvml: object = None
    samples: list = field(default_factory=list)

    def __post_init__(self):
        self.handles, self.gpu_error = [], None
        ids = assigned_gpus() if self.gpu_ids is None else self.gpu_ids
        if ids:
            try:
                self.nvml = self.nvml or _nvml()
                self.nvml.nvmlInit()
                self.handles = gpu_handles(self.nvml, ids)
            except Exception as exc:  # NVMLError_LibraryNotFound, driver mismatch, no such UUID
                self.gpu_error = f"{type(exc).__name__}: {exc}"
                log.warning("GPU energy unavailable: %s", self.gpu_error)
                self.handles = []
        self.rapl = rapl_domains(self.rapl_root)

    def _power_w(self) -> float:
        return sum(self.nvml.nvmlDeviceGetPowerUsage(h) for _, h in self.handles) / 1000.0

    def _counters_mj(self):
        try:
            return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for _, h in self.handles]
        except Exception:  # pre-Volta GPUs have no counter
            return None

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.power_interval_s):
            self.samples.append((time.monotonic(), self._power_w()))

    def start(self) -> "EnergyMeter":
        self.t0 = time.monotonic()
        self.samples, self._stop = [], threading.Event()
        for d in self.rapl:
            d.total_uj, d.last = 0, int((d.path / "energy_uj").read_text())
        if self.handles:
            self.counter0 = self._counters_mj()
            self.samples.append((self.t0, self._power_w()))
            self._thread = threading.Thread(target=self._sample_loop, daemon=True, name="squeeze-nvml")
            self._thread.start()
        return self

    def stop(self) -> "EnergyMeter":
        self.t1 = time.monotonic()
        if self.handles:
            self._stop.set()
            self._thread.join()
            self.samples.append((self.t1, self._power_w()))
            self.counter1 = self._counters_mj()
        for d in self.rapl:
            d.read()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def metrics(self, prefix: str = "") -> tuple[dict[str, float], dict[str, str]]:
        """Energy metrics (kWh, W, s) and tags saying where each figure comes from."""
        m: dict[str, float] = {f"time/{prefix}s": self.t1 - self.t0}
        tags = {}
        if self.handles:
            sampled = trapezoid_joules(self.samples) / J_PER_KWH * self.gpu_share
            m[f"energy/{prefix}gpu_kwh_sampled"] = sampled
            m[f"power/{prefix}gpu_avg_w"] = trapezoid_joules(self.samples) / max(self.t1 - self.t0, 1e-9) * self.gpu_share
            if self.counter0 is not None and self.counter1 is not None:
                counter = sum(b - a for a, b in zip(self.counter0, self.counter1)) / 1000.0 / J_PER_KWH * self.gpu_share
                m[f"energy/{prefix}gpu_kwh_counter"] = counter
                m[f"energy/{prefix}gpu_disagreement"] = (sampled - counter) / counter if counter else float("nan")
                m[f"energy/{prefix}gpu_kwh"], tags["energy/gpu_source"] = counter, "nvml_counter"
            else:
                m[f"energy/{prefix}gpu_kwh"], tags["energy/gpu_source"] = sampled, "nvml_sampled"
            tags["energy/gpus"] = ",".join(u for u, _ in self.handles)
            if self.gpu_share < 1:
                tags["energy/gpu_shared"] = f"{self.gpu_share:g}"
        else:
            m[f"energy/{prefix}gpu_kwh"] = 0.0 if self.gpu_error is None else float("nan")
            tags["energy/gpu_source"] = "none" if self.gpu_error is None else "unavailable"
        if self.rapl:
            m[f"energy/{prefix}cpu_kwh"] = sum(d.total_uj for d in self.rapl) / 1e6 / J_PER_KWH
            tags["energy/cpu_source"] = "rapl"
        else:
            m[f"energy/{prefix}cpu_kwh"] = float("nan")
            tags["energy/cpu_source"] = "unavailable"
        m[f"energy/{prefix}total_kwh"] = m[f"energy/{prefix}gpu_kwh"] + m[f"energy/{prefix}cpu_kwh"]
        return m, tags

    def so_far(self, prefix: str = "") -> dict[str, float]:
        """The metrics of the span up to now, the meter left running (what a checkpoint records as spent)."""
        kept = {k: getattr(self, k) for k in ("t1", "counter1") if hasattr(self, k)}
        self.t1 = time.monotonic()
        if self.handles:
            self.counter1 = self._counters_mj()
        for d in self.rapl:
            d.read()
        try:
            return self.metrics(prefix)[0]
        finally:
            for k in ("t1", "counter1"):
                if k in kept:
                    setattr(self, k, kept[k])
                elif hasattr(self, k):
                    delattr(self, k)

    def trace(self) -> list[tuple[int, float]]:
        """(milliseconds since start, watts) for the step metric ``power/gpu_w`` (distinct steps at any interval)."""
        return [(int(round((t - self.t0) * 1000)), p * self.gpu_share) for t, p in self.samples]


def with_co2(metrics: dict[str, float], intensity: float, pue: float, prefix: str = "") -> dict[str, float]:
    total = metrics.get(f"energy/{prefix}total_kwh", float("nan"))
    return {**metrics, f"co2/{prefix}kg": co2_kg(total, intensity, pue) if not math.isnan(total) else float("nan")}
