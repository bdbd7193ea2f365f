"""An S3 API on loopback for the object-store tests: moto in server mode (`ThreadedMotoServer`), the way dvc-s3's
own tests run it (in-process mocks break aiobotocore, which s3fs uses). Credentials and the endpoint go through the
environment, as a pod's Secret would give them."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

BUCKET = "detops-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server for the session, with one bucket; stopped at the end."""
    import boto3  # the `dev` extra installs boto3 and moto[server]
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                     aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bucket's URL, with the environment (endpoint, credentials) that s3fs and boto3 read."""
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test",
                        "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}"
