"""A BinderHub member cluster, as Kubernetes objects in the API double, with the report it should give.

Namespace `binderhub` runs the member; namespace `other-hub` runs someone else's
JupyterHub with pods labelled like ours (the agent must not count them). Nodes:

- `user-1`: ready, 110 pods / 7910m / 29Gi, 120+ images: 110 unrelated ones plus the
  member images of A, B, Z, X, U (with digest-only and tagged names, as kubelets list them);
- `user-2`: ready, 110 pods / 4 / 16Gi, images of A;
- `cordoned`: ready but unschedulable, images of B (counts for nothing);
- `bare`: only a name (no status at all: not ready, counts for nothing);
- `odd`: ready, no allocatable, image entries without names or with junk.

Repositories: A is launched (pod with BINDER_REQUEST); B is known only from the
agent's configured specs (and spelled with capitals); Z is a Zenodo launch (slug not
computable, learned from its pod); X's pod claims a spec its image does not belong to
(not learned); U has no pod and no spec. So A is on 2 nodes, B and Z on 1; X and U
are unmapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub import images

NAMESPACE = "binderhub"
OTHER_NAMESPACE = "other-hub"
PREFIX = "registry.example.org/binder/r2d-"

SPEC_A = "gh/binder-examples/requirements/HEAD"
SPEC_B = "gh/Org/Repo/main"            # configured, not launched
SPEC_Z = "zenodo/10.5281/zenodo.3242074"

IMAGE_A = images.image_name(PREFIX, images.build_slug("gh", "binder-examples/requirements/HEAD"), "a1b2c3d")
IMAGE_B = images.image_name(PREFIX, images.build_slug("gh", "Org/Repo/main"), "0f0f0f0")
IMAGE_Z = images.image_name(PREFIX, images.data_build_slug("zenodo", "3242074"), "3242074")
IMAGE_X = images.image_name(PREFIX, images.build_slug("gh", "someone/else/HEAD"), "1234567")
IMAGE_U = images.image_name(PREFIX, images.build_slug("gh", "nobody/launched-this/HEAD"), "7654321")

GIB = 1024 ** 3


def slug_of(image: str) -> str:
    parsed = images.parse_image_name(PREFIX, image)
    assert parsed is not None, image
    return parsed[0]


@dataclass(frozen=True)
class Expected:
    user_pods: int = 4          # A, Z, X, and one pod with nothing but a name and labels
    build_pods: int = 1
    nodes: int = 3              # user-1, user-2, odd
    pods: int = 220
    cpu: float = 11.91
    memory: int = 45 * GIB
    cached: tuple[tuple[str, int], ...] = ((SPEC_A, 2), (SPEC_B, 1), (SPEC_Z, 1))
    unmapped: int = 2           # X, U


EXPECTED = Expected()


def _digest(i: int) -> str:
    return "sha256:" + f"{i:064x}"


def _names(image: str, i: int) -> list[str]:
    repository = image.rsplit(":", 1)[0]
    return [f"{repository}@{_digest(i)}", image]


def ready() -> list[dict]:
    return [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True", "reason": "KubeletReady"}]


def nodes() -> list[dict]:
    unrelated = [
        {"names": [f"docker.io/library/python@{_digest(1000 + i)}", f"docker.io/library/python:3.{i}-slim"],
         "sizeBytes": 50_000_000 + i}
        for i in range(100)
    ] + [
        {"names": [f"quay.io/jupyterhub/k8s-network-tools@{_digest(2000 + i)}"], "sizeBytes": 1000 + i}  # digest only
        for i in range(10)
    ]
    member_images = [IMAGE_A, IMAGE_B, IMAGE_Z, IMAGE_X, IMAGE_U]
    return [
        {
            "metadata": {"name": "user-1", "labels": {"hub.jupyter.org/node-purpose": "user"}},
            "spec": {"podCIDR": "10.0.1.0/24"},
            "status": {
                "allocatable": {"cpu": "7910m", "memory": "29Gi", "pods": "110", "ephemeral-storage": "95Gi"},
                "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
                "conditions": ready(),
                "images": unrelated + [{"names": _names(img, i), "sizeBytes": 2_000_000_000} for i, img in enumerate(member_images)],
            },
        },
        {
            "metadata": {"name": "user-2"},
            "status": {
                "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                "conditions": ready(),
                "images": [{"names": _names(IMAGE_A, 7), "sizeBytes": 2_000_000_000}],
            },
        },
        {
            "metadata": {"name": "cordoned"},
            "spec": {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}, "conditions": ready(),
                       "images": [{"names": [IMAGE_B], "sizeBytes": 1}]},
        },
        {"metadata": {"name": "bare"}},
        {
            "metadata": {"name": "odd"},
            "status": {"conditions": ready(), "images": [{"sizeBytes": 5}, {"names": None}, {"names": [42, PREFIX, ""]}, "junk"]},
        },
    ]


def user_pod(name: str, image: str | None, request: str | None, phase: str = "Running",
             namespace: str = NAMESPACE) -> dict:
    env = [{"name": "JUPYTERHUB_API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}]
    if request is not None:
        env.append({"name": "BINDER_REQUEST", "value": request})
        env.append({"name": "BINDER_REPO_URL", "value": "https://example.invalid/repo"})
    container = {"name": "notebook", "env": env}
    if image is not None:
        container["image"] = image
    return {
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app": "jupyterhub", "component": "singleuser-server", "hub.jupyter.org/username": name},
            "annotations": {"hub.jupyter.org/username": name},
        },
        "spec": {"containers": [{"name": "block-cloud-metadata", "image": "busybox"}, container]},
        "status": {"phase": phase},
    }


def pods() -> list[dict]:
    return [
        user_pod("jupyter-a", IMAGE_A, "v2/" + SPEC_A),
        user_pod("jupyter-z", IMAGE_Z, "/v2/" + SPEC_Z),
        user_pod("jupyter-x", IMAGE_X, "v2/gh/evil/spoof/HEAD"),  # image does not belong to this launch
        user_pod("jupyter-done", IMAGE_A, "v2/" + SPEC_A, phase="Succeeded"),
        {"metadata": {"name": "jupyter-bare", "namespace": NAMESPACE, "labels": {"component": "singleuser-server"}}},
        {
            "metadata": {"name": "build-org-2drepo-0f0f0f", "namespace": NAMESPACE,
                         "labels": {"component": "binderhub-build", "name": "build-org-2drepo-0f0f0f"},
                         "annotations": {"binder-repo": "https://github.com/Org/Repo"}},
            "spec": {"containers": [{"name": "builder", "image": "quay.io/jupyterhub/repo2docker:2024.07.0",
                                     "args": ["jupyter-repo2docker", "--image-name", IMAGE_B]}]},
            "status": {"phase": "Running"},
        },
        {"metadata": {"name": "hub-5d4f", "namespace": NAMESPACE, "labels": {"component": "hub"}},
         "status": {"phase": "Running"}},
        {"metadata": {"name": "no-labels", "namespace": NAMESPACE}},
        user_pod("jupyter-elsewhere-1", IMAGE_U, "v2/gh/nobody/launched-this/HEAD", namespace=OTHER_NAMESPACE),
        user_pod("jupyter-elsewhere-2", IMAGE_A, "v2/" + SPEC_A, namespace=OTHER_NAMESPACE),
    ]


def populate(double) -> None:
    for node in nodes():
        double.put_node(node)
    for pod in pods():
        double.put_pod(pod)
