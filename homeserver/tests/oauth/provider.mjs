// A real OpenID Connect provider for the upstream sign-in tests: node-oidc-provider (installed
// by ./scripts/test; OIDC_PROVIDER names the folder holding node_modules/oidc-provider), on
// 127.0.0.1 at a free port, with one confidential client (OIDC_CLIENT: client_id,
// client_secret, redirect_uris) and the accounts of OIDC_ACCOUNTS (login → claims). Its own
// development sign-in pages take any password for a known login. Prints one JSON line with its
// issuer, then serves until killed.
import http from "node:http";
import path from "node:path";
import fs from "node:fs";
import { pathToFileURL } from "node:url";

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set (run the tests with ./scripts/test)`);
    process.exit(2);
  }
  return value;
};
const entry = path.join(env("OIDC_PROVIDER"), "node_modules/oidc-provider/lib/index.js");
if (!fs.existsSync(entry)) {
  console.error(`oidc-provider is missing at ${entry}: run ./scripts/test, which installs it`);
  process.exit(2);
}
const { default: Provider } = await import(pathToFileURL(entry).href);
const client = JSON.parse(env("OIDC_CLIENT"));
const accounts = JSON.parse(env("OIDC_ACCOUNTS"));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: client.token_endpoint_auth_method || "client_secret_basic",
    },
  ],
  // ProConnect's claims, as its scopes release them.
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    given_name: ["given_name"],
    usual_name: ["usual_name"],
    organizational_unit: ["organizational_unit"],
  },
  scopes: ["openid", "email", "given_name", "usual_name", "organizational_unit"],
  findAccount: (ctx, id) =>
    accounts[id] ? { accountId: id, claims: () => ({ sub: id, ...accounts[id] }) } : undefined,
  cookies: { keys: ["hemicycle-test-only"] },
  features: { devInteractions: { enabled: true } },
});
server.on("request", provider.callback());
console.log(JSON.stringify({ issuer }));
