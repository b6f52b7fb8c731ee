"""Render the front door's Envoy configuration.

    python -m imagewire_serving.frontdoor --captioner 127.0.0.1:50051 --animator 127.0.0.1:50052 > envoy.yaml
    envoy -c envoy.yaml                      # gRPC and gRPC-Web on 127.0.0.1:8080, stats on :9902
    python -m imagewire_serving.frontdoor --configmap   # regenerate deploy/kubernetes/envoy-config.yaml
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from imagewire_serving.frontdoor.config import CONFIGMAP, KUBERNETES, FrontDoor, configmap, render


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m imagewire_serving.frontdoor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configmap", action="store_true", help=f"write the Kubernetes ConfigMap to {CONFIGMAP}")
    parser.add_argument("--captioner", action="append", default=[], metavar="HOST:PORT", help="a caption replica")
    parser.add_argument("--animator", action="append", default=[], metavar="HOST:PORT", help="an animate replica")
    parser.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                        help="the gRPC and gRPC-Web listener (default %(default)s)")
    parser.add_argument("--stats-port", type=int, default=KUBERNETES.stats_port,
                        help="Envoy's metrics and readiness listener (default %(default)s)")
    parser.add_argument("--health-interval", type=float, default=KUBERNETES.health_interval_s, metavar="SECONDS",
                        help="seconds between health checks of each replica (default %(default)s)")
    parser.add_argument("--allow-origin", default=KUBERNETES.allow_origin, metavar="REGEX",
                        help="the browser origins gRPC-Web calls are allowed from, a regular expression "
                             "(default %(default)s: any)")
    args = parser.parse_args(argv)
    if args.configmap:
        CONFIGMAP.write_text(configmap())
        return 0
    host, _, port = args.listen.rpartition(":")
    front = FrontDoor(captioners=args.captioner, animators=args.animator, listen_address=host,
                      listen_port=int(port), stats_port=args.stats_port, health_interval_s=args.health_interval,
                      allow_origin=args.allow_origin)
    try:
        sys.stdout.write(render(front))
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
