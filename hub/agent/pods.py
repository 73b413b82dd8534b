"""What BinderHub's pods and nodes say, read from raw Kubernetes JSON (every field optional),
and the book of current pods that list and watch events keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .. import images
from ..report import Usage

USER_COMPONENT = "singleuser-server"
BUILD_COMPONENT = "binderhub-build"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


# --- Kubernetes objects (raw JSON, every field optional) ----------------------------------


def json_get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


@dataclass(frozen=True)
class PodInfo:
    """What the agent needs of one BinderHub pod."""

    kind: str                 # "user" | "build"
    active: bool              # not Succeeded/Failed yet
    image: str | None = None  # the server container's image (user pods)
    spec: str | None = None   # `<provider>/<spec>` of the launch (user pods, from BINDER_REQUEST)


def pod_info(pod: Any) -> PodInfo | None:
    """Summarise a Pod object; None for pods that are neither user servers nor builds."""
    component = json_get(pod, "metadata", "labels", "component")
    if component == USER_COMPONENT:
        kind = "user"
    elif component == BUILD_COMPONENT:
        kind = "build"
    else:
        return None
    phase = json_get(pod, "status", "phase")
    active = phase not in FINISHED_PHASES
    if kind == "build":
        return PodInfo(kind, active)
    containers = json_get(pod, "spec", "containers")
    containers = [c for c in containers if isinstance(c, Mapping)] if isinstance(containers, list) else []
    # KubeSpawner names the server container "notebook"; fall back to the first one.
    server = next((c for c in containers if c.get("name") == "notebook"), containers[0] if containers else {})
    image = server.get("image") if isinstance(server.get("image"), str) else None
    spec = None
    env = server.get("env")
    for var in env if isinstance(env, list) else ():
        if isinstance(var, Mapping) and var.get("name") == "BINDER_REQUEST" and isinstance(var.get("value"), str):
            spec = launch_spec(var["value"])
    return PodInfo(kind, active, image, spec)


def launch_spec(binder_request: str) -> str | None:
    """`v2/gh/org/repo/ref` (BinderHub's `binder_request`) → `gh/org/repo/ref`."""
    request = binder_request.strip().lstrip("/")
    if not request.startswith("v2/"):
        return None
    spec = request[len("v2/"):]
    provider, sep, rest = spec.partition("/")
    return spec if provider and sep and rest else None


@dataclass(frozen=True)
class NodeInfo:
    name: str
    usable: bool              # Ready and schedulable
    pods: int = 0
    cpu: float = 0.0
    memory: int = 0
    slugs: frozenset[str] = frozenset()   # safe slugs of member images on the node


def _quantity(value: Any) -> Any:
    from kubernetes.utils import parse_quantity

    if value is None:
        return None
    try:
        return parse_quantity(value)
    except (ValueError, TypeError, ArithmeticError):
        return None


def node_info(node: Any, image_prefix: str) -> NodeInfo:
    name = json_get(node, "metadata", "name")
    conditions = json_get(node, "status", "conditions")
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in (conditions if isinstance(conditions, list) else ())
    )
    usable = ready and json_get(node, "spec", "unschedulable") is not True
    allocatable = json_get(node, "status", "allocatable")
    allocatable = allocatable if isinstance(allocatable, Mapping) else {}
    pods, cpu, memory = (_quantity(allocatable.get(k)) for k in ("pods", "cpu", "memory"))
    slugs = set()
    entries = json_get(node, "status", "images")
    for entry in entries if isinstance(entries, list) else ():
        names = entry.get("names") if isinstance(entry, Mapping) else None
        for image in names if isinstance(names, list) else ():
            parsed = images.parse_image_name(image_prefix, image) if isinstance(image, str) else None
            if parsed is not None:
                slugs.add(parsed[0])
    return NodeInfo(
        name=name if isinstance(name, str) else "<unnamed>",
        usable=usable,
        pods=max(int(pods), 0) if pods is not None else 0,
        cpu=max(float(cpu), 0.0) if cpu is not None else 0.0,
        memory=max(int(memory), 0) if memory is not None else 0,
        slugs=frozenset(slugs),
    )


# --- what the agent knows ------------------------------------------------------------------


class PodBook:
    """The current BinderHub pods, kept by list + watch events (event-loop thread only)."""

    def __init__(self) -> None:
        self._pods: dict[tuple[str, str], PodInfo] = {}

    @staticmethod
    def _key(pod: Any, namespace: str) -> tuple[str, str] | None:
        name = json_get(pod, "metadata", "name")
        ns = json_get(pod, "metadata", "namespace") or namespace
        return (ns, name) if isinstance(name, str) and isinstance(ns, str) else None

    def replace(self, namespace: str, pods: Iterable[Any]) -> None:
        for key in [k for k in self._pods if k[0] == namespace]:
            del self._pods[key]
        for pod in pods:
            self.put(namespace, pod)

    def put(self, namespace: str, pod: Any) -> PodInfo | None:
        key = self._key(pod, namespace)
        info = pod_info(pod)
        if key is None or info is None or key[0] != namespace:
            return None  # a pod of another namespace is none of ours
        self._pods[key] = info
        return info

    def remove(self, namespace: str, pod: Any) -> None:
        key = self._key(pod, namespace)
        if key is not None:
            self._pods.pop(key, None)

    def usage(self) -> Usage:
        user = sum(1 for p in self._pods.values() if p.active and p.kind == "user")
        build = sum(1 for p in self._pods.values() if p.active and p.kind == "build")
        return Usage(user_pods=user, build_pods=build)

    def pods(self) -> list[PodInfo]:
        return list(self._pods.values())

    def running(self) -> dict[str, int]:
        """Active user pods per launch spec (pods whose spec is unknown are left out)."""
        counts: dict[str, int] = {}
        for pod in self._pods.values():
            if pod.active and pod.kind == "user" and pod.spec:
                counts[pod.spec] = counts.get(pod.spec, 0) + 1
        return counts
