// The federation's launch page (router.forward: stream, /v2/...). Plain JavaScript, no build step.
//
// Opens the router's /build/ event stream for the same launch (same query string), shows
// the phases, the build log and any failover notice, and on `ready` sends the browser to
// the member's server the way BinderHub's own client does: `urlpath` (or the legacy
// `labpath` -> doc/tree/..., `filepath` -> tree/...) appended to the server URL's path,
// then `token` added as a query parameter. The path is appended, never resolved as a
// URL of its own: `https://evil.example/`, `//evil.example`, `\\evil.example` or their
// percent-encoded forms stay path segments on the server's origin, and a path that dot
// segments would take out of the server's own path opens the server's root instead, so
// the server's token only ever goes to the server.
//
// If the connection drops, the browser's EventSource reconnects by itself and sends the
// last event id; the router's failover notices carry the member they moved to as their
// id, so a reconnect lands on the member that has the launch (the sticky cookie covers a
// launch that never failed over). The stream is closed on `ready` and `failed`, so the
// browser never reconnects to a finished launch.
"use strict";

(function () {
  const config = JSON.parse(document.getElementById("launch-config").textContent);
  const params = new URLSearchParams(window.location.search);
  const statusEl = document.getElementById("status");
  const phaseEl = document.getElementById("phase");
  const noticesEl = document.getElementById("notices");
  const logEl = document.getElementById("log");
  const MAX_LOG = 500000; // characters kept in the log view

  const PHASES = {
    waiting: "Waiting for the build to start…",
    fetching: "Fetching the repository…",
    building: "Building the environment (this can take a while)…",
    pushing: "Storing the built environment…",
    built: "Environment ready, starting a server…",
    launching: "Starting a server…",
    ready: "Server ready, opening it…",
  };

  function appendLog(text) {
    let log = logEl.textContent + text;
    if (log.length > MAX_LOG) log = log.slice(log.length - MAX_LOG);
    logEl.textContent = log;
    logEl.scrollTop = logEl.scrollHeight;
  }

  function setStatus(text, state) {
    statusEl.textContent = text;
    if (state) document.body.className = state;
  }

  // BinderHub's launch logic: the path inside the server to open, from the query string.
  function launchPath() {
    if (params.has("labpath")) {
      return "doc/tree/" + encodeURI(params.get("labpath").replace(/\/$/, ""));
    }
    if (params.has("filepath")) {
      return "tree/" + encodeURI(params.get("filepath").replace(/\/$/, ""));
    }
    return params.get("urlpath") || "";
  }

  // Where to send the browser once the server is ready: `path` (with its own query and
  // fragment, if any) appended to the server URL's path. Setting `pathname` can never
  // change a URL's origin; what it resolves to is then checked to stay under the
  // server's path (dot segments, even encoded, are resolved by the URL parser).
  function serverTarget(serverUrl, path, token) {
    const server = new URL(serverUrl);
    if (!server.pathname.endsWith("/")) server.pathname += "/";
    let query = "";
    let fragment = "";
    const hash = path.indexOf("#");
    if (hash >= 0) {
      fragment = path.slice(hash);
      path = path.slice(0, hash);
    }
    const question = path.indexOf("?");
    if (question >= 0) {
      query = path.slice(question + 1);
      path = path.slice(0, question);
    }
    let target = new URL(server.href);
    target.pathname = server.pathname + path.replace(/^[\/\\]+/, "");
    if (target.origin !== server.origin || !target.pathname.startsWith(server.pathname)) {
      target = new URL(server.href); // out of the server's own path: open its root
    } else {
      new URLSearchParams(query).forEach(function (value, name) {
        target.searchParams.append(name, value);
      });
      target.hash = fragment;
    }
    target.searchParams.append("token", token);
    return target;
  }

  let finished = false;
  let lastId = "";
  const source = new EventSource(config.build_url);

  source.onmessage = function (message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch (err) {
      return; // not a build event
    }
    const phase = typeof event.phase === "string" ? event.phase.toLowerCase() : "";
    const text = typeof event.message === "string" ? event.message : "";
    if (message.lastEventId && message.lastEventId !== lastId) {
      // Only the router sets event ids: on its failover notices, naming the next member.
      lastId = message.lastEventId;
      const item = document.createElement("li");
      item.className = "failover";
      item.textContent = text.trim();
      noticesEl.appendChild(item);
    }
    if (text) appendLog(text);
    if (phase && phase !== "failed" && phase !== "ready") {
      phaseEl.textContent = phase;
      if (PHASES[phase]) setStatus(PHASES[phase]);
    }
    if (phase === "ready") {
      finished = true;
      source.close();
      phaseEl.textContent = phase;
      let target;
      try {
        target = serverTarget(event.url, launchPath(), event.token);
      } catch (err) {
        target = null;
      }
      if (!target || (target.protocol !== "https:" && target.protocol !== "http:")) {
        setStatus("The server is ready, but its address is not a web address.", "failed");
        return;
      }
      setStatus(PHASES.ready, "ready");
      window.location.href = target.href;
    } else if (phase === "failed") {
      finished = true;
      source.close();
      phaseEl.textContent = phase;
      setStatus("Launch failed: " + (text.trim() || "no reason given"), "failed");
    }
  };

  source.onerror = function () {
    if (finished) return;
    if (source.readyState === EventSource.CLOSED) {
      finished = true;
      setStatus("Lost the connection to the Binder federation. Reload this page to try again.", "failed");
    } else {
      setStatus("Connection interrupted; reconnecting…");
    }
  };
})();
