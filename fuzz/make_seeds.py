#!/usr/bin/env python3
"""Writes the seed corpora fuzz/seeds/<target>/ from tests/fixtures/ (committed; rerun after the
fixtures change: `python3 fuzz/make_seeds.py`). Needs PyYAML. Each seed is in the input format its
target's doc comment describes, named by its hash; seeds already there (inputs a run once stopped
on) are kept."""
import base64
import hashlib
import json
import pathlib
from urllib.parse import urlencode

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SEEDS = ROOT / "fuzz" / "seeds"

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


def compact(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def load(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def access_fixtures():
    for path in sorted((FIXTURES / "access").glob("*.yaml")):
        doc = load(path)[0]
        if isinstance(doc, dict) and "application" in doc:
            yield doc


def fixture_claims():
    """Every token of the access fixtures: base claims merged with the case's."""
    for fixture in access_fixtures():
        base = fixture.get("baseClaims") or {}
        for case in fixture.get("tokens") or []:
            claims = dict(base)
            claims.update(case.get("claims") or {})
            yield claims, case.get("resource")


def fixture_documents(fixture):
    """Mirrors oam_trust_fuzz::fixture_documents."""
    docs = list(fixture.get("trusts") or [])
    for ceiling in fixture.get("ceilings") or []:
        docs.append(dict(ceiling, apiVersion="rbac.authorization.k8s.io/v1", kind="ClusterRole"))
    app = fixture["application"]
    docs.append({"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": app["metadata"].get("namespace", "default"),
                              "labels": fixture.get("namespaceLabels") or {}}})
    docs.append(app)
    return docs


def conditions():
    found = set()
    for path in list(FIXTURES.rglob("*.yaml")):
        def walk(node):
            if isinstance(node, dict):
                for k, v in node.items():
                    if k == "condition" and isinstance(v, str):
                        found.add(v)
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        for doc in load(path):
            walk(doc)
    # The bench's costliest accepted condition, the seven-deep one it must refuse, claims walks.
    found.add("claims.groups.all(a, claims.groups.exists(b, a == b) && claims.groups.exists(c, c == a)"
              " && claims.groups.exists(d, d == a))")
    deep = "x6 == 0"
    for i in reversed(range(7)):
        deep = f"[0,1,2,3,4,5,6,7,8,9].all(x{i}, {deep} || true)"
    found.add(deep)
    found.add("claims.all(k, claims.exists(j, j == k))")
    found.add('claims.ref_protected == "true" && claims.groups_direct.exists(g, g.startsWith("platform"))')
    found.add('size(claims.sub) > 3 && claims.sub.contains(":ref:")')
    found.add("claims.groups_direct.map(g, g + g).filter(g, size(g) > 2).size() > 0")
    return sorted(found)


def main():
    claims = list(fixture_claims())

    for c, resource in claims:
        payload = compact(c).encode()
        write("jwt_claims", payload if resource is None else payload + b"\0" + resource.encode())
        for header in ({"alg": "RS256", "kid": "fuzz-rs256", "typ": "JWT"}, {"alg": "RS256"},
                       {"alg": "ES256", "kid": "fuzz-rs256"}, {"alg": "HS256", "kid": "fuzz-rs256"},
                       {"alg": "none"}, {"alg": "RS256", "kid": "fuzz-rs256", "crit": ["exp"]}):
            token = f"{b64(compact(header).encode())}.{b64(payload)}.{b64(b'not-a-signature' * 17)}"
            write("jwt_token", token)
        header = b64(compact({"alg": "RS256", "kid": "fuzz-rs256"}).encode())
        token = f"{header}.{b64(payload)}.sig"
        for fields in (
            [("grant_type", TOKEN_EXCHANGE), ("subject_token", token),
             ("subject_token_type", TOKEN_TYPE_JWT)] + ([("resource", resource)] if resource else []),
            [("grant_type", TOKEN_EXCHANGE), ("subject_token", token),
             ("subject_token_type", TOKEN_TYPE_ID_TOKEN), ("requested_ttl", "900")],
        ):
            write("exchange_form", b"\0" + urlencode(fields).encode())
    write("exchange_form", b"\0grant_type=password&subject_token=x")
    write("exchange_form", b"\x04grant_type=" + TOKEN_EXCHANGE.encode() + b"&grant_type=x")

    for text in ("10.0.0.0/8", "fd00::/8\0203.0.113.9, 10.1.2.3", "0.0.0.0/0 ::ffff:10.0.0.1/104"):
        write("exchange_limits", text.encode() * 3)

    for path in sorted((FIXTURES / "oam").rglob("*.yaml")):
        docs = [d for d in load(path) if isinstance(d, dict)]
        apps = [d for d in docs if d.get("kind") == "Application"]
        others = [d for d in docs if d.get("kind") != "Application"]
        for app in apps:
            write("render", compact([app] + others) if others else compact(app))

    for fixture in access_fixtures():
        tokens = [{"claims": dict(fixture.get("baseClaims") or {}, **(t.get("claims") or {})),
                   "resource": t.get("resource")} for t in fixture.get("tokens") or []]
        write("grants", compact({"documents": fixture_documents(fixture), "tokens": tokens[:8]}))
    authn = load(FIXTURES / "authn" / "trusts.yaml") + load(FIXTURES / "authn" / "apps.yaml")
    tokens = [{"claims": c, "resource": r} for c, r in claims[:8]]
    write("grants", compact({"documents": authn, "tokens": tokens, "offline": True}))

    some_claims = [compact(c).encode() for c, _ in claims[:4]]
    for source in conditions():
        write("condition", source)
        for c in some_claims[:2]:
            write("condition", source.encode() + b"\0" + c)

    for case in load(FIXTURES / "access" / "globs.yaml")[0]:
        write("glob", f"{case['pattern']}\0{case['value']}")
        write("glob", f"{case['pattern']}\0{case['value']}\0{case['value']}*")


if __name__ == "__main__":
    main()
