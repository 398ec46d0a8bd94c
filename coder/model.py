"""The model layer: one small `Model` interface and its OpenAI-compatible implementation.

`OpenAIModel` takes an `AsyncOpenAI` client, retries 429, 5xx, timeouts and connection errors
with exponential backoff and jitter (honouring Retry-After), counts tokens, prices them from a
table, and keeps an on-disk cache keyed by the request, so that a re-run costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI

from coder.errors import ModelError

Message = dict[str, str]

#: USD per million tokens (input, output); extend or override in the config's [prices].
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
}


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Reply:
    text: str
    usage: Usage
    model: str
    cached: bool = False
    seconds: float = 0.0


class Model(ABC):
    """Something that answers a chat. `name` is the model's id at its endpoint."""

    name: str

    @abstractmethod
    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Reply:
        """One reply; raises ModelError when no usable reply can be had. `response_format`:
        the provider's structured output (a JSON schema the reply must follow), when the
        endpoint supports it."""

    def estimate_cost(self, usage: Usage) -> float:
        """What `usage` would cost at this model's price (0 when it has none)."""
        return 0.0


def price(prices: dict[str, tuple[float, float]], model: str, usage: Usage) -> float:
    per_in, per_out = prices[model]
    return (usage.prompt_tokens * per_in + usage.completion_tokens * per_out) / 1e6


class ResponseCache:
    """Replies on disk, one JSON file per request digest."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def key(
        model: str,
        messages: list[Message],
        max_tokens: int | None,
        temperature: float,
        *extra: Any,
    ) -> str:
        """The digest of a request; `extra` (seed, response format) only when set, so the keys
        of requests without them are those of earlier versions."""
        blob = json.dumps([model, messages, max_tokens, temperature, *extra], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.directory / f"{key}.json").read_text())
            return data
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.tmp"
        tmp.write_text(json.dumps(value))
        tmp.replace(self.directory / f"{key}.json")


RETRYABLE = (
    openai.RateLimitError,
    openai.InternalServerError,
    openai.APITimeoutError,
    openai.APIConnectionError,
)


class OpenAIModel(Model):
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server, …)."""

    def __init__(
        self,
        client: AsyncOpenAI,
        name: str,
        *,
        prices: dict[str, tuple[float, float]],
        cache: ResponseCache | None = None,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        temperature: float = 0.0,
        seed: int | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_retry: Callable[[str, float], None] | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.prices = prices
        self.cache = cache
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.temperature = temperature
        self.seed = seed
        self._sleep = sleep
        self._on_retry = on_retry

    def estimate_cost(self, usage: Usage) -> float:
        return price(self.prices, self.name, usage) if self.name in self.prices else 0.0

    def _delay(self, attempt: int, exc: Exception) -> float:
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        if retry_after:
            try:
                return float(min(float(retry_after), self.max_backoff_s))
            except ValueError:
                pass
        base = min(self.max_backoff_s, self.backoff_s * float(2**attempt))
        return base * (0.5 + random.random() / 2)

    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Reply:
        extra = [x for x in (self.seed, response_format) if x is not None]
        key = ResponseCache.key(self.name, messages, max_tokens, self.temperature, *extra)
        options: dict[str, Any] = {}
        if self.seed is not None:
            options["seed"] = self.seed
        if response_format is not None:
            options["response_format"] = response_format
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return Reply(hit["text"], Usage(), self.name, cached=True)
        started = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                response = await self.client.chat.completions.create(
                    model=self.name,
                    messages=messages,  # type: ignore[arg-type]
                    temperature=self.temperature,
                    max_tokens=max_tokens,
                    **options,
                )
                break
            except RETRYABLE as exc:
                if attempt == self.retries:
                    raise ModelError(
                        f"{self.name}: gave up after {attempt + 1} tries: {exc}"
                    ) from exc
                delay = self._delay(attempt, exc)
                if self._on_retry:
                    self._on_retry(type(exc).__name__, delay)
                await self._sleep(delay)
            except openai.APIError as exc:
                raise ModelError(f"{self.name}: {exc}") from exc
        choice = response.choices[0] if response.choices else None
        text = choice.message.content if choice and choice.message else None
        if not text:
            raise ModelError(f"{self.name}: the reply has no text")
        usage = Usage(
            response.usage.prompt_tokens if response.usage else 0,
            response.usage.completion_tokens if response.usage else 0,
        )
        usage.cost_usd = price(self.prices, self.name, usage) if self.name in self.prices else 0.0
        if self.cache is not None:
            self.cache.put(key, {"text": text, "usage": asdict(usage)})
        return Reply(text, usage, self.name, seconds=time.monotonic() - started)


class ReplayModel(Model):
    """Replies recorded in a trace, in order; then `fallback` (resume) or an error (replay)."""

    def __init__(self, name: str, replies: list[Reply], fallback: Model | None = None) -> None:
        self.name = name
        self._replies = list(replies)
        self.fallback = fallback

    def estimate_cost(self, usage: Usage) -> float:
        return self.fallback.estimate_cost(usage) if self.fallback is not None else 0.0

    @property
    def remaining(self) -> int:
        return len(self._replies)

    async def complete(
        self,
        messages: list[Message],
        *,
        max_tokens: int | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> Reply:
        if self._replies:
            return self._replies.pop(0)
        if self.fallback is None:
            raise ModelError(f"{self.name}: the trace has no more recorded replies")
        return await self.fallback.complete(
            messages, max_tokens=max_tokens, response_format=response_format
        )
