"""DPoP proofs made the way a client library makes them, with PyJWT and
cryptography (neither of which jwtgate uses), for tests/dpop_proofs.rs.

Usage: dpop_client.py METHOD HTU ACCESS_TOKEN IAT

Prints one JSON object per line: for each of ES256, EdDSA, PS256 and
RS256, a proof from a fresh key with the key's RFC 7638 thumbprint as
computed here; then the attacks: a proof whose header jwk carries the
private key, and one whose header names another key than the one that
signed it.
"""

import base64
import hashlib
import json
import secrets
import sys

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ALGORITHMS = {
    "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), jwt.algorithms.ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate, jwt.algorithms.OKPAlgorithm),
    "PS256": (lambda: rsa.generate_private_key(65537, 2048), jwt.algorithms.RSAPSSAlgorithm),
    "RS256": (lambda: rsa.generate_private_key(65537, 2048), jwt.algorithms.RSAAlgorithm),
}

REQUIRED = {"EC": ["crv", "kty", "x", "y"], "OKP": ["crv", "kty", "x"], "RSA": ["e", "kty", "n"]}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk):
    members = {name: jwk[name] for name in REQUIRED[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def proof(alg, signing_key, jwk, claims):
    return jwt.encode(claims, signing_key, algorithm=alg, headers={"typ": "dpop+jwt", "jwk": jwk})


def main():
    method, htu, access_token, iat = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def claims():
        return {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": htu,
            "iat": iat,
            "ath": b64url(hashlib.sha256(access_token.encode()).digest()),
        }

    keys = {}
    for alg, (generate, family) in ALGORITHMS.items():
        private = generate()
        keys[alg] = private
        jwk = family.to_jwk(private.public_key(), as_dict=True)
        made = claims()
        print(json.dumps({"case": alg, "proof": proof(alg, private, jwk, made),
                          "jkt": thumbprint(jwk), "jti": made["jti"]}))

    private = keys["ES256"]
    leaked = ALGORITHMS["ES256"][1].to_jwk(private, as_dict=True)
    assert "d" in leaked
    print(json.dumps({"case": "private_key", "proof": proof("ES256", private, leaked, claims())}))

    other = ec.generate_private_key(ec.SECP256R1())
    named = ALGORITHMS["ES256"][1].to_jwk(private.public_key(), as_dict=True)
    print(json.dumps({"case": "other_key", "proof": proof("ES256", other, named, claims())}))


if __name__ == "__main__":
    main()
