"""python-zaqarclient (PyPI, noauth backend) against the locally running service: messages and claims.

Every call goes through the real client library, so these tests also check that our response shapes
are what it parses (hrefs it splits into ids, keys it passes to ``Message(**item)``, next links).
"""
import os
import uuid

import pytest
from zaqarclient.queues.v2 import client as zclient
from zaqarclient.transport import errors

URL = os.environ.get("ZAQAR_URL", "http://127.0.0.1:8888")


def make_client(project, **extra):
    conf = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}}
    return zclient.Client(URL, version=2, conf=conf, **extra)


@pytest.fixture
def project():
    return "py-" + uuid.uuid4().hex


@pytest.fixture
def client(project):
    return make_client(project)


@pytest.fixture
def queue(client):
    return client.queue("pymsgs", force_create=True)


def ids_of(messages):
    return [m.id for m in messages]


def test_post_list_and_get(client, queue, project):
    res = queue.post([{"body": {"event": "one"}, "ttl": 300}, {"body": "two"}, {"body": [3]}])
    resources = res["resources"]
    assert len(resources) == 3
    assert all(r.startswith("/v2/queues/pymsgs/messages/") for r in resources)
    ids = [r.rsplit("/", 1)[-1] for r in resources]

    # The producer sees its own messages only with echo.
    assert list(queue.messages()) == []
    listed = list(queue.messages(echo=True))
    assert ids_of(listed) == ids
    assert [m.body for m in listed] == [{"event": "one"}, "two", [3]]
    assert [m.ttl for m in listed] == [300, 3600, 3600]

    # Another client (another Client-ID) sees them without echo.
    other = make_client(project).queue("pymsgs", auto_create=False)
    assert ids_of(other.messages()) == ids

    one = queue.message(ids[0])
    assert (one.id, one.body, one.ttl) == (ids[0], {"event": "one"}, 300)
    assert one.checksum is None or one.checksum.startswith("MD5:")

    many = list(queue.messages(ids[0], ids[2]))
    assert sorted(ids_of(many)) == sorted([ids[0], ids[2]])

    with pytest.raises(errors.ResourceNotFound):
        queue.message("5c6939a8d3f3d1bc5a25f0a1")


def test_listing_follows_next_links(queue):
    for start in range(0, 25, 10):
        queue.post([{"body": i} for i in range(start, min(start + 10, 25))])
    # One page by default (10), the client's stream() follows `links` until an empty page.
    assert [m.body for m in queue.messages(echo=True)] == list(range(10))
    assert [m.body for m in queue.messages(echo=True).stream()] == list(range(25))
    assert [m.body for m in queue.messages(echo=True, limit=7).stream()] == list(range(25))


def test_claim_update_and_delete_with_claim(client, queue, project):
    ids = [r.rsplit("/", 1)[-1] for r in queue.post([{"body": i} for i in range(3)])["resources"]]
    claim = queue.claim(ttl=120, grace=60, limit=2)
    assert claim.id
    claimed = list(claim)
    assert ids_of(claimed) == ids[:2]
    assert all(m.claim_id == claim.id for m in claimed)
    assert [m.body for m in claimed] == [0, 1]

    # Query the claim (GET): ttl and age.
    fetched = queue.claim(id=claim.id)
    assert fetched.ttl == 120
    assert fetched.age >= 0
    assert ids_of(fetched) == ids[:2]

    # Renew (PATCH).
    claim.update(ttl=300, grace=60)
    assert queue.claim(id=claim.id).ttl == 300

    # A claimed message cannot be deleted without its claim ...
    other_queue = make_client(project).queue("pymsgs", auto_create=False)
    unclaimed_view = other_queue.message(ids[0])
    assert unclaimed_view.claim_id == claim.id  # href carries ?claim_id=
    with pytest.raises(errors.ForbiddenError):
        from zaqarclient.queues.v2 import core
        req, trans = other_queue.client._request_and_transport()
        core.message_delete(trans, req, "pymsgs", ids[0])

    # ... but can with it (Message.delete sends the claim id from the href).
    claimed[0].delete()
    with pytest.raises(errors.ResourceNotFound):
        queue.message(ids[0])

    # Releasing frees the rest of the claim.
    claim.delete()
    again = queue.claim(ttl=60, grace=60, limit=5)
    assert sorted(ids_of(again)) == sorted(ids[1:])
    again.delete()


def test_claim_on_empty_queue(client):
    q = client.queue("pyempty", force_create=True)
    claim = q.claim(ttl=60, grace=60, limit=3)
    assert claim.id is None
    assert list(claim) == []


def test_pop(queue):
    queue.post([{"body": "a"}, {"body": "b"}, {"body": "c"}])
    popped = list(queue.pop(2))
    assert [m.body for m in popped] == ["a", "b"]
    assert all(m.claim_count == 0 for m in popped)
    assert [m.body for m in queue.messages(echo=True)] == ["c"]
    assert [m.body for m in queue.pop(5)] == ["c"]
    assert list(queue.pop(1)) == []


def test_stats(queue):
    assert queue.stats["messages"] == {"claimed": 0, "free": 0, "total": 0}
    queue.post([{"body": i} for i in range(4)])
    queue.claim(ttl=60, grace=60, limit=1)
    stats = queue.stats["messages"]
    assert (stats["total"], stats["claimed"], stats["free"]) == (4, 1, 3)
    assert set(stats["oldest"]) == {"href", "age", "created"}
    assert set(stats["newest"]) == {"href", "age", "created"}


def test_bulk_delete(queue):
    ids = [r.rsplit("/", 1)[-1] for r in queue.post([{"body": i} for i in range(5)])["resources"]]
    queue.claim(ttl=60, grace=60, limit=1)  # bulk delete ignores claims
    queue.delete_messages(*ids[:3])
    assert [m.body for m in queue.messages(echo=True, include_claimed=True)] == [3, 4]
    queue.delete_messages("5c6939a8d3f3d1bc5a25f0a1")


def test_signed_url_access(client, queue, project):
    queue.post({"body": "shared"})
    data = queue.signed_url(paths=["messages"], methods=["GET", "POST"], ttl_seconds=600)
    assert data["paths"] == ["/v2/queues/pymsgs/messages"]
    assert data["methods"] == ["GET", "POST"]
    assert data["project"] == project
    conf = {"auth_opts": {"backend": "signed-url", "options": {
        "signature": data["signature"], "expires": data["expires"], "methods": data["methods"],
        "paths": data["paths"], "os_project_id": data["project"]}}}
    signed = zclient.Client(URL, version=2, conf=conf).queue("pymsgs", auto_create=False)
    assert [m.body for m in signed.messages()] == ["shared"]
    signed.post({"body": "via signature"})
    assert [m.body for m in queue.messages(echo=True)] == ["shared", "via signature"]
    # Not signed for this queue.
    other = zclient.Client(URL, version=2, conf=conf).queue("another", auto_create=False)
    with pytest.raises(errors.ResourceNotFound):
        list(other.messages())
