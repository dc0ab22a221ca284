"""Read the inventory's objects from the Kubernetes API with the official `kubernetes` client.

Only cluster-wide list calls, paginated with `limit`/`continue`: the tool needs RBAC `list` on pods,
namespaces, services and nodes (core), endpointslices (discovery.k8s.io) and networkpolicies
(networking.k8s.io), and nothing else. Failures become `CollectorError`s that say what failed and
how to fix it; they never carry a credential (messages are built here, never from the client's
exception text, which includes response headers).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from collectors.errors import CollectorError

log = logging.getLogger(__name__)

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclass(frozen=True)
class Resource:
    """A resource the inventory lists, with the client call that lists it across all namespaces."""

    name: str
    group: str
    api: type
    method: str
    version: str = ""
    """Set for a custom resource: listed with `CustomObjectsApi`, skipped where its CRD is not installed."""

    @property
    def qualified(self) -> str:
        """The name RBAC and `kubectl auth can-i` use: `pods`, `endpointslices.discovery.k8s.io`."""
        return f"{self.name}.{self.group}" if self.group else self.name


RESOURCES = (
    Resource("pods", "", client.CoreV1Api, "list_pod_for_all_namespaces"),
    Resource("services", "", client.CoreV1Api, "list_service_for_all_namespaces"),
    Resource("endpointslices", "discovery.k8s.io", client.DiscoveryV1Api, "list_endpoint_slice_for_all_namespaces"),
    Resource("namespaces", "", client.CoreV1Api, "list_namespace"),
    Resource("nodes", "", client.CoreV1Api, "list_node"),
    Resource("networkpolicies", "networking.k8s.io", client.NetworkingV1Api, "list_network_policy_for_all_namespaces"),
    *(
        Resource(plural, group, client.CustomObjectsApi, "list_cluster_custom_object", version)
        for plural, group, version in (
            ("ciliumnetworkpolicies", "cilium.io", "v2"),
            ("ciliumclusterwidenetworkpolicies", "cilium.io", "v2"),
            ("clusternetworkpolicies", "policy.networking.k8s.io", "v1alpha2"),
        )
    ),
)


@dataclass(frozen=True)
class Connection:
    """A configured API client and how to name it in messages (context and server, never credentials)."""

    api_client: client.ApiClient
    description: str


def list_pages(
    kubeconfig: str | None = None,
    context: str | None = None,
    *,
    page_size: int = 500,
    timeout: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """Every page of every `RESOURCES` list, as the API server sent it (`PodList` etc.).

    `kubeconfig` defaults to `$KUBECONFIG`, then `~/.kube/config`; with neither, inside a pod
    (`KUBERNETES_SERVICE_HOST` set), the pod's service account is used. `timeout` bounds each request.
    """
    if page_size < 1:
        raise ValueError(f"page_size must be at least 1, got {page_size}")
    connection = connect(kubeconfig, context)
    with connection.api_client:
        for resource in RESOURCES:
            yield from _pages(connection, resource, page_size, timeout)


def connect(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """An API client from a kubeconfig (and context), or from the in-cluster service account."""
    path = kubeconfig or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    if _kubeconfig_exists(path):
        return _from_kubeconfig(path, context)
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        if context:
            raise CollectorError(f"context {context!r} needs a kubeconfig, and there is none ({path})")
        return _in_cluster()
    raise CollectorError(f"kubeconfig {path}: no such file; give a kubeconfig or set KUBECONFIG")


def _from_kubeconfig(path: str, context: str | None) -> Connection:
    configuration = client.Configuration()
    try:
        contexts, current = config.list_kube_config_contexts(path)
        names = [entry["name"] for entry in contexts]
        if context and context not in names:
            raise CollectorError(f"kubeconfig {path}: no context {context!r}; it has: {', '.join(names) or 'none'}")
        config.load_kube_config(path, context, client_configuration=configuration, persist_config=False)
    except ConfigException as exc:
        raise CollectorError(f"kubeconfig {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # the message itself would quote the file's text
        raise CollectorError(f"kubeconfig {path}: invalid YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    except OSError as exc:
        raise CollectorError(f"kubeconfig {path}: cannot read: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError, AttributeError):  # how the client fails on misshapen files
        raise CollectorError(f"kubeconfig {path}: malformed: a field has the wrong type or encoding") from None
    chosen = context or (current or {}).get("name", "")
    return Connection(client.ApiClient(configuration), f"the API server {configuration.host} (context {chosen!r})")


def _in_cluster() -> Connection:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except ConfigException as exc:
        raise CollectorError(f"running in a pod, but its service account cannot be used: {exc}") from None
    return Connection(client.ApiClient(configuration), f"the in-cluster API server {configuration.host}")


def _kubeconfig_exists(path: str) -> bool:
    """Whether any file of a kubeconfig path (a `KUBECONFIG`-style list) exists."""
    return any(os.path.exists(os.path.expanduser(part)) for part in path.split(os.pathsep) if part)


def _pages(connection: Connection, resource: Resource, page_size: int, timeout: float) -> Iterator[dict[str, Any]]:
    list_call = getattr(resource.api(connection.api_client), resource.method)
    if resource.version:
        list_call = functools.partial(list_call, resource.group, resource.version, resource.name)
    token = None
    while True:
        try:
            response = list_call(limit=page_size, _continue=token, _preload_content=False, _request_timeout=timeout)
        except ApiException as exc:
            if resource.version and exc.status == 404:
                log.debug("%s: CRD not installed, skipped", resource.qualified)
                return
            raise CollectorError(_api_error(connection, resource, exc)) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise CollectorError(f"cannot reach {connection.description}: {reason}") from None
        try:
            page = json.loads(response.data)
        except ValueError:
            raise CollectorError(f"{connection.description} sent invalid JSON for {resource.qualified}") from None
        log.debug("listed %d %s", len(page.get("items") or ()), resource.qualified)
        yield page
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _api_error(connection: Connection, resource: Resource, exc: ApiException) -> str:
    where, what = connection.description, resource.qualified
    if exc.status == 0:  # the client's own failures, such as TLS errors
        return f"cannot connect to {where}: {str(exc.reason).splitlines()[-1]}"
    detail = _server_message(exc)
    if exc.status == 401:
        return (
            f"{where} rejected the credentials while listing {what} (401 Unauthorized: {detail}); "
            "they are missing, wrong or expired: log in again or check the kubeconfig user"
        )
    if exc.status == 403:
        group = json.dumps(resource.group)
        return (
            f"{where} does not allow listing {what} in all namespaces (403 Forbidden: {detail}). "
            f"Grant the 'list' verb with a ClusterRole rule such as "
            f'{{apiGroups: [{group}], resources: ["{resource.name}"], verbs: ["list"]}} bound to this user; '
            f"check with `kubectl auth can-i list {what} --all-namespaces`"
        )
    if exc.status == 404:
        return f"{where} does not serve {what} (404: {detail}); the inventory needs Kubernetes 1.21 or later"
    return f"{where} failed to list {what} ({exc.status} {exc.reason}: {detail})"


def _server_message(exc: ApiException) -> str:
    """The `message` of the API server's Status answer, or the HTTP reason."""
    try:
        message = json.loads(exc.body or "")["message"]
    except (ValueError, TypeError, KeyError):
        return str(exc.reason)
    return str(message)
