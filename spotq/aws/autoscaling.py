"""Auto Scaling lifecycle hooks: complete with CONTINUE, heartbeat while a drain runs."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

from spotq.errors import ApiError, PermanentError, TransientError
from spotq.notices import LifecycleHook
from spotq.observability import metrics


class Lifecycle:
    def __init__(self, client: Any) -> None:
        self._client = client

    async def complete(self, hook: LifecycleHook) -> None:
        await self._call("complete_lifecycle_action", hook, LifecycleActionResult="CONTINUE")

    async def heartbeat(self, hook: LifecycleHook) -> None:
        await self._call("record_lifecycle_action_heartbeat", hook)

    async def _call(self, operation: str, hook: LifecycleHook, **extra: str) -> None:
        try:
            await getattr(self._client, operation)(
                AutoScalingGroupName=hook.group_name,
                LifecycleHookName=hook.hook_name,
                LifecycleActionToken=hook.token,
                InstanceId=hook.instance_id,
                **extra,
            )
        except ClientError as exc:
            metrics.API_ERRORS.labels(api="autoscaling", operation=operation).inc()
            error = exc.response.get("Error", {})
            message = str(error.get("Message", ""))
            # "No active Lifecycle Action found": the hook already ended (completed, timed out, or abandoned).
            if error.get("Code") == "ValidationError" and "No active Lifecycle Action" in message:
                raise PermanentError(f"{operation}: {message}") from exc
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
            raise ApiError(status, str(error.get("Code", "")), message) from exc
        except ParamValidationError as exc:
            # The notice's fields can never make a valid call (e.g. a truncated token): retrying cannot help.
            metrics.API_ERRORS.labels(api="autoscaling", operation=operation).inc()
            raise PermanentError(f"{operation}: {exc}") from exc
        except BotoCoreError as exc:
            metrics.API_ERRORS.labels(api="autoscaling", operation=operation).inc()
            raise TransientError(f"{operation}: {exc}") from exc
