"""Rendering of a proposal: YAML (with optional evidence comments), JSON, files and kustomization.

The policies are the proposal's target kind: NetworkPolicies, or CiliumNetworkPolicies
(`render_cilium`). Everything is sorted, so the same proposal always gives byte-identical files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from collectors.names import is_dns_label
from recommender.baseline import CLUSTER_BASELINE_NAME
from recommender.findings import Finding, findings_json, findings_markdown
from recommender.output_folder import OutputFolderError, replace_folder
from recommender.plans import PolicyPlan
from recommender.render_cilium import CLUSTERWIDE_KIND, cilium_policies
from recommender.synthesis import DEFAULT_DENY, Proposal

KUSTOMIZATION = "kustomization.yaml"
OWN_STEMS = ("kustomization", "findings", CLUSTER_BASELINE_NAME)
"""The names of the folder's own files (kustomization.yaml; findings.md and findings.json; the cluster-scoped
baseline's), without extension: a namespace of that name gets `<namespace>.namespace.<format>`, a name no
namespace file has."""


@dataclass(frozen=True)
class _Commented:
    """A mapping written with comment lines above it: a rule with its evidence."""

    value: Mapping[str, Any]
    comments: tuple[str, ...]


class _Dumper(yaml.SafeDumper):
    """Block style, and lists indented under their key (the style of kubectl and most GitOps repos).

    A `_Commented` mapping is written with its comment lines above it: the comments travel from the
    representer's node to the emitter on the node's start event."""

    _comments: tuple[str, ...] = ()

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def represent_commented(self, data: _Commented) -> yaml.MappingNode:
        node = self.represent_dict(data.value)
        node.comments = data.comments
        return node

    def serialize_node(self, node: yaml.Node, parent: yaml.Node | None, index: Any) -> None:
        self._comments = getattr(node, "comments", ())
        super().serialize_node(node, parent, index)

    def emit(self, event: yaml.Event) -> None:
        if self._comments and isinstance(event, yaml.MappingStartEvent):
            event.comments = self._comments
        self._comments = ()
        super().emit(event)

    def expect_block_sequence_item(self, first: bool = False) -> None:
        for comment in getattr(self.event, "comments", ()):
            self.write_indent()
            self.write_indicator(f"# {comment}", True)
        super().expect_block_sequence_item(first)


_Dumper.add_representer(_Commented, _Dumper.represent_commented)


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def ordered_policies(proposal: Proposal) -> list[PolicyPlan]:
    """Policies by namespace (the cluster-scoped baseline first), the default-deny first, then by name."""
    return sorted(proposal.policies, key=lambda plan: (plan.namespace, plan.name != DEFAULT_DENY, plan.name))


def target_policies(proposal: Proposal) -> list[PolicyPlan]:
    """The policies to write, of the proposal's target kind, in `ordered_policies` order."""
    plans = ordered_policies(proposal)
    return cilium_policies(plans, proposal.selectors, proposal.dns) if proposal.target == "cilium" else plans


def policy_yaml(plan: PolicyPlan, *, explain: bool = False) -> str:
    """One policy as a YAML document; with `explain`, a comment with its evidence above every rule."""
    text = _dump(plan.manifest)
    if not explain:
        return text
    if not plan.namespace and plan.manifest["kind"] == CLUSTERWIDE_KIND:
        header = f"# {plan.name}: in every namespace not excluded, deny what no other policy allows, but DNS"
        return f"{header}\n{text}"
    if not plan.namespace:
        header = f"# {plan.name}: where no NetworkPolicy decides, deny ingress from pods and all egress but DNS"
        warning = "# WARNING: ingress from outside the cluster is not denied (the API has no peer for it)"
        return f"{header}\n{warning}\n{text}"
    header = f"# {plan.namespace}/{plan.name}: "
    header += (
        plan.purpose
        or (f"what {plan.workload} was observed doing" if plan.workload else "")
        or "deny all ingress and egress not allowed by another policy"
    )
    lines = [header, *(f"# WARNING: {warning}" for warning in plan.warnings)]
    return "\n".join(lines) + "\n" + _dump(_explained(plan))


def _explained(plan: PolicyPlan) -> dict[str, Any]:
    """The manifest with every rule of `spec.ingress` and `spec.egress` commented with its evidence (a
    default-deny CNP's empty rules have none)."""
    spec = dict(plan.manifest["spec"])
    for direction in ("ingress", "egress"):
        evidence = plan.evidence_for(direction)
        if direction in spec:
            spec[direction] = [
                _Commented(rule, (*(f"WARNING: {w}" for w in evidence[i].warnings), evidence[i].comment()))
                if i < len(evidence)
                else rule
                for i, rule in enumerate(spec[direction])
            ]
    return {**plan.manifest, "spec": spec}


def namespace_yaml(plans: Iterable[PolicyPlan], *, explain: bool = False) -> str:
    return "---\n".join(policy_yaml(plan, explain=explain) for plan in plans)


def as_list(plans: Iterable[PolicyPlan]) -> dict[str, Any]:
    """The policies as one Kubernetes `List` object (what `kubectl get -o json` prints)."""
    return {"apiVersion": "v1", "kind": "List", "items": [plan.manifest for plan in plans]}


def proposal_text(proposal: Proposal, output_format: str, *, explain: bool = False) -> str:
    """The whole proposal as one YAML stream or one JSON document."""
    plans = target_policies(proposal)
    if output_format == "json":
        return json.dumps(as_list(plans), indent=2) + "\n"
    return namespace_yaml(plans, explain=explain)


def namespace_file(namespace: str, output_format: str) -> str:
    """The file of a namespace's policies: `<namespace>.<format>`, or `<namespace>.namespace.<format>` for a
    namespace named like one of the folder's own files; `cluster-baseline.<format>` for the cluster-scoped
    policies (namespace ""). Raises `OutputFolderError` for a name that is not a
    Kubernetes namespace name: no file is ever named after anything else."""
    if not namespace:
        return f"{CLUSTER_BASELINE_NAME}.{output_format}"
    if not is_dns_label(namespace):
        raise OutputFolderError(
            f"namespace {namespace!r} is not a Kubernetes namespace name (an RFC 1123 label): "
            "no policy file is named after it"
        )
    return f"{namespace}.namespace.{output_format}" if namespace in OWN_STEMS else f"{namespace}.{output_format}"


def write_proposal(
    proposal: Proposal,
    directory: str,
    *,
    output_format: str = "yaml",
    explain: bool = False,
    force: bool = False,
    findings: Sequence[Finding] | None = None,
) -> list[str]:
    """Write one file per namespace plus a `kustomization.yaml` listing them (and, given `findings`,
    `findings.md` and `findings.json`); returns the paths.

    The folder is the tool's (`output_folder.replace_folder`): the files of the last run are replaced as
    a whole, and a folder holding files it did not write is refused unless `force`.
    """
    by_namespace: dict[str, list[PolicyPlan]] = {}
    for plan in target_policies(proposal):
        by_namespace.setdefault(plan.namespace, []).append(plan)
    files = {}
    for namespace, plans in sorted(by_namespace.items()):
        if output_format == "json":
            content = json.dumps(as_list(plans), indent=2) + "\n"
        else:
            content = namespace_yaml(plans, explain=explain)
        files[namespace_file(namespace, output_format)] = content
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": list(files),
    }
    files[KUSTOMIZATION] = _dump(kustomization)
    if findings is not None:
        files["findings.md"] = findings_markdown(findings)
        files["findings.json"] = findings_json(findings)
    return replace_folder(directory, files, force=force)
