"""Base policies that run elsewhere: Isaac-GR00T's policy-server protocol, both ends.

World2Act only needs forward passes of the frozen base, so the base can live on a GPU server.
This module speaks the protocol of NVIDIA Isaac-GR00T's policy server (N1.6,
``gr00t/policy/server_client.py``), written from its message layout:

* transport: ZeroMQ REQ (client) / REP (server) over TCP, one request in flight per socket;
* every message is msgpack; numpy arrays travel as
  ``{"__ndarray_class__": True, "as_npy": <np.save bytes, allow_pickle=False>}``, modality
  configs as ``{"__ModalityConfig_class__": True, "as_json": {delta_indices, modality_keys, ...}}``;
* a request is ``{"endpoint": name, "data": {...}, "api_token": ...}`` (``data`` only for
  endpoints that take input, ``api_token`` only when set; a missing endpoint means
  ``get_action``); a failure comes back as ``{"error": text}``;
* endpoints: ``ping`` → ``{"status": "ok", ...}``, ``kill`` (stops the server),
  ``reset(options)`` → info dict, ``get_modality_config`` → ``{modality: ModalityConfig}``,
  ``get_action(observation, options)`` → ``[action, info]``.

Observation (batched, ``T`` = 1 frame here): ``{"video": {camera: uint8 [B, T, H, W, 3]},
"state": {name: float32 [B, T, D]}, "language": {"task": [[str]] * B}}``; action:
``{name: float32 [B, horizon, dim]}``. :class:`Layout` maps world2act's LeRobot dicts
(``observation.images.<cam>``, ``observation.state``, ``task``; chunks ``[B, K, A]``) to and
from that layout. Besides GR00T's four modality configs, our server's
``get_modality_config`` carries a ``"world2act"`` entry (a plain dict: benchmark, action and
state dims, chunk size, cameras, image size, state/action key split) from which the client
fills in the :class:`~world2act.policies.base.Policy` attributes.

Determinism: ``options`` of ``reset`` / ``get_action`` may carry ``"session"`` (one id per
client) and ``"seed"`` (sent with the first ``get_action`` after :meth:`RemotePolicy.seed`).
The server keeps each session's noise generators apart, so several clients (evaluation
workers) interleaving their requests on one server get exactly the chunks each would get from
its own in-process copy of the policy.

Failure: a server that is down, unreachable or slower than the client's timeout gives a
:class:`~world2act.World2ActError` after the timeout (the REQ socket is then rebuilt, so the
next call starts clean); the evaluation harness records that episode as an error.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import time
import uuid
from typing import Any, Callable

import numpy as np
import torch

from world2act import World2ActError
from world2act.policies.base import Policy, check_obs

log = logging.getLogger(__name__)

SCHEME = "remote://"
DEFAULT_PORT = 5555
DEFAULT_TIMEOUT_S = 30.0
TIMEOUT_ENV = "WORLD2ACT_REMOTE_TIMEOUT"
TOKEN_ENV = "WORLD2ACT_API_TOKEN"
NDARRAY_TAG = "__ndarray_class__"
MODALITY_TAG = "__ModalityConfig_class__"
LANGUAGE_KEY = "task"
PROTOCOL_VERSION = 1
MAX_SESSIONS = 1024


def _modules():
    try:
        import msgpack
        import zmq
    except ModuleNotFoundError as e:
        raise World2ActError(f"remote policies need pyzmq and msgpack ({e.name} missing): pip install pyzmq msgpack") from None
    return zmq, msgpack


# ---------------------------------------------------------------------------- wire format
@dataclasses.dataclass
class ModalityConfig:
    """GR00T's per-modality description: which frames (``delta_indices``) of which keys."""

    delta_indices: list[int]
    modality_keys: list[str]

    def to_wire(self) -> dict:
        return {MODALITY_TAG: True, "as_json": {"delta_indices": [int(i) for i in self.delta_indices],
                                                 "modality_keys": [str(k) for k in self.modality_keys]}}


def _encode(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, obj, allow_pickle=False)
        return {NDARRAY_TAG: True, "as_npy": buf.getvalue()}
    if isinstance(obj, ModalityConfig):
        return obj.to_wire()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot send {type(obj).__name__} over the policy protocol")


def _decode(obj: dict) -> Any:
    if obj.get(NDARRAY_TAG) is True and "as_npy" in obj:
        return np.load(io.BytesIO(obj["as_npy"]), allow_pickle=False)
    if obj.get(MODALITY_TAG) is True and "as_json" in obj:
        return dict(obj["as_json"])  # a plain dict: delta_indices, modality_keys, ...
    return obj


