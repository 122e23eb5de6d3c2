#!/usr/bin/env python3
"""Smoke test of a deployed Zaqar-on-Lambda API through the real python-zaqarclient.

    .venv/bin/pip install python-zaqarclient            # (botocore too, for --sigv4)
    .venv/bin/python tests/deployed-smoke.py --url https://<id>.execute-api.<region>.amazonaws.com/ \
        [--project <id>] [--token <JWT or X-Auth-Token>] [--sigv4 [--region <region>]]

Defaults come from ZAQAR_URL, ZAQAR_PROJECT, ZAQAR_TOKEN. Flow: ping, create queue, set metadata,
post messages, list, claim, update the claim, delete a message with its claim, pop, delete the
queue. Each step is printed; the first failure exits non-zero (the queue is still deleted).

Authentication, by the stack's AuthMode:
  NONE  no option needed (zaqarclient's `noauth` backend only sends X-Project-Id).
  JWT   --token <jwt>: sent as `Authorization: Bearer <jwt>`. The `noauth` backend has no option to
        add headers, so this script subclasses the v2 Client and adds them to every request it
        prepares (`_request_and_transport`, which every zaqarclient v2 call goes through).
        A token that does not look like a JWT is sent as X-Auth-Token (see --auth-header).
  IAM   --sigv4: each request is signed with AWS Signature V4 (service execute-api) using the
        default botocore credential chain. zaqarclient has no SigV4 support of its own; this script
        sets a requests auth hook on the transport's HTTP session, which signs the final request
        (method, URL with query, headers, body) just before it is sent. The stock `openstack queue`
        CLI cannot do this: use AuthMode JWT (or NONE for tests) with it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid

try:
    from zaqarclient.queues.v2 import client as zaqar_client
except ImportError:  # pragma: no cover - environment problem, not a test failure
    sys.exit("deployed-smoke: python-zaqarclient is not installed (pip install python-zaqarclient)")

JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
REGION_RE = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com", re.IGNORECASE)


class SigV4Auth:
    """requests auth hook: SigV4-signs each prepared request for API Gateway (execute-api)."""

    def __init__(self, region: str):
        import botocore.session
        from botocore.auth import SigV4Auth as _Signer

        credentials = botocore.session.get_session().get_credentials()
        if credentials is None:
            raise SystemExit("deployed-smoke: --sigv4 needs AWS credentials (env, profile or role)")
        self._signer = _Signer(credentials.get_frozen_credentials(), "execute-api", region)

    def __call__(self, r):
        from botocore.awsrequest import AWSRequest

        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
            r.body = body  # send exactly the bytes that were signed
        signed = {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "x-project-id", "client-id")}
        aws = AWSRequest(method=r.method, url=r.url, data=body, headers=signed)
        self._signer.add_auth(aws)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-SHA256"):
            if name in aws.headers:
                r.headers[name] = aws.headers[name]
        return r


class Client(zaqar_client.Client):
    """zaqarclient v2 Client that adds fixed headers and, optionally, a requests auth hook."""

    def __init__(self, *args, extra_headers=None, http_auth=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._extra_headers = dict(extra_headers or {})
        self._http_auth = http_auth

    def _request_and_transport(self):
        req, trans = super()._request_and_transport()
        req.headers.update(self._extra_headers)
        if self._http_auth is not None:
            trans.client.session.auth = self._http_auth
        return req, trans


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default=os.environ.get("ZAQAR_URL"), help="API URL (stack output ApiUrl); env ZAQAR_URL")
    p.add_argument("--project", default=os.environ.get("ZAQAR_PROJECT") or "smoke-project",
                   help="project id sent as X-Project-Id; env ZAQAR_PROJECT (default smoke-project)")
    p.add_argument("--token", default=os.environ.get("ZAQAR_TOKEN"), help="JWT or X-Auth-Token; env ZAQAR_TOKEN")
    p.add_argument("--auth-header", choices=("auto", "bearer", "x-auth-token"), default="auto",
                   help="how to send --token: auto = Bearer if it looks like a JWT, else X-Auth-Token")
    p.add_argument("--sigv4", action="store_true", help="sign requests with AWS SigV4 (AuthMode IAM)")
    p.add_argument("--region", help="region for --sigv4 (default: taken from the URL, else AWS_REGION)")
    p.add_argument("--queue", help="queue name to use (default: a fresh smoke_<random> name)")
    args = p.parse_args(argv)
    if not args.url:
        p.error("--url (or ZAQAR_URL) is required")
    return args


def build_client(args) -> Client:
    headers = {}
    if args.token:
        style = args.auth_header
        if style == "auto":
            style = "bearer" if JWT_RE.match(args.token) else "x-auth-token"
        if style == "bearer":
            headers["Authorization"] = f"Bearer {args.token}"
        else:
            headers["X-Auth-Token"] = args.token
    http_auth = None
    if args.sigv4:
        if args.token and "Authorization" in headers:
            raise SystemExit("deployed-smoke: --sigv4 and a bearer --token both need the Authorization header")
        m = REGION_RE.search(args.url)
        region = args.region or (m.group(1) if m else None) or os.environ.get("AWS_REGION") \
            or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise SystemExit("deployed-smoke: --sigv4 needs --region")
        http_auth = SigV4Auth(region)
    conf = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": args.project}}}
    return Client(args.url, version=2, conf=conf, extra_headers=headers, http_auth=http_auth)


class Steps:
    def __init__(self):
        self.n = 0

    def run(self, title, fn):
        self.n += 1
        start = time.monotonic()
        print(f"[{self.n:2d}] {title} ...", end=" ", flush=True)
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - report any client or assertion failure
            print(f"FAILED ({type(e).__name__}: {e})", flush=True)
            raise
        print(f"ok ({(time.monotonic() - start) * 1000:.0f} ms)", flush=True)
        return result


def expect(cond, message):
    if not cond:
        raise AssertionError(message)


def smoke(cli: Client, queue_name: str) -> None:
    steps = Steps()
    state: dict = {}

    steps.run("ping", lambda: expect(cli.ping() is True, "ping returned False"))

    def create_queue():
        state["queue"] = cli.queue(queue_name, force_create=True)

    steps.run(f"create queue {queue_name}", create_queue)
    q = state["queue"]
    try:
        def set_metadata():
            meta = dict(q.metadata(force_reload=True))
            meta.update({"smoke": "yes", "owner": "deployed-smoke"})
            q.metadata(new_meta=meta)
            got = q.metadata(force_reload=True)
            expect(got.get("smoke") == "yes" and got.get("owner") == "deployed-smoke", f"metadata is {got}")

        steps.run("set queue metadata", set_metadata)

        def post():
            res = q.post([{"body": {"n": i, "smoke": True}, "ttl": 600} for i in range(5)])
            expect(len(res.get("resources", [])) == 5, f"post returned {res}")

        steps.run("post 5 messages", post)

        def list_messages():
            msgs = list(q.messages(echo=True))
            expect(len(msgs) == 5, f"listed {len(msgs)} messages, expected 5")
            expect(sorted(m.body["n"] for m in msgs) == list(range(5)), "listed bodies differ")

        steps.run("list messages (echo=true)", list_messages)

        def claim():
            c = q.claim(ttl=60, grace=30, limit=2)
            msgs = list(c)
            expect(c.id, "claim has no id")
            expect(len(msgs) == 2, f"claimed {len(msgs)} messages, expected 2")
            state["claim"], state["claimed"] = c, msgs

        steps.run("claim 2 messages (ttl 60, grace 30)", claim)

        def update_claim():
            state["claim"].update(ttl=120)
            fresh = q.claim(id=state["claim"].id)  # an existing claim: read back from the server
            expect(fresh.ttl == 120, f"claim ttl is {fresh.ttl}, expected 120")

        steps.run("update claim ttl to 120", update_claim)

        def delete_with_claim():
            m = state["claimed"][0]
            expect(m.claim_id == state["claim"].id, f"message href {m.href} lacks the claim id")
            m.delete()
            remaining = list(q.messages(echo=True, include_claimed=True))
            expect(m.id not in {x.id for x in remaining}, "deleted message still listed")
            expect(len(remaining) == 4, f"{len(remaining)} messages left, expected 4")

        steps.run("delete a claimed message with its claim id", delete_with_claim)

        def pop():
            popped = list(q.pop(count=1))
            expect(len(popped) == 1, f"popped {len(popped)} messages, expected 1")
            claimed_ids = {m.id for m in state["claimed"]}
            expect(popped[0].id not in claimed_ids, "pop returned a claimed message")
            left = list(q.messages(echo=True, include_claimed=True))
            expect(len(left) == 3, f"{len(left)} messages left after pop, expected 3")

        steps.run("pop 1 message", pop)
    finally:
        def delete_queue():
            q.delete()
            queues, _count = cli.queues()  # v2 Client.queues() returns (iterator, count)
            names = {x.name for x in queues}
            expect(queue_name not in names, "queue still listed after delete")

        steps.run(f"delete queue {queue_name}", delete_queue)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    queue_name = args.queue or f"smoke_{uuid.uuid4().hex[:12]}"
    auth = "sigv4" if args.sigv4 else ("token" if args.token else "none")
    print(f"deployed-smoke: {args.url} project={args.project} auth={auth}")
    try:
        smoke(build_client(args), queue_name)
    except Exception:  # noqa: BLE001 - the failing step has been printed
        print("deployed-smoke: FAILED", file=sys.stderr)
        return 1
    print("deployed-smoke: all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
