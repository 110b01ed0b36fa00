"""``focustune ui``: a sweep's MLflow store in MLflow's UI."""

from __future__ import annotations

import argparse

from focustune.cli import options
from focustune.tracking_schema import default_tracking_uri


def add_options(cmd: argparse.ArgumentParser) -> None:
    options.add_tracking_uri(cmd)
    cmd.add_argument("--port", type=int, help="port (default 5000, or a free one when 5000 is taken)")
    cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")


def run(args: argparse.Namespace) -> int:
    from focustune.tracking.ui import serve

    return serve(args.tracking_uri or default_tracking_uri(), args.host, args.port)
