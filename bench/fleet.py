"""`lorastream bench fleet`: N consumers × M adapters under Zipf arrivals — how much of a fleet is usable.

A discrete-event simulation of one lane: Poisson arrivals whose adapter is drawn from Zipf(s) over
M adapters, routed to a partition three ways — affinity-only (Kafka's default partitioner on the
adapter id: aiokafka's murmur2 DefaultPartitioner), random (no key), and routing under skew
(streamer.routing's plan from the traffic shares, hot adapters spread, cold ones keyed) — then to
consumers as aiokafka's default round-robin assignor gives one topic's partitions out (p mod N).
Each consumer serves its requests first come first served; its adapter cache is the engine's
policy (gpu_engine.byte_lru: a device tier of `--device-budget` adapters over a host tier of
`--host-budget`), and a request's service time is the measured per-request time plus the
measured load cost of a miss (docs/bench/cache.json: device miss from host, cold load from disk).

Reported per (routing, N, M): usable capacity (the offered load at which the busiest consumer
saturates ÷ the fleet's capacity), device hit rate, p50/p99 queueing delay at `--load` of the
fleet's capacity, and load imbalance (busiest ÷ mean utilisation). Targets: at 16 consumers,
Zipf 1.1, 1,000 adapters, the new routing's usable capacity ≥ 0.85 and its device hit rate
≥ 0.9 × affinity-only's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from aiokafka.partitioner import DefaultPartitioner

from gpu_engine.byte_lru import ByteLRU
from lorastream.stats import percentile
from streamer.routing import RoutingConfig, home_partition, plan_routes

ROUTINGS = ("affinity", "random", "skew")
FLEET_SIZES = (2, 4, 16, 64, 100)
ADAPTER_COUNTS = (100, 1000, 10000)
HEADLINE = {"consumers": 16, "adapters": 1000}
TARGETS = {"usable_capacity_16": 0.85, "hit_rate_vs_affinity": 0.9}
CACHE_BENCH = Path(__file__).resolve().parents[1] / "docs" / "bench" / "cache.json"
# used when docs/bench/cache.json is missing: its values of the committed run, rounded
FALLBACK_COSTS_MS = {"service": 64.5, "device_miss": 0.445, "cold_load": 15.3}
_ADAPTER_BYTES = 1  # every adapter the same size: budgets count adapters


def measured_costs_ms(path: Path = CACHE_BENCH) -> dict[str, float]:
    """Per-request service time and miss costs, as `bench cache` measured them."""
    if not path.exists():
        return dict(FALLBACK_COSTS_MS)
    cache = json.loads(path.read_text())
    resident = cache["zipf"]["resident"]
    return {
        # a consumer's throughput, as a time per request (requests overlap in its batches)
        "service": 1000.0 * cache["config"]["new_tokens"] / resident["tokens_per_s"],
        "device_miss": cache["hit_path"]["device_miss_host_hit_us_p50"] / 1000.0,
        "cold_load": cache["cold_load_ms_p50"],
    }


def num_partitions_for(consumers: int) -> int:
    """The lane's partitions: at least 64, and at least two per consumer (docs/deploy.md)."""
    return max(64, 2 * consumers)


def zipf_shares(num_adapters: int, s: float) -> np.ndarray:
    weights = np.arange(1, num_adapters + 1, dtype=np.float64) ** -s
    return weights / weights.sum()


def route(routing: str, adapters: np.ndarray, ids: list[str], shares: np.ndarray, num_partitions: int,
          rng: np.random.Generator) -> np.ndarray:
    """The partition of each request (`adapters`: index of each request's adapter)."""
    if routing == "random":
        return rng.integers(0, num_partitions, size=len(adapters))
    every = list(range(num_partitions))
    partitioner = DefaultPartitioner()
    home = np.array([partitioner(i.encode(), every, every) for i in ids])
    partitions = home[adapters]
    if routing == "affinity":
        return partitions
    plan = plan_routes(dict(zip(ids, shares.tolist())), num_partitions, RoutingConfig())
    index = {adapter_id: n for n, adapter_id in enumerate(ids)}
    for adapter_id, pieces in plan.spread.items():
        chosen = np.flatnonzero(adapters == index[adapter_id])
        targets = np.array([p for p, _ in pieces])
        weights = np.array([w for _, w in pieces])
        # a uniform hash of each request id, as RoutePlan.partition_for picks
        partitions[chosen] = targets[rng.choice(len(targets), size=len(chosen), p=weights / weights.sum())]
    return partitions


