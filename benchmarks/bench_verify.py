"""Synthesis and verification on generated clusters: the real pipeline, timed per phase.

    python -m benchmarks.bench_verify [--sizes 300:1000,3000:10000]

For each size, a generated cluster of N workloads (1-3 pods each, namespaces of 20 workloads,
kube-dns) with about M observed edges is turned into aggregated observations, then:
synthesis (the proposal), replay (every observed edge decided by the NetworkPolicy evaluator: recall
must be 100%) and excess (every pair any rule reaches, over every port the proposal names: must be
0). The floor is the time to merely parse and validate the proposal's policies, measured in the same
run. Times are CPU seconds (`time.process_time`), the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import pandas as pd

from benchmarks.generate import observation_set, scale_topology
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
    check = check_proposal(manifests, observed, ruled, options)
    checked = time.process_time()
    assert check.recall == 1.0 and check.excess.empty, "the proposal must be exact"
    return {
        "workloads": workloads,
        "edges": len(observed.observations),
        "policies": len(manifests),
        "synthesis_s": round(synthesized - start, 2),
        "floor_parse_s": round(parsed - synthesized, 2),
        "replay_and_excess_s": round(checked - parsed, 2),
        "total_s": round(checked - start, 2),
    }


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
    return results


if __name__ == "__main__":
    main()
