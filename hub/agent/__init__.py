"""`binderfed agent`: runs beside one member BinderHub and reports its cluster's truth.

The agent reads its own Kubernetes API with the real `kubernetes` client (in-cluster
service account, or a kubeconfig) and publishes a signed `hub.report.MemberReport`
to the federation's Redis every `period` seconds:

- **usage**: BinderHub pods in the namespace(s) that are not finished, by their
  `component` label: user servers (`singleuser-server`) and builds (`binderhub-build`).
  Pods are *watched* (`list`, then `watch` from the list's resourceVersion, resumed
  from the last seen version when a stream ends, re-listed on `410 Gone`), so the
  counts follow the cluster without polling it.
- **capacity**: the sum of `status.allocatable` (pods, cpu, memory) over ready,
  schedulable nodes (optionally only those matching a node label selector). Nodes
  are *listed* once per period rather than watched: a node object changes on every
  kubelet status update and carries its whole image list, so a watch would stream
  far more than one list per period.
- **cached images**: each node's `status.images` names, matched against the
  member's image prefix (`hub.images.parse_image_name`), counted per repository as
  the number of nodes holding any tag of its image.

An image name carries only the *safe slug* of a repository (escaped, cut, plus a
hash of the original slug), which cannot be turned back into a repository. The agent
learns which launch spec built which slug from:

1. the user pods themselves: BinderHub's spawner puts the launch request in the
   server container's environment (`BINDER_REQUEST=v2/<provider>/<spec>`, set by
   `BinderSpawnerMixin.get_env` from the launch's `binder_request` user option) and
   runs the image as that container's image. Where the slug can be computed from
   the spec (`hub.images.build_slug`), the pair is checked with `slug_matches`, so a
   mismatch is never learned; for data providers (Zenodo, ...) the slug needs the
   provider's API and the pod's pairing is taken as it is.
2. launch specs given in the configuration (`--spec`, `--specs-file`), for images
   that are pre-pulled or were launched before the agent started.

What it learned from pods is kept in Redis (`binderfed:agent-specs:<member>`), so a
restarted agent still knows the repositories of images whose pods are long gone;
entries of images not seen for `--forget-after-days` are dropped.

Reading the cluster (raw JSON, blocking calls in worker threads) is `hub.agent.kube`. The
package's rooms: `settings` (what the agent is told), `specs` (slug → launch spec),
`pods` (what pods and nodes say), `reporting` (one report, pure), `outbox` (Redis), `service` (the loop), `cli`.

Errors (API 5xx, connection loss, an expired token answering 401) are retried with
exponential backoff; a 401 also rebuilds the client from its configuration, which
re-reads a rotated service-account token or kubeconfig. While pods or nodes cannot
be read the agent publishes nothing, so the router's age limit retires its last
report instead of trusting an outdated one.
"""

from __future__ import annotations

from .outbox import RedisOutbox
from .service import Agent
from .settings import AgentSettings

__all__ = ["Agent", "AgentSettings", "RedisOutbox"]
