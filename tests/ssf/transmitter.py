"""A Shared Signals (SSF 1.0) transmitter on a loopback port the OS picks,
for jwtgate's tests: SETs signed with PyJWT and cryptography.

Serves /.well-known/ssf-configuration, /jwks, /streams (the stream's
configuration, a poll stream) and /poll (RFC 8936: hands out queued SETs
until acknowledged, records every request body). The test drives it with
/control/sign (a SET signed with the transmitter's key, or with a key it
does not publish), /control/queue (a SET for the poll endpoint) and
/control/polls (the poll requests received). Prints its port first.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

KID = "ssf-key-1"
POLL_TOKEN = sys.argv[1] if len(sys.argv) > 1 else "poll-token"

key = ec.generate_private_key(ec.SECP256R1())
# A key of the same kind the JWKS never shows: a forged signature.
foreign = ec.generate_private_key(ec.SECP256R1())
public_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
public_jwk.update({"kid": KID, "use": "sig", "alg": "ES256"})

lock = threading.Lock()
queued = {}
polls = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def base(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def send_json(self, value, status=200):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("content-length", "0"))
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self):
        if self.path == "/.well-known/ssf-configuration":
            base = self.base()
            self.send_json({
                "issuer": base,
                "jwks_uri": base + "/jwks",
                "delivery_methods_supported": ["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"],
                "configuration_endpoint": base + "/streams",
            })
        elif self.path == "/jwks":
            self.send_json({"keys": [public_jwk]})
        elif self.path == "/streams":
            if self.headers.get("authorization") != "Bearer " + POLL_TOKEN:
                self.send_json({"error": "unauthorized"}, 401)
                return
            self.send_json([{
                "stream_id": "s1",
                "iss": self.base(),
                "delivery": {"method": "urn:ietf:rfc:8936", "endpoint_url": self.base() + "/poll"},
            }])
        elif self.path == "/control/polls":
            with lock:
                self.send_json(list(polls))
        else:
            self.send_json({"error": "not found"}, 404)

    def do_POST(self):
        if self.path == "/control/sign":
            request = self.body()
            signer = foreign if request.get("foreign") else key
            headers = {"kid": KID, "typ": request.get("typ", "secevent+jwt")}
            token = jwt.encode(request["claims"], signer, algorithm="ES256", headers=headers)
            body = token.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/control/queue":
            request = self.body()
            with lock:
                queued[request["jti"]] = request["set"]
            self.send_json({})
        elif self.path == "/poll":
            if self.headers.get("authorization") != "Bearer " + POLL_TOKEN:
                self.send_json({"error": "unauthorized"}, 401)
                return
            request = self.body()
            with lock:
                polls.append(request)
                for jti in request.get("ack", []):
                    queued.pop(jti, None)
                for jti in request.get("setErrs", {}):
                    queued.pop(jti, None)
                limit = request.get("maxEvents", 100)
                sets = dict(list(queued.items())[:limit])
            self.send_json({"sets": sets, "moreAvailable": len(queued) > len(sets)})
        else:
            self.send_json({"error": "not found"}, 404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
