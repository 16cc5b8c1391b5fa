"""LiveKit's side of the calls tests, with LiveKit's own Python server SDK (`livekit-api`).

    verify KEY SECRET          reads a token on stdin, checks it as the SFU does
                               (livekit.api.TokenVerifier: HS256 signature, issuer, expiry)
                               and prints its claims as JSON; exits 1 when it is refused.
    sign-webhook KEY SECRET    reads a webhook body on stdin and prints the Authorization token
                               LiveKit sends with it (its `sha256` claim is the body's hash),
                               made with livekit-api's AccessToken.
    room-api KEY SECRET        serves the room API's `CreateRoom` and `GetParticipant` (Twirp,
                               JSON) on a free loopback port, printed first on stdout; every
                               request's token is checked with TokenVerifier and must grant
                               `roomCreate` (`CreateRoom`), or `roomAdmin` of the room asked
                               about (`GetParticipant`). `GET /rooms` lists the rooms opened so
                               far, for the test to read; `POST /participants` with `{room,
                               identity, present}` says who is on the SFU, as the test plays
                               the clients.

No LiveKit server can be installed from the package registries the project uses, so the room
API is served here; the tokens are still judged by LiveKit's own code.
"""

import dataclasses
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import base64
import hashlib

from livekit.api import AccessToken, TokenVerifier


def verify(key, secret):
    token = sys.stdin.read().strip()
    try:
        claims = TokenVerifier(key, secret).verify(token)
    except Exception as error:  # every refusal of the verifier
        print(json.dumps({"refused": repr(error)}))
        sys.exit(1)
    print(json.dumps(dataclasses.asdict(claims)))


def sign_webhook(key, secret):
    body = sys.stdin.buffer.read()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    print(AccessToken(key, secret).with_sha256(digest).to_jwt())


def room_api(key, secret):
    verifier = TokenVerifier(key, secret)
    rooms = {}
    participants = set()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/rooms":
                self.answer(200, rooms)
            else:
                self.answer(404, {"code": "bad_route", "msg": self.path})

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/participants":
                who = (body["room"], body["identity"])
                if body["present"]:
                    participants.add(who)
                else:
                    participants.discard(who)
                return self.answer(200, {})
            if self.path not in ("/twirp/livekit.RoomService/CreateRoom",
                                 "/twirp/livekit.RoomService/GetParticipant"):
                return self.answer(404, {"code": "bad_route", "msg": self.path})
            auth = self.headers.get("Authorization", "")
            try:
                claims = verifier.verify(auth.removeprefix("Bearer "))
            except Exception as error:
                return self.answer(401, {"code": "unauthenticated", "msg": repr(error)})
            if self.path.endswith("/GetParticipant"):
                if not claims.video.room_admin or claims.video.room != body["room"]:
                    return self.answer(403, {"code": "permission_denied", "msg": "no roomAdmin"})
                if (body["room"], body["identity"]) not in participants:
                    return self.answer(404, {"code": "not_found", "msg": "participant does not exist"})
                return self.answer(200, {"sid": "PA_1", "identity": body["identity"], "state": "ACTIVE"})
            if not claims.video.room_create:
                return self.answer(403, {"code": "permission_denied", "msg": "no roomCreate"})
            name = body["name"]
            room = rooms.setdefault(name, {
                "sid": "RM_" + str(len(rooms)),
                "name": name,
                "empty_timeout": body.get("empty_timeout", 0),
                "departure_timeout": body.get("departure_timeout", 0),
                "creation_time": int(time.time()),
            })
            self.answer(200, room)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    mode, key, secret = sys.argv[1:4]
    {"verify": verify, "sign-webhook": sign_webhook, "room-api": room_api}[mode](key, secret)
