"""Benchmark recommender.semantics on generated clusters.

A deterministic generator builds N workloads (2-3 replicas each) spread over namespaces
of about 100 workloads, and M distinct observed edges (client workload -> server workload
on one of the server's ports, skewed so that some servers are hubs). The policies are what
the recommender would synthesize: a default-deny per namespace and one policy per workload,
selecting on `app`, with ingress rules from its observed clients and egress rules to its
observed servers, peers with the same ports sharing one rule, exact ports.

It then evaluates every observed edge (each must be allowed: recall 100%) and computes
allowed_connections for every class pair with an edge (each must equal the observed ports:
no excess). The floor is the time to merely parse and validate the policies.

    python -m benchmarks.bench_semantics [--sizes 300:1000,3000:10000] [--seed 7] [--repeat 1]
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from recommender.semantics import (
    ConnectionSet,
    ContainerPort,
    Evaluator,
    Namespace,
    Pod,
    Protocol,
    parse_policies,
)

T = TypeVar("T")
WORKLOADS_PER_NAMESPACE = 100


@dataclass(frozen=True)
class Workload:
    namespace: str
    app: str
    ports: tuple[ContainerPort, ...]
    pods: tuple[Pod, ...]


@dataclass(frozen=True)
class Scenario:
    namespaces: list[Namespace]
    workloads: list[Workload]
    edges: dict[tuple[int, int], frozenset[ContainerPort]]  # (client, server) -> ports used
    policies: list[dict[str, Any]]


def generate(workload_count: int, edge_count: int, seed: int = 7) -> Scenario:
    rng = random.Random(seed)
    namespace_count = max(1, workload_count // WORKLOADS_PER_NAMESPACE)
    namespaces = [Namespace(f"ns{i}", {"team": f"t{i % 5}"}) for i in range(namespace_count)]
    workloads = []
    for i in range(workload_count):
        namespace, app = f"ns{i % namespace_count}", f"w{i}"
        ports = (ContainerPort(8000 + i % 50, "http"),)
        if i % 7 == 0:
            ports += (ContainerPort(9090, "metrics"),)
        if i % 97 == 0:
            ports += (ContainerPort(53, "dns", Protocol.UDP),)
        replicas = tuple(Pod(namespace, f"{app}-{r}", {"app": app}, ports) for r in range(2 + i % 2))
        workloads.append(Workload(namespace, app, ports, replicas))
    edges: dict[tuple[int, int], set[ContainerPort]] = defaultdict(set)
    while len(edges) < edge_count:
        client = rng.randrange(workload_count)
        server = int(workload_count * rng.random() ** 2)  # skewed: low indexes are hubs
        if client != server:
            edges[client, server].add(rng.choice(workloads[server].ports))
    frozen = {pair: frozenset(ports) for pair, ports in edges.items()}
    return Scenario(namespaces, workloads, frozen, _policies(namespaces, workloads, frozen))


def _policies(
    namespaces: list[Namespace],
    workloads: list[Workload],
    edges: dict[tuple[int, int], frozenset[ContainerPort]],
) -> list[dict[str, Any]]:
    manifests = [
        _manifest(ns.name, "default-deny", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})
        for ns in namespaces
    ]
    ingress: dict[int, dict[frozenset[ContainerPort], list[int]]] = defaultdict(lambda: defaultdict(list))
    egress: dict[int, dict[frozenset[ContainerPort], list[int]]] = defaultdict(lambda: defaultdict(list))
    for (client, server), ports in sorted(edges.items()):
        ingress[server][ports].append(client)
        egress[client][ports].append(server)
    for index, workload in enumerate(workloads):
        spec: dict[str, Any] = {
            "podSelector": {"matchLabels": {"app": workload.app}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {"from": [_peer(workload, workloads[c]) for c in clients], "ports": _ports(ports)}
                for ports, clients in sorted(ingress[index].items(), key=lambda item: sorted(map(str, item[0])))
            ],
            "egress": [
                {"to": [_peer(workload, workloads[s]) for s in servers], "ports": _ports(ports)}
                for ports, servers in sorted(egress[index].items(), key=lambda item: sorted(map(str, item[0])))
            ],
        }
        manifests.append(_manifest(workload.namespace, workload.app, spec))
    return manifests


def _manifest(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _peer(subject: Workload, other: Workload) -> dict[str, Any]:
    peer: dict[str, Any] = {"podSelector": {"matchLabels": {"app": other.app}}}
    if other.namespace != subject.namespace:
        peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": other.namespace}}
    return peer


def _ports(ports: frozenset[ContainerPort]) -> list[dict[str, Any]]:
    return [{"protocol": p.protocol.value, "port": p.port} for p in sorted(ports, key=str)]


def _timed(action: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def run(scenario: Scenario) -> dict[str, float]:
    """Seconds per phase; raises AssertionError if an edge is denied or a pair has excess."""
    _, floor = _timed(lambda: parse_policies(scenario.policies))
    pods = [pod for workload in scenario.workloads for pod in workload.pods]
    evaluator, build = _timed(lambda: Evaluator(scenario.policies, scenario.namespaces, pods))

    def evaluate_edges() -> None:
        for n, ((client, server), ports) in enumerate(scenario.edges.items()):
            client_pods, server_pods = scenario.workloads[client].pods, scenario.workloads[server].pods
            for port in ports:
                pair = client_pods[n % len(client_pods)], server_pods[n % len(server_pods)]
                decision = evaluator.evaluate(*pair, port.protocol, port.port)
                assert decision.allowed, str(decision)

    def connections_of_class_pairs() -> int:
        pairs = 0
        for (client, server), ports in scenario.edges.items():
            allowed = evaluator.allowed_connections(
                evaluator.class_of(scenario.workloads[client].pods[0]),
                evaluator.class_of(scenario.workloads[server].pods[0]),
            )
            observed = ConnectionSet.union_all(ConnectionSet.ports(p.protocol, p.port) for p in ports)
            assert allowed == observed, f"{allowed} != {observed}"
            pairs += 1
        return pairs

    _, cold = _timed(evaluate_edges)
    _, pairs_time = _timed(connections_of_class_pairs)
    _, warm = _timed(evaluate_edges)
    return {"floor": floor, "build": build, "edges": cold, "pairs": pairs_time, "warm": warm}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300:1000,3000:10000", help="workloads:edges,...")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs per phase")
    args = parser.parse_args(argv)
    sizes = [tuple(int(n) for n in size.split(":")) for size in args.sizes.split(",")]

    header = "workloads  edges   pods classes  floor  build  edges  pairs   warm  total  total/floor"
    print(header)
    previous: tuple[int, float] | None = None
    for workload_count, edge_count in sizes:
        scenario = generate(workload_count, edge_count, args.seed)
        runs = [run(scenario) for _ in range(args.repeat)]
        times = {phase: min(r[phase] for r in runs) for phase in runs[0]}
        total = times["build"] + times["edges"] + times["pairs"]
        pods = sum(len(w.pods) for w in scenario.workloads)
        print(
            f"{workload_count:>9} {edge_count:>6} {pods:>6} {len(scenario.workloads):>7}"
            f" {times['floor']:6.2f} {times['build']:6.2f} {times['edges']:6.2f}"
            f" {times['pairs']:6.2f} {times['warm']:6.2f} {total:6.2f} {total / times['floor']:11.1f}"
        )
        if previous is not None:
            size_ratio, time_ratio = edge_count / previous[0], total / previous[1]
            print(f"  growth: {size_ratio:.0f}x edges -> {time_ratio:.1f}x time")
        previous = (edge_count, total)
    print("(seconds; total = build + edges + pairs; warm = edges again from the cache)")


if __name__ == "__main__":
    main()
