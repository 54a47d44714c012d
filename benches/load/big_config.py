#!/usr/bin/env python3
"""A gateway.yaml at platform scale, for jwtgate's scale tests and benches.

    python3 benches/load/big_config.py --issuers 100 --routes 10000 > big.yaml

Each issuer is a remote one (jwks_uri); each route the shape a platform team
writes for a legacy backend: a host and a path prefix, one issuer, one scope
rule and one claim header, and an upstream of its own. With --upstream HOST:PORT
every route forwards there (for load tests); otherwise each route has an
address of its own in 10.0.0.0/16, which nothing needs to answer. --jwks FILE
makes every issuer use that local JWKS instead (no outside service), and
--listen/--admin set the listeners.
"""

import argparse


def config(issuers, routes, upstream=None, jwks=None, listen=None, admin=None):
    lines = []
    if listen:
        lines.append(f'listen: {{ http: "{listen}" }}')
    if admin:
        lines.append(f'admin: {{ addr: "{admin}" }}')
    lines.append("issuers:")
    for i in range(issuers):
        source = f'jwks_file: "{jwks}"' if jwks else f"jwks_uri: https://idp-{i}.example/jwks"
        lines.append(
            f"  - name: idp-{i}\n"
            f"    issuer: https://idp-{i}.example\n"
            f"    algorithms: [RS256]\n"
            f"    audiences: [api]\n"
            f"    {source}"
        )
    lines.append("routes:")
    for r in range(routes):
        addr = upstream or f"10.0.{r // 250}.{r % 250}:8080"
        lines.append(
            f"  - name: route-{r}\n"
            f"    match: {{ host: svc-{r % 50}.example, path_prefix: /api/v{r} }}\n"
            f'    upstream: {{ addrs: ["{addr}"] }}\n'
            f"    auth: {{ issuers: [idp-{r % issuers}], scopes: {{ all_of: [read-{r}] }} }}\n"
            f"    forward: {{ claims: {{ sub: x-user-id }} }}"
        )
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--issuers", type=int, default=100)
    p.add_argument("--routes", type=int, default=10000)
    p.add_argument("--upstream", metavar="HOST:PORT")
    p.add_argument("--jwks", metavar="FILE")
    p.add_argument("--listen", metavar="HOST:PORT")
    p.add_argument("--admin", metavar="HOST:PORT")
    a = p.parse_args()
    print(config(a.issuers, a.routes, a.upstream, a.jwks, a.listen, a.admin), end="")


if __name__ == "__main__":
    main()
