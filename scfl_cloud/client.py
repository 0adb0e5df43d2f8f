"""HTTP client of the scfl cloud (httpx), used by robots, the federation bridge and the fleet sim.

Errors: any 4xx/5xx raises :class:`CloudError` with ``status``, ``code`` and ``detail`` from
the server's JSON body; network failures raise :class:`CloudUnavailable` (``status`` None),
so callers can tell "retry later" from "the server refused this".
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any, Iterable, Optional


class CloudError(Exception):
    def __init__(self, status: Optional[int], code: str, detail: str) -> None:
        super().__init__(f"{status or 'no response'} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class CloudUnavailable(CloudError):
    """The server could not be reached (connection refused, timeout, reset)."""


def check_transport(base_url: str, insecure_http: bool = False) -> None:
    """Refuse plain HTTP to anything but loopback (tokens and uploads would travel in clear)."""
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http":
        raise ValueError(f"cloud URL must start with https:// (or http:// on loopback), got {base_url!r}")
    from .server import is_loopback

    if not insecure_http and not is_loopback(parts.hostname or ""):
        raise ValueError(f"refusing plain HTTP to {parts.hostname}: use https:// (or insecure_http=True "
                         "on a network you trust)")


class CloudClient:
    """One client per base URL.

    ``admin_token`` is needed for fleet management (register robots, open rounds, register
    the fleet context); ``token`` (a robot's bearer token) for everything a robot does.
    Read-only calls use ``token`` if set, else ``admin_token``.
    """

    def __init__(self, base_url: str, *, admin_token: Optional[str] = None, token: Optional[str] = None,
                 timeout: float = 60.0, ca_cert: Optional[str] = None, insecure_http: bool = False,
                 cloud_public_key: Optional[bytes] = None) -> None:
        """``ca_cert``: PEM file of a private CA that signed the server certificate (default
        ``$SCFL_CLOUD_CA``, else the system trust store). Plain ``http://`` is refused unless the host is loopback or
        ``insecure_http`` is set. ``cloud_public_key``: the cloud's aggregate signing key,
        pinned (else fetched once from the fleet context over the verified connection)."""
        import httpx

        self.base_url = base_url.rstrip("/")
        check_transport(self.base_url, insecure_http)
        self.admin_token = admin_token
        self.token = token
        self.cloud_public_key = cloud_public_key
        verify: Any = True
        ca_cert = ca_cert or os.environ.get("SCFL_CLOUD_CA")  # robots' nodes: the fleet CA without a new parameter
        if ca_cert:
            import ssl

            verify = ssl.create_default_context(cafile=str(ca_cert))
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, verify=verify)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "CloudClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _auth(self, token: Optional[str]) -> dict:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _reader_token(self) -> Optional[str]:
        return self.token or self.admin_token

    def _request(self, method: str, path: str, *, token: Optional[str] = None, **kw) -> Any:
        import httpx

        headers = {**kw.pop("headers", {}), **self._auth(token)}
        try:
            resp = self._http.request(method, path, headers=headers, **kw)
        except httpx.TransportError as exc:
            raise CloudUnavailable(None, "unavailable", f"{self.base_url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            try:
                body = resp.json()
                code, detail = body.get("error", "http_error"), body.get("detail", resp.text)
            except ValueError:
                code, detail = "http_error", resp.text[:200]
            raise CloudError(resp.status_code, code, detail)
        return resp

    def _json(self, method: str, path: str, **kw) -> Any:
        resp = self._request(method, path, **kw)
        return None if resp.status_code == 204 else resp.json()

    # ------------------------------------------------------------------ status
    def healthz(self) -> dict:
        return self._json("GET", "/healthz")

    def status(self) -> dict:
        """``GET /cloud/status`` (paper A.1): counts, rounds, robots and latencies."""
        return self._json("GET", "/cloud/status", token=self._reader_token())

    def wait_ready(self, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.healthz()
            except CloudUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # ------------------------------------------------------------------ fleet (admin)
    def register_robot(self, robot_id: str, public_key_bytes: bytes) -> str:
        """Register a robot's raw 32-byte Ed25519 public key; returns its bearer token (shown once)."""
        body = {"robot_id": robot_id, "public_key": base64.b64encode(bytes(public_key_bytes)).decode()}
        return self._json("POST", "/api/v1/robots", json=body, token=self.admin_token)["token"]

    def rotate_token(self, robot_id: str) -> str:
        return self._json("POST", f"/api/v1/robots/{robot_id}/token", token=self.admin_token)["token"]

    def revoke_robot(self, robot_id: str) -> None:
        self._json("DELETE", f"/api/v1/robots/{robot_id}", token=self.admin_token)

    def list_robots(self) -> list[dict]:
        return self._json("GET", "/api/v1/robots", token=self.admin_token)

    def put_fleet_context(self, context: Any) -> dict:
        """Register the fleet's public context (a CloudContext or its bytes); never a secret key."""
        blob = context if isinstance(context, (bytes, bytearray)) else context.to_bytes()
        return self._json("PUT", "/api/v1/fleet/context", content=bytes(blob), token=self.admin_token,
                          headers={"Content-Type": "application/octet-stream"})

    def list_fleet_contexts(self) -> list[dict]:
        return self._json("GET", "/api/v1/fleet/context", token=self._reader_token())

    # ------------------------------------------------------------------ skills
    def list_skills(self, *, offset: int = 0, limit: int = 50, q: Optional[str] = None,
                    name: Optional[str] = None) -> dict:
        """One page: ``{"items": [...], "total", "offset", "limit"}``."""
        params = {"offset": offset, "limit": limit, **({"q": q} if q else {}), **({"name": name} if name else {})}
        return self._json("GET", "/api/v1/skills", params=params, token=self._reader_token())

    def iter_skills(self, page_size: int = 100, **filters) -> Iterable[dict]:
        offset = 0
        while True:
            page = self.list_skills(offset=offset, limit=page_size, **filters)
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def create_skill(self, name: str, task_descriptions: list[str], *, skill_id: Optional[str] = None,
                     description: str = "", extra: Optional[dict] = None, token: Optional[str] = None) -> dict:
        body = {"name": name, "task_descriptions": list(task_descriptions), "description": description,
                "extra": extra or {}, **({"skill_id": skill_id} if skill_id else {})}
        return self._json("POST", "/api/v1/skills", json=body, token=token or self._reader_token())

    def get_skill(self, skill_id: str) -> dict:
        return self._json("GET", f"/api/v1/skills/{skill_id}", token=self._reader_token())

    def download_skill_version(self, skill_id: str, version: int) -> bytes:
        return self._download(f"/api/v1/skills/{skill_id}/versions/{version}/ciphertext")

    def _download(self, path: str) -> bytes:
        return self._download_response(path).content

    def _download_response(self, path: str):
        """GET a ciphertext and check it against the server's X-Content-SHA256 (truncation, proxies)."""
        import hashlib

        resp = self._request("GET", path, token=self._reader_token())
        want = resp.headers.get("x-content-sha256")
        if want and hashlib.sha256(resp.content).hexdigest() != want:
            raise CloudUnavailable(None, "corrupt_download", f"{path}: content does not match its SHA-256; retry")
        return resp

    def request_skills(self, task_description: str, max_skills: int = 3) -> dict:
        """Paper A.2: returns ``{"skill_ids", "weights", "inference_time_ms"}``."""
        return self._json("POST", "/api/v1/skills/request", token=self._reader_token(),
                          json={"task_description": task_description, "max_skills": max_skills})

    def upload_skill(self, token: Optional[str], blob: bytes) -> dict:
        """Upload an encrypted signed skill version (EncryptedDelta with round_id 0); returns the receipt."""
        return self._upload(token, blob)

    # ------------------------------------------------------------------ rounds
    def open_round(self, skill_id: str, base_version: int, quorum: int, deadline_s: float,
                   key_id: Optional[str] = None, min_participants: Optional[int] = None,
                   secure_aggregation: Optional[bool] = None) -> dict:
        """Admin: open a round; it closes at ``quorum`` deltas or at the deadline (published only
        if at least ``min_participants`` deltas arrived, default the cloud's floor of 3, else ``expired``)."""
        body = {"skill_id": skill_id, "base_version": base_version, "quorum": quorum, "deadline_s": deadline_s,
                **({"min_participants": min_participants} if min_participants is not None else {}),
                **({"key_id": key_id} if key_id else {}),
                **({"secure_aggregation": secure_aggregation} if secure_aggregation is not None else {})}
        return self._json("POST", "/api/v1/rounds", json=body, token=self.admin_token)

    def cancel_round(self, round_id: int) -> dict:
        """Admin: cancel a round (nothing is published; its ciphertexts are deleted)."""
        return self._json("POST", f"/api/v1/rounds/{round_id}/cancel", token=self.admin_token)

    def drop_delta(self, round_id: int, robot_id: str) -> dict:
        """Admin: drop one robot's delta from a running or quarantined round (the sum is refolded)."""
        return self._json("DELETE", f"/api/v1/rounds/{round_id}/deltas/{robot_id}", token=self.admin_token)

    def round_status(self, round_id: int) -> dict:
        return self._json("GET", f"/api/v1/rounds/{round_id}", token=self._reader_token())

    def list_rounds(self, state: Optional[str] = None) -> list[dict]:
        return self._json("GET", "/api/v1/rounds", params={"state": state} if state else {},
                          token=self._reader_token())

    def upload_delta(self, token: Optional[str], blob: bytes) -> dict:
        """Upload one signed encrypted delta (its header names the round); returns the receipt."""
        return self._upload(token, blob)

    def secagg(self, token: Optional[str], round_id: int, method: str, step: str = "", body: Optional[dict] = None) -> Any:
        """One message of a round's secure-aggregation protocol: ``/api/v1/rounds/{id}/secagg[/step]``
        (keys, shares, survivors, unmask; docs/cloud.md)."""
        path = f"/api/v1/rounds/{int(round_id)}/secagg" + (f"/{step}" if step else "")
        return self._json(method, path, token=token, **({"json": body} if body is not None else {}))

    def wait_for_round(self, round_id: int, state: str = "published", timeout: float = 60.0,
                       poll_s: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            info = self.round_status(round_id)
            if info["state"] == state or (state == "published" and info["state"] in ("expired", "quarantined", "cancelled")):
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"round {round_id} still {info['state']} after {timeout} s "
                                   f"({info['folded']}/{info['accepted']} folded)")
            time.sleep(poll_s)

    def aggregate_public_key(self) -> bytes:
        """The cloud's Ed25519 aggregate signing key: the pinned one, else the one the fleet
        context lists (fetched once, over the TLS-verified connection)."""
        if self.cloud_public_key is None:
            contexts = self.list_fleet_contexts()
            if not contexts:
                raise CloudError(None, "no_fleet_context", "the cloud lists no fleet context (and no signing key)")
            self.cloud_public_key = base64.b64decode(contexts[0]["aggregate_public_key"])
        return self.cloud_public_key

    def download_signed_aggregate(self, round_id: int) -> tuple[bytes, bytes]:
        """(aggregate bytes, the cloud's signature) without checking anything."""
        resp = self._download_response(f"/api/v1/rounds/{round_id}/aggregate")
        return resp.content, base64.b64decode(resp.headers.get("x-aggregate-signature", ""))

    def download_aggregate(self, round_id: int, *, key_id: Optional[str] = None,
                           min_contributors: Optional[int] = None) -> bytes:
        """The published encrypted SUM of a round, after verifying the cloud's signature over
        it (``scfl_nodes.core.crypto.verify_aggregate``): decrypt only what this returns."""
        from scfl_nodes.core.crypto import CryptoError, verify_aggregate

        blob, signature = self.download_signed_aggregate(round_id)
        try:
            verify_aggregate(blob, signature, self.aggregate_public_key(), key_id=key_id, round_id=int(round_id),
                             min_contributors=min_contributors)
        except CryptoError as exc:
            raise CloudError(None, "bad_aggregate", f"round {round_id}: {type(exc).__name__}: {exc}") from None
        return blob

    def _upload(self, token: Optional[str], blob: bytes) -> dict:
        return self._json("POST", "/api/v1/skills/upload", content=bytes(blob), token=token or self.token,
                          headers={"Content-Type": "application/octet-stream"})
