"""Synthesis and verification on generated clusters: the real pipeline, timed per phase.

    python -m benchmarks.bench_verify [--sizes 300:1000,3000:10000]

For each size, a generated cluster of N workloads (1-3 pods each, namespaces of 20 workloads,
kube-dns) with about M observed edges is turned into aggregated observations, then:
synthesis (the proposal), replay (every observed edge decided by the NetworkPolicy evaluator: recall
must be 100%) and excess (every pair any rule reaches, over every port the proposal names: must be
0). The floor is the time to merely parse and validate the proposal's policies, measured in the same
run. Times are CPU seconds (`time.process_time`), the best of --repeat runs.

Then the excess of one policy opening every TCP port (`port: 1, endPort: 65535`) between the pods of
bookinfo (the shared Hubble fixtures), which must take under a second: excess is computed on port
ranges, so its cost does not grow with the ports a range holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import pandas as pd

from benchmarks.generate import observation_set, scale_topology
from recommender import api
from recommender.semantics import parse_policies
from recommender.synthesis import SynthesisOptions, synthesize
from recommender.verification import check_proposal


def run(workloads: int, edges: int) -> dict[str, float | int]:
    topology = scale_topology(workloads, edges=edges)
    observed = observation_set(topology)
    options = SynthesisOptions(exclude_namespaces=())
    start = time.process_time()
    proposal = synthesize(observed.observations, observed.pods, options=options)
    synthesized = time.process_time()
    manifests = [plan.manifest for plan in proposal.policies]
    parse_policies(manifests)
    parsed = time.process_time()
    ruled = pd.concat([proposal.edges, proposal.findings.host_ingress], ignore_index=True)
    check = check_proposal([plan.policy for plan in proposal.policies], observed, ruled, options)  # as recommend
    checked = time.process_time()
    assert check.recall == 1.0 and not check.excess, "the proposal must be exact"
    return {
        "workloads": workloads,
        "edges": len(observed.observations),
        "policies": len(manifests),
        "synthesis_s": round(synthesized - start, 2),
        "floor_parse_s": round(parsed - synthesized, 2),
        "replay_and_excess_s": round(checked - parsed, 2),
        "total_s": round(checked - start, 2),
    }


REPO = Path(__file__).resolve().parents[1]
HUBBLE = REPO.parent / "shared" / "fixtures" / "hubble"
BOOKINFO = [HUBBLE / f"basic-sample-400-{kind}-flows.json" for kind in ("tcp", "udp")]
EVERY_PORT = REPO / "tests" / "data" / "policies" / "bookinfo-every-port.yaml"


def every_port_excess() -> dict[str, float | int]:
    """The excess of `port: 1, endPort: 65535` between every pod of bookinfo, timed."""
    drift = api.diff(api.load_policies(str(EVERY_PORT)), api.load_observations([str(path) for path in BOOKINFO]))
    start = time.process_time()
    found = drift.unobserved()
    elapsed = time.process_time() - start
    return {"pairs": len(found.pairs), "connections": len(found), "ranges": len(found.ranges()), "excess_s": elapsed}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300:1000,3000:10000", help="workloads:edges, comma-separated")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes.split(","):
        workloads, edges = map(int, size.split(":"))
        runs = [run(workloads, edges) for _ in range(args.repeat)]
        results.append(min(runs, key=lambda r: r["total_s"]))
    for smaller, larger in itertools.pairwise(results):
        larger["growth_vs_previous"] = round(larger["total_s"] / max(smaller["total_s"], 1e-9), 1)
        larger["edges_ratio_vs_previous"] = round(larger["edges"] / smaller["edges"], 1)
    print(json.dumps(results, indent=2))
    if all(path.exists() for path in BOOKINFO):
        wide = every_port_excess()
        print(
            f"bookinfo, TCP 1-65535 between every pod: excess {wide['connections']:,} connections in "
            f"{wide['ranges']} ranges over {wide['pairs']} pairs, {wide['excess_s']:.3f} s (must be under 1 s)"
        )
    return results


if __name__ == "__main__":
    main()
