"""The API key over real loopback HTTP: the CLI's options reach the server (the rules are in test_app.py)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.server_process import KEYED, ServerProcess


@pytest.fixture(scope="module")
def keyed():
    # The key from the environment, where `ps` cannot show it.
    with ServerProcess("--ctx-size", "256", "--parallel", "1", env={"HELIOS_API_KEY": "sesame"}) as server:
        yield server


def test_the_key_from_the_environment_is_required(keyed):
    r = httpx.get(f"{keyed.url}/v1/models")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "bearer sesame"}).status_code == 200


def test_the_openai_sdk_authenticates(keyed):
    sdk = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="sesame", max_retries=0)
    assert sdk.models.list().data[0].id == "gemma-3-270m-q4_k_m"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_metrics_need_the_key_by_default_and_health_never(keyed):
    assert httpx.get(f"{keyed.url}/metrics").status_code == 401
    assert httpx.get(f"{keyed.url}/metrics", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert httpx.get(f"{keyed.url}/health").status_code == 200


def test_two_authorization_headers_are_refused(keyed):
    headers = [("Authorization", "Bearer sesame"), ("Authorization", "Bearer other")]
    r = httpx.get(f"{keyed.url}/v1/models", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_authorization_header"


def test_metrics_public_opens_metrics_alone(shared_server):
    server = shared_server(*KEYED)
    assert "--metrics-public" in KEYED
    assert httpx.get(f"{server.url}/metrics").status_code == 200
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
