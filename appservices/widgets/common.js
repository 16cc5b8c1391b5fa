// What the workspace's widgets share: the widget API's postMessage protocol (the one
// matrix-widget-api implements for Element), spoken by hand so nothing is downloaded at run
// time; the OpenID token the client hands over; calls to the workspace's REST API with it.
// Each page's own script calls `Widget.start({capabilities, onUpdate})` as it loads.
"use strict";

const Widget = (() => {
  const params = new URLSearchParams(location.search);
  const widgetId = params.get("widgetId") || "";
  const room = params.get("room") || "";
  const parentUrl = params.get("parentUrl");
  // Messages are accepted only from, and sent only to, the client that embeds us.
  const parentOrigin = parentUrl ? new URL(parentUrl).origin : null;
  const lang = (document.documentElement.lang || "fr").startsWith("en") ? "en" : "fr";
  const pending = new Map();
  let sequence = 0;
  let credentials = null;
  let openidWaiter = null;
  let capabilities = [];
  let onUpdate = () => {};
  const capabilityWaiters = [];
  const granted = new Set();

  function post(message) {
    window.parent.postMessage(message, parentOrigin || "*");
  }

  // A request to the client; resolves with its response (`{error: …}` included).
  function request(action, data) {
    const requestId = `hemicycle-${++sequence}`;
    post({ api: "fromWidget", widgetId, requestId, action, data });
    return new Promise((resolve) => pending.set(requestId, resolve));
  }

  function openidFrom(answer) {
    if (answer && answer.state === "allowed" && answer.access_token && answer.matrix_server_name) {
      credentials = { server: answer.matrix_server_name, token: answer.access_token };
      return true;
    }
    return false;
  }

  // The client's OpenID answer: at once ("allowed"), or later through openid_credentials.
  async function askOpenid() {
    const answer = await request("get_openid", {});
    if (openidFrom(answer)) return;
    await new Promise((resolve, reject) => {
      openidWaiter = (later) => (openidFrom(later) ? resolve() : reject(new Error("OpenID refused")));
    });
  }

  window.addEventListener("message", (event) => {
    if (parentOrigin && event.origin !== parentOrigin) return;
    if (event.source !== window.parent) return;
    const message = event.data;
    if (!message || message.widgetId !== widgetId) return;
    if (message.api === "fromWidget" && message.response && pending.has(message.requestId)) {
      pending.get(message.requestId)(message.response);
      pending.delete(message.requestId);
      return;
    }
    if (message.api !== "toWidget") return;
    let response = {};
    switch (message.action) {
      case "capabilities":
        response = { capabilities };
        break;
      case "supported_api_versions":
        response = { supported_versions: ["0.0.1", "0.0.2", "org.matrix.msc2762", "org.matrix.msc2762_update_state"] };
        break;
      case "openid_credentials":
        if (openidWaiter) openidWaiter(message.data);
        break;
      case "notify_capabilities":
        for (const waiter of capabilityWaiters.splice(0)) waiter((message.data || {}).approved || []);
        break;
      case "send_event":
      case "update_state":
        // Someone changed what the page shows (the chat, the API, another view): read it again.
        if (credentials) onUpdate(message.data);
        break;
      default:
        break;
    }
    post({ ...message, response });
  });

  // Asks the client for more capabilities (MSC2974), e.g. to read the timeline of a library
  // folder opened later; resolves with whether all of them were approved.
  async function more(wanted) {
    const missing = wanted.filter((c) => !granted.has(c) && !capabilities.includes(c));
    if (!missing.length) return true;
    const approved = new Promise((resolve) => capabilityWaiters.push(resolve));
    const answer = await request("org.matrix.msc2974.request_capabilities", { capabilities: missing });
    // A client without MSC2974 answers with an error and never notifies.
    if (answer && answer.error) return false;
    const list = await approved;
    for (const c of list) granted.add(c);
    return missing.every((c) => granted.has(c));
  }

  // A call to the workspace's REST API (`path` under /api/v1) as the user.
  async function api(method, path, body) {
    const response = await fetch(`../api/v1${path}`, {
      method,
      headers: {
        Authorization: `OpenID ${credentials.server} ${credentials.token}`,
        ...(body ? { "Content-Type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    return answer;
  }

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  const statusLine = () => document.getElementById("status");
  function say(text) {
    statusLine().textContent = text;
  }

  // Asks for the token, then runs `ready` (the first load); the page says what failed.
  function start(options) {
    capabilities = options.capabilities;
    onUpdate = options.onUpdate || onUpdate;
    say(lang === "en" ? "Connecting to the room…" : "Connexion au salon…");
    (async () => {
      try {
        await askOpenid();
        await options.ready();
      } catch (error) {
        say(`${lang === "en" ? "Failed:" : "Échec :"} ${error.message}`);
      }
    })();
  }

  // Runs an action of the user's; its failure is said on the status line.
  async function attempt(action) {
    try {
      await action();
      return true;
    } catch (error) {
      say(`${lang === "en" ? "Failed:" : "Échec :"} ${error.message}`);
      return false;
    }
  }

  function loaded() {
    say("");
    document.body.dataset.loaded = String(Date.now());
  }

  // Reloads asked in a burst (several changes arriving at once) may be answered out of order:
  // each takes a ticket, and only the answer of the latest ticket taken is shown.
  function tickets() {
    let issued = 0;
    return () => {
      const mine = ++issued;
      return () => mine === issued;
    };
  }

  return { params, room, lang, request, more, api, element, say, start, attempt, loaded, tickets, enc: encodeURIComponent };
})();