def serve(adapters: np.ndarray, arrivals_s: np.ndarray, costs_ms: dict[str, float], device_budget: int,
          host_budget: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One consumer, FIFO: (service time of each request in ms, queueing delay in ms, device hits)."""
    device: ByteLRU[int, bool] = ByteLRU(device_budget * _ADAPTER_BYTES)
    host: ByteLRU[int, bool] = ByteLRU(host_budget * _ADAPTER_BYTES)
    service_ms = np.full(len(adapters), costs_ms["service"])
    hits = 0
    for n, adapter in enumerate(adapters.tolist()):
        if device.get(adapter) is not None:
            hits += 1
            continue
        if host.get(adapter) is None:
            service_ms[n] += costs_ms["cold_load"]
            host.put(adapter, True, _ADAPTER_BYTES)
        else:
            service_ms[n] += costs_ms["device_miss"]
        device.put(adapter, True, _ADAPTER_BYTES)
    # Lindley's recursion in closed form: departure_n = S_n + max_{k<=n}(arrival_k - S_{k-1})
    arrivals_ms = arrivals_s * 1000.0
    done = np.cumsum(service_ms)
    departures = done + np.maximum.accumulate(arrivals_ms - (done - service_ms))
    return service_ms, departures - service_ms - arrivals_ms, hits


def simulate(routing: str, consumers: int, num_adapters: int, args, costs_ms: dict[str, float]) -> dict[str, float]:
    rng = np.random.default_rng(args.seed)
    num_partitions = num_partitions_for(consumers)
    ids = [f"tenant{n}/adapter{n}" for n in range(num_adapters)]  # rank n+1 of Zipf
    shares = zipf_shares(num_adapters, args.zipf_s)
    count = args.requests_per_consumer * consumers
    capacity_per_s = consumers * 1000.0 / costs_ms["service"]
    arrivals_s = np.cumsum(rng.exponential(1.0 / (args.load * capacity_per_s), size=count))
    adapters = rng.choice(num_adapters, size=count, p=shares)
    owner = route(routing, adapters, ids, shares, num_partitions, rng) % consumers  # round-robin assignment
    warm = int(count * args.warmup)
    busy_ms, hits, measured, delays = np.zeros(consumers), 0, 0, []
    for consumer in range(consumers):
        mine = np.flatnonzero(owner == consumer)
        if len(mine) == 0:
            continue
        service_ms, delay_ms, _ = serve(adapters[mine], arrivals_s[mine], costs_ms, args.device_budget, args.host_budget)
        after = mine >= warm
        busy_ms[consumer] = service_ms[after].sum()
        delays.append(delay_ms[after])
        hits += int(np.count_nonzero(service_ms[after] == costs_ms["service"]))
        measured += int(np.count_nonzero(after))
    delays_ms = np.concatenate(delays).tolist()
    span_s = arrivals_s[-1] - arrivals_s[warm]
    # the busiest saturates at load L when its work per second of arrivals reaches one second
    busiest_work = busy_ms.max() / 1000.0 / span_s / args.load  # its utilisation at load 1.0
    return {
        "partitions": num_partitions,
        "usable_capacity": min(1.0, 1.0 / busiest_work),
        "device_hit_rate": hits / measured,
        "queue_ms_p50": percentile(delays_ms, 50),
        "queue_ms_p99": percentile(delays_ms, 99),
        "load_imbalance": float(busy_ms.max() / busy_ms.mean()),
    }


def save_plot(path: str, results: dict, fleet_sizes: list[int], adapter_counts: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(adapter_counts), figsize=(4 * len(adapter_counts), 3.6), squeeze=False)
    for ax, m in zip(axes[0], adapter_counts):
        for routing, style in zip(ROUTINGS, ("o-", "s--", "^-")):
            ax.plot(fleet_sizes, [results[routing][str(m)][str(n)]["usable_capacity"] for n in fleet_sizes], style,
                    label={"affinity": "affinity only", "random": "random", "skew": "routing under skew"}[routing])
        ax.set_xscale("log")
        ax.set_xticks(fleet_sizes, [str(n) for n in fleet_sizes])
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("consumers")
        ax.set_title(f"{m} adapters")
    axes[0][0].set_ylabel("usable share of fleet capacity")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Zipf(1.1) traffic: capacity usable before the busiest consumer saturates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lorastream bench fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--plot", metavar="FILE", help="PNG of usable capacity vs fleet size (default: next to --json)")
    parser.add_argument("--consumers", default=",".join(map(str, FLEET_SIZES)), help="fleet sizes (comma-separated)")
    parser.add_argument("--adapters", default=",".join(map(str, ADAPTER_COUNTS)), help="adapter counts (comma-separated)")
    parser.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent (default %(default)s)")
    parser.add_argument("--requests-per-consumer", type=int, default=2000, help="(default %(default)s)")
    parser.add_argument("--load", type=float, default=0.7, help="offered load ÷ fleet capacity for the delays (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=0.25, help="share of requests before measuring (default %(default)s)")
    parser.add_argument("--device-budget", type=int, default=64, help="adapters per consumer's device tier (default %(default)s)")
    parser.add_argument("--host-budget", type=int, default=1000, help="adapters per consumer's host tier (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        args.fleet_sizes = [int(n) for n in args.consumers.split(",") if n]
        args.adapter_counts = [int(m) for m in args.adapters.split(",") if m]
    except ValueError:
        parser.error("--consumers and --adapters are comma-separated integers")
    if min(args.fleet_sizes) < 1 or min(args.adapter_counts) < 1 or args.requests_per_consumer < 10:
        parser.error("consumers and adapters >= 1, --requests-per-consumer >= 10")
    if not 0 < args.load <= 1 or not 0 <= args.warmup < 1 or args.device_budget < 1 or args.host_budget < 1:
        parser.error("--load in (0, 1], --warmup in [0, 1), budgets >= 1")
    return args


def run(args) -> dict:
    costs_ms = measured_costs_ms()
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for routing in ROUTINGS:
        for m in args.adapter_counts:
            for n in args.fleet_sizes:
                results.setdefault(routing, {}).setdefault(str(m), {})[str(n)] = simulate(routing, n, m, args, costs_ms)
    ratios, met = {}, {}
    n, m = str(HEADLINE["consumers"]), str(HEADLINE["adapters"])
    if n in results["skew"].get(m, {}):
        skew, affinity = results["skew"][m][n], results["affinity"][m][n]
        ratios = {
            "usable_capacity_16": float(skew["usable_capacity"]),
            "hit_rate_vs_affinity": float(skew["device_hit_rate"] / affinity["device_hit_rate"]),
        }
        met = {k: bool(ratios[k] >= TARGETS[k]) for k in TARGETS}
    config = {k: v for k, v in vars(args).items() if k not in ("json", "plot", "consumers", "adapters")}
    return {"config": {**config, "costs_ms": costs_ms, "routing": vars(RoutingConfig())},
            "results": results, "ratios": ratios, "targets": TARGETS, "met": met}


def print_table(result: dict) -> None:
    print(f"{'routing':<10}{'adapters':>9}{'consumers':>10}{'usable':>8}{'hit rate':>9}{'p50 ms':>10}{'p99 ms':>10}{'imbalance':>10}")
    for routing, by_m in result["results"].items():
        for m, by_n in by_m.items():
            for n, r in by_n.items():
                print(f"{routing:<10}{m:>9}{n:>10}{r['usable_capacity']:>8.2f}{r['device_hit_rate']:>9.3f}"
                      f"{r['queue_ms_p50']:>10.1f}{r['queue_ms_p99']:>10.1f}{r['load_imbalance']:>10.2f}")
    for name, target in result["targets"].items():
        if name in result["ratios"]:
            print(f"{name:<24}{result['ratios'][name]:>8.3f} >= {target:.2f}  {'yes' if result['met'][name] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - started
    print_table(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    plot = args.plot or (str(Path(args.json).with_suffix(".png")) if args.json else None)
    if plot:
        save_plot(plot, result["results"], args.fleet_sizes, args.adapter_counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
