"""Admin endpoints are off without a token and refuse a wrong one (403 / PERMISSION_DENIED)."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_http_repository_unload_is_forbidden_when_token_missing_or_wrong(server):
    client = httpclient.InferenceServerClient(server.http_url)
    for headers in (None, {"Authorization": "Bearer wrong"}):
        with pytest.raises(InferenceServerException) as info:
            client.unload_model("multi", headers=headers)
        assert "403" in str(info.value.status())
    assert client.is_model_ready("multi")


def test_grpc_repository_load_is_permission_denied_when_token_wrong(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as info:
        client.load_model("multi", headers={"authorization": "Bearer wrong"})
    assert "PERMISSION_DENIED" in str(info.value.status())


def test_repository_unload_then_load_works_when_token_given(server, admin_token):
    client = httpclient.InferenceServerClient(server.http_url)
    auth = {"Authorization": f"Bearer {admin_token}"}
    client.unload_model("multi", headers=auth)
    assert not client.is_model_ready("multi")
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["multi"]["state"] == "UNAVAILABLE"
    client.load_model("multi", headers=auth)
    assert client.is_model_ready("multi")
