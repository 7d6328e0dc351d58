"""Remote base policies: `world2act serve` and `--policy remote://HOST:PORT` (Isaac-GR00T's
ZeroMQ/msgpack policy protocol). Servers run on localhost in a thread (same process, same
torch threads) or, for the command itself, in a subprocess."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from world2act import World2ActError
from world2act.policies import Normalizer, load_policy
from world2act.policies.base import Policy
from world2act.policies.flow_policy import FlowPolicy, FlowPolicyConfig

zmq = pytest.importorskip("zmq")
msgpack = pytest.importorskip("msgpack")
from world2act.policies.remote import PolicyServer, RemotePolicy, pack, unpack  # noqa: E402

torch.set_num_threads(1)


def _flow(benchmark, A, S, cameras, K=4, size=32):
    cfg = FlowPolicyConfig(benchmark=benchmark, action_dim=A, state_dim=S, chunk_size=K, cameras=cameras,
                           image_size=(size, size), d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ffn_dim=64,
                           flow_steps=3)
    rng = np.random.default_rng(0)
    norm = Normalizer.fit_arrays({"observation.state": rng.standard_normal((50, S)),
                                  "action": rng.uniform(-0.8, 0.8, (50, A))})
    torch.manual_seed(0)
    p = FlowPolicy(cfg, norm)
    for prm in p.net.act_out.parameters():  # the zero-init head would give constant chunks
        torch.nn.init.normal_(prm, std=0.5)
    return p


def _obs(B=2, seed=0, cams=("agentview", "wrist"), S=8):
    rng = np.random.default_rng(seed)
    obs = {f"observation.images.{c}": rng.integers(0, 256, (B, 48, 48, 3), dtype=np.uint8) for c in cams}
    obs["observation.state"] = rng.standard_normal((B, S)).astype(np.float32)
    obs["task"] = ["put the soup in the basket"] * B
    return obs


class _Serving:
    """A PolicyServer on a free localhost port, in a daemon thread."""

    def __init__(self, policy, **kw):
        self.server = PolicyServer(policy, port=0, **kw)
        self.url = f"remote://127.0.0.1:{self.server.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.stop()
        self.thread.join(5)


@pytest.fixture(scope="module")
def libero_policy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote") / "libero_base"
    _flow("libero_object", 7, 8, ("agentview", "wrist"), size=48).save(d)  # the residual needs >= 36 px
    return d


@pytest.fixture(scope="module")
def served(libero_policy_dir):
    s = _Serving(load_policy(libero_policy_dir))
    yield s
    s.stop()


def _raw_call(port, request, timeout_ms=20000):
    """A bare REQ socket and plain msgpack: what an Isaac-GR00T client sends and reads."""
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send(msgpack.packb(request))
        assert sock.poll(timeout_ms, zmq.POLLIN), "no reply"
        return msgpack.unpackb(sock.recv())
    finally:
        sock.close()


def _npy(a):
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return {"__ndarray_class__": True, "as_npy": buf.getvalue()}


def test_wire_format_is_gr00t(served):
    port = served.server.port
    assert _raw_call(port, {"endpoint": "ping"}) == {"status": "ok", "message": "Server is running"}
    cfg = _raw_call(port, {"endpoint": "get_modality_config"})
    assert cfg["video"] == {"__ModalityConfig_class__": True,
                            "as_json": {"delta_indices": [0], "modality_keys": ["agentview", "wrist"]}}
    assert cfg["action"]["as_json"] == {"delta_indices": [0, 1, 2, 3], "modality_keys": ["action"]}
    assert cfg["language"]["as_json"]["modality_keys"] == ["task"]
    assert cfg["world2act"]["action_dim"] == 7 and cfg["world2act"]["chunk_size"] == 4
    # a GR00T-layout observation, numpy arrays as np.save payloads; no "endpoint" means get_action
    o = _obs(B=2)
    wire_obs = {"video": {c: _npy(o[f"observation.images.{c}"][:, None]) for c in ("agentview", "wrist")},
                "state": {"state": _npy(o["observation.state"][:, None])},
                "language": {"task": [[t] for t in o["task"]]}}
    reply = _raw_call(port, {"data": {"observation": wire_obs, "options": None}})
    action, info = reply
    arr = unpack(msgpack.packb(action["action"]))
    assert arr.shape == (2, 4, 7) and arr.dtype == np.float32 and info["server_ms"] > 0
    assert _raw_call(port, {"endpoint": "reset", "data": {"options": None}}) == {}
    assert "Unknown endpoint: nope" in _raw_call(port, {"endpoint": "nope"})["error"]
    bad = {"observation": {**wire_obs, "video": {"agentview": wire_obs["video"]["agentview"]}}, "options": None}
    assert "observation['video']['wrist']" in _raw_call(port, {"endpoint": "get_action", "data": bad})["error"]
    assert "error" in msgpack.unpackb(served.server.handle(b"\xc1garbage"))
    # our codec: arrays round-trip exactly, pickled objects are refused
    x = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": [["x"]], "t": torch.ones(2)}
    y = unpack(pack(x))
    assert np.array_equal(y["a"], x["a"]) and y["a"].dtype == np.float32 and y["s"] == [["x"]]
    import io

    pickled = io.BytesIO()
    np.save(pickled, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        unpack(msgpack.packb({"__ndarray_class__": True, "as_npy": pickled.getvalue()}))


def test_predictions_identical_to_in_process(served, libero_policy_dir):
    local_a, local_b = load_policy(libero_policy_dir), load_policy(libero_policy_dir)
    ra = load_policy(served.url, benchmark="libero_spatial")  # same robot: compatible
    rb = RemotePolicy(served.url)
    assert isinstance(ra, RemotePolicy)
    assert (ra.action_dim, ra.state_dim, ra.chunk_size, ra.cameras, ra.image_size, ra.benchmark) == \
        (7, 8, 4, ("agentview", "wrist"), (48, 48), "libero_object")
    for p, s in ((local_a, 11), (ra, 11), (local_b, 12), (rb, 12)):
        p.reset()
        p.seed(s)
    # two clients interleave on one server: each gets exactly its own in-process chunks
    for i in range(3):
        obs = _obs(seed=i)
        ea, eb = local_a.predict_action_chunk(obs), local_b.predict_action_chunk(obs)
        ga, gb = ra.predict_action_chunk(obs), rb.predict_action_chunk(obs)
        assert ga.dtype == torch.float32 and ga.shape == (2, 4, 7)
        assert torch.equal(ga, ea) and torch.equal(gb, eb)
    assert not torch.equal(ga, gb)
    # select_action serves the remote chunk open loop, like any policy
    ra.reset()
    ra.seed(11)
    local_a.seed(11)
    acts = torch.stack([ra.select_action(_obs()) for _ in range(4)], 1)
    assert torch.equal(acts, local_a.predict_action_chunk(_obs()))
    # a mismatch with the benchmark is the same error as for a local folder, before any simulator
    with pytest.raises(World2ActError, match="action_dim 7 != benchmark metaworld action_dim 4"):
        load_policy(served.url, benchmark="metaworld")
    with pytest.raises(World2ActError, match="observation.images.wrist"):
        ra.predict_action_chunk({k: v for k, v in _obs().items() if k != "observation.images.wrist"})
    with pytest.raises(World2ActError, match="remote://HOST:PORT"):
        load_policy("remote://no-port-here")


class _SlowPolicy(Policy):
    """Wraps a policy; every chunk takes ``delay`` seconds."""

    def __init__(self, inner, delay):
        super().__init__()
        self.inner, self.delay = inner, delay
        for k in ("action_dim", "state_dim", "chunk_size", "cameras", "image_size", "benchmark"):
            setattr(self, k, getattr(inner, k))

    def predict_action_chunk(self, obs):
        time.sleep(self.delay)
        return self.inner.predict_action_chunk(obs)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_or_slow_server_is_a_clear_error_within_the_timeout(libero_policy_dir, monkeypatch):
    port = _free_port()  # nobody listens there
    t = time.perf_counter()
    with pytest.raises(World2ActError, match=r"no reply to 'get_modality_config' within 0.5 s"):
        load_policy(f"remote://127.0.0.1:{port}?timeout=0.5")
    assert time.perf_counter() - t < 3
    monkeypatch.setenv("WORLD2ACT_REMOTE_TIMEOUT", "0.4")
    with pytest.raises(World2ActError, match="within 0.4 s"):
        RemotePolicy(f"remote://127.0.0.1:{port}")
    # a server slower than the timeout: an error, then the client's reset socket works again
    slow = _Serving(_SlowPolicy(load_policy(libero_policy_dir), 1.0))
    try:
        r = RemotePolicy(slow.url, timeout_s=0.3)
        t = time.perf_counter()
        with pytest.raises(World2ActError, match="no reply to 'get_action' within 0.3 s"):
            r.predict_action_chunk(_obs())
        assert time.perf_counter() - t < 2
        time.sleep(1.0)  # the server finishes the abandoned request; its late reply is dropped
        assert r.ping()
        r.timeout_s = 10
        assert r.predict_action_chunk(_obs()).shape == (2, 4, 7)
    finally:
        slow.stop()
    # the server dies under a connected client: the next call fails, no hang
    s = _Serving(load_policy(libero_policy_dir))
    r = RemotePolicy(s.url, timeout_s=0.5)
    r.kill_server()
    s.thread.join(5)
    assert not s.thread.is_alive()
    with pytest.raises(World2ActError, match="no reply"):
        r.predict_action_chunk(_obs())


def test_api_token(libero_policy_dir, monkeypatch):
    s = _Serving(load_policy(libero_policy_dir), api_token="s3cret")
    try:
        monkeypatch.delenv("WORLD2ACT_API_TOKEN", raising=False)
        with pytest.raises(World2ActError, match="Unauthorized"):
            RemotePolicy(s.url, timeout_s=5)
        monkeypatch.setenv("WORLD2ACT_API_TOKEN", "s3cret")
        assert RemotePolicy(s.url, timeout_s=5).ping()
    finally:
        s.stop()


def test_serve_command_in_a_subprocess(libero_policy_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "world2act", "serve", "--policy", str(libero_policy_dir),
                             "--port", "0", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "remote://127.0.0.1:" in line, line + proc.stderr.read()
        url = "remote://" + line.rsplit("remote://", 1)[1].split()[0]
        r = load_policy(url)
        local = load_policy(libero_policy_dir)
        r.reset()
        for p in (r, local):
            p.seed(5)
        for i in range(2):  # another process, one torch thread: bit-identical chunks
            assert torch.equal(r.predict_action_chunk(_obs(seed=i)), local.predict_action_chunk(_obs(seed=i)))
        r.kill_server()
        assert proc.wait(10) == 0
        assert "server stopped after" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "world2act", "serve", "--policy", "expert", "--benchmark", "metaworld",
                          "--port", "0"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "cannot be served" in bad.stderr


def test_residual_over_a_remote_base_saves_and_loads(served, libero_policy_dir, tmp_path):
    from world2act.align import AlignmentBundle
    from world2act.align.bundle import AdapterConfig
    from world2act.policies.residual import ResidualPolicy

    AlignmentBundle(AdapterConfig(action_dim=7, chunk_size=4, latent_dim=8, latent_channels=4), seed=0).save(tmp_path / "align")
    bundle = AlignmentBundle.load(tmp_path / "align")
    pol = ResidualPolicy.create(load_policy(served.url), bundle, camera="agentview", align_dir=tmp_path / "align")
    with torch.no_grad():
        pol.residual.gate.fill_(0.5)
    pol.fit_state_norm(torch.randn(10, 8))
    pol.save(tmp_path / "post", base_source=served.url)
    assert (tmp_path / "post" / "base" / "config.json").is_file()
    loaded = load_policy(tmp_path / "post")
    assert isinstance(loaded.base, RemotePolicy) and loaded.base.url == served.url
    ref = ResidualPolicy(load_policy(libero_policy_dir), bundle, pol.residual, tmp_path / "align")
    ref._state_mean, ref._state_std = pol.state_norm()
    for p in (pol, loaded, ref):
        p.seed(3)
    want = ref.predict_action_chunk(_obs())
    assert torch.equal(pol.predict_action_chunk(_obs()), want)
    assert torch.equal(loaded.predict_action_chunk(_obs()), want)


# ---------------------------------------------------------------------------- evaluation (Meta-World)
class _RecordingFactory:
    """Builds the real env and fingerprints every action stepped in each episode."""

    def __init__(self):
        self.log: dict = {}

    def __call__(self, benchmark, task, camera_size, cameras):
        from world2act.envs import make_env

        return _Recorder(make_env(benchmark, task, camera_size=camera_size), self.log)


class _Recorder:
    def __init__(self, env, log):
        self._env, self._log, self._key = env, log, None

    def reset(self, **kw):
        self._key = (kw.get("seed"), kw.get("init_state_index"))
        self._log[self._key] = hashlib.sha1()
        return self._env.reset(**kw)

    def step(self, a):
        self._log[self._key].update(np.asarray(a, np.float32).tobytes())
        return self._env.step(a)

    def __getattr__(self, name):
        return getattr(self._env, name)


@pytest.fixture(scope="module")
def metaworld_policy_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote_mw") / "mw_base"
    _flow("metaworld", 4, 4, ("corner2", "gripperPOV"), K=8).save(d)
    return d


@pytest.mark.sim
def test_eval_through_the_client_matches_in_process(metaworld_policy_dir, tmp_path):
    from world2act.evaluation import evaluate

    def run(spec, name):
        rec = _RecordingFactory()
        res = evaluate(spec, "metaworld", ["reach-v3"], 2, [0], tmp_path / name, workers=0, video_episodes=0,
                       env_factory=rec, progress=False, latency=False)
        return res, {k: h.hexdigest() for k, h in rec.log.items()}

    local, local_actions = run(str(metaworld_policy_dir), "local")
    s = _Serving(load_policy(metaworld_policy_dir))
    try:
        remote, remote_actions = run(s.url, "remote")
    finally:
        s.stop()
    key = [(e["task"], e["trial"], e["reset_seed"], e["success"], e["steps"], e["error"]) for e in local["episodes"]]
    assert key == [(e["task"], e["trial"], e["reset_seed"], e["success"], e["steps"], e["error"])
                   for e in remote["episodes"]]
    assert len(key) == 2 and not any(e["error"] for e in local["episodes"])
    assert local_actions == remote_actions and len(local_actions) == 2  # the same actions, step by step
    assert remote["policy_info"]["remote"] == s.url


@pytest.mark.sim
def test_eval_with_a_slow_server_counts_errors_and_finishes(metaworld_policy_dir, tmp_path):
    from world2act.evaluation import evaluate

    s = _Serving(_SlowPolicy(load_policy(metaworld_policy_dir), 1.5))
    t = time.perf_counter()
    try:
        res = evaluate(f"{s.url}?timeout=0.4", "metaworld", ["reach-v3"], 2, [0], tmp_path / "slow", workers=0,
                       video_episodes=0, progress=False, latency=False)
    finally:
        s.stop()
    assert time.perf_counter() - t < 20
    assert res["overall"]["n_errors"] == 2 and res["overall"]["n_trials"] == 2 and res["complete"]
    assert all("no reply" in e["error"] and e["error_source"] == "policy" for e in res["episodes"])
