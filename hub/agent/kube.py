"""Reading one member cluster through the Kubernetes API, for the member agent.

Uses the real `kubernetes` client for transport, authentication and watch streams,
but reads raw JSON (`hub.agent.pods`) (`_preload_content=False`, watch events left undeserialised)
instead of the client's typed models: those reject a whole list when one object
misses a field they require, and the agent must never go blind because of one odd
pod or node. Every field is treated as optional.

The client's calls block; `KubeReader` methods are meant for worker threads, and
`PodWatcher` runs them there (in daemon threads) so no event loop waits on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any, Callable

from ..tasks import Backoff, BackgroundService
from .pods import BUILD_COMPONENT, USER_COMPONENT, PodBook, PodInfo, json_get

log = logging.getLogger("binderfed.agent")

LIST_PAGE = 500


# --- the API (blocking calls, for worker threads) ----------------------------------------------


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a kubernetes ApiException, else None."""
    from kubernetes.client.exceptions import ApiException

    return exc.status if isinstance(exc, ApiException) else None


ConfigLoader = Callable[[], Any]  # () -> kubernetes.client.Configuration


def default_config_loader(kubeconfig: str | None = None, context: str | None = None) -> ConfigLoader:
    """In-cluster service account when running in a pod (and no kubeconfig is given), else a kubeconfig."""
    from kubernetes import client, config

    def load() -> Any:
        configuration = client.Configuration()
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            # try_refresh_token: the client re-reads the projected token file before it expires
            config.load_incluster_config(client_configuration=configuration, try_refresh_token=True)
        else:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return configuration

    return load


class KubeReader:
    """The agent's Kubernetes API access. Every method blocks: call it from a worker thread."""

    def __init__(self, load_config: ConfigLoader, request_timeout: float = 30.0):
        self._load_config = load_config
        self.request_timeout = request_timeout
        self._lock = threading.Lock()
        self._api: Any = None
        self._clients: list[Any] = []

    def api(self) -> Any:
        from kubernetes import client

        with self._lock:
            if self._api is None:
                api_client = client.ApiClient(self._load_config())
                self._clients.append(api_client)
                self._api = client.CoreV1Api(api_client)
            return self._api

    def reset(self) -> None:
        """Forget the client: the next call loads the configuration (and credentials) again."""
        with self._lock:
            self._api = None

    def close(self) -> None:
        with self._lock:
            for api_client in self._clients:
                try:
                    api_client.close()
                except Exception:  # closing is best effort
                    pass
            self._clients.clear()
            self._api = None

    def _list(self, call: Callable[..., Any], **kwargs: Any) -> tuple[list[Any], str | None]:
        """All pages of a list call, as raw objects, and the list's resourceVersion."""
        items: list[Any] = []
        token: str | None = None
        version: str | None = None
        while True:
            extra = {"_continue": token} if token else {}
            response = call(limit=LIST_PAGE, _preload_content=False,
                            _request_timeout=self.request_timeout, **extra, **kwargs)
            body = json.loads(response.data)
            page = body.get("items") if isinstance(body, dict) else None
            items.extend(page if isinstance(page, list) else ())
            version = json_get(body, "metadata", "resourceVersion") or version
            token = json_get(body, "metadata", "continue")
            if not token:
                return items, version

    def list_pods(self, namespace: str, selector: str) -> tuple[list[Any], str | None]:
        api = self.api()
        return self._list(lambda **kw: api.list_namespaced_pod(namespace, label_selector=selector, **kw))

    def list_nodes(self, selector: str | None) -> list[Any]:
        api = self.api()
        extra = {"label_selector": selector} if selector else {}
        return self._list(lambda **kw: api.list_node(**extra, **kw))[0]


# --- watching pods ------------------------------------------------------------------------


