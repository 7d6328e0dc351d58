"""LLM skill aligner (paper appendix E) for any OpenAI-compatible chat-completions endpoint.

The paper prompts DeepSeek with the global instruction, the task schema and the detected
gripper contact indices; the model must filter false-positive indices, align the valid ones
chronologically with the schema steps, use only the provided indices, flag missing steps and
explain briefly. This module does that against any endpoint speaking the OpenAI
chat-completions protocol (DeepSeek, vLLM, Ollama, llama.cpp server, ...) through the
``openai`` client, and **validates every answer**:

* the reply must contain one JSON object ``{"steps": [{"skill", "prompt", "index"}, ...],
  "missing_steps": [...], "explanation": "..."}`` (``<think>`` blocks and code fences are
  stripped);
* one step per schema step, with the schema's verbs in order (when the instruction parsed;
  otherwise any vocabulary verbs);
* every ``index`` is one of the provided indices (no hallucinated frames) and they strictly
  increase; ``missing_steps`` must be empty.

An invalid, hallucinated, non-JSON, failed or timed-out answer discards that episode with a
recorded reason (``llm_*`` keys in ``skill_stats.json``) and the run goes on; only a rejected
key / unknown model / unreachable endpoint on *every* request aborts (:class:`World2ActError`).

Answers are cached on disk keyed by a hash of the request (base URL, model, messages,
sampling settings; never the key), so re-runs are free and deterministic; transient failures
(timeouts, connection errors, HTTP 429/5xx) are retried with exponential backoff; at most
``concurrency`` requests run at once. The API key is read from the environment variable named
by ``api_key_env`` and is never printed, logged or stored (error texts are scrubbed of it).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from world2act import World2ActError
from world2act.skills.contacts import ContactEvent
from world2act.skills.decompose import VOCABULARY, SkillStep
from world2act.skills.sync import Alignment, boundaries_from_indices
from world2act.utils.config import opt
from world2act.utils.io import atomic_write

log = logging.getLogger(__name__)

# discard reasons
LLM_REQUEST_FAILED = "llm_request_failed"
LLM_NON_JSON = "llm_non_json"
LLM_INVALID = "llm_invalid_answer"
LLM_HALLUCINATED = "llm_hallucinated_index"
LLM_ORDER = "llm_indices_not_increasing"
LLM_MISSING = "llm_missing_steps"
LLM_STEP_COUNT = "llm_wrong_step_count"
LLM_SCHEMA = "llm_schema_mismatch"

SYSTEM_PROMPT = """You align a robot demonstration with the atomic skills of its task.
You receive:
1. the global instruction of the demonstration;
2. the task schema: the ordered atomic skills (verbs from a fixed skill vocabulary);
3. detected gripper contact indices: frame numbers at which a gripper event finished (the gripper closed on something, or opened again), and the last frame of the episode.
Rules:
- Raw contact indices can contain noise, e.g. several triggers clustered too closely together or a failed grasp that was retried. Identify and ignore such false positives.
- Align the valid indices chronologically with the schema steps: every step ends at exactly one index, and the indices of consecutive steps strictly increase. A pick ends when the gripper has closed on the object; a place ends when the gripper has opened again; an open/close/turn/push step ends when the gripper has opened again after the interaction, or at the last frame if it is the final step.
- Use ONLY the provided indices. Never invent a frame number.
- If there are fewer valid indices than schema steps, do not guess: list the numbers (1-based) of the steps without an index in "missing_steps".
- Write one short low-level prompt per step: imperative, starting with the step's verb, naming the object (and the target for a place), e.g. "pick up the bowl", "place the bowl on the plate".
- Explain your decision briefly (one or two sentences).
Answer with one JSON object only, no other text:
{"steps": [{"skill": "<verb>", "prompt": "<low-level prompt>", "index": <frame>}, ...], "missing_steps": [], "explanation": "<brief reason>"}"""


@dataclasses.dataclass
class LLMConfig:
    """Settings of the LLM aligner.

    Attributes:
        base_url: OpenAI-compatible API root (``https://api.deepseek.com``,
            ``http://localhost:8000/v1`` for vLLM, ``http://localhost:11434/v1`` for Ollama).
        model: model name (``deepseek-chat``, ``deepseek-reasoner``, ...).
        api_key_env: name of the environment variable holding the key. For a localhost
            endpoint an unset variable is allowed (a placeholder key is sent).
        timeout_s: per-request timeout, seconds.
        max_retries: retries after the first attempt for transient failures.
        backoff_s: first retry delay, doubled each retry.
        concurrency: maximum requests in flight.
        temperature, max_tokens: sampling settings (temperature 0 for reproducibility).
        json_mode: send ``response_format={"type": "json_object"}`` (DeepSeek, vLLM, Ollama
            support it; some servers do not).
        cache_dir: answer cache folder (default ``$XDG_CACHE_HOME/world2act/llm`` or
            ``~/.cache/world2act/llm``); ``""`` disables caching.
    """

    base_url: str = opt("https://api.deepseek.com", "OpenAI-compatible API root (default https://api.deepseek.com)",
                        flag="--llm-base-url")
    model: str = opt("deepseek-chat", "model name (default deepseek-chat)", flag="--llm-model")
    api_key_env: str = opt("DEEPSEEK_API_KEY", "environment variable holding the API key (default DEEPSEEK_API_KEY)",
                           flag="--llm-api-key-env")
    timeout_s: float = opt(60.0, "per-request timeout in seconds (default 60)", flag="--llm-timeout")
    max_retries: int = 3
    backoff_s: float = 2.0
    concurrency: int = opt(4, "requests in flight (default 4)", flag="--llm-concurrency")
    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = opt(False, "request response_format=json_object", flag="--llm-json-mode")
    cache_dir: str | None = opt(None, "answer cache folder (default ~/.cache/world2act/llm; '' disables)",
                                flag="--llm-cache-dir")

    def resolved_cache_dir(self) -> Path | None:
        if self.cache_dir == "":
            return None
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(root) / "world2act" / "llm"


def _is_local(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.endswith(".local")


def candidate_indices(events: Sequence[ContactEvent], T: int) -> list[dict]:
    """The contact indices shown to the model: each event's settled frame, then the last frame.

    Returns ``[{"index": int, "event": str}]`` in frame order (duplicates removed).
    """
    out: list[dict] = []
    seen: set[int] = set()
    for e in events:
        what = (f"gripper closed on something (closure started at frame {e.index}, closure {e.closure:.2f})"
                if e.kind == "close" else f"gripper opened again (opening started at frame {e.index})")
        if e.end not in seen:
            out.append({"index": int(e.end), "event": what})
            seen.add(e.end)
    if T - 1 not in seen:
        out.append({"index": int(T - 1), "event": "last frame of the episode"})
    return out


def build_messages(instruction: str, schema: Sequence[SkillStep] | None, candidates: Sequence[dict]) -> list[dict]:
    """Chat messages for one episode (system prompt of appendix E + the episode's data)."""
    if schema:
        sch = "\n".join(f"{k + 1}. {s.verb}" for k, s in enumerate(schema))
    else:
        sch = ("unknown: decompose the instruction yourself into ordered steps using only these verbs: "
               + ", ".join(VOCABULARY))
    idx = "\n".join(f"- {c['index']}: {c['event']}" for c in candidates)
    user = (f"Global instruction: {instruction}\n\nTask schema:\n{sch}\n\n"
            f"Detected contact indices (frame: event):\n{idx}\n\nAnswer with the JSON object only.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def extract_json(text: str) -> dict | None:
    """Parse the first JSON object in a model reply (``<think>`` and code fences stripped); None if none."""
    if not isinstance(text, str):
        return None
    t = re.sub(r"<think>.*?</think>", "", text, flags=re.S).strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", t, flags=re.S)
    if fence:
        t = fence.group(1).strip()
    dec = json.JSONDecoder()
    for m in re.finditer(r"\{", t):
        try:
            obj, _ = dec.raw_decode(t[m.start():])
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def validate_answer(answer: dict | None, schema: Sequence[SkillStep] | None, candidates: Sequence[dict], T: int,
                    min_clip_frames: int = 1) -> tuple[Alignment, list[SkillStep]]:
    """Check a parsed answer and turn it into an alignment and prompts.

    Returns:
        ``(alignment, steps)``; when ``alignment.ok`` is False, ``alignment.reason`` is one of
        the ``llm_*`` reasons (or ``clip_too_short``) and ``steps`` is empty.
    """
    def bad(reason: str, detail: str) -> tuple[Alignment, list[SkillStep]]:
        return Alignment(False, reason=reason, detail=detail), []

    if answer is None:
        return bad(LLM_NON_JSON, "the reply holds no JSON object")
    steps = answer.get("steps")
    if not isinstance(steps, list) or not steps:
        return bad(LLM_INVALID, "'steps' is missing or not a non-empty list")
    missing = answer.get("missing_steps") or []
    if missing:
        return bad(LLM_MISSING, f"the model flagged missing steps {missing}: {str(answer.get('explanation', ''))[:200]}")
    if schema and len(steps) != len(schema):
        return bad(LLM_STEP_COUNT, f"{len(steps)} steps for a {len(schema)}-step schema")
    allowed = {int(c["index"]) for c in candidates}
    out: list[SkillStep] = []
    indices: list[int] = []
    for k, s in enumerate(steps):
        if not isinstance(s, dict):
            return bad(LLM_INVALID, f"step {k + 1} is not an object")
        idx, prompt, verb = s.get("index"), s.get("prompt"), s.get("skill")
        if isinstance(idx, bool) or not isinstance(idx, int):
            if isinstance(idx, float) and idx.is_integer():
                idx = int(idx)
            else:
                return bad(LLM_INVALID, f"step {k + 1} index {idx!r} is not an integer")
        if idx not in allowed:
            return bad(LLM_HALLUCINATED, f"step {k + 1} index {idx} is not one of the provided indices {sorted(allowed)}")
        if not isinstance(prompt, str) or not prompt.strip():
            return bad(LLM_INVALID, f"step {k + 1} has no prompt")
        verb = str(verb or "").strip().lower()
        if schema:
            if verb and verb != schema[k].verb:
                return bad(LLM_SCHEMA, f"step {k + 1} skill {verb!r} differs from the schema's {schema[k].verb!r}")
            verb, kind = schema[k].verb, schema[k].kind
        else:
            if verb not in VOCABULARY:
                return bad(LLM_SCHEMA, f"step {k + 1} skill {verb!r} is not in the vocabulary")
            kind = VOCABULARY[verb]
        if indices and idx <= indices[-1]:
            return bad(LLM_ORDER, f"indices {indices + [idx]} do not strictly increase")
        indices.append(idx)
        out.append(SkillStep(verb, kind, " ".join(prompt.strip().rstrip(".").split())))
    al = boundaries_from_indices(indices, T, min_clip_frames)
    if al.ok:
        al.detail = str(answer.get("explanation", ""))[:300]
    return (al, out) if al.ok else (al, [])


@dataclasses.dataclass
class LLMResult:
    """One episode's LLM decision: ``alignment`` (ok or a reason), ``steps`` (prompts), raw reply."""

    alignment: Alignment
    steps: list[SkillStep]
    raw: str | None = None
    cached: bool = False


class LLMAligner:
    """Validated, cached, retrying, concurrency-bounded LLM aligner.

    Args:
        config: :class:`LLMConfig`.
        min_clip_frames: clips shorter than this discard the episode (``clip_too_short``).

    Raises:
        World2ActError: a non-local endpoint without the API-key variable set.
    """

    def __init__(self, config: LLMConfig, min_clip_frames: int = 1) -> None:
        self.config = config
        self.min_clip_frames = min_clip_frames
        key = os.environ.get(config.api_key_env or "", "")
        if not key:
            if not _is_local(config.base_url):
                raise World2ActError(f"--llm-api-key-env: environment variable {config.api_key_env!r} is not set "
                                     f"(needed for {config.base_url})")
            key = "EMPTY"
        self._key = key
        self._client = None
        self._lock = threading.Lock()
        self._fatal: str | None = None
        self.cache_dir = config.resolved_cache_dir()
        self.requests_sent = 0
        self.cache_hits = 0

    # -- helpers
    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and self._key != "EMPTY" else text

    def _get_client(self):
        with self._lock:
            if self._client is None:
                import openai

                self._client = openai.OpenAI(base_url=self.config.base_url, api_key=self._key,
                                             timeout=self.config.timeout_s, max_retries=0)
            return self._client

    def request_key(self, messages: list[dict]) -> str:
        """sha256 of the request (endpoint, model, messages, sampling settings; not the key)."""
        c = self.config
        blob = json.dumps({"base_url": c.base_url.rstrip("/"), "model": c.model, "messages": messages,
                           "temperature": c.temperature, "max_tokens": c.max_tokens, "json_mode": c.json_mode},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / key[:2] / f"{key}.json"

    def _complete(self, messages: list[dict]) -> tuple[str | None, bool, str | None]:
        """Return (content, cached, failure detail)."""
        import openai

        key = self.request_key(messages)
        path = self._cache_path(key)
        if path is not None and path.is_file():
            try:
                rec = json.loads(path.read_text())
                with self._lock:
                    self.cache_hits += 1
                return rec.get("content"), True, None
            except (json.JSONDecodeError, OSError):
                pass  # a corrupt cache entry is re-requested
        c = self.config
        kwargs = dict(model=c.model, messages=messages, temperature=c.temperature, max_tokens=c.max_tokens)
        if c.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        client = self._get_client()
        delay = c.backoff_s
        last = ""
        for attempt in range(c.max_retries + 1):
            if self._fatal:
                return None, False, self._fatal
            try:
                with self._lock:
                    self.requests_sent += 1
                resp = client.chat.completions.create(**kwargs)
                content = resp.choices[0].message.content if resp.choices else None
                if path is not None:
                    atomic_write(path, json.dumps({"request_sha256": key, "model": c.model, "content": content},
                                                  indent=1))
                return content, False, None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as e:
                msg = self._scrub(f"HTTP {getattr(e, 'status_code', '?')}: {e}")[:300]
                self._fatal = msg
                return None, False, msg
            except (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                    openai.InternalServerError) as e:
                last = self._scrub(f"{type(e).__name__}: {e}")[:300]
            except openai.APIError as e:  # other 4xx, undecodable body, ...
                return None, False, self._scrub(f"{type(e).__name__}: {e}")[:300]
            if attempt < c.max_retries:
                time.sleep(delay)
                delay *= 2
        return None, False, f"failed after {c.max_retries + 1} attempts ({last})"

    # -- public
    def align(self, instruction: str, schema: Sequence[SkillStep] | None, events: Sequence[ContactEvent],
              T: int) -> LLMResult:
        """Ask the model for one episode and validate the answer (never raises for a bad answer)."""
        cands = candidate_indices(events, T)
        messages = build_messages(instruction, schema, cands)
        content, cached, err = self._complete(messages)
        if err is not None:
            return LLMResult(Alignment(False, reason=LLM_REQUEST_FAILED, detail=err), [], None, cached)
        al, steps = validate_answer(extract_json(content or ""), schema, cands, T, self.min_clip_frames)
        return LLMResult(al, steps, content, cached)

    def align_many(self, items: Sequence[tuple[str, Sequence[SkillStep] | None, Sequence[ContactEvent], int]],
                   progress: bool = True) -> list[LLMResult]:
        """:meth:`align` over many episodes with at most ``concurrency`` requests in flight.

        Results are in input order. Raises :class:`World2ActError` when the endpoint rejected
        the key or model (HTTP 401/403/404): every further request would fail the same way.
        """
        from world2act.utils.progress import progress_bar

        results: list[LLMResult | None] = [None] * len(items)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            futs = {pool.submit(self.align, *it): i for i, it in enumerate(items)}
            for f in progress_bar(concurrent.futures.as_completed(futs), total=len(futs), desc="llm align",
                          disable=not progress, leave=False):
                results[futs[f]] = f.result()
        if self._fatal:
            raise World2ActError(f"--llm-base-url {self.config.base_url}: the endpoint refused the request "
                                 f"({self._fatal}); check --llm-model and --llm-api-key-env")
        return [r for r in results if r is not None]
