"""The LLM aligner against a local server speaking the OpenAI chat-completions protocol."""
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from world2act import World2ActError
from world2act.skills.contacts import ContactEvent
from world2act.skills.decompose import decompose_instruction
from world2act.skills.llm import LLMAligner, LLMConfig, build_messages, candidate_indices, extract_json

from skills_synth import PNP

KEY = "sk-test-secret-123"
EVENTS = [ContactEvent("close", 30, 33, 0.21), ContactEvent("open", 70, 73, 0.21)]


def smart_answer(user: str) -> dict:
    """A stand-in model: keeps closures that hold an object (closure < 0.9), pairs each with the next opening."""
    steps = re.findall(r"^\d+\. (.+)$", user, flags=re.M)
    cands = [(int(i), ev) for i, ev in re.findall(r"^- (\d+): (.+)$", user, flags=re.M)]
    picks = []
    for k, (i, ev) in enumerate(cands):
        m = re.search(r"closure ([0-9.]+)", ev)
        if m and float(m.group(1)) < 0.9:
            nxt = next((j for j, e in cands[k + 1:] if "opened" in e), cands[-1][0])
            picks += [i, nxt]
            break
    if len(picks) < len(steps):
        return {"steps": [{"skill": s, "prompt": s, "index": cands[-1][0]} for s in steps],
                "missing_steps": list(range(len(picks) + 1, len(steps) + 1)), "explanation": "no valid grasp"}
    names = re.search(r"Global instruction: pick up (.+?) and place it (.+)$", user, flags=re.M)
    obj, loc = (names.group(1), names.group(2)) if names else ("it", "there")
    return {"steps": [{"skill": "pick", "prompt": f"pick up {obj}", "index": picks[0]},
                      {"skill": "place", "prompt": f"place {obj} {loc}", "index": picks[1]}],
            "missing_steps": [], "explanation": "the closure with an object, then its release"}


class FakeLLM:
    def __init__(self):
        self.mode = "good"
        self.requests = 0
        self.auth: set[str] = set()
        self.inflight = 0
        self.max_inflight = 0
        self.fail_first = 0
        self.lock = threading.Lock()
        fake = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests += 1
                    fake.inflight += 1
                    fake.max_inflight = max(fake.max_inflight, fake.inflight)
                    fake.auth.add(self.headers.get("Authorization", ""))
                    n = fake.requests
                try:
                    fake.handle(self, body, n)
                finally:
                    with fake.lock:
                        fake.inflight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h, body, n):
        user = body["messages"][-1]["content"]
        mode = self.mode
        if mode == "flaky" and n <= self.fail_first:
            return self.send(h, 500, {"error": {"message": "overloaded"}})
        if mode in ("down",):
            return self.send(h, 503, {"error": {"message": "unavailable"}})
        if mode == "auth":
            return self.send(h, 401, {"error": {"message": "invalid api key"}})
        if mode == "slow":
            time.sleep(1.5)
        if mode == "busy":
            time.sleep(0.15)
        ans = smart_answer(user)
        if mode == "malformed":
            content = "Sure! First pick the soup, then place it."
        elif mode == "hallucinate":
            ans["steps"][1]["index"] = 999
            content = json.dumps(ans)
        elif mode == "reverse":
            ans["steps"][0]["index"], ans["steps"][1]["index"] = ans["steps"][1]["index"], ans["steps"][0]["index"]
            content = json.dumps(ans)
        elif mode == "three":
            ans["steps"].append(dict(ans["steps"][1]))
            content = json.dumps(ans)
        elif mode == "fenced":
            content = "<think>the first closure...</think>\n```json\n" + json.dumps(ans) + "\n```"
        else:
            content = json.dumps(ans)
        self.send(h, 200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content}}],
                           "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

    @staticmethod
    def send(h, code, obj):
        data = json.dumps(obj).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture(scope="module")
def fake():
    f = FakeLLM()
    yield f
    f.server.shutdown()


