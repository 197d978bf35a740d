"""Transport security, admin authorisation, refusal to expose an open admin,
and the metrics endpoint."""

from __future__ import annotations

import os
import subprocess
import urllib.request

import grpc
import pytest

from server.app import start_server
from server.client import PlacementClient
from server.config import ConfigError

from certs import make_pki
from conftest import make_config
from placement_process import PLACEMENT

CANDS = ["a", "b"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _creds(pki, who: str | None = None) -> grpc.ChannelCredentials:
    ca = pki["ca"].cert.read_bytes()
    if who is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    pair = pki[who]
    return grpc.ssl_channel_credentials(ca, pair.key.read_bytes(), pair.cert.read_bytes())


def _decide(client: PlacementClient):
    from server.client import collection

    return client.decide({"u": {"x": 1.0}}, ["homepage"], [collection(c, {"c": {"v": 1.0}}) for c in CANDS])


def test_admin_token(start, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start(security={"admin_token_file": str(token_file)})
    with PlacementClient(server.target) as anonymous:
        assert _decide(anonymous).slots  # placement calls stay open
        with pytest.raises(grpc.RpcError) as err:
            anonymous.stats()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with PlacementClient(server.target, token="wrong") as wrong:
        with pytest.raises(grpc.RpcError) as err:
            wrong.model_info()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with PlacementClient(server.target, token="s3cret-token") as admin:
        assert admin.stats().decisions == 1
        assert admin.model_info().current_version


def test_protect_all_and_token_from_environment(start, monkeypatch):
    monkeypatch.setenv("PLACEMENT_ADMIN_TOKEN", "from-env")
    server = start(security={"protect_all": True})
    with PlacementClient(server.target) as anonymous:
        with pytest.raises(grpc.RpcError) as err:
            _decide(anonymous)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with PlacementClient(server.target, token="from-env") as client:
        assert _decide(client).slots
    with grpc.insecure_channel(server.target) as channel:  # probes need no token
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_refuses_open_admin_beyond_loopback(tmp_path, monkeypatch):
    monkeypatch.delenv("PLACEMENT_ADMIN_TOKEN", raising=False)
    config = make_config(tmp_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match="refusing to listen on 0.0.0.0"):
        start_server(config)


def test_tls(start, pki):
    server = start(security={"tls_cert_file": str(pki["server"].cert), "tls_key_file": str(pki["server"].key)})
    with PlacementClient(server.target, credentials=_creds(pki)) as client:
        assert _decide(client).slots
    with PlacementClient(server.target, timeout=2) as plaintext:
        with pytest.raises(grpc.RpcError) as err:
            _decide(plaintext)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_identities(start, pki):
    server = start(security={"tls_cert_file": str(pki["server"].cert), "tls_key_file": str(pki["server"].key),
                             "tls_client_ca_file": str(pki["ca"].cert), "admin_identities": ["ops-admin"]})
    with PlacementClient(server.target, credentials=_creds(pki, "admin")) as admin:
        assert admin.stats().decisions == 0
    with PlacementClient(server.target, credentials=_creds(pki, "frontend")) as frontend:
        assert _decide(frontend).slots
        with pytest.raises(grpc.RpcError) as err:
            frontend.stats()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with PlacementClient(server.target, credentials=_creds(pki), timeout=2) as no_cert:
        with pytest.raises(grpc.RpcError) as err:
            _decide(no_cert)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_security_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="go together"):
        make_config(tmp_path, security={"tls_cert_file": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not exist"):
        make_config(tmp_path, security={"admin_token_file": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="needs mutual TLS"):
        make_config(tmp_path, security={"admin_identities": ["x"]})


def test_metrics_endpoint(start):
    server = start(metrics={"port": 0})
    with PlacementClient(server.target) as client:
        _decide(client)
        with pytest.raises(grpc.RpcError):
            client.reward("unknown-event", 1.0)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert "placement_decisions_total 1.0" in body
    assert "placement_bad_requests_total 1.0" in body
    assert 'placement_rpc_total{code="OK",method="Decide"} 1.0' in body
    assert 'placement_rpc_total{code="NOT_FOUND",method="Reward"} 1.0' in body
    assert 'placement_rewards_rejected_total{reason="unknown_event"} 1.0' in body
    assert 'placement_model_version{surface="default"}' in body
    assert "placement_rpc_seconds_bucket" in body


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serving_beyond_loopback_without_auth_is_refused_before_any_worker_starts(tmp_path, workers):
    """Both topologies refuse at once with the same message and exit code 2,
    not after the workers' start-up timeout with their tracebacks."""
    env = {k: v for k, v in os.environ.items() if k != "PLACEMENT_ADMIN_TOKEN"}
    done = subprocess.run([PLACEMENT, "serve", "--workers", workers, "--host", "0.0.0.0", "--port", "0",
                           "--data-dir", str(tmp_path / "data")], env=env, capture_output=True, text=True,
                          timeout=100)
    assert done.returncode == 2, done.stderr
    assert "refusing to listen on 0.0.0.0 with PlacementAdmin unauthenticated" in done.stderr
    assert "Traceback" not in done.stderr
