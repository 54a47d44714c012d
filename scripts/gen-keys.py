#!/usr/bin/env python3
"""Regenerates jwtgate's committed key material: the demo issuer's dev keys
(deploy/dev-keys/) and the test-only fixture keys (tests/fixtures/keys/).

Neither set is secret, and neither may ever be trusted in production.
Needs the `cryptography` package (pip install cryptography).
"""
import base64
import json
import secrets
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ROOT = Path(__file__).resolve().parent.parent


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def jwk(key, kid, alg=None):
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = public.public_numbers()
        entry = {"kty": "RSA", "n": b64(int_bytes(numbers.n)), "e": b64(int_bytes(numbers.e))}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = public.public_numbers()
        size = (key.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        entry = {
            "kty": "EC",
            "crv": crv,
            "x": b64(numbers.x.to_bytes(size, "big")),
            "y": b64(numbers.y.to_bytes(size, "big")),
        }
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        entry = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    entry.update({"kid": kid, "use": "sig"})
    if alg:
        entry["alg"] = alg
    return entry


def write_set(directory: Path, keys, jwks_name="jwks.json"):
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, key, kid, alg, publish in keys:
        (directory / f"{name}.pem").write_bytes(pem(key))
        if publish:
            entries.append(jwk(key, kid, alg))
    (directory / jwks_name).write_text(json.dumps({"keys": entries}, indent=2) + "\n")


def main():
    write_set(
        ROOT / "deploy/dev-keys",
        [
            ("rs256", rsa.generate_private_key(65537, 2048), "demo-rs256", "RS256", True),
            ("es256", ec.generate_private_key(ec.SECP256R1()), "demo-es256", "ES256", True),
            ("ed25519", ed25519.Ed25519PrivateKey.generate(), "demo-ed25519", "EdDSA", True),
        ],
    )
    (ROOT / "deploy/dev-keys/hs256.secret").write_text(secrets.token_hex(32) + "\n")
    # kustomize reads files only below an overlay: the demo overlay keeps
    # copies of the public parts.
    demo = ROOT / "deploy/kubernetes/overlays/demo"
    for name in ("jwks.json", "hs256.secret"):
        (demo / name).write_bytes((ROOT / "deploy/dev-keys" / name).read_bytes())

    fixtures = ROOT / "tests/fixtures/keys"
    write_set(
        fixtures,
        [
            ("rsa", rsa.generate_private_key(65537, 2048), "rsa-1", None, True),
            ("rsa-rs256-only", rsa.generate_private_key(65537, 2048), "rsa-rs256-only", "RS256", True),
            ("ec256", ec.generate_private_key(ec.SECP256R1()), "ec256-1", None, True),
            ("ec384", ec.generate_private_key(ec.SECP384R1()), "ec384-1", None, True),
            ("ed25519", ed25519.Ed25519PrivateKey.generate(), "ed25519-1", None, True),
            # Signs with a kid the JWKS knows, but is not the published key.
            ("rsa-impostor", rsa.generate_private_key(65537, 2048), "rsa-1", None, False),
        ],
    )
    weak = rsa.generate_private_key(65537, 1024)
    (fixtures / "jwks-weak-rsa.json").write_text(
        json.dumps({"keys": [jwk(weak, "weak-1024")]}, indent=2) + "\n"
    )
    (fixtures / "hs256.secret").write_text(secrets.token_hex(32) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
