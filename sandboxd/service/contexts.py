"""Interpreter contexts: Jupyter kernels that live in a sandbox, over its workspace.

A context belongs to a sandbox and so to its tenant (another tenant's is "not found", like its
sandbox). Its kernel does not hold the sandbox's lock: runs and file calls go on beside it, as
they would beside a person's shell in the same directory; its executions are one at a time.
Every execution counts as a use of the sandbox. A context ends when deleted, when its sandbox
goes (deleted or expired: `close_sandbox`), when the daemon stops, or after `idle_timeout_s`
without an execution; a context whose kernel died or expired stays listed as `dead` with the
reason, so that its next execution says so (409) instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sandboxd.backends.base import SandboxMount
from sandboxd.backends.host.kernel import Kernel, OnEvent
from sandboxd.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from sandboxd.models import (
    ContextInfo,
    ContextSpec,
    ContextStatus,
    ExecuteRequest,
    ExecutionResult,
    Sandbox,
)
from sandboxd.service.auth import Principal
from sandboxd.service.runs import RunManager
from sandboxd.service.sandboxes import SandboxManager
from sandboxd.settings import Settings

log = logging.getLogger("sandboxd.service.contexts")
MAX_CONTEXTS_PER_SANDBOX = 8
#: An execution counts as a use of its sandbox; noted at most this often (a write to the store).
TOUCH_EVERY_S = 1.0
#: Dead contexts are forgotten this long after they died (their 409 turns into a 404).
KEEP_DEAD_S = 3600.0


@dataclass
class _Context:
    id: str
    sandbox_id: str
    tenant: str
    spec: ContextSpec
    kernel: Kernel | None
    created_at: float
    last_used_at: float
    status: ContextStatus = "starting"
    message: str | None = None
    died_at: float | None = None
    execution_count: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def info(self) -> ContextInfo:
        if self.status != "dead" and self.kernel is not None and not self.kernel.alive:
            self.mark_dead(self.kernel.death or self.kernel.death_reason()[1])
        return ContextInfo(
            id=self.id,
            sandbox_id=self.sandbox_id,
            language=self.spec.language,
            cwd=self.spec.cwd,
            status=self.status,
            execution_count=self.execution_count,
            idle_timeout_s=self.spec.idle_timeout_s,
            message=self.message,
            created_at=datetime.fromtimestamp(self.created_at, UTC),
            last_used_at=datetime.fromtimestamp(self.last_used_at, UTC),
        )

    def mark_dead(self, message: str) -> None:
        if self.status != "dead":
            self.status, self.message, self.died_at = "dead", message, time.time()


class ContextManager:
    """Creates, finds, executes in, interrupts, restarts, expires and deletes contexts."""

    def __init__(self, settings: Settings, sandboxes: SandboxManager, runs: RunManager) -> None:
        self.settings = settings
        self.sandboxes = sandboxes
        self.runs = runs
        self._contexts: dict[str, _Context] = {}
        self._touched: dict[str, float] = {}
        sandboxes.before_remove.append(self.close_sandbox)

    def _find(self, principal: Principal, sandbox_id: str, context_id: str) -> _Context:
        ctx = self._contexts.get(context_id)
        if ctx is None or ctx.sandbox_id != sandbox_id or ctx.tenant != principal.tenant:
            raise NotFound(f"no context {context_id!r} in sandbox {sandbox_id!r}")
        return ctx

    async def _start(self, ctx: _Context, sandbox: Sandbox, mount: SandboxMount) -> None:
        backend = self.runs.backend_for(sandbox.backend, sandbox.image)
        ctx.kernel = await backend.start_kernel(ctx.id, mount, sandbox.limits, ctx.spec)
        ctx.status, ctx.message, ctx.died_at, ctx.execution_count = "idle", None, None, 0

    async def create(self, principal: Principal, sandbox_id: str, spec: ContextSpec) -> ContextInfo:
        sandbox = await self.sandboxes.get(principal, sandbox_id)
        if spec.idle_timeout_s > self.settings.max_sandbox_ttl_s:
            raise InvalidRequest(
                f"idle_timeout_s is above this daemon's maximum of "
                f"{self.settings.max_sandbox_ttl_s}",
                field="idle_timeout_s",
            )
        live = [
            c for c in self._contexts.values() if c.sandbox_id == sandbox_id and c.status != "dead"
        ]
        if len(live) >= MAX_CONTEXTS_PER_SANDBOX:
            raise QuotaExceeded(
                f"sandbox {sandbox_id} has {len(live)} contexts, the most it may; delete one",
                field="contexts",
            )
        now = time.time()
        ctx = _Context(
            "ctx_" + secrets.token_hex(8), sandbox_id, principal.tenant, spec, None, now, now
        )
        self._contexts[ctx.id] = ctx  # counted from here on: no await between check and claim
        try:
            mount = await self.sandboxes.mount(principal, sandbox_id)
            async with ctx.lock:
                await self._start(ctx, sandbox, mount)
        except BaseException:
            self._contexts.pop(ctx.id, None)
            raise
        if self._contexts.get(ctx.id) is not ctx:  # deleted, or its sandbox, as it started
            await self._end(ctx, "deleted as it started")
            raise NotFound(f"no sandbox {sandbox_id!r}")
        await self.sandboxes.touch(sandbox_id)
        return ctx.info()

    async def list_for(self, principal: Principal, sandbox_id: str) -> list[ContextInfo]:
        await self.sandboxes.get(principal, sandbox_id)
        return [
            c.info()
            for c in sorted(self._contexts.values(), key=lambda c: c.created_at)
            if c.sandbox_id == sandbox_id and c.tenant == principal.tenant
        ]

    async def get(self, principal: Principal, sandbox_id: str, context_id: str) -> ContextInfo:
        return self._find(principal, sandbox_id, context_id).info()

    async def execute(
        self,
        principal: Principal,
        sandbox_id: str,
        context_id: str,
        request: ExecuteRequest,
        on_event: OnEvent | None = None,
    ) -> ExecutionResult:
        ctx = self.admit(principal, sandbox_id, context_id, request)
        async with ctx.lock:
            self._refuse_dead(ctx)
            kernel = ctx.kernel
            assert kernel is not None  # noqa: S101  # an invariant: a live context has one
            ctx.status = "busy"
            ctx.last_used_at = time.time()
            if ctx.last_used_at - self._touched.get(sandbox_id, 0.0) > TOUCH_EVERY_S:
                self._touched[sandbox_id] = ctx.last_used_at
                await self.sandboxes.touch(sandbox_id)
            try:
                result = await kernel.execute(request.code, request.timeout_s, on_event)
            finally:
                ctx.last_used_at = time.time()
                ctx.status = "idle"
            ctx.execution_count = kernel.execution_count
            if not kernel.alive:
                ctx.mark_dead(result.message or kernel.death or "the kernel died")
                await kernel.destroy(ctx.message or "the kernel died")  # idempotent
        result.context_id = ctx.id
        return result

    def admit(
        self, principal: Principal, sandbox_id: str, context_id: str, request: ExecuteRequest
    ) -> _Context:
        """The context an execution may go to, or the 4xx that refuses it (a streamed one
        asks before its stream starts, so that a refusal is never a 200)."""
        ctx = self._find(principal, sandbox_id, context_id)
        cap = self.settings.max_limits.wall_time_s
        if request.timeout_s > cap:
            raise InvalidRequest(
                f"timeout_s is above this daemon's maximum of {cap:g}", field="timeout_s"
            )
        self._refuse_dead(ctx)
        return ctx

    @staticmethod
    def _refuse_dead(ctx: _Context) -> None:
        if ctx.info().status == "dead":
            raise Conflict(
                f"context {ctx.id} is gone: {ctx.message}; restart it "
                "(POST .../restart) or create another",
                field="context_id",
            )

    async def interrupt(
        self, principal: Principal, sandbox_id: str, context_id: str
    ) -> ContextInfo:
        ctx = self._find(principal, sandbox_id, context_id)
        self._refuse_dead(ctx)
        if ctx.kernel is not None:
            await ctx.kernel.interrupt()
        return ctx.info()

    async def restart(self, principal: Principal, sandbox_id: str, context_id: str) -> ContextInfo:
        """A fresh kernel in place of the old (which is killed, mid-execution or not)."""
        ctx = self._find(principal, sandbox_id, context_id)
        sandbox = await self.sandboxes.get(principal, sandbox_id)
        if ctx.kernel is not None:
            await ctx.kernel.destroy("restarted")
        async with ctx.lock:
            if ctx.kernel is not None:  # one that a concurrent start or restart made
                await ctx.kernel.destroy("restarted")
            if self._contexts.get(ctx.id) is not ctx:  # deleted while this waited
                raise NotFound(f"no context {context_id!r}", field="context_id")
            ctx.status = "starting"
            mount = await self.sandboxes.mount(principal, sandbox_id)
            try:
                await self._start(ctx, sandbox, mount)
            except BaseException:
                ctx.mark_dead("its kernel did not restart")
                raise
            ctx.last_used_at = time.time()
        if self._contexts.get(ctx.id) is not ctx:  # deleted as it restarted: end what it made
            await self._end(ctx, "deleted as it restarted")
            raise NotFound(f"no context {context_id!r}", field="context_id")
        return ctx.info()

    async def delete(self, principal: Principal, sandbox_id: str, context_id: str) -> None:
        ctx = self._find(principal, sandbox_id, context_id)
        self._contexts.pop(ctx.id, None)
        await self._end(ctx, "deleted")

    async def close_sandbox(self, sandbox_id: str) -> None:
        """End every context of a sandbox that goes away (before its disk is unmounted)."""
        self._touched.pop(sandbox_id, None)
        for ctx in [c for c in self._contexts.values() if c.sandbox_id == sandbox_id]:
            self._contexts.pop(ctx.id, None)
            await self._end(ctx, "its sandbox was deleted")

    @staticmethod
    async def _end(ctx: _Context, reason: str) -> None:
        """Kill the context's kernel now (an execution in progress ends `killed`), then once
        more after whatever held the context (a start, an execution) has let go."""
        if ctx.kernel is not None:
            await ctx.kernel.destroy(reason)
        async with ctx.lock:
            if ctx.kernel is not None:
                await ctx.kernel.destroy(reason)
            ctx.mark_dead(reason)

    async def expire_idle(self) -> list[tuple[str, str]]:
        """Stop the kernels of contexts idle past their idle_timeout_s (they stay, dead, for
        a while); forget contexts long dead. (id, tenant) of each stopped."""
        now = time.time()
        stopped = []
        for ctx in list(self._contexts.values()):
            if ctx.info().status == "dead":  # info(): a kernel that died on its own, too
                if ctx.kernel is not None and not ctx.lock.locked():
                    await ctx.kernel.destroy(ctx.message or "dead")  # its jail, sockets: idempotent
                if ctx.died_at is not None and now - ctx.died_at > KEEP_DEAD_S:
                    self._contexts.pop(ctx.id, None)
                continue
            if ctx.lock.locked() or ctx.kernel is None:
                continue
            idle = now - ctx.last_used_at
            burnt = ctx.kernel.idle_cpu_s()
            if burnt > ctx.kernel.limits.cpu_time_s:  # a thread left running by an execution
                reason = (
                    f"it used {burnt:.1f} s of cpu between executions, over its cpu_time_s "
                    f"of {ctx.kernel.limits.cpu_time_s:g}"
                )
            elif idle > ctx.spec.idle_timeout_s:
                reason = f"expired after {ctx.spec.idle_timeout_s} s without an execution"
            else:
                continue
            await ctx.kernel.destroy(reason)
            ctx.mark_dead(reason)
            stopped.append((ctx.id, ctx.tenant))
        return stopped

    async def close(self) -> None:
        """Stop every kernel (the daemon stops)."""
        for ctx in list(self._contexts.values()):
            if ctx.kernel is not None:
                with contextlib.suppress(Exception):
                    await ctx.kernel.destroy("the daemon stopped")
        self._contexts.clear()
