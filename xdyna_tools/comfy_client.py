"""A small asynchronous client of ComfyUI's HTTP and websocket API (aiohttp, which ComfyUI itself requires).

Endpoints used: `GET /system_stats`, `GET /object_info`, `POST /upload/image` (images and videos alike),
`POST /prompt` (with a `client_id`, and a `prompt_id` the server may adopt), `GET /history/{id}`,
`GET /queue`, `GET /view?filename=&subfolder=&type=`, and the websocket `/ws?clientId=` whose
`executing` / `progress` / `execution_error` / `execution_success` messages follow a prompt.
"""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp


class ServerUnavailableError(ConnectionError):
    """The server did not answer (refused, timed out, restarted): not the job's fault, so no attempt is spent."""


class JobFailedError(RuntimeError):
    """The server rejected or failed a prompt; the message is the server's own (node, exception type, text)."""


def describe_rejection(body: Any) -> str:
    """One readable line from `POST /prompt`'s 400 answer: the error and each node's validation errors."""
    if not isinstance(body, dict):
        return f"prompt rejected: {body}"
    error = body.get("error") or {}
    parts = [f"prompt rejected: {error.get('message', error) if isinstance(error, dict) else error}"]
    if isinstance(error, dict) and error.get("details"):
        parts[0] += f" ({error['details']})"
    for nid, info in (body.get("node_errors") or {}).items():
        for e in info.get("errors", []):
            detail = f": {e['details']}" if e.get("details") else ""
            parts.append(f"node {nid} ({info.get('class_type', '?')}): {e.get('message', e)}{detail}")
    return "; ".join(parts)


def describe_execution_error(entry: dict) -> str:
    """One readable line from a failed prompt's history entry: node id, class, exception type and message."""
    status = entry.get("status") or {}
    for event, data in status.get("messages", []):
        if event == "execution_error":
            return (
                f"node {data.get('node_id')} ({data.get('node_type')}) raised "
                f"{data.get('exception_type')}: {str(data.get('exception_message', '')).strip()}"
            )
        if event == "execution_interrupted":
            return f"interrupted on the server at node {data.get('node_id')} ({data.get('node_type')})"
    return f"the server reports status {status.get('status_str', 'unknown')!r} without an error message"


def output_files(entry: dict, include_temp: bool = False) -> list[dict]:
    """The files a finished prompt wrote (`filename`, `subfolder`, `type`), from its history outputs."""
    files = []
    for node_output in (entry.get("outputs") or {}).values():
        for value in node_output.values():
            if not isinstance(value, list):
                continue
            for item in value:
                if isinstance(item, dict) and "filename" in item and (include_temp or item.get("type") == "output"):
                    files.append(
                        {
                            "filename": item["filename"],
                            "subfolder": item.get("subfolder", ""),
                            "type": item.get("type", "output"),
                        }
                    )
    return files


