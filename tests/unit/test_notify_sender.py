"""Delivery: in order, retried with the one back-off formula on what may pass, counted as sent or failed; the
aiohttp poster against a real local HTTP server (status, headers, timeout, redirects, no URL in any detail)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from aiohttp import web

from spotq.backoff import Backoff
from spotq.notify.config import WebhookConfig
from spotq.notify.notification import Notification
from spotq.notify.notifier import Notifier
from spotq.notify.posting import WebhookPoster
from spotq.notify.sender import Answer, Sender
from spotq.notify.sink import NotificationQueue
from spotq.notify.templates import PRESETS, compile_template
from spotq.observability import metrics

AT = datetime(2030, 1, 1, tzinfo=UTC)
GENERIC = compile_template(PRESETS["generic"], json_body=True)
BACKOFF = Backoff(initial_seconds=1.0, max_seconds=8.0)


def _count(result: str) -> float:
    return metrics.REGISTRY.get_sample_value("spotq_notifications_total", {"result": result}) or 0.0


def _notice(reason: str = "InterruptionNotice", node: str = "n1") -> Notification:
    return Notification(node, "i-0123456789abcdef0", reason, "m", reason != "InterruptionNotice", AT)


class FakeWebhook:
    """Answers each POST from a script (then 200s), recording bodies; `sleep` records waits instead of waiting."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, object]] = []
        self.waits: list[float] = []

    async def __call__(self, body: bytes) -> Answer:
        self.bodies.append(json.loads(body))
        return self.answers.pop(0) if self.answers else Answer(ok=True, detail="HTTP 200")

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def _sender(webhook: FakeWebhook, queue: NotificationQueue | None = None, retries: int = 3) -> Sender:
    return Sender(
        queue if queue is not None else NotificationQueue(10),
        GENERIC,
        webhook,
        retries=retries,
        backoff=BACKOFF,
        sleep=webhook.sleep,
    )


async def test_what_may_pass_is_retried_after_doubling_waits_then_sent() -> None:
    busy = Answer(ok=False, retryable=True, detail="HTTP 503")
    webhook = FakeWebhook(busy, Answer(ok=False, retryable=True, detail="timeout after 10s"), busy)
    sent = _count("sent")
    assert await _sender(webhook).deliver(_notice()) is True
    assert len(webhook.bodies) == 4 and webhook.waits == [1.0, 2.0, 4.0]
    assert _count("sent") - sent == 1


async def test_retries_run_out_and_the_notification_is_counted_failed(caplog: pytest.LogCaptureFixture) -> None:
    webhook = FakeWebhook(*[Answer(ok=False, retryable=True, detail="HTTP 500")] * 10)
    failed = _count("failed")
    assert await _sender(webhook, retries=2).deliver(_notice("DrainTimedOut")) is False
    assert len(webhook.bodies) == 3 and webhook.waits == [1.0, 2.0]
    assert _count("failed") - failed == 1
    (line,) = [r for r in caplog.records if r.getMessage() == "notification failed"]
    assert (line.reason, line.attempts, line.error) == ("DrainTimedOut", 3, "HTTP 500")  # type: ignore[attr-defined]


async def test_a_refusal_is_not_retried() -> None:
    webhook = FakeWebhook(Answer(ok=False, retryable=False, detail="HTTP 404"))
    assert await _sender(webhook).deliver(_notice()) is False
    assert len(webhook.bodies) == 1 and webhook.waits == []


async def test_retry_after_is_waited_at_least() -> None:
    webhook = FakeWebhook(Answer(ok=False, retryable=True, detail="HTTP 429", retry_after=7.0))
    await _sender(webhook).deliver(_notice())
    assert webhook.waits == [7.0]


async def test_the_loop_sends_in_offer_order_and_survives_a_broken_template() -> None:
    queue, webhook = NotificationQueue(10), FakeWebhook()
    sender = _sender(webhook, queue)
    for reason in ("InterruptionNotice", "DrainFinished"):
        queue.offer(_notice(reason, "a"))
    queue.offer(Notification("b", None, "InterruptionNotice", "m", False, None))  # type: ignore[arg-type]  # no time: render fails
    queue.offer(_notice("InterruptionNotice", "c"))
    failed = _count("failed")
    task = asyncio.create_task(sender.run())
    async with asyncio.timeout(2):
        await queue.join()
    assert not task.done()  # an internal error ends one notification, not the loop
    task.cancel()
    assert [(b["node"], b["reason"]) for b in webhook.bodies] == [
        ("a", "InterruptionNotice"),
        ("a", "DrainFinished"),
        ("c", "InterruptionNotice"),
    ]
    assert _count("failed") - failed == 1


