// The federation's launch page (router.forward: stream, /v2/...). Plain JavaScript, no build step.
//
// Opens the router's /build/ event stream for the same launch (same query string), shows
// the phases, the build log and any failover notice, and on `ready` sends the browser to
// the member's server the way BinderHub's own page does: `urlpath` (or the legacy
// `labpath` -> doc/tree/..., `filepath` -> tree/...) resolved against the server URL,
// then `token` added as a query parameter.
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

  // BinderHub's launch logic: where to send the browser once the server is ready.
  function serverUrl(url, token) {
    let urlPath = params.get("urlpath") || "";
    if (params.has("labpath")) {
      urlPath = "doc/tree/" + encodeURI(params.get("labpath").replace(/\/$/, ""));
    } else if (params.has("filepath")) {
      urlPath = "tree/" + encodeURI(params.get("filepath").replace(/\/$/, ""));
    }
    const target = new URL(urlPath.replace(/^\/*/, ""), url);
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
        target = serverUrl(event.url, event.token);
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