@pytest.fixture
def make(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("W2A_TEST_KEY", KEY)

    def _make(mode="good", **kw):
        deadline = time.time() + 5
        while fake.inflight and time.time() < deadline:  # a previous test's slow request
            time.sleep(0.05)
        fake.mode = mode
        fake.requests = 0
        fake.max_inflight = 0
        cfg = dict(base_url=fake.url, model="fake-model", api_key_env="W2A_TEST_KEY", max_retries=2, backoff_s=0.01,
                   timeout_s=5.0, cache_dir=str(tmp_path / "cache"))
        cfg.update(kw)
        return LLMAligner(LLMConfig(**cfg))
    return _make


SCHEMA = decompose_instruction(PNP)


def test_good_answer_cached_and_key_never_stored(make, fake, tmp_path):
    al = make("good")
    r = al.align(PNP, SCHEMA, EVENTS, 100)
    assert r.alignment.ok and r.alignment.boundaries == [0, 34, 100]
    assert [s.prompt for s in r.steps] == ["pick up the alphabet soup", "place the alphabet soup in the basket"]
    assert [s.verb for s in r.steps] == ["pick", "place"]
    assert fake.requests == 1 and f"Bearer {KEY}" in fake.auth
    r2 = al.align(PNP, SCHEMA, EVENTS, 100)
    assert r2.cached and fake.requests == 1 and r2.alignment.boundaries == r.alignment.boundaries
    files = list((tmp_path / "cache").rglob("*.json"))
    assert len(files) == 1 and KEY not in files[0].read_text()
    # the prompt carries the instruction, the schema and only the detected indices
    user = build_messages(PNP, SCHEMA, candidate_indices(EVENTS, 100))[1]["content"]
    assert PNP in user and "1. pick\n2. place" in user and "- 33:" in user and "- 73:" in user and "- 99:" in user


def test_false_positive_filtered_by_model(make):
    events = [ContactEvent("close", 20, 22, 0.99), ContactEvent("open", 35, 37, 0.99)] + \
        [ContactEvent("close", 50, 53, 0.21), ContactEvent("open", 90, 93, 0.21)]
    r = make("good").align(PNP, SCHEMA, events, 120)
    assert r.alignment.ok and r.alignment.boundaries == [0, 54, 120]


@pytest.mark.parametrize("mode,reason", [
    ("malformed", "llm_non_json"), ("hallucinate", "llm_hallucinated_index"),
    ("reverse", "llm_indices_not_increasing"), ("three", "llm_wrong_step_count"),
])
def test_invalid_answers_discard_with_reason(make, mode, reason):
    r = make(mode).align(PNP, SCHEMA, EVENTS, 100)
    assert not r.alignment.ok and r.alignment.reason == reason and r.steps == []


def test_missing_steps_flagged(make):
    r = make("good").align(PNP, SCHEMA, [], 100)
    assert r.alignment.reason == "llm_missing_steps"


def test_fenced_and_thinking_reply(make):
    assert make("fenced").align(PNP, SCHEMA, EVENTS, 100).alignment.ok


def test_retry_then_success(make, fake):
    fake.fail_first = 2
    al = make("flaky")
    r = al.align(PNP, SCHEMA, EVENTS, 100)
    assert r.alignment.ok and fake.requests == 3


def test_failing_endpoint_and_timeout(make, fake):
    r = make("down", cache_dir="").align(PNP, SCHEMA, EVENTS, 100)
    assert r.alignment.reason == "llm_request_failed" and fake.requests == 3 and KEY not in r.alignment.detail
    r = make("slow", timeout_s=0.3, max_retries=0, cache_dir="").align(PNP, SCHEMA, EVENTS, 100)
    assert r.alignment.reason == "llm_request_failed" and "Timeout" in r.alignment.detail


def test_rejected_key_aborts_without_leaking(make):
    with pytest.raises(World2ActError) as e:
        make("auth").align_many([(PNP, SCHEMA, EVENTS, 100)] * 3, progress=False)
    assert "401" in str(e.value) and KEY not in str(e.value)


def test_bounded_concurrency_and_order(make, fake):
    al = make("busy", concurrency=2, cache_dir="")
    items = [(PNP, SCHEMA, [ContactEvent("close", 10 + k, 12 + k, 0.2), ContactEvent("open", 60, 63, 0.2)], 100)
             for k in range(6)]
    res = al.align_many(items, progress=False)
    assert [r.alignment.boundaries[1] for r in res] == [13 + k for k in range(6)]
    assert fake.max_inflight <= 2


def test_key_required_for_remote(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(World2ActError, match="NO_SUCH_KEY_VAR"):
        LLMAligner(LLMConfig(base_url="https://api.deepseek.com", api_key_env="NO_SUCH_KEY_VAR"))


def test_extract_json():
    assert extract_json('noise {"a": 1} trailing') == {"a": 1}
    assert extract_json("no json here") is None
    assert extract_json("{broken") is None


def test_segment_with_llm(demo_dataset, tmp_path, make, fake, capsys):
    from world2act.cli import main as cli_main

    make("good")
    out = tmp_path / "s"
    rc = cli_main(["segment", "--dataset", str(demo_dataset), "--out", str(out), "--decomposer", "llm",
                   "--llm-base-url", fake.url, "--llm-model", "fake-model", "--llm-api-key-env", "W2A_TEST_KEY",
                   "--llm-cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    stats = json.loads((out / "meta/skill_stats.json").read_text())
    # the stand-in model filters empty grasps (also the 4-cycle episode the schema aligner rejects)
    assert stats["episodes_synced"] == 6 and stats["discard_reasons"] == {"llm_missing_steps": 1}
    assert KEY not in (out / "manifest.json").read_text() and KEY not in capsys.readouterr().out
