"""``world2act serve``: serve a policy folder over Isaac-GR00T's policy-server protocol.

ZeroMQ REQ/REP with msgpack messages (see :mod:`world2act.policies.remote`); clients use
``--policy remote://HOST:PORT`` with ``eval`` and ``post-train``. Runs until a client sends
``kill`` or Ctrl-C.
"""
from __future__ import annotations

import dataclasses
import os

from world2act import World2ActError
from world2act.utils.config import opt


@dataclasses.dataclass
class ServeConfig:
    """Options of ``world2act serve``."""

    policy: str = opt("", "policy folder to serve (train-base / post-train output)", required=True)
    port: int = opt(5555, "TCP port (default 5555; 0 = any free port, printed)")
    host: str = opt("127.0.0.1", "interface to bind (default 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    benchmark: str | None = opt(None, "refuse to start unless the policy fits this benchmark")
    api_token: str | None = opt(None, "require this token in every request (default $WORLD2ACT_API_TOKEN, else none)")
    threads: int = opt(1, "torch intra-op threads (default 1: the arithmetic of an in-process evaluation worker, "
                       "so results match it bit for bit)")
    warmup: bool = opt(True, "skip the one synthetic prediction made before serving", flag="--no-warmup")

    def __post_init__(self) -> None:
        if not 0 <= int(self.port) < 65536:
            raise World2ActError(f"serve: --port {self.port} is not a TCP port (0..65535)")
        if self.threads < 1:
            raise World2ActError(f"serve: --threads must be at least 1, got {self.threads}")


Config, NEEDS_OUT = ServeConfig, False


def main(cfg: ServeConfig, args) -> int:
    import torch

    from world2act.policies.io import load_policy
    from world2act.policies.remote import TOKEN_ENV, PolicyServer
    from world2act.utils.seeding import resolve_device

    torch.set_num_threads(int(cfg.threads))
    policy = load_policy(cfg.policy, benchmark=cfg.benchmark, device=resolve_device(args.device))
    server = PolicyServer(policy, host=cfg.host, port=cfg.port,
                          api_token=cfg.api_token or os.environ.get(TOKEN_ENV) or None)
    if cfg.warmup:  # text encoder, allocator: the first client call is then not the slow one
        from world2act.evaluation.latency import synthetic_observation

        policy.predict_action_chunk(synthetic_observation(policy))
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "*") else cfg.host
    lay = server.layout
    print(f"serving {cfg.policy} ({lay.name}, benchmark {lay.benchmark}, action_dim {lay.action_dim}, "
          f"chunk {lay.chunk_size}, cameras {','.join(lay.cameras)}) on {server.endpoint}"
          f"{' with an API token' if server.api_token else ''}; clients: --policy remote://{host}:{server.port}",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    print(f"server stopped after {server.requests} requests", flush=True)
    return 0
