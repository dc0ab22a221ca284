"""Names from input, checked as Kubernetes checks them, before they are used anywhere.

Every collector passes the names it reads (namespaces, pod and workload names, label keys and values,
DNS names of peers) through these checks, so that a capture from a compromised node or a careless
copy cannot name a file outside the output folder, break the `k=v,k2=v2` label encoding, or write
lines into a YAML comment. The rules are those of k8s.io/apimachinery `validation`
(`IsDNS1123Label`, `IsDNS1123Subdomain`, `IsQualifiedName`, `IsValidLabelValue`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
"""An RFC 1123 label (a namespace name): at most 63 lower case letters, digits and '-', alphanumeric at both ends."""
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_HOST_NAME = re.compile(
    r"(\*\.)?[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?)*\.?"
)
_SHOWN = 80


class InvalidName(ValueError):
    """A name from the input that Kubernetes would not accept; the message says which and why."""


def _shown(name: str) -> str:
    return repr(name if len(name) <= _SHOWN else name[:_SHOWN] + "…")


def is_dns_label(name: object) -> bool:
    return isinstance(name, str) and bool(DNS_LABEL.fullmatch(name))


def is_dns_subdomain(name: object) -> bool:
    return isinstance(name, str) and len(name) <= 253 and bool(_SUBDOMAIN.fullmatch(name))


def check_namespace(name: str) -> str:
    """`name`, if it is a namespace name (an RFC 1123 label); else raises `InvalidName`."""
    if not is_dns_label(name):
        raise InvalidName(
            f"namespace {_shown(name)} is not a Kubernetes namespace name "
            "(an RFC 1123 label: at most 63 lower case letters, digits and '-')"
        )
    return name


def check_object_name(name: str, what: str) -> str:
    """`name`, if it is an object name (an RFC 1123 subdomain, as pod and workload names are); else raises."""
    if not is_dns_subdomain(name):
        raise InvalidName(
            f"{what} {_shown(name)} is not a Kubernetes object name "
            "(an RFC 1123 subdomain: at most 253 lower case letters, digits, '-' and '.')"
        )
    return name


def check_kind(kind: str) -> str:
    """`kind`, if it looks like a Kubernetes kind (`Deployment`, `CronJob`); else raises."""
    if not _KIND.fullmatch(kind):
        raise InvalidName(f"workload kind {_shown(kind)} is not a Kubernetes kind (letters and digits)")
    return kind


def label_key_problem(key: str) -> str:
    """Why `key` is not a label key (`[prefix/]name`), or "" when it is one."""
    if not isinstance(key, str):
        return "it is not a string"
    prefix, slash, name = key.rpartition("/")
    if slash and not (prefix and is_dns_subdomain(prefix)):
        return "its prefix is not an RFC 1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED.fullmatch(name):
        return "its name is not 1 to 63 letters, digits, '-', '_' and '.', alphanumeric at both ends"
    return ""


def label_value_problem(value: str) -> str:
    """Why `value` is not a label value, or "" when it is one (the empty value is one)."""
    if not isinstance(value, str):
        return "not a string"
    if value and (len(value) > 63 or not _QUALIFIED.fullmatch(value)):
        return "not at most 63 letters, digits, '-', '_' and '.', alphanumeric at both ends"
    return ""


def check_labels(labels: Mapping[str, str]) -> Mapping[str, str]:
    """`labels`, if every key and value follows the Kubernetes label syntax; else raises `InvalidName`."""
    for key, value in labels.items():
        problem = label_key_problem(key)
        if problem:
            raise InvalidName(f"label key {_shown(key)} is not a Kubernetes label key: {problem}")
        problem = label_value_problem(value)
        if problem:
            raise InvalidName(f"label {_shown(key)}: value {_shown(value)} is not a Kubernetes label value: {problem}")
    return labels


def is_host_name(name: str) -> bool:
    """Whether a DNS name seen for a peer (a query, an FQDN) is a plain host name, possibly a wildcard."""
    return len(name) <= 254 and bool(_HOST_NAME.fullmatch(name))


def check_pod(namespace: str, pod: str, workload: str, kind: str, labels: Mapping[str, str]) -> None:
    """Check every name of a pod endpoint (empty pod, workload and kind are allowed: not known)."""
    check_namespace(namespace)
    if pod:
        check_object_name(pod, "pod name")
    if workload:
        check_object_name(workload, "workload name")
    if kind:
        check_kind(kind)
    check_labels(labels)


def is_ip_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def check_ip(address: str) -> str:
    """`address`, if it is an IPv4 or IPv6 address (a peer outside the cluster becomes an ipBlock of it)."""
    if not is_ip_address(address):
        raise InvalidName(f"{_shown(address)} is not an IP address")
    return address


def check_cidr(cidr: str) -> str:
    """`cidr`, if it is an IPv4 or IPv6 network (a node's pod CIDR)."""
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        raise InvalidName(f"{_shown(cidr)} is not a CIDR") from None
    return cidr
