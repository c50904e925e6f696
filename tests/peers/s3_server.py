"""A real S3-protocol server on 127.0.0.1 (moto's threaded server) for tests of s3:// stores and run dirs.

No client is mocked: s3fs, aiobotocore and zarr's FsspecStore talk HTTP to this server exactly as they
would to a cloud bucket. `S3Server.env()` is what a test exports so the code under test, and every
subprocess it starts (mimic record/train/eval, torchrun ranks), reaches it.

    python -m tests.peers.s3_server --bucket demos     # prints the endpoint, serves until Ctrl-C
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

from tests.launch import free_port

ACCESS_KEY = "mimic-test"
SECRET_KEY = "mimic-test-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    """moto's S3 on 127.0.0.1:port with fixed test credentials; `start()` then `create_bucket()`."""

    port: int = 0
    buckets: list[str] = field(default_factory=list)

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
        self.port = self.port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment that points botocore (hence s3fs) at this server with its credentials."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        client.create_bucket(Bucket=name)
        self.buckets.append(name)

    def stop(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.stop()
            self._server = None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bucket", default="demos")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    server = S3Server(port=args.port).start()
    server.create_bucket(args.bucket)
    print(" ".join(f"{k}={v}" for k, v in server.env().items()), flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
