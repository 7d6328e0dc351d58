"""Latency a remote base policy adds per action chunk (``world2act serve`` on localhost).

Serves a policy folder with ``world2act serve`` in a subprocess (one torch thread), loads the
same folder in this process (one torch thread), and times ``predict_action_chunk`` on the same
observation through both, interleaved call by call so that both see the same machine load.
Prints the median per-chunk time of each, the median paired overhead (client − in-process), the
server's own compute time as it reports it (``info["server_ms"]``), hence the transport cost
(client − server compute: msgpack + ``np.save`` encoding, ZeroMQ over TCP loopback), split into
an empty ``ping`` round trip and the request's encode + decode time, the request size, and
checks that both return identical chunks under the same seed.

    python benchmarks/bench_remote.py                      # default-size built-in base, random weights
    python benchmarks/bench_remote.py --policy runs/base --n 100 --batch 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _default_policy(folder: str) -> str:
    """The built-in base at its default size (LIBERO: 2 cameras 64×64, K = 8), random weights."""
    import numpy as np

    from world2act.policies import Normalizer
    from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig

    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.standard_normal((100, 8)),
                                  "action": rng.uniform(-1, 1, (100, 7))})
    FlowPolicy(FlowPolicyConfig(benchmark="libero_object", action_dim=7, state_dim=8), norm).save(folder)
    return folder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", help="policy folder (default: the built-in base at default size, random weights)")
    ap.add_argument("--n", type=int, default=50, help="timed calls per side (default 50)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    import torch

    from world2act.evaluation.latency import busy_cpu_seconds, synthetic_observation
    from world2act.policies import load_policy
    from world2act.policies.remote import pack, unpack

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.policy or _default_policy(f"{tmp}/base")
        proc = subprocess.Popen([sys.executable, "-m", "world2act", "serve", "--policy", folder, "--port", "0",
                                 "--threads", "1", "--device", "cpu"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            line = proc.stdout.readline()
            if "remote://" not in line:
                raise SystemExit(f"serve did not start: {line!r}")
            url = "remote://" + line.rsplit("remote://", 1)[1].split()[0]
            remote, local = load_policy(url), load_policy(folder, device="cpu")
            obs = synthetic_observation(local, batch=args.batch)
            for p in (remote, local):
                p.reset()
                p.seed(0)
            same = all(torch.equal(remote.predict_action_chunk(obs), local.predict_action_chunk(obs)) for _ in range(3))
            for _ in range(args.warmup):
                remote.predict_action_chunk(obs)
                local.predict_action_chunk(obs)
            t_local, t_remote, t_server, overhead = [], [], [], []
            busy0, wall0 = busy_cpu_seconds(), time.perf_counter()
            for _ in range(args.n):
                t = time.perf_counter()
                local.predict_action_chunk(obs)
                t_local.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                remote.predict_action_chunk(obs)
                t_remote.append((time.perf_counter() - t) * 1000)
                t_server.append(float(remote.last_info.get("server_ms", float("nan"))))
                overhead.append(t_remote[-1] - t_local[-1])
            busy1, wall1 = busy_cpu_seconds(), time.perf_counter()
            t_ping = []
            for _ in range(args.n):
                t = time.perf_counter()
                remote.call("ping", requires_input=False)
                t_ping.append((time.perf_counter() - t) * 1000)
            wire = remote.layout.observation_to_wire(obs)
            t_codec = []
            for _ in range(args.n):
                t = time.perf_counter()
                unpack(pack({"endpoint": "get_action", "data": {"observation": wire, "options": None}}))
                t_codec.append((time.perf_counter() - t) * 1000)
            request_bytes = len(pack({"endpoint": "get_action", "data": {
                "observation": remote.layout.observation_to_wire(obs), "options": {"session": "x" * 32}}}))
            remote.kill_server()
            try:  # on a loaded machine the server may take a while to wind down; the figures are in
                proc.wait(60)
            except subprocess.TimeoutExpired:
                pass  # killed below
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    med = statistics.median
    transport = [r - s for r, s in zip(t_remote, t_server)]
    fig = {"policy": args.policy or "built-in base, default size (random weights)", "batch": args.batch, "n": args.n,
           "chunk_size": local.chunk_size, "ms_per_chunk_in_process": round(med(t_local), 3),
           "ms_per_chunk_remote": round(med(t_remote), 3), "ms_overhead_paired_median": round(med(overhead), 3),
           "ms_server_compute": round(med(t_server), 3), "ms_transport": round(med(transport), 3),
           "ms_ping_round_trip": round(med(t_ping), 3), "ms_encode_decode_request": round(med(t_codec), 3),
           "overhead_pct": round(100 * med(overhead) / med(t_local), 1), "request_bytes": request_bytes,
           "identical_chunks": bool(same), "cpu_count": os.cpu_count(),
           "machine_busy_cores": None if busy0 is None else round((busy1 - busy0) / (wall1 - wall0), 2)}
    print(f"in-process {fig['ms_per_chunk_in_process']:.2f} ms/chunk, remote {fig['ms_per_chunk_remote']:.2f} ms/chunk "
          f"(server compute {fig['ms_server_compute']:.2f} ms): overhead {fig['ms_overhead_paired_median']:+.2f} ms "
          f"per chunk ({fig['overhead_pct']:+.1f}%), transport {fig['ms_transport']:.2f} ms (empty ping round trip "
          f"{fig['ms_ping_round_trip']:.2f} ms, request encode+decode {fig['ms_encode_decode_request']:.2f} ms); request "
          f"{request_bytes / 1024:.1f} KiB; identical chunks: {same}; machine busy cores {fig['machine_busy_cores']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(fig, f, indent=2)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
