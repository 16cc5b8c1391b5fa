// Drives matrix-js-sdk's MSC3089 file-tree API (MSC3089TreeSpace, MSC3089Branch) for the
// workspace appservice's interop test: the real SDK reads a library the bot made, and makes one
// the bot must read. The SDK lives outside the checkout (./scripts/test installs it once per
// machine); MATRIX_JS_SDK names its folder.
//
//   node msc3089.mjs BASE_URL USER_ID ACCESS_TOKEN read ROOM_ID   → prints the tree as JSON
//   node msc3089.mjs BASE_URL USER_ID ACCESS_TOKEN create NAME    → prints {"room_id": …}
import { pathToFileURL } from "node:url";
import path from "node:path";

const [baseUrl, userId, accessToken, mode, arg] = process.argv.slice(2);
const sdkDir = process.env.MATRIX_JS_SDK;
if (!sdkDir) {
  console.error("MATRIX_JS_SDK is not set");
  process.exit(2);
}
const sdk = await import(pathToFileURL(path.join(sdkDir, "node_modules/matrix-js-sdk/lib/index.js")).href);
sdk.logger?.disableAll?.();
// Trees are encrypted rooms (matrix-js-sdk makes them so): files are sent with its Rust crypto.
const whoami = await (await fetch(`${baseUrl}/_matrix/client/v3/account/whoami`, {
  headers: { Authorization: `Bearer ${accessToken}` },
})).json();
const client = sdk.createClient({ baseUrl, userId, accessToken, deviceId: whoami.device_id });
await client.initRustCrypto({ useIndexedDB: false });
const ready = new Promise((resolve, reject) => {
  client.on(sdk.ClientEvent.Sync, (state) => {
    if (state === "PREPARED") resolve();
    if (state === "ERROR") reject(new Error("sync failed"));
  });
});
await client.startClient({ initialSyncLimit: 20 });
await ready;

function describe(tree) {
  return {
    room_id: tree.roomId,
    files: tree.listFiles().map((b) => ({ id: b.id, name: b.getName(), version: b.version, locked: b.isLocked() })),
    folders: tree.getDirectories().map((d) => ({ name: d.room.name, ...describe(d) })),
  };
}

// unstableCreateFileTree builds its MSC3089TreeSpace as soon as createRoom answers, and that
// needs the room in the client's store, which only sync brings: an app waits for the room, so
// createRoom here answers once sync has it.
const createRoom = client.createRoom.bind(client);
client.createRoom = async (options) => {
  const created = await createRoom(options);
  await new Promise((resolve) => {
    const seen = (room) => {
      if (room.roomId === created.room_id) {
        client.off(sdk.ClientEvent.Room, seen);
        resolve();
      }
    };
    client.on(sdk.ClientEvent.Room, seen);
    if (client.getRoom(created.room_id)) resolve();
  });
  return created;
};

let out;
if (mode === "read") {
  const tree = client.unstableGetFileTreeSpace(arg);
  if (!tree) throw new Error(`${arg} is not a file tree for matrix-js-sdk`);
  out = describe(tree);
} else if (mode === "create") {
  const tree = await client.unstableCreateFileTree(arg);
  await tree.createFile("js-note.txt", Buffer.from("written by matrix-js-sdk"), {}, {});
  out = { room_id: tree.roomId };
} else {
  throw new Error(`unknown mode ${mode}`);
}
client.stopClient();
console.log(JSON.stringify(out));
process.exit(0);
