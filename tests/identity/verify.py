#!/usr/bin/env python3
"""A backend's check of jwtgate's identity tokens, with a library jwtgate
does not use: PyJWT's PyJWKClient fetches the JWK Set from JWKS_URL, then
each token read from stdin (one per line) is verified for AUDIENCE and
ISSUER. Prints one JSON line per token: {"claims": {...}} or {"error": "<PyJWT exception name>"}.

usage: verify.py JWKS_URL AUDIENCE ISSUER < tokens
"""
import json
import sys

import jwt


def main():
    jwks_url, audience, issuer = sys.argv[1:4]
    # No caching between tokens: each is checked against the keys served now.
    client = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False)
    for line in sys.stdin:
        token = line.strip()
        if not token:
            continue
        try:
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256", "EdDSA", "RS256"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp", "iat", "iss", "aud", "jti"]},
            )
            print(json.dumps({"claims": claims}), flush=True)
        except jwt.PyJWTError as error:
            print(json.dumps({"error": type(error).__name__}), flush=True)


if __name__ == "__main__":
    main()
