"""Limits before reading: every request body is authenticated and size-limited before
one byte of it is read (pure ASGI middleware, so it runs ahead of FastAPI's JSON parsing).

* A request that carries a body (Content-Length > 0 or Transfer-Encoding) must present a
  valid token (admin or robot); otherwise 401 and the body is never read. Which token an
  endpoint needs is still checked by the endpoint itself.
* A declared Content-Length above the endpoint's limit is a 413 before reading; a chunked
  body is counted as it streams and refused (413) as soon as it passes the limit, so the
  server never buffers more than the limit.
"""

from __future__ import annotations

import json

from starlette.concurrency import run_in_threadpool
from fastapi import HTTPException  # FastAPI re-raises its own class from body parsing (a 413, not a 400)

# endpoints with binary bodies and their own limits; every other body is JSON
UPLOAD_PATH = "/api/v1/skills/upload"
CONTEXT_PATH = "/api/v1/fleet/context"
AUTH_STATE_KEY = "scfl_body_guard_auth"  # (token, ("admin"|"robot", robot)) in scope["state"]


class BodyGuard:
    def __init__(self, app, service) -> None:
        self.app = app
        self.service = service

    def limit_for(self, path: str) -> int:
        settings = self.service.settings
        if path == UPLOAD_PATH:
            return settings.max_upload_bytes
        if path == CONTEXT_PATH:
            return settings.max_context_bytes
        return settings.max_json_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        length = headers.get("content-length")
        has_body = "transfer-encoding" in headers or (length is not None and length.strip() not in ("", "0"))
        if not has_body:
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope.get("path", ""))
        if length is not None:
            if not length.strip().isdigit() or len(length.strip()) > 19:
                return await _refuse(send, 400, "bad_content_length", "Content-Length is not a valid integer")
            if int(length) > limit:
                return await _refuse(send, 413, "payload_too_large",
                                     f"body of {int(length)} bytes exceeds the limit of {limit} bytes")
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        try:
            # an upload records the robot as seen in its own insert transaction (one commit)
            auth = await run_in_threadpool(self.service.authenticate, token,
                                           touch=scope.get("path", "") != UPLOAD_PATH)
        except Exception as exc:  # ApiError(401)
            return await _refuse(send, getattr(exc, "status", 401), getattr(exc, "code", "unauthorized"),
                                 getattr(exc, "detail", "a bearer token is required to send a request body"),
                                 {"www-authenticate": "Bearer"})
        # the endpoint's own token check reuses this result instead of querying the database again
        scope.setdefault("state", {})[AUTH_STATE_KEY] = (token, auth)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"body exceeds the limit of {limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)


async def _refuse(send, status: int, code: str, detail: str, extra: dict | None = None) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
