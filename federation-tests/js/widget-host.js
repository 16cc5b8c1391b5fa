// A widget host as Element is one, built on matrix-widget-api's client side (ClientWidgetApi):
// it frames the widget from the room's `im.vector.modular.widgets` state event (the URL
// template filled by the library), grants the capabilities it asks (and those it asks for
// later, MSC2974), hands it the user's OpenID token, feeds it the state updates and events of
// the user's rooms read from a /sync loop (the library filters them by capability), reads a
// room's timeline for it (`read_events`), and uploads and downloads files for it with the user's
// token (MSC4039) — what Element's widget driver does. It does not decrypt Megolm (Element
// would hand the widget decrypted events): the tests use rooms in the clear, with encrypted
// attachments. `sendText` posts to the room as the user, as the client's composer would.
// CONFIG is written by the test.
/* global mxwidgets, CONFIG */
"use strict";
const { ClientWidgetApi, Widget, WidgetDriver, OpenIDRequestState } = mxwidgets;

const auth = { Authorization: `Bearer ${CONFIG.accessToken}` };
const hs = CONFIG.homeserver;
const enc = encodeURIComponent;

async function call(method, path, body, headers) {
  const response = await fetch(`${hs}${path}`, { method, headers: { ...auth, ...(headers || {}) }, body });
  if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status}`);
  return response;
}

class Driver extends WidgetDriver {
  async validateCapabilities(requested) {
    window.requestedCapabilities = [...(window.requestedCapabilities || []), ...requested];
    return requested;
  }
  askOpenID(observer) {
    observer.update({ state: OpenIDRequestState.Allowed, token: CONFIG.openid });
  }
  getKnownRooms() {
    return [CONFIG.room];
  }
  async readRoomTimeline(roomId, eventType, msgtype, stateKey, limit) {
    const page = await (await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/messages?dir=b&limit=${Math.min(limit || 100, 500)}`)).json();
    return (page.chunk || []).filter((e) => e.type === eventType
      && (msgtype === undefined || (e.content || {}).msgtype === msgtype)
      && (stateKey === undefined || e.state_key === stateKey));
  }
  async readRoomState(roomId, eventType, stateKey) {
    const state = await (await call("GET", `/_matrix/client/v3/rooms/${enc(roomId)}/state`)).json();
    return state.filter((e) => e.type === eventType && (stateKey === undefined || e.state_key === stateKey));
  }
  async uploadFile(file) {
    const response = await call("POST", "/_matrix/media/v3/upload", file,
      { "Content-Type": file.type || "application/octet-stream" });
    return { contentUri: (await response.json()).content_uri };
  }
  async downloadFile(contentUri) {
    const [server, id] = contentUri.replace("mxc://", "").split("/");
    const response = await call("GET", `/_matrix/client/v1/media/download/${enc(server)}/${enc(id)}`);
    return { file: await response.blob() };
  }
}

const widget = new Widget({ ...CONFIG.widget, id: CONFIG.widgetId });
const iframe = document.getElementById("widget");
const api = new ClientWidgetApi(widget, iframe, new Driver());
api.setViewedRoomId(CONFIG.room);
window.widgetReady = new Promise((resolve) => api.once("ready", resolve));
let src = widget.getCompleteUrl({
  widgetRoomId: CONFIG.room,
  currentUserId: CONFIG.user,
  userDisplayName: CONFIG.user,
  clientLanguage: CONFIG.lang,
});
src += `${src.includes("?") ? "&" : "?"}parentUrl=${enc(location.href)}`;
window.widgetSrc = src;
iframe.src = src;

let counter = 0;
window.sendText = async (text) => {
  const txn = `host-${Date.now()}-${++counter}`;
  await call("PUT", `/_matrix/client/v3/rooms/${enc(CONFIG.room)}/send/m.room.message/${txn}`,
    JSON.stringify({ msgtype: "m.text", body: text }), { "Content-Type": "application/json" });
};

(async () => {
  const sync = async (since) => {
    const query = since ? `since=${enc(since)}&timeout=20000` : "timeout=0";
    return (await call("GET", `/_matrix/client/v3/sync?${query}`)).json();
  };
  let since = (await sync(null)).next_batch;
  for (;;) {
    const answer = await sync(since);
    since = answer.next_batch;
    for (const [roomId, room] of Object.entries((answer.rooms || {}).join || {})) {
      for (const event of [...((room.state || {}).events || []), ...((room.timeline || {}).events || [])]) {
        event.room_id = roomId;
        // The widget API refuses events the widget has no capability for: expected, but said,
        // so a refusal the test did not expect shows in its output.
        const fed = event.state_key !== undefined ? api.feedStateUpdate(event) : api.feedEvent(event);
        await fed.catch((error) => console.warn(`host feed ${event.type}: ${error.message}`));
      }
    }
  }
})().catch((error) => console.error(`host sync: ${error.message}`));
