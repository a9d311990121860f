"""REST calls (PROTOCOL.md §6) with ``Authorization: Bearer``: what does not travel over the
WebSocket (log pages, channel details, blobs), and a small client for backends that only
speak HTTP (:class:`RestClient`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import blake3
import httpx

from .errors import IntegrityError, ProtocolError, TransportError, server_error
from .models import BlobRef, ChannelData, ChannelInfo, HistoryPage, Message


def segment(s: str) -> str:
    """A path segment: anything but unreserved characters is escaped, so a strange id or
    name can never change the path."""
    return quote(s, safe="")


class Rest:
    """Calls against the node the WebSocket uses, with the newest token."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base: Callable[[], str],
        token: Callable[[], str],
    ) -> None:
        self._http = http
        self._base = base
        self._token = token

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {self._token()}"}
        if content is not None:
            headers["content-type"] = "application/octet-stream"
        try:
            resp = await self._http.request(
                method,
                self._base() + path,
                json=json,
                content=content,
                params={k: v for k, v in (params or {}).items() if v is not None},
                headers=headers,
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{method} {path}: {e}") from e
        if resp.is_success:
            return resp
        try:
            body = resp.json()
        except ValueError:
            body = None
        detail = body.get("error") if isinstance(body, dict) else None
        raise server_error(detail, status=resp.status_code)

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self.call(method, path, **kw)
        if resp.status_code == 204 or not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"{method} {path}: answer is not JSON") from e

    async def log(self, channel: str, after: int, limit: int) -> Any:
        return await self.json(
            "GET",
            f"/v1/channels/{segment(channel)}/log",
            params={"after": after, "limit": limit},
        )

    async def channel_info(self, channel: str) -> ChannelInfo:
        return ChannelInfo.from_json(await self.json("GET", f"/v1/channels/{segment(channel)}"))

    async def put_blob(self, channel: str, data: bytes) -> BlobRef:
        ok = await self.json("PUT", f"/v1/channels/{segment(channel)}/blobs", content=data)
        return BlobRef.from_json(ok)

    async def get_blob(self, channel: str, blob_id: str) -> bytes:
        resp = await self.call("GET", f"/v1/channels/{segment(channel)}/blobs/{segment(blob_id)}")
        data = resp.content
        # Blobs are content-addressed: what arrives must hash to its id.
        if blake3.blake3(data).hexdigest() != blob_id.lower():
            raise IntegrityError(f"blob {blob_id}: the bytes received hash to something else")
        return data


class RestClient:
    """Herald over HTTP only, for backends and scripts that need no live events: create
    channels, post (with a ``server`` token: as any author), page history, publish, blobs.

    ``async with RestClient("http://127.0.0.1:7700", token) as rest: ...``
    """

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        from .client import Endpoint

        self.token = token
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False)
        base = Endpoint.parse(url).http
        self._rest = Rest(self._http, lambda: base, lambda: self.token)

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def create_channel(self, name: str | None = None, **options: Any) -> ChannelData:
        body = {"name": name, **options} if name is not None else dict(options)
        ok = await self._rest.json("POST", "/v1/channels", json=body)
        return ChannelData.from_json(ok.get("channel") if isinstance(ok, dict) else None)

    async def channel_info(self, channel: str) -> ChannelInfo:
        return await self._rest.channel_info(channel)

    async def post_message(
        self,
        channel: str,
        content: str,
        *,
        type: str | None = None,
        reply_to: str | None = None,
        client_id: str | None = None,
        author: str | None = None,
    ) -> Message:
        body: dict[str, Any] = {"content": content}
        for key, value in (
            ("type", type),
            ("reply_to", reply_to),
            ("client_id", client_id),
            ("author", author),
        ):
            if value is not None:
                body[key] = value
        ok = await self._rest.json("POST", f"/v1/channels/{segment(channel)}/messages", json=body)
        return Message.from_json(ok.get("message") if isinstance(ok, dict) else None)

    async def history(self, channel: str, **query: Any) -> HistoryPage:
        if "from_" in query:
            query["from"] = query.pop("from_")
        ok = await self._rest.json("GET", f"/v1/channels/{segment(channel)}/messages", params=query)
        return HistoryPage.from_json(ok)

    async def publish(self, subject: str, data: Any) -> None:
        await self._rest.json("POST", "/v1/publish", json={"subject": subject, "data": data})

    async def put_blob(self, channel: str, data: bytes) -> BlobRef:
        return await self._rest.put_blob(channel, data)

    async def get_blob(self, channel: str, blob_id: str) -> bytes:
        return await self._rest.get_blob(channel, blob_id)
