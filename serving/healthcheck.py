"""`python -m serving.healthcheck`: exit 0 if the app is ready on the container's network address.

The image's HEALTHCHECK and compose run it inside the container. It asks the address other containers
and Prometheus reach (the container's hostname), not 127.0.0.1: an app listening on loopback only is
unreachable from the network, and must not pass.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request


def main() -> int:
    url = f"http://{socket.gethostname()}:{os.environ.get('PORT', '8000')}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