class ComfyClient:
    """One ComfyUI server, reached at `url` (e.g. `http://127.0.0.1:8188`) as websocket client `client_id`."""

    def __init__(self, url: str, session: aiohttp.ClientSession, client_id: str, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.session = session
        self.client_id = client_id
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def _request(self, method: str, path: str, **kwargs) -> tuple[int, Any]:
        try:
            async with self.session.request(method, self.url + path, timeout=self.timeout, **kwargs) as response:
                text = await response.text()
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    body = text
                if response.status >= 500:
                    raise ServerUnavailableError(f"{self.url}{path} answered HTTP {response.status}: {text[:300]}")
                return response.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise ServerUnavailableError(f"{self.url} unreachable ({type(err).__name__}: {err})") from err

    async def get_json(self, path: str) -> Any:
        status, body = await self._request("GET", path)
        if status != 200:
            raise ServerUnavailableError(f"{self.url}{path} answered HTTP {status}: {str(body)[:300]}")
        return body

    async def object_info(self) -> dict:
        return await self.get_json("/object_info")

    async def upload(self, path: Path, name: str, subfolder: str) -> str:
        """Upload a file into the server's input folder; returns the value a loader node takes (`subfolder/name`)."""
        form = aiohttp.FormData()
        form.add_field("type", "input")
        form.add_field("subfolder", subfolder)
        form.add_field("overwrite", "true")
        with open(path, "rb") as f:
            form.add_field("image", f, filename=name, content_type="application/octet-stream")
            status, body = await self._request("POST", "/upload/image", data=form)
        if status != 200 or not isinstance(body, dict) or "name" not in body:
            raise JobFailedError(f"uploading {path} to {self.url} failed: HTTP {status} {str(body)[:300]}")
        return f"{body['subfolder']}/{body['name']}" if body.get("subfolder") else body["name"]

    async def queue_prompt(self, prompt: dict, prompt_id: str) -> str:
        """Queue a prompt; returns its id (ours, unless an older server chose its own).

        ComfyUI answers 200 with `node_errors` when some outputs validate and others do not, and then runs only
        the valid ones (a preview, say, but not the video): such a prompt is taken off the queue again and the
        job fails with the validation errors, rather than later with a misleading "saved no files".
        """
        payload = {"prompt": prompt, "client_id": self.client_id, "prompt_id": prompt_id}
        status, body = await self._request("POST", "/prompt", json=payload)
        if status != 200:
            raise JobFailedError(describe_rejection(body))
        queued_id = body.get("prompt_id", prompt_id) if isinstance(body, dict) else prompt_id
        if isinstance(body, dict) and body.get("node_errors"):
            await self.cancel(queued_id)
            partial = {
                "error": "some outputs failed validation (the server would have run only the others; cancelled)",
                "node_errors": body["node_errors"],
            }
            raise JobFailedError(describe_rejection(partial))
        return queued_id

    async def history(self, prompt_id: str) -> dict | None:
        """The prompt's history entry once it has finished (successfully or not), else None."""
        body = await self.get_json(f"/history/{prompt_id}")
        return body.get(prompt_id) if isinstance(body, dict) else None

    async def history_ids(self) -> list[str]:
        body = await self.get_json("/history")
        return list(body) if isinstance(body, dict) else []

    async def queued_ids(self) -> set[str]:
        """Ids of the prompts running or waiting on the server."""
        body = await self.get_json("/queue")
        items = (body or {}).get("queue_running", []) + (body or {}).get("queue_pending", [])
        return {item[1] for item in items if isinstance(item, list) and len(item) > 1}

    async def download(self, file: dict, target: Path) -> int:
        """Stream an output file to `target` (through a `.part` file, renamed when complete); returns its size."""
        query = urlencode(
            {"filename": file["filename"], "subfolder": file.get("subfolder", ""), "type": file.get("type", "output")}
        )
        partial = target.with_name(target.name + ".part")
        target.parent.mkdir(parents=True, exist_ok=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.timeout.total)
        try:
            async with self.session.get(f"{self.url}/view?{query}", timeout=timeout) as response:
                if response.status != 200:
                    raise JobFailedError(
                        f"downloading {file['filename']} from {self.url} failed: HTTP {response.status}"
                    )
                size = 0
                with open(partial, "wb") as out:
                    async for chunk in response.content.iter_chunked(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
            os.replace(partial, target)
            return size
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise ServerUnavailableError(
                f"downloading {file['filename']} from {self.url} broke off ({type(err).__name__}: {err})"
            ) from err
        finally:
            partial.unlink(missing_ok=True)  # left only by a failed or interrupted download

    async def cancel(self, prompt_id: str) -> None:
        """Remove the prompt from the queue, or interrupt it if it runs (best effort)."""
        with suppress(ServerUnavailableError):
            await self._request("POST", "/queue", json={"delete": [prompt_id]})
            await self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # --- websocket ---------------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the websocket (events for prompts queued with this client id); a failure leaves polling only."""
        await self.close()
        ws_url = "ws" + self.url[len("http") :] + f"/ws?{urlencode({'clientId': self.client_id})}"
        try:
            self.ws = await self.session.ws_connect(ws_url, heartbeat=30, timeout=aiohttp.ClientWSTimeout(ws_close=5))
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
            raise ServerUnavailableError(f"{self.url} websocket unreachable ({type(err).__name__}: {err})") from err

    async def next_event(self, timeout: float) -> dict | None:
        """The next JSON message within `timeout` s (binary previews are skipped), or None; drops a dead socket."""
        if self.ws is None or self.ws.closed:
            self.ws = None
            await asyncio.sleep(timeout)
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                message = await self.ws.receive(timeout=left)
            except asyncio.TimeoutError:
                return None
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    return json.loads(message.data)
                except ValueError:
                    continue
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                self.ws = None
                return None
        return None

    async def close(self) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        self.ws = None