def pack(obj: Any) -> bytes:
    """msgpack bytes of ``obj`` (numpy arrays and torch tensors as ``np.save`` payloads)."""
    _, msgpack = _modules()
    return msgpack.packb(obj, default=_encode, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Inverse of :func:`pack` (never unpickles: ``allow_pickle=False``)."""
    _, msgpack = _modules()
    return msgpack.unpackb(data, object_hook=_decode, raw=False, strict_map_key=False)


# ---------------------------------------------------------------------------- layout
@dataclasses.dataclass
class Layout:
    """How a world2act policy's inputs and outputs map onto GR00T's nested layout.

    Attributes:
        cameras: video keys, one per camera (``observation.images.<cam>`` ↔ ``video[cam]``).
        state_keys: ``(name, dim)`` pieces of ``observation.state``, in order (ours: one piece
            ``("state", S)``; empty when the policy reads no proprioception).
        action_keys: ``(name, dim)`` pieces of the action vector, in order (ours: ``("action", A)``).
        chunk_size: action horizon ``K``. image_size: ``(H, W)``. benchmark / name: of the policy.
    """

    cameras: tuple[str, ...]
    state_keys: tuple[tuple[str, int], ...]
    action_keys: tuple[tuple[str, int], ...]
    chunk_size: int
    image_size: tuple[int, int]
    benchmark: str | None = None
    name: str = "policy"
    language_key: str = LANGUAGE_KEY

    @property
    def action_dim(self) -> int:
        return sum(d for _, d in self.action_keys)

    @property
    def state_dim(self) -> int | None:
        return sum(d for _, d in self.state_keys) if self.state_keys else None

    @classmethod
    def of_policy(cls, policy: Policy) -> "Layout":
        state = (("state", int(policy.state_dim)),) if policy.state_dim else ()
        return cls(cameras=tuple(policy.cameras), state_keys=state, action_keys=(("action", int(policy.action_dim)),),
                   chunk_size=int(policy.chunk_size), image_size=tuple(int(x) for x in policy.image_size),  # type: ignore[arg-type]
                   benchmark=policy.benchmark, name=str(getattr(policy, "name", "policy")))

    def modality_config(self) -> dict:
        """GR00T's ``get_modality_config`` answer plus the ``"world2act"`` entry."""
        return {
            "video": ModalityConfig([0], list(self.cameras)),
            "state": ModalityConfig([0], [k for k, _ in self.state_keys]),
            "action": ModalityConfig(list(range(self.chunk_size)), [k for k, _ in self.action_keys]),
            "language": ModalityConfig([0], [self.language_key]),
            "world2act": {"protocol": PROTOCOL_VERSION, "name": self.name, "benchmark": self.benchmark,
                          "action_dim": self.action_dim, "state_dim": self.state_dim, "chunk_size": self.chunk_size,
                          "cameras": list(self.cameras), "image_size": list(self.image_size),
                          "state_keys": [[k, d] for k, d in self.state_keys],
                          "action_keys": [[k, d] for k, d in self.action_keys]},
        }

    @classmethod
    def from_modality_config(cls, cfg: Any, where: str) -> "Layout":
        """Read a server's ``get_modality_config`` answer.

        Raises:
            World2ActError: the answer lacks the ``"world2act"`` entry (e.g. a GR00T model server,
                whose modality config does not give state and action dimensions) or is malformed.
        """
        if not isinstance(cfg, dict) or not isinstance(cfg.get("world2act"), dict):
            keys = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
            raise World2ActError(f"{where}: the server's modality config ({keys}) does not describe a world2act "
                                 f"policy (no 'world2act' entry with action/state dimensions); serve the policy "
                                 f"with `world2act serve --policy DIR`")
        w = cfg["world2act"]
        try:
            lang = (cfg.get("language") or {}).get("modality_keys") or [LANGUAGE_KEY]
            return cls(cameras=tuple(str(c) for c in w["cameras"]),
                       state_keys=tuple((str(k), int(d)) for k, d in w.get("state_keys") or ()),
                       action_keys=tuple((str(k), int(d)) for k, d in w["action_keys"]),
                       chunk_size=int(w["chunk_size"]), image_size=tuple(int(x) for x in w["image_size"]),  # type: ignore[arg-type]
                       benchmark=w.get("benchmark"), name=str(w.get("name", "policy")), language_key=str(lang[0]))
        except (KeyError, TypeError, ValueError) as e:
            raise World2ActError(f"{where}: malformed world2act modality config ({type(e).__name__}: {e})") from None

    # ------------------------------------------------------------------ observations
    def observation_to_wire(self, obs: dict) -> dict:
        """LeRobot batch → ``{"video": {cam: [B,1,H,W,3]}, "state": {k: [B,1,D]}, "language": {...}}``."""
        tasks = [str(t) for t in obs["task"]]
        video = {c: np.ascontiguousarray(np.asarray(obs[f"observation.images.{c}"], dtype=np.uint8)[:, None])
                 for c in self.cameras}
        state: dict = {}
        if self.state_keys:
            st = np.asarray(obs["observation.state"], dtype=np.float32)
            i = 0
            for k, d in self.state_keys:
                state[k] = np.ascontiguousarray(st[:, None, i:i + d])
                i += d
        return {"video": video, "state": state, "language": {self.language_key: [[t] for t in tasks]}}

    def observation_from_wire(self, obs: Any) -> dict:
        """GR00T-layout observation → LeRobot batch (the last frame of each stream).

        Raises:
            World2ActError: a missing modality or key, or a wrongly shaped array (names it).
        """
        if not isinstance(obs, dict):
            raise World2ActError(f"observation must be a dict with video/state/language, got {type(obs).__name__}")
        for m in ("video", "state", "language"):
            if not isinstance(obs.get(m, {}), dict):
                raise World2ActError(f"observation[{m!r}] must be a dict")
        out: dict = {}
        for c in self.cameras:
            v = obs.get("video", {}).get(c)
            if not isinstance(v, np.ndarray) or v.ndim != 5 or v.shape[-1] != 3 or v.dtype != np.uint8:
                got = f"{v.dtype} {tuple(v.shape)}" if isinstance(v, np.ndarray) else type(v).__name__
                raise World2ActError(f"observation['video'][{c!r}] must be uint8 [B, T, H, W, 3], got {got}")
            out[f"observation.images.{c}"] = v[:, -1]
        if self.state_keys:
            parts = []
            for k, d in self.state_keys:
                s = obs.get("state", {}).get(k)
                if not isinstance(s, np.ndarray) or s.ndim != 3 or s.shape[-1] != d:
                    got = tuple(s.shape) if isinstance(s, np.ndarray) else type(s).__name__
                    raise World2ActError(f"observation['state'][{k!r}] must be float32 [B, T, {d}], got {got}")
                parts.append(s[:, -1].astype(np.float32, copy=False))
            out["observation.state"] = np.concatenate(parts, axis=-1)
        lang = obs.get("language", {}).get(self.language_key)
        if not isinstance(lang, list) or not all(isinstance(x, list) and x for x in lang):
            raise World2ActError(f"observation['language'][{self.language_key!r}] must be [[str]] * B")
        out["task"] = [str(x[-1]) for x in lang]
        return out

    # ------------------------------------------------------------------ actions
    def action_to_wire(self, chunk: Any) -> dict:
        """``[B, K, A]`` → ``{name: float32 [B, K, dim]}``."""
        a = np.asarray(chunk.detach().cpu() if isinstance(chunk, torch.Tensor) else chunk, dtype=np.float32)
        out, i = {}, 0
        for k, d in self.action_keys:
            out[k] = np.ascontiguousarray(a[..., i:i + d])
            i += d
        return out

    def action_from_wire(self, action: Any, where: str) -> np.ndarray:
        """``{name: [B, K, dim]}`` → float32 ``[B, K, A]`` (keys concatenated in order)."""
        if not isinstance(action, dict):
            raise World2ActError(f"{where}: action must be a dict of arrays, got {type(action).__name__}")
        parts = []
        for k, d in self.action_keys:
            a = action.get(k)
            if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[-1] != d:
                got = tuple(a.shape) if isinstance(a, np.ndarray) else type(a).__name__
                raise World2ActError(f"{where}: action[{k!r}] must be [B, {self.chunk_size}, {d}], got {got}")
            parts.append(a.astype(np.float32, copy=False))
        return np.concatenate(parts, axis=-1)


# ---------------------------------------------------------------------------- server
def _policies_within(policy: Policy) -> list[Policy]:
    """``policy`` and the policies it holds (e.g. a residual policy's base), each once."""
    seen: list[Policy] = []
    todo = [policy]
    while todo:
        p = todo.pop()
        if any(p is q for q in seen):
            continue
        seen.append(p)
        todo.extend(v for v in vars(p).values() if isinstance(v, Policy))
    return seen


class PolicyServer:
    """Serve a world2act :class:`Policy` over the GR00T protocol (see the module docstring).

    Args:
        policy: any policy without ``needs_env``.
        host / port: where to bind (port 0 = a free port; :attr:`port` is the one bound).
        api_token: when set, requests must carry it (else ``{"error": "Unauthorized: ..."}``).

    Requests are served one at a time (REP). :meth:`serve_forever` returns after ``kill``
    or :meth:`stop` (polled every 100 ms, so another thread may stop it).
    """

    def __init__(self, policy: Policy, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 api_token: str | None = None):
        zmq, _ = _modules()
        if getattr(policy, "needs_env", False):
            raise World2ActError(f"policy {getattr(policy, 'name', '?')} reads the live simulator (needs_env) "
                                 f"and cannot be served remotely; serve a learned policy folder")
        self.policy = policy
        self.layout = Layout.of_policy(policy)
        self.api_token = api_token or None
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.REP)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(f"tcp://{host}:{'*' if int(port) == 0 else int(port)}")
        except zmq.ZMQError as e:
            self._sock.close()
            raise World2ActError(f"serve: cannot bind tcp://{host}:{port} ({e})") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self.running = False
        self.requests = 0
        self._owners = _policies_within(policy)
        self._sessions: collections.OrderedDict[str, list] = collections.OrderedDict()
        self._active: str | None = None
        self._endpoints: dict[str, tuple[Callable, bool]] = {
            "ping": (self._ping, False), "kill": (self._kill, False), "reset": (self._reset, True),
            "get_modality_config": (self._modality_config, False), "get_action": (self._get_action, True)}

    # ------------------------------------------------------------------ endpoints
    def _ping(self) -> dict:
        return {"status": "ok", "message": "Server is running"}

    def _kill(self) -> None:
        self.running = False

    def _modality_config(self) -> dict:
        return self.layout.modality_config()

    def _use_session(self, options: dict | None) -> None:
        """Install the calling session's noise generators (seeding them when ``seed`` is given)."""
        options = options or {}
        sid = str(options.get("session", ""))
        if "seed" in options and options["seed"] is not None:
            self.policy.seed(int(options["seed"]))
            self._sessions[sid] = [p._generator for p in self._owners]
        elif sid not in self._sessions:
            self._sessions[sid] = [None] * len(self._owners)  # unseeded: torch's global generator
        self._sessions.move_to_end(sid)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        for p, g in zip(self._owners, self._sessions[sid]):
            p._generator = g

    def _reset(self, options: dict | None = None) -> dict:
        self.policy.reset()
        if options and options.get("seed") is not None:
            self._use_session(options)
        return {}

    def _get_action(self, observation: Any, options: dict | None = None) -> tuple[dict, dict]:
        t0 = time.perf_counter()
        obs = self.layout.observation_from_wire(observation)
        check_obs(obs, cameras=self.layout.cameras, state_dim=self.layout.state_dim)
        self._use_session(options)
        with torch.no_grad():
            chunk = self.policy.predict_action_chunk(obs)
        return self.layout.action_to_wire(chunk), {"server_ms": (time.perf_counter() - t0) * 1000.0}

    # ------------------------------------------------------------------ loop
    def handle(self, message: bytes) -> bytes:
        """One request → one reply (never raises: failures become ``{"error": text}``)."""
        try:
            request = unpack(message)
            if not isinstance(request, dict):
                raise World2ActError(f"a request must be a dict with 'endpoint', got {type(request).__name__}")
            if self.api_token is not None and request.get("api_token") != self.api_token:
                return pack({"error": "Unauthorized: Invalid API token"})
            name = request.get("endpoint", "get_action")
            if name not in self._endpoints:
                raise World2ActError(f"Unknown endpoint: {name} (valid: {', '.join(self._endpoints)})")
            fn, takes_input = self._endpoints[name]
            data = request.get("data") or {}
            if takes_input and not isinstance(data, dict):
                raise World2ActError(f"{name}: 'data' must be a dict")
            result = fn(**data) if takes_input else fn()
            return pack(result)
        except Exception as e:  # noqa: BLE001 - every failure goes back to the client
            log.debug("request failed", exc_info=True)
            text = str(e) if isinstance(e, World2ActError) else f"{type(e).__name__}: {e}"
            return pack({"error": text})

    def serve_forever(self, poll_ms: int = 100) -> None:
        zmq, _ = _modules()
        self.running = True
        try:
            while self.running:
                if not self._sock.poll(poll_ms, zmq.POLLIN):
                    continue
                message = self._sock.recv()
                self.requests += 1
                self._sock.send(self.handle(message))
        finally:
            self.running = False
            self._sock.close(linger=0)

    def stop(self) -> None:
        self.running = False


