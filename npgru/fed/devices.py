"""Device profiles: how fast each client computes and communicates, and when it is online.

A :class:`DeviceProfile` gives a client a sustained training throughput (FLOP/s), a downlink
and an uplink bandwidth with a latency, and a daily online window. With the model's training
FLOPs per example (:func:`training_flops_per_example`) that turns into seconds per training
example-step, and with the bytes of a round into transfer seconds — what the simulated clock
(:mod:`npgru.fed.clock`) adds up.

Built-in populations (:data:`POPULATIONS`), each profile drawn from ``(seed, client_id)``
alone, so a client keeps its device whatever else changes:

``"uniform"``
    Every client the same: 2 GFLOP/s, 20 Mbit/s down, 5 Mbit/s up, 50 ms latency, always
    online.
``"mobile"``
    Heavy-tailed, log-normal spreads around the same medians, after the device heterogeneity
    FedScale (Lai et al., ICML 2022) builds in from AI Benchmark (compute) and MobiPerf
    (network) measurements of phones and from the FLASH availability trace:

    ========================  ===========  ==========  =======================
    quantity                  median       σ of log    10th – 90th percentile
    ========================  ===========  ==========  =======================
    training throughput       2 GFLOP/s    0.9         0.63 – 6.3 GFLOP/s
    downlink                  20 Mbit/s    1.0         5.5 – 72 Mbit/s
    uplink                    5 Mbit/s     1.0         1.4 – 18 Mbit/s
    latency                   50 ms        0.5         26 – 95 ms
    ========================  ===========  ==========  =======================

    and online a window of U(4, 16) hours a day (10 h, 42% of the day, on average), opening
    at a uniformly random hour. The medians and spreads are this module's choices, not values
    fitted to FedScale's traces.

Against the published figures (the table's 90th / 10th percentile ratio is 10× for compute
and 13× for bandwidth):

* **What FedScale uses.** Its system trace, ``client_device_capacity``, gives every client an
  inference latency in ms per sample and one bandwidth in kbit/s for both directions; its
  runtime charges 3× the inference latency per training sample and (download + upload
  kbit) / bandwidth, with no per-transfer latency (``fedscale/cloud/internal/
  client_metadata.py``). The compute side comes from AI Benchmark on phones with more than
  2 GB of RAM, the network side from MobiPerf's cloud-to-edge throughput of over 100k mobile
  clients on WiFi (``benchmark/dataset/README.md`` in github.com/SymbioticLab/FedScale,
  "Environment Datasets", and the "System Traces" page of fedscale.ai). Percentiles of that
  trace, and the values in FedScale's and Oort's (Lai et al., OSDI 2021) plots of client
  compute and network heterogeneity, could not be obtained for this comparison (the trace
  is a binary pickle we could not read, and the papers' figures were not available), so no
  percentile of theirs is quoted here.
* **Compute spread.** AI Benchmark's 2019 ranking of 333 phones, as kept in FLASH
  (``models/utils/device_util/raw_ai_benchmark_list.json``, github.com/PKU-Chengxu/FLASH),
  restricted to phones with more than 2 GB of RAM as FedScale does (254 phones): the
  10th – 90th percentile ratio is 4.4× for the CPU floating-point score and 9.9× for the
  overall AI score (14× and 119× from slowest to fastest). Ours, 10×, is at the overall
  score's spread and wider than the CPU score's. These are per phone model, not per user,
  and scores, not FLOP/s; the 2 GFLOP/s median is not derived from them.
* **Bandwidth.** Oort's own example client (``oort/oort.py``, github.com/SymbioticLab/Oort)
  has 2209 kbit/s (2.2 Mbit/s) and 153 ms of inference per sample. FLASH's network-speed
  sample (``models/speed_distri.json``: 19 users, mean speeds in kB/s as its code reads
  them) has mean downlinks of 19 – 142 Mbit/s (median 35) and uplinks of 3.5 – 54 Mbit/s
  (median 27). Our 20 / 5 Mbit/s medians lie between these, within an order of magnitude
  of each; our uplink is slower than FLASH's users and our downlink faster than Oort's
  example.
* **Latency.** FedScale models none; the 50 ms median is ours.
* **Availability.** FedScale's availability trace comes from FLASH (Yang et al., WWW 2021):
  136k users of an input-method app over one week (31 January – 6 February 2020), 180
  million events (battery charge, screen lock), a device counting as available while it
  charges; per client it records the seconds at which availability starts and ends (the
  sample entries on fedscale.ai's "System Traces" page span 2 – 6 days). The fraction of
  the day users are available in it was not found, so the U(4, 16) hour window is not
  checked against it.

A user's own table is a mapping from client id to :class:`DeviceProfile`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import InputTypeError, InputValueError, check_positive_float, check_real_range
from .sampling import make_rng

#: random-stream purpose of device draws (sampling.py uses 0–3, attacks 4, compression 5, DP 6)
DEVICES = 7

#: The built-in populations.
POPULATIONS = ("uniform", "mobile")

_MEDIAN = {"flops": 2e9, "downlink_bps": 20e6, "uplink_bps": 5e6, "latency_s": 0.05}
_LOG_SIGMA = {"flops": 0.9, "downlink_bps": 1.0, "uplink_bps": 1.0, "latency_s": 0.5}
_DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class DeviceProfile:
    """One client's device.

    Parameters
    ----------
    flops : float
        Sustained training throughput in FLOP/s.
    downlink_bps, uplink_bps : float
        Bandwidths in bit/s.
    latency_s : float
        Seconds added to every transfer (each way).
    online_start_h : float, default 0
        Hour of the simulated day, in [0, 24), at which the daily online window opens.
    online_hours : float, default 24
        Length of that window in hours, in (0, 24]; 24 is always online.
    """

    flops: float
    downlink_bps: float
    uplink_bps: float
    latency_s: float
    online_start_h: float = 0.0
    online_hours: float = 24.0

    def __post_init__(self):
        for name in ("flops", "downlink_bps", "uplink_bps"):
            check_positive_float(name, getattr(self, name))
        check_real_range("latency_s", self.latency_s, 0)
        check_real_range("online_start_h", self.online_start_h, 0, 24, include_high=False)
        check_real_range("online_hours", self.online_hours, 0, 24, include_low=False)

    def compute_s(self, flops: float) -> float:
        """Seconds this device takes for ``flops`` floating-point operations."""
        return flops / self.flops

    def download_s(self, nbytes: int) -> float:
        """Seconds to receive ``nbytes``."""
        return self.latency_s + 8 * nbytes / self.downlink_bps

    def upload_s(self, nbytes: int) -> float:
        """Seconds to send ``nbytes``."""
        return self.latency_s + 8 * nbytes / self.uplink_bps

    def online_for(self, sim_time: float) -> float:
        """Seconds the device stays online from ``sim_time`` on (0 if offline; inf if always)."""
        if self.online_hours >= 24:
            return math.inf
        into = (sim_time - self.online_start_h * 3600.0) % _DAY_S
        return max(0.0, self.online_hours * 3600.0 - into)

    def offline_for(self, sim_time: float) -> float:
        """Seconds until the device is next online from ``sim_time`` (0 if it is online)."""
        if self.online_for(sim_time) > 0:
            return 0.0
        return _DAY_S - (sim_time - self.online_start_h * 3600.0) % _DAY_S

    def next_online(self, sim_time: float) -> float:
        """The first simulated time, from ``sim_time`` on, at which the device is online."""
        t = sim_time + self.offline_for(sim_time)
        # the float sum can land an ulp before the window opens: step into it
        while self.online_for(t) == 0:
            t = math.nextafter(t, math.inf)
        return t


def draw_profile(population: str, seed: int, client_id: str) -> DeviceProfile:
    """The device of ``client_id`` in a built-in ``population``, from ``(seed, client_id)``."""
    if population == "uniform":
        return DeviceProfile(**_MEDIAN)
    if population != "mobile":
        raise InputValueError(f"device_profile must be one of {POPULATIONS} or a mapping of "
                              f"client id to DeviceProfile, got {population!r}")
    rng = make_rng(seed, 0, DEVICES, client_id)
    z = rng.standard_normal(len(_MEDIAN))
    values = {k: float(_MEDIAN[k] * np.exp(_LOG_SIGMA[k] * zk)) for k, zk in zip(_MEDIAN, z,
                                                                                 strict=True)}
    start, hours = rng.random(2)
    return DeviceProfile(**values, online_start_h=float(24 * start),
                         online_hours=float(4 + 12 * hours))


def device_table(device_profile: str | Mapping, seed: int,
                 client_ids: Sequence[str]) -> dict[str, DeviceProfile]:
    """Every client's :class:`DeviceProfile`: drawn from a population, or the user's table.

    Raises
    ------
    TypeError
        If ``device_profile`` is neither a population name nor a mapping of profiles.
    ValueError
        If it names no population, or the table lacks a client.
    """
    if isinstance(device_profile, str):
        return {cid: draw_profile(device_profile, seed, cid) for cid in client_ids}
    if not isinstance(device_profile, Mapping):
        raise InputTypeError(f"device_profile must be one of {POPULATIONS} or a mapping of "
                             f"client id to DeviceProfile, got {type(device_profile).__name__}")
    missing = [cid for cid in client_ids if cid not in device_profile]
    if missing:
        raise InputValueError(f"device_profile has no profile for {len(missing)} client(s), "
                              f"e.g. {missing[0]!r}")
    for cid in client_ids:
        if not isinstance(device_profile[cid], DeviceProfile):
            raise InputTypeError(f"device_profile[{cid!r}] must be a DeviceProfile, got "
                                 f"{type(device_profile[cid]).__name__}")
    return {cid: device_profile[cid] for cid in client_ids}


def training_flops_per_example(num_params: int, steps: int) -> float:
    """FLOPs of one training example-step of a recurrent model: ``6 · params · time steps``.

    The usual estimate for dense layers: a multiply-add (2 FLOPs) per parameter per time step
    forward, twice that backward. It counts every parameter at every step (an embedding lookup
    or a per-sequence head is cheaper), so it errs towards slower devices.
    """
    return 6.0 * num_params * max(1, steps)
