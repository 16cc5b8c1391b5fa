// A widget host as Element is one, built on matrix-widget-api's client side (ClientWidgetApi):
// it frames the widget from the room's `im.vector.modular.widgets` state event (the URL
// template filled by the library), grants the capabilities it asks, hands it the user's OpenID
// token, and feeds it the room's state updates read from a /sync loop. `sendText` posts to the
// room as the user, as the client's composer would. CONFIG is written by the test.
/* global mxwidgets, CONFIG */
"use strict";
const { ClientWidgetApi, Widget, WidgetDriver, OpenIDRequestState } = mxwidgets;

class Driver extends WidgetDriver {
  async validateCapabilities(requested) {
    window.requestedCapabilities = [...requested];
    return requested;
  }
  askOpenID(observer) {
    observer.update({ state: OpenIDRequestState.Allowed, token: CONFIG.openid });
  }
}

const auth = { Authorization: `Bearer ${CONFIG.accessToken}` };
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
src += `${src.includes("?") ? "&" : "?"}parentUrl=${encodeURIComponent(location.href)}`;
window.widgetSrc = src;
iframe.src = src;

let counter = 0;
window.sendText = async (text) => {
  const txn = `host-${Date.now()}-${++counter}`;
  const url = `${CONFIG.homeserver}/_matrix/client/v3/rooms/${encodeURIComponent(CONFIG.room)}/send/m.room.message/${txn}`;
  const response = await fetch(url, {
    method: "PUT",
    headers: { ...auth, "Content-Type": "application/json" },
    body: JSON.stringify({ msgtype: "m.text", body: text }),
  });
  if (!response.ok) throw new Error(`send: HTTP ${response.status}`);
};

(async () => {
  const sync = async (since) => {
    const query = since ? `since=${encodeURIComponent(since)}&timeout=20000` : "timeout=0";
    const response = await fetch(`${CONFIG.homeserver}/_matrix/client/v3/sync?${query}`, { headers: auth });
    if (!response.ok) throw new Error(`sync: HTTP ${response.status}`);
    return response.json();
  };
  let since = (await sync(null)).next_batch;
  for (;;) {
    const answer = await sync(since);
    since = answer.next_batch;
    const room = ((answer.rooms || {}).join || {})[CONFIG.room];
    if (!room) continue;
    for (const event of [...((room.state || {}).events || []), ...((room.timeline || {}).events || [])]) {
      event.room_id = CONFIG.room;
      if (event.state_key !== undefined) await api.feedStateUpdate(event).catch(() => {});
      else await api.feedEvent(event).catch(() => {});
    }
  }
})().catch((error) => console.error(`host sync: ${error.message}`));
