"""A real S3 API on 127.0.0.1 (moto's server, in a thread) that s3fs, boto3 and subprocesses reach
through the standard AWS environment variables: nothing test-only in curate's code."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
)


class S3Server:
    """moto's ThreadedMotoServer on a free loopback port; `env` points any AWS client at it."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test log
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self):  # noqa: ANN201 - a boto3 client (boto3 ships no type hints)
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_keys())

    def new_bucket(self) -> str:
        name = f"curate-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def upload_dir(self, local: Path, url: str) -> None:
        """Every file under `local` to the prefix `url` (s3://bucket/prefix), with boto3 (not curate)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = self.client()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local).as_posix()}")

    def objects(self, url: str) -> dict[str, bytes]:
        """Every object under the prefix `url`, by path relative to it, with boto3 (not curate)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        client = self.client()
        out = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for obj in page.get("Contents", []):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"][len(prefix) + 1 :]] = body
        return out


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@contextmanager
def aws_env(server: S3Server) -> Iterator[None]:
    """Point this process (and the Ray workers and subprocesses it starts) at the server, then restore."""
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    for key in ENV_KEYS:
        os.environ.pop(key, None)
    os.environ.update(server.env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
