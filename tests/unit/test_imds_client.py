"""The IMDSv2 client against a small in-process IMDS: tokens, renewal, 401s, timeouts, retries, IMDSv1 fallback.

The same behaviours are proven against the real ec2-metadata-mock in tests/integration/test_imds_mode.py; these
cover what the mock cannot be made to do (revoke tokens, refuse the PUT, fail with 5xx, answer slowly).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from spotq.aws.imds import TOKEN_HEADER, TOKEN_TTL_HEADER, ImdsClient, ImdsConfig, ImdsError, TokenTimeoutError
from testenv.procs import free_port

ACTION = "/latest/meta-data/spot/instance-action"
ACTION_BODY = '{"action": "terminate", "time": "2025-06-03T14:22:05Z"}'


@dataclass
class FakeImds:
    """An IMDS that requires tokens (unless told not to) and can be told to misbehave."""

    documents: dict[str, str] = field(default_factory=lambda: {ACTION: ACTION_BODY})
    require_token: bool = True
    put_status: int = 200
    put_delay: float = 0.0
    fail_gets: int = 0  # answer this many GETs with 500 first
    get_status: int | None = None  # answer every GET with this status
    reject_tokens: bool = False
    tokens: set[str] = field(default_factory=set)
    puts: list[str] = field(default_factory=list)  # the TTL header of each PUT
    gets: list[str | None] = field(default_factory=list)  # the token header of each GET
    url: str = ""

    def revoke(self) -> None:
        self.tokens.clear()

    async def token(self, request: web.Request) -> web.Response:
        self.puts.append(request.headers.get(TOKEN_TTL_HEADER, ""))
        if self.put_delay:
            await asyncio.sleep(self.put_delay)
        if self.put_status != 200:
            return web.Response(status=self.put_status)
        token = f"token-{len(self.puts)}"
        self.tokens.add(token)
        return web.Response(text=token, headers={TOKEN_TTL_HEADER: request.headers.get(TOKEN_TTL_HEADER, "")})

    async def metadata(self, request: web.Request) -> web.Response:
        token = request.headers.get(TOKEN_HEADER)
        self.gets.append(token)
        if self.require_token and (token not in self.tokens or self.reject_tokens):
            return web.Response(status=401)
        if self.fail_gets > 0:
            self.fail_gets -= 1
            return web.Response(status=500, text="internal")
        if self.get_status is not None:
            return web.Response(status=self.get_status)
        body = self.documents.get(request.path)
        return web.Response(status=404) if body is None else web.Response(text=body)


@asynccontextmanager
async def serving(fake: FakeImds) -> AsyncIterator[FakeImds]:
    app = web.Application()
    app.router.add_put("/latest/api/token", fake.token)
    app.router.add_get("/{tail:.*}", fake.metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client_for(url: str, clock: list[float] | None = None, **config: object) -> AsyncIterator[ImdsClient]:
    async with aiohttp.ClientSession() as session:
        options = {"request_timeout_seconds": 1.0, "retries": 0, **config}
        if clock is not None:
            yield ImdsClient(session, ImdsConfig(endpoint=url, **options), clock=lambda: clock[0])  # type: ignore[arg-type]
        else:
            yield ImdsClient(session, ImdsConfig(endpoint=url, **options))  # type: ignore[arg-type]


async def test_reads_with_one_token_sent_on_every_request() -> None:
    async with serving(FakeImds()) as imds, client_for(imds.url, token_ttl_seconds=300) as client:
        bodies = [await client.get(ACTION) for _ in range(3)]
    assert bodies == [ACTION_BODY] * 3
    assert imds.puts == ["300"]
    assert imds.gets == ["token-1"] * 3


async def test_404_means_nothing_there() -> None:
    async with serving(FakeImds()) as imds, client_for(imds.url) as client:
        assert await client.get("/latest/meta-data/events/recommendations/rebalance") is None


async def test_token_is_renewed_before_it_expires() -> None:
    clock = [0.0]
    async with serving(FakeImds()) as imds, client_for(imds.url, clock, token_ttl_seconds=100) as client:
        await client.get(ACTION)
        clock[0] = 70.0  # inside the token's life less the renewal margin (a quarter of 100 s)
        await client.get(ACTION)
        assert len(imds.puts) == 1
        clock[0] = 76.0
        await client.get(ACTION)
    assert len(imds.puts) == 2
    assert imds.gets == ["token-1", "token-1", "token-2"]


async def test_the_tokens_life_is_counted_on_the_loop_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    real, ahead = loop.time, [0.0]
    monkeypatch.setattr(loop, "time", lambda: real() + ahead[0])
    async with serving(FakeImds()) as imds, client_for(imds.url, token_ttl_seconds=100) as client:
        await client.get(ACTION)
        ahead[0] = 76.0  # by the loop's clock the token is inside its renewal margin
        await client.get(ACTION)
    assert len(imds.puts) == 2


async def test_a_401_gets_a_fresh_token_and_the_read_succeeds() -> None:
    async with serving(FakeImds()) as imds, client_for(imds.url) as client:
        await client.get(ACTION)
        imds.revoke()  # IMDS forgot the token (a restart, an early expiry)
        assert await client.get(ACTION) == ACTION_BODY
    assert len(imds.puts) == 2
    assert imds.gets == ["token-1", "token-1", "token-2"]


async def test_a_token_refused_again_and_again_is_an_error_not_a_loop() -> None:
    async with serving(FakeImds(reject_tokens=True)) as imds, client_for(imds.url, retries=2) as client:
        with pytest.raises(ImdsError) as raised:
            await client.get(ACTION)
    assert raised.value.reason == "unauthorized"
    assert len(imds.gets) == 6  # (read, fresh token, read again) per attempt, three attempts


async def test_concurrent_reads_share_one_token_request() -> None:
    async with serving(FakeImds(put_delay=0.05)) as imds, client_for(imds.url) as client:
        await asyncio.gather(*(client.get(ACTION) for _ in range(5)))
    assert len(imds.puts) == 1


async def test_a_token_request_that_times_out_says_hop_limit_and_host_network() -> None:
    async with (
        serving(FakeImds(put_delay=1.0)) as imds,
        client_for(imds.url, request_timeout_seconds=0.2, retries=1) as client,
    ):
        started = time.monotonic()
        with pytest.raises(TokenTimeoutError) as raised:
            await client.get(ACTION)
        elapsed = time.monotonic() - started
    message = str(raised.value)
    assert raised.value.reason == "token_timeout"
    assert "hop limit of 2" in message and "hostNetwork" in message and "/latest/api/token" in message
    assert elapsed < 0.9  # two short attempts and one back-off, not the server's 1 s
    assert imds.gets == []  # no read without a token unless configured


async def test_imdsv1_fallback_reads_without_a_token_only_when_configured() -> None:
    fake = FakeImds(require_token=False, put_status=403)
    async with serving(fake) as imds:
        async with client_for(imds.url) as strict:
            with pytest.raises(ImdsError) as raised:
                await strict.get(ACTION)
            assert raised.value.reason == "token_refused"
        async with client_for(imds.url, imdsv1_fallback=True) as lenient:
            assert await lenient.get(ACTION) == ACTION_BODY
            assert await lenient.get(ACTION) == ACTION_BODY
    assert imds.gets == [None, None]
    assert len(imds.puts) == 2  # the fallback is remembered for a while rather than asked on every read


async def test_imdsv1_fallback_after_a_token_timeout() -> None:
    async with (
        serving(FakeImds(require_token=False, put_delay=0.4)) as imds,
        client_for(imds.url, request_timeout_seconds=0.1, imdsv1_fallback=True) as client,
    ):
        assert await client.get(ACTION) == ACTION_BODY
    assert imds.gets == [None]


async def test_server_errors_are_retried_with_back_off() -> None:
    async with serving(FakeImds(fail_gets=2)) as imds, client_for(imds.url, retries=2) as client:
        assert await client.get(ACTION) == ACTION_BODY
    assert len(imds.gets) == 3
    async with serving(FakeImds(fail_gets=5)) as imds, client_for(imds.url, retries=1) as client:
        with pytest.raises(ImdsError) as raised:
            await client.get(ACTION)
    assert raised.value.reason == "http_error" and len(imds.gets) == 2


async def test_forbidden_is_not_retried() -> None:
    async with serving(FakeImds(get_status=403)) as imds, client_for(imds.url, retries=3) as client:
        with pytest.raises(ImdsError) as raised:
            await client.get(ACTION)
    assert raised.value.reason == "http_error" and not raised.value.retryable
    assert len(imds.gets) == 1


async def test_nothing_listening_is_unreachable_and_fails_fast() -> None:
    async with client_for(f"http://127.0.0.1:{free_port()}", retries=2) as client:
        started = time.monotonic()
        with pytest.raises(ImdsError) as raised:
            await client.get(ACTION)
    assert raised.value.reason == "unreachable"
    assert "not reachable" in str(raised.value)
    assert time.monotonic() - started < 2.0