# ---------------------------------------------------------------------------- client
def parse_url(url: str) -> tuple[str, int, float | None]:
    """``remote://HOST:PORT[?timeout=S]`` → ``(host, port, timeout_s or None)``.

    Raises:
        World2ActError: not of that form.
    """
    from urllib.parse import parse_qs, urlsplit

    s = str(url)
    if not s.startswith(SCHEME):
        raise World2ActError(f"--policy {s}: a remote policy is remote://HOST:PORT")
    try:
        parts = urlsplit(s)
        host, port = parts.hostname, parts.port
        q = parse_qs(parts.query)
        unknown = sorted(set(q) - {"timeout"})
        timeout = float(q["timeout"][-1]) if "timeout" in q else None
    except ValueError as e:
        raise World2ActError(f"--policy {s}: {e} (expected remote://HOST:PORT[?timeout=SECONDS])") from None
    if not host or port is None or unknown or (timeout is not None and timeout <= 0):
        why = f"unknown option(s) {unknown}" if unknown else "timeout must be > 0" if timeout is not None and timeout <= 0 \
            else "needs a host and a port"
        raise World2ActError(f"--policy {s}: {why} (expected remote://HOST:PORT[?timeout=SECONDS])")
    return host, int(port), timeout


def default_timeout() -> float:
    """``$WORLD2ACT_REMOTE_TIMEOUT`` seconds, else 30."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        t = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise World2ActError(f"${TIMEOUT_ENV}={raw!r}: expected seconds, e.g. 30") from None
    if t <= 0:
        raise World2ActError(f"${TIMEOUT_ENV}={raw!r}: must be > 0")
    return t


class RemotePolicy(Policy):
    """A policy served by ``world2act serve`` (or any server of the same protocol and layout).

    ``load_policy("remote://HOST:PORT")`` builds one, so ``--policy remote://HOST:PORT`` works
    wherever a policy folder does. At connect it asks for the modality config and takes
    cameras, image size, action/state dims, chunk size and benchmark from it.

    Args:
        url: ``remote://HOST:PORT[?timeout=S]``.
        timeout_s: seconds to wait for each reply (default: the URL's ``timeout``, else
            ``$WORLD2ACT_REMOTE_TIMEOUT``, else 30).
        api_token: sent with every request (default ``$WORLD2ACT_API_TOKEN``).

    Raises:
        World2ActError: no reply within the timeout (the server is down, unreachable or
            overloaded), a server-side error, or a server that does not describe a world2act policy.
    """

    name = "remote"

    def __init__(self, url: str, *, timeout_s: float | None = None, api_token: str | None = None):
        super().__init__()
        self.url = str(url)
        self.host, self.port, url_timeout = parse_url(self.url)
        self.timeout_s = float(timeout_s or url_timeout or default_timeout())
        self.api_token = api_token if api_token is not None else (os.environ.get(TOKEN_ENV) or None)
        self._sock = None
        self._session = uuid.uuid4().hex
        self._pending_seed: int | None = None
        self.last_info: dict = {}
        self.layout = Layout.from_modality_config(self.call("get_modality_config", requires_input=False), self.url)
        lay = self.layout
        self.action_dim, self.state_dim, self.chunk_size = lay.action_dim, lay.state_dim, lay.chunk_size
        self.cameras, self.image_size, self.benchmark = lay.cameras, lay.image_size, lay.benchmark
        self.server_policy = lay.name

    # ------------------------------------------------------------------ transport
    def _socket(self):
        zmq, _ = _modules()
        if self._sock is None:
            s = zmq.Context.instance().socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDTIMEO, int(self.timeout_s * 1000))
            s.connect(f"tcp://{self.host}:{self.port}")
            self._sock = s
        return self._sock

    def close(self) -> None:
        """Close the socket (a later call opens a fresh one)."""
        if getattr(self, "_sock", None) is not None:
            try:
                self._sock.close(linger=0)
            except Exception:  # noqa: BLE001
                pass
            self._sock = None

    def call(self, endpoint: str, data: dict | None = None, *, requires_input: bool = True) -> Any:
        """Send one request and return the decoded reply.

        Raises:
            World2ActError: no reply within :attr:`timeout_s` (the socket is rebuilt for the
                next call) or an ``{"error": ...}`` reply.
        """
        zmq, _ = _modules()
        request: dict = {"endpoint": endpoint}
        if requires_input:
            request["data"] = data
        if self.api_token:
            request["api_token"] = self.api_token
        sock = self._socket()
        try:
            sock.send(pack(request))
            ready = sock.poll(int(self.timeout_s * 1000), zmq.POLLIN)
            message = sock.recv() if ready else None
        except zmq.ZMQError:
            message = None
        if message is None:
            self.close()  # a REQ socket that sent without receiving cannot send again
            raise World2ActError(
                f"remote policy {self.url}: no reply to {endpoint!r} within {self.timeout_s:g} s (is `world2act "
                f"serve` running at {self.host}:{self.port} and reachable? a slow server: raise the timeout with "
                f"{SCHEME}{self.host}:{self.port}?timeout=SECONDS or ${TIMEOUT_ENV})")
        response = unpack(message)
        if isinstance(response, dict) and "error" in response:
            raise World2ActError(f"remote policy {self.url}: {endpoint} failed on the server: {response['error']}")
        return response

    def ping(self) -> bool:
        """True when the server answers ``ping`` within the timeout."""
        try:
            return isinstance(self.call("ping", requires_input=False), dict)
        except World2ActError:
            return False

    def kill_server(self) -> None:
        """Ask the server to stop (it answers first)."""
        self.call("kill", requires_input=False)

    # ------------------------------------------------------------------ contract
    def reset(self) -> None:
        super().reset()
        self.call("reset", {"options": {"session": self._session}})

    def seed(self, seed: int) -> None:
        """Seed the server-side noise of this client's session (sent with the next request)."""
        super().seed(seed)
        self._pending_seed = int(seed)

    @torch.no_grad()
    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        B = check_obs(obs, cameras=self.cameras, state_dim=self.state_dim)
        options: dict = {"session": self._session}
        if self._pending_seed is not None:
            options["seed"] = self._pending_seed
        reply = self.call("get_action", {"observation": self.layout.observation_to_wire(obs), "options": options})
        if not isinstance(reply, (list, tuple)) or len(reply) != 2:
            raise World2ActError(f"remote policy {self.url}: get_action must answer [action, info], got {type(reply).__name__}")
        self._pending_seed = None
        self.last_info = reply[1] if isinstance(reply[1], dict) else {}
        chunk = self.layout.action_from_wire(reply[0], f"remote policy {self.url}")
        if chunk.shape != (B, self.chunk_size, self.action_dim):
            raise World2ActError(f"remote policy {self.url}: action chunk {tuple(chunk.shape)}, expected "
                                 f"[{B}, {self.chunk_size}, {self.action_dim}]")
        return torch.from_numpy(np.ascontiguousarray(chunk))

    def describe(self) -> dict:
        return {**super().describe(), "remote": self.url, "server_policy": self.server_policy}

    def __reduce__(self):
        return (_reconnect, (self.url, self.timeout_s))

    def __del__(self):
        self.close()


def _reconnect(url: str, timeout_s: float) -> RemotePolicy:
    return RemotePolicy(url, timeout_s=timeout_s)


def is_remote(spec: Any) -> bool:
    """True for a ``remote://`` policy spec."""
    return isinstance(spec, str) and spec.startswith(SCHEME)


# A policy folder may point at a server: {"type": "remote", "url": "remote://HOST:PORT"}
# (a post-trained residual policy over a remote base keeps its base/ that way).
def write_remote_folder(folder, url: str) -> None:
    from pathlib import Path

    from world2act.utils.io import write_json

    parse_url(url)
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(Path(folder) / "config.json", {"type": "remote", "url": url})


def _load(path, *, benchmark: str | None = None, device: str = "cpu") -> RemotePolicy:  # noqa: ARG001
    from world2act.utils.io import read_json

    cfg = read_json(path / "config.json")
    if not isinstance(cfg.get("url"), str):
        raise World2ActError(f"{path / 'config.json'}: a remote policy folder needs \"url\": \"remote://HOST:PORT\"")
    return RemotePolicy(cfg["url"])


def _register() -> None:
    from world2act.policies.io import register_policy_type

    register_policy_type("remote", _load)


_register()
