"""python-zaqarclient (PyPI, noauth backend) against the locally running service: queues."""
import os
import uuid

import pytest
from zaqarclient.queues.v2 import client as zclient

URL = os.environ.get("ZAQAR_URL", "http://127.0.0.1:8888")


@pytest.fixture
def client():
    project = "py-" + uuid.uuid4().hex
    conf = {"auth_opts": {"backend": "noauth", "options": {"os_project_id": project}}}
    return zclient.Client(URL, version=2, conf=conf)


def names(client):
    result = client.queues()
    # zaqarclient 4.x returns (iterator, count) from Client.queues().
    iterator = result[0] if isinstance(result, tuple) else result
    return [q.name for q in iterator]


def test_queue_lifecycle(client):
    # v2 queues are lazy: zaqarclient only sends PUT when asked to force creation.
    q = client.queue("pyq1", force_create=True)
    assert "pyq1" in names(client)
    q.metadata(new_meta={"color": "blue", "_default_message_ttl": 120})
    meta = q.metadata(force_reload=True)
    assert meta["color"] == "blue"
    assert meta["_default_message_ttl"] == 120
    q.delete()
    assert "pyq1" not in names(client)