async def test_stop_gives_a_grace_then_drops_the_rest() -> None:
    release = asyncio.Event()
    posted: list[str] = []

    async def stuck(body: bytes) -> Answer:
        posted.append(json.loads(body)["node"])
        if len(posted) > 1:
            await release.wait()  # the second never answers
        return Answer(ok=True)

    config = WebhookConfig(
        url="http://127.0.0.1:9/hook", template=GENERIC, template_name="generic", stop_grace_seconds=0.05
    )
    notifier = Notifier(config)
    notifier._poster = stuck  # type: ignore[assignment]  # no session: the poster stands in whole

    async def run() -> None:
        await Sender(notifier.queue, GENERIC, stuck, retries=0, backoff=BACKOFF).run()

    for node in ("a", "b", "c", "d"):
        notifier.queue.offer(_notice(node=node))
    dropped, sent = _count("dropped"), _count("sent")
    sending = asyncio.create_task(run())
    async with asyncio.timeout(2):
        await notifier.finish(sending)
    assert posted == ["a", "b"] and sending.cancelled()
    assert _count("sent") - sent == 1 and _count("dropped") - dropped == 3  # b cut off in flight, c and d waiting


# -- the aiohttp poster against a real HTTP server -----------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.status = 200
        self.headers: dict[str, str] = {}
        self.hang = asyncio.Event()
        self.hanging = False

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path_qs, dict(request.headers), await request.read()))
        if self.hanging:
            await self.hang.wait()
        return web.Response(status=self.status, headers=self.headers, text="ok")


@pytest_asyncio.fixture(loop_scope="function")
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    got = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", got.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield got, f"http://127.0.0.1:{port}"
    got.hang.set()
    await runner.cleanup()


def _config(url: str, **fields: object) -> WebhookConfig:
    return WebhookConfig(url=url, template=GENERIC, template_name="generic", **fields)  # type: ignore[arg-type]


async def test_the_poster_sends_the_body_with_the_configured_headers(receiver: tuple[Receiver, str]) -> None:
    got, base = receiver
    url = f"{base}/services/T0/B0/s3cr3t?x=1"
    async with WebhookPoster(_config(url, headers={"X-Team": "ops", "Authorization": "Bearer t"})) as post:
        answer = await post(b'{"a": 1}')
    assert answer == Answer(ok=True, detail="HTTP 200")
    ((path, headers, body),) = got.requests
    assert path == "/services/T0/B0/s3cr3t?x=1" and body == b'{"a": 1}'
    assert headers["X-Team"] == "ops" and headers["Authorization"] == "Bearer t"
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "spotq"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)]
)
async def test_the_poster_says_which_answers_may_pass(
    receiver: tuple[Receiver, str], status: int, retryable: bool
) -> None:
    got, base = receiver
    got.status = status
    async with WebhookPoster(_config(f"{base}/s3cr3t")) as post:
        answer = await post(b"{}")
    assert answer == Answer(ok=False, retryable=retryable, detail=f"HTTP {status}")


async def test_retry_after_is_read_and_capped(receiver: tuple[Receiver, str]) -> None:
    got, base = receiver
    got.status, got.headers = 429, {"Retry-After": "3600"}
    async with WebhookPoster(_config(f"{base}/s3cr3t")) as post:
        assert (await post(b"{}")).retry_after == 30.0


async def test_a_redirect_is_not_followed(receiver: tuple[Receiver, str]) -> None:
    got, base = receiver
    got.status, got.headers = 302, {"Location": f"{base}/elsewhere"}
    async with WebhookPoster(_config(f"{base}/s3cr3t")) as post:
        answer = await post(b"{}")
    assert answer == Answer(ok=False, retryable=False, detail="HTTP 302") and len(got.requests) == 1


async def test_a_receiver_slower_than_the_timeout_is_a_retryable_timeout(receiver: tuple[Receiver, str]) -> None:
    got, base = receiver
    got.hanging = True
    async with WebhookPoster(_config(f"{base}/s3cr3t", timeout_seconds=0.2)) as post:
        answer = await post(b"{}")
    assert answer == Answer(ok=False, retryable=True, detail="timeout after 0.2s")


async def test_no_detail_names_the_url() -> None:
    # Nothing listens on port 9 of this host: the connection is refused.
    url = "http://127.0.0.1:9/services/T0/B0/s3cr3t"
    async with WebhookPoster(_config(url, proxy=None)) as post:
        direct = await post(b"{}")
    async with WebhookPoster(_config(url, proxy="http://user:pw@127.0.0.1:9")) as post:
        proxied = await post(b"{}")
    assert direct.retryable and direct.detail.startswith("cannot connect")
    assert proxied.retryable and proxied.detail.startswith("proxy unreachable")
    for answer in (direct, proxied):
        assert "s3cr3t" not in answer.detail and "pw" not in answer.detail
