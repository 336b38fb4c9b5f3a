"""Webhook notifications: each node Event spotq records is also offered, never awaited, to a webhook.

`sink.NotifyingSink` wraps the Kubernetes EventSink: it forwards every Event unchanged and puts a `Notification` on
a bounded queue with put_nowait (full: dropped and counted), so a taint or a drain never waits for a webhook.
`sender.Sender` takes them off one at a time (detection before outcome) and posts them, retried with back-off,
through `posting.WebhookPoster` (aiohttp; the only module here that speaks HTTP). `templates` renders the body
(string.Template-style `$name` substitution, JSON-escaped; presets generic, slack, teams); `config` turns
SPOTQ_WEBHOOK__* into a checked configuration at start; `notifier.Notifier` is what the composition root wires.
"""