class PodWatcher(BackgroundService):
    """Keeps a PodBook current for one namespace: list, then watch; re-list on 410 Gone."""

    def __init__(self, kube: KubeReader, namespace: str, book: PodBook, *,
                 on_pod: Callable[[PodInfo], None] | None = None,
                 watch_timeout: int = 300, backoff_initial: float = 1.0, backoff_max: float = 60.0):
        super().__init__(f"pod-watch-{namespace}")
        self.kube = kube
        self.namespace = namespace
        self.book = book
        self.on_pod = on_pod
        self.watch_timeout = watch_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.selector = f"component in ({USER_COMPONENT},{BUILD_COMPONENT})"
        self.synced = False              # the book reflects a successful list (and the watch since)
        self.lists = 0
        self.errors = 0
        self._halt = threading.Event()   # stop() was called: read by the watch thread too
        self._watch: Any = None
        self._blocking: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._halt.clear()
        self._loop = asyncio.get_running_loop()
        await super().start()

    async def stop(self) -> None:
        self._halt.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.kube.request_timeout + 5
        # A blocked watch read only ends when its socket is shut; Watch.stop() does that
        # once the stream has a response, so repeat it until the thread has returned.
        while self._blocking is not None and not self._blocking.done() and loop.time() < deadline:
            if self._watch is not None:
                self._watch.stop()
            await asyncio.wait({self._blocking}, timeout=0.05)
        await super().stop()

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        # A daemon thread, not the loop's default executor: a watch read blocked before
        # the API server answered cannot be interrupted, and an executor thread would
        # hold up interpreter exit until its read timeout (the watch's whole duration).
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if not future.done():
                future.set_exception(error) if error is not None else future.set_result(result)

        def target() -> None:
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting coroutine
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(settle, result, error)
            except RuntimeError:  # the loop is gone: nobody waits for this any more
                pass

        threading.Thread(target=target, name="kube-api", daemon=True).start()
        self._blocking = future
        return await future

    async def run(self) -> None:
        backoff = Backoff(self.backoff_initial, self.backoff_max, jitter=0.5)
        version: str | None = None   # None: the book must be (re)built from a list
        while not self.stopping and not self._halt.is_set():
            try:
                if version is None:
                    pods, version = await self._in_thread(self.kube.list_pods, self.namespace, self.selector)
                    if version is None:
                        raise RuntimeError("pod list carried no resourceVersion to watch from")
                    self.book.replace(self.namespace, pods)
                    self._learn_all()
                    self.lists += 1
                    self.synced = True
                    backoff.reset()
                started = asyncio.get_running_loop().time()
                version = await self._in_thread(self._watch_blocking, version)
                if asyncio.get_running_loop().time() - started < 1.0:
                    # A stream the server ends at once: do not turn into a tight loop of watches.
                    await self.pause(backoff.next())
                else:
                    backoff.reset()
            except Exception as exc:
                if self._halt.is_set():
                    return
                status = api_status(exc)
                if status == 410:
                    log.info("pod watch in %s expired (410 Gone); listing again", self.namespace)
                    version = None
                    continue
                self.errors += 1
                if status == 401:
                    # An expired or rotated token: rebuild the client, which reads it again.
                    self.kube.reset()
                # The stream broke or the API refused: events may have been missed, so the
                # counts are not trusted (nor reported) until a list succeeds again.
                self.synced = False
                version = None
                delay = backoff.next()
                log.warning("pod watch in %s failed (%s); retrying in %.1f s", self.namespace,
                            f"HTTP {status}" if status else f"{type(exc).__name__}: {exc}", delay)
                await self.pause(delay)

    def _learn_all(self) -> None:
        if self.on_pod is not None:
            for pod in self.book.pods():
                self.on_pod(pod)

    def _apply(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            self.book.remove(self.namespace, obj)
            return
        info = self.book.put(self.namespace, obj)
        if info is not None and self.on_pod is not None:
            self.on_pod(info)

    def _watch_blocking(self, version: str) -> str:
        """One watch stream (worker thread); returns the last resourceVersion seen."""
        from kubernetes import watch

        loop = self._loop
        assert loop is not None
        api = self.kube.api()
        stream = watch.Watch()
        self._watch = stream
        if self._halt.is_set():
            return version

        # A plain function (no return annotation) makes Watch hand out raw JSON objects.
        def list_pods(**kwargs: Any) -> Any:
            return api.list_namespaced_pod(self.namespace, label_selector=self.selector, **kwargs)

        timeout = self.watch_timeout
        try:
            for event in stream.stream(list_pods, resource_version=version, timeout_seconds=timeout,
                                       allow_watch_bookmarks=True,
                                       _request_timeout=(self.kube.request_timeout, timeout + 30)):
                if self._halt.is_set():
                    break
                kind = event.get("type") if isinstance(event, dict) else None
                obj = event.get("raw_object") if isinstance(event, dict) else None
                seen = json_get(obj, "metadata", "resourceVersion")
                if isinstance(seen, str) and seen:
                    version = seen
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    loop.call_soon_threadsafe(self._apply, kind, obj)
        finally:
            stream.stop()
            self._watch = None
        return version
