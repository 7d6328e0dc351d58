"""``world2act serve``: serve a policy folder over Isaac-GR00T's policy-server protocol.

ZeroMQ REQ/REP with msgpack messages (see :mod:`world2act.policies.remote`); clients use
``--policy remote://HOST:PORT`` with ``eval`` and ``post-train``. Runs until a client sends
``kill`` or Ctrl-C.
"""
from __future__ import annotations

import argparse
import os

from world2act import World2ActError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy folder to serve (train-base / post-train output)")
    p.add_argument("--port", type=int, default=5555, help="TCP port (default 5555; 0 = any free port, printed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--benchmark", help="refuse to start unless the policy fits this benchmark")
    p.add_argument("--api-token", help="require this token in every request (default $WORLD2ACT_API_TOKEN, else none)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: the arithmetic of an in-process evaluation worker, "
                        "so results match it bit for bit)")
    p.add_argument("--no-warmup", action="store_true", help="skip the one synthetic prediction made before serving")


def main(args: argparse.Namespace) -> int:
    import torch

    from world2act.policies.io import load_policy
    from world2act.policies.remote import TOKEN_ENV, PolicyServer
    from world2act.utils.seeding import resolve_device

    if args.overrides:
        raise World2ActError(f"serve: takes no key=value overrides, got {args.overrides}")
    if not 0 <= int(args.port) < 65536:
        raise World2ActError(f"serve: --port {args.port} is not a TCP port (0..65535)")
    if args.threads < 1:
        raise World2ActError(f"serve: --threads must be at least 1, got {args.threads}")
    torch.set_num_threads(int(args.threads))
    policy = load_policy(args.policy, benchmark=args.benchmark, device=resolve_device(args.device))
    server = PolicyServer(policy, host=args.host, port=args.port,
                          api_token=args.api_token or os.environ.get(TOKEN_ENV) or None)
    if not args.no_warmup:  # text encoder, allocator: the first client call is then not the slow one
        from world2act.evaluation.latency import synthetic_observation

        policy.predict_action_chunk(synthetic_observation(policy))
    host = "127.0.0.1" if args.host in ("0.0.0.0", "*") else args.host
    lay = server.layout
    print(f"serving {args.policy} ({lay.name}, benchmark {lay.benchmark}, action_dim {lay.action_dim}, "
          f"chunk {lay.chunk_size}, cameras {','.join(lay.cameras)}) on {server.endpoint}"
          f"{' with an API token' if server.api_token else ''}; clients: --policy remote://{host}:{server.port}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"server stopped after {server.requests} requests", flush=True)
    return 0
