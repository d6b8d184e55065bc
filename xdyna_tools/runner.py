"""The batch runner: one worker per ComfyUI server, a shared job queue, retries, resume from the manifest.

A job is: upload its inputs (once per server and file content), render the workflow for it, queue it with a
`prompt_id` recorded in the manifest first, follow it over the websocket, and download the files it saved.
Failures the server reports (`JobFailedError`) spend an attempt and the job is queued again after a growing
delay, for any server; an unreachable server (`ServerUnavailableError`) gives its job back without spending
one and is retried, then given up. A prompt left queued by an interrupted run is collected, not queued again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .comfy_client import (
    ComfyClient,
    JobFailedError,
    ServerUnavailableError,
    describe_execution_error,
    output_files,
)
from .jobs import Job, job_seed, safe_name
from .manifest import DONE, FAILED, PENDING, QUEUED, Manifest
from .workflow import WorkflowError, WorkflowTemplate

logger = logging.getLogger("xdyna.batch")

DEFAULT_SERVER = "http://127.0.0.1:8188"
UPLOAD_SUBFOLDER = "xdyna_batch"


@dataclass
class BatchSettings:
    """How a batch runs (the command-line options)."""

    out_dir: Path
    servers: list[str] = field(default_factory=lambda: [DEFAULT_SERVER])
    attempts: int = 3
    backoff: float = 5.0
    timeout: float | None = None
    frames: int | None = None
    seed: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    force: bool = False
    include_temp: bool = False
    poll_interval: float = 2.0
    server_retries: int = 3


@dataclass
class JobOutcome:
    name: str
    status: str  # done, skipped, failed
    server: str | None = None
    files: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0


@dataclass
class BatchReport:
    outcomes: dict[str, JobOutcome] = field(default_factory=dict)

    def of(self, status: str) -> list[JobOutcome]:
        return [o for o in self.outcomes.values() if o.status == status]

    @property
    def failed(self) -> list[JobOutcome]:
        return self.of("failed")

    def summary(self, out_dir: Path) -> str:
        done, skipped, failed = self.of("done"), self.of("skipped"), self.failed
        pending = [o for o in self.outcomes.values() if o.status not in ("done", "skipped", "failed")]
        lines = [f"X-Dyna batch: {len(done)} done, {len(skipped)} skipped (finished before), {len(failed)} failed"]
        if pending:
            lines[0] += f", {len(pending)} not finished"
        for outcome in failed:
            tries = f"after {outcome.attempts} attempt(s)" if outcome.attempts else "(never ran)"
            lines.append(f"  FAILED {outcome.name} {tries}: {outcome.error}")
        lines.append(f"outputs and state in {out_dir}")
        return "\n".join(lines)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BatchRunner:
    """Runs `jobs` through `template` on the settings' servers, recording state in `manifest`."""

    def __init__(self, jobs: list[Job], template: WorkflowTemplate, settings: BatchSettings, manifest: Manifest):
        self.jobs = {job.name: job for job in jobs}
        self.template = template
        self.settings = settings
        self.manifest = manifest
        self.report = BatchReport({job.name: JobOutcome(job.name, "pending") for job in jobs})
        self._digests: dict[Path, str] = {}
        self._uploads: dict[tuple[str, str], str] = {}
        self._fingerprints: dict[str, str] = {}
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._remaining = 0
        self._alive = 0
        self._retired: dict[str, str] = {}
        self._all_done: asyncio.Event | None = None
        self._timers: set[asyncio.Task] = set()

    # --- identity of a job's work ------------------------------------------------------------------------

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = file_digest(path)
        return self._digests[path]

    def overrides(self, job: Job) -> dict[str, Any]:
        return {**self.settings.overrides, **job.overrides}

    def fingerprint(self, job: Job) -> str:
        """What makes a finished job's outputs current: input contents, seed, frames, overrides, workflow."""
        identity = {
            "reference": self._digest(job.reference),
            "driving": self._digest(job.driving),
            "seed": job_seed(job, self.settings.seed),
            "frames": self.settings.frames,
            "overrides": self.overrides(job),
            "workflow": self.template.digest,
            "nodes": [self.template.reference_node, self.template.driving_node],
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def validate(self) -> None:
        """Render every job's prompt once, so a bad override or workflow stops the batch before any upload."""
        for job in self.jobs.values():
            try:
                self.template.render(
                    "reference.png",
                    "driving.mp4",
                    job_seed(job, self.settings.seed),
                    job.name,
                    self.settings.frames,
                    self.overrides(job),
                )
            except WorkflowError as err:
                raise WorkflowError(f"job {job.name}: {err}") from err

    # --- the run -----------------------------------------------------------------------------------------

    async def run(self) -> BatchReport:
        self.manifest.lock()
        try:
            todo = self._plan()
            if todo:
                await self._run_jobs(todo)
        finally:
            self.manifest.save()
            self.manifest.unlock()
        return self.report

    def _plan(self) -> list[Job]:
        todo = []
        for name, job in self.jobs.items():
            fp = self._fingerprints[name] = self.fingerprint(job)
            record = self.manifest.job(name)
            if not self.settings.force and self.manifest.is_finished(name, fp):
                logger.info("X-Dyna batch: skipping %s, finished in an earlier run", name)
                self.report.outcomes[name] = JobOutcome(
                    name, "skipped", record.get("server"), [o["file"] for o in record["outputs"]]
                )
                continue
            keep_prompt = record.get("status") == QUEUED and record.get("fingerprint") == fp and not self.settings.force
            if not keep_prompt:
                if record.get("fingerprint") not in (None, fp):
                    logger.info(
                        "X-Dyna batch: %s changed since its last run (inputs or settings); running it again", name
                    )
                record.update(status=PENDING, failures=0, errors=[], prompt_id=None, outputs=[], error=None)
            record["fingerprint"] = fp
            todo.append(job)
        self.manifest.save()
        return todo

    async def _run_jobs(self, todo: list[Job]) -> None:
        import aiohttp

        self._remaining = len(todo)
        self._alive = len(self.settings.servers)
        self._all_done = asyncio.Event()
        for job in todo:
            self._queue.put_nowait(job)
        logger.info("X-Dyna batch: %d job(s) on %d server(s)", len(todo), len(self.settings.servers))
        async with aiohttp.ClientSession() as session:
            workers = [asyncio.create_task(self._worker(url, session)) for url in self.settings.servers]
            try:
                await self._all_done.wait()
            finally:
                for task in [*workers, *self._timers]:
                    task.cancel()
                await asyncio.gather(*workers, *self._timers, return_exceptions=True)

    def _finish_one(self) -> None:
        self._remaining -= 1
        if self._remaining <= 0 and self._all_done is not None:
            self._all_done.set()

    # --- one worker per server ---------------------------------------------------------------------------

    async def _worker(self, url: str, session) -> None:
        client = ComfyClient(url, session, self.manifest.client_id(url, uuid.uuid4().hex))
        self.manifest.save()
        checked, unavailable = False, 0
        try:
            while self._remaining > 0:
                try:
                    if not checked:
                        await self._check_server(client)
                        checked = True
                    job = await self._queue.get()
                    try:
                        await self._run_job(client, job)
                        unavailable = 0
                    except ServerUnavailableError:
                        self._queue.put_nowait(job)  # not the job's fault: no attempt spent
                        raise
                    except JobFailedError as err:
                        self._job_failed(job, url, str(err))
                except ServerUnavailableError as err:
                    unavailable += 1
                    await client.close()
                    if unavailable >= self.settings.server_retries:
                        self._retire(url, str(err))
                        return
                    delay = self.settings.backoff * 2 ** (unavailable - 1)
                    logger.warning("X-Dyna batch: %s; trying that server again in %g s", err, delay)
                    await asyncio.sleep(delay)
                except WorkflowError as err:
                    self._retire(url, str(err))
                    return
        finally:
            await client.close()

    async def _check_server(self, client: ComfyClient) -> None:
        """The server answers and has every node type of the workflow."""
        info = await client.object_info()
        missing = sorted(self.template.class_types() - set(info))
        if missing:
            raise WorkflowError(
                f"{client.url} lacks the node types {', '.join(missing)} (install the packs that provide them "
                f"there and restart it)"
            )
        logger.info("X-Dyna batch: %s is ready", client.url)

    def _retire(self, url: str, reason: str) -> None:
        self._retired[url] = reason
        self._alive -= 1
        logger.error("X-Dyna batch: giving up on %s: %s", url, reason)
        if self._alive == 0:
            while not self._queue.empty():
                self._fail_for_good(self._queue.get_nowait(), self._no_server_reason())

    def _no_server_reason(self) -> str:
        return "no server could run it: " + "; ".join(self._retired.values())

    def _job_failed(self, job: Job, url: str, message: str) -> None:
        # Upload again next time: the failure may be a server that lost its input folder.
        self._uploads = {key: name for key, name in self._uploads.items() if key[0] != url}
        record = self.manifest.job(job.name)
        failures = record.get("failures", 0) + 1
        errors = (record.get("errors", []) + [f"{url}: {message}"])[-5:]
        if failures < self.settings.attempts:
            delay = self.settings.backoff * 2 ** (failures - 1)
            self.manifest.update(job.name, status=PENDING, failures=failures, errors=errors, prompt_id=None)
            logger.warning(
                "X-Dyna batch: %s failed on %s (attempt %d of %d): %s; retrying in %g s",
                job.name,
                url,
                failures,
                self.settings.attempts,
                message,
                delay,
            )
            timer = asyncio.create_task(self._requeue_later(job, delay))
            self._timers.add(timer)
            timer.add_done_callback(self._timers.discard)
        else:
            self.manifest.update(job.name, failures=failures, errors=errors)
            self._fail_for_good(job, message, url)

    async def _requeue_later(self, job: Job, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._alive > 0:
            self._queue.put_nowait(job)
        else:
            self._fail_for_good(job, self._no_server_reason())

    def _fail_for_good(self, job: Job, message: str, url: str | None = None) -> None:
        record = self.manifest.update(job.name, status=FAILED, error=message, prompt_id=None)
        attempts = record.get("failures", 0)
        self.report.outcomes[job.name] = JobOutcome(job.name, "failed", url, error=message, attempts=attempts)
        logger.error("X-Dyna batch: %s failed after %d attempt(s): %s", job.name, attempts, message)
        self._finish_one()

    # --- one job on one server ---------------------------------------------------------------------------

    async def _upload(self, client: ComfyClient, path: Path) -> str:
        digest = self._digest(path)
        key = (client.url, digest)
        if key not in self._uploads:
            name = f"{digest[:12]}-{safe_name(path.stem)}{path.suffix.lower()}"
            self._uploads[key] = await client.upload(path, name, UPLOAD_SUBFOLDER)
        return self._uploads[key]

    async def _run_job(self, client: ComfyClient, job: Job) -> None:
        record = self.manifest.job(job.name)
        entry = None
        if record.get("status") == QUEUED and record.get("server") == client.url and record.get("prompt_id"):
            entry = await self._adopt(client, job, record["prompt_id"])
        if entry is None:
            if record.get("status") == QUEUED and record.get("server") not in (None, client.url):
                logger.info(
                    "X-Dyna batch: %s was queued on %s by an earlier run; running it here", job.name, record["server"]
                )
            if client.ws is None:
                # Without the websocket no progress is shown; polling the history still finds the result.
                with suppress(ServerUnavailableError):
                    await client.connect()
            seed = job_seed(job, self.settings.seed)
            reference = await self._upload(client, job.reference)
            driving = await self._upload(client, job.driving)
            try:
                prompt = self.template.render(
                    reference, driving, seed, job.name, self.settings.frames, self.overrides(job)
                )
            except WorkflowError as err:
                raise JobFailedError(str(err)) from err
            prompt_id = str(uuid.uuid4())
            self.manifest.update(job.name, status=QUEUED, server=client.url, prompt_id=prompt_id, seed=seed)
            queued_id = await client.queue_prompt(prompt, prompt_id)
            if queued_id != prompt_id:
                self.manifest.update(job.name, prompt_id=queued_id)
            logger.info("X-Dyna batch: %s queued on %s (seed %d, prompt %s)", job.name, client.url, seed, queued_id)
            entry = await self._wait(client, job, queued_id)
        if (entry.get("status") or {}).get("status_str", "success") != "success":
            raise JobFailedError(describe_execution_error(entry))
        files = output_files(entry, self.settings.include_temp)
        if not files:
            raise JobFailedError("the workflow finished but saved no files; it needs a saving node such as Save Video")
        outputs = await self._download(client, job, files)
        self.manifest.update(job.name, status=DONE, outputs=outputs, error=None, server=client.url)
        self.report.outcomes[job.name] = JobOutcome(
            job.name, "done", client.url, [o["file"] for o in outputs], attempts=record.get("failures", 0) + 1
        )
        logger.info("X-Dyna batch: %s done on %s: %s", job.name, client.url, ", ".join(o["file"] for o in outputs))
        self._finish_one()

    async def _adopt(self, client: ComfyClient, job: Job, prompt_id: str) -> dict | None:
        """A prompt queued by an interrupted run: its finished result, or the wait for it; None if it is gone."""
        entry = await client.history(prompt_id)
        if entry is not None:
            logger.info(
                "X-Dyna batch: %s already ran on %s (prompt %s); collecting it", job.name, client.url, prompt_id
            )
            return entry
        if prompt_id in await client.queued_ids():
            logger.info(
                "X-Dyna batch: %s is still queued on %s (prompt %s); following it", job.name, client.url, prompt_id
            )
            if client.ws is None:
                with suppress(ServerUnavailableError):
                    await client.connect()
            return await self._wait(client, job, prompt_id)
        return None

    async def _wait(self, client: ComfyClient, job: Job, prompt_id: str) -> dict:
        """Follow the prompt over the websocket (progress is logged) until its history entry exists."""
        loop = asyncio.get_running_loop()
        start = last_poll = last_log = loop.time()
        polls = 0
        while True:
            event = await client.next_event(self.settings.poll_interval)
            now = loop.time()
            finished = False
            if event is not None:
                kind, data = event.get("type"), event.get("data") or {}
                if data.get("prompt_id") == prompt_id:
                    if kind == "progress" and (now - last_log >= 5 or data.get("value") == data.get("max")):
                        logger.info(
                            "X-Dyna batch: %s node %s: %s/%s",
                            job.name,
                            data.get("node"),
                            data.get("value"),
                            data.get("max"),
                        )
                        last_log = now
                    elif kind == "executing" and data.get("node") is not None:
                        logger.debug("X-Dyna batch: %s executing node %s", job.name, data["node"])
                    finished = kind in ("execution_success", "execution_error", "execution_interrupted") or (
                        kind == "executing" and data.get("node") is None
                    )
            if finished or now - last_poll >= self.settings.poll_interval:
                last_poll = now
                entry = await self._history_soon(client, prompt_id, 3.0 if finished else 0.0)
                if entry is not None:
                    return entry
                polls += 1
                if polls % 5 == 0 and prompt_id not in await client.queued_ids():
                    entry = await client.history(prompt_id)  # it may have finished between the two requests
                    if entry is not None:
                        return entry
                    raise ServerUnavailableError(
                        f"prompt {prompt_id} of {job.name} vanished from {client.url} (restarted?)"
                    )
            if self.settings.timeout and now - start > self.settings.timeout:
                await client.cancel(prompt_id)
                raise JobFailedError(
                    f"no result after {self.settings.timeout:g} s (--timeout); the prompt was cancelled"
                )

    @staticmethod
    async def _history_soon(client: ComfyClient, prompt_id: str, within: float) -> dict | None:
        """The history entry, waiting up to `within` s (the server writes it just after its final message)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            entry = await client.history(prompt_id)
            if entry is not None or loop.time() >= deadline:
                return entry
            await asyncio.sleep(0.1)

    async def _download(self, client: ComfyClient, job: Job, files: list[dict]) -> list[dict]:
        folder = self.manifest.out_dir / job.name
        names = [output_name(file, client.url) for file in files]  # all checked before anything is written
        outputs = []
        for file, name in zip(files, names):
            if names.count(name) > 1:  # the same name from two savers: keep both, told apart by their subfolder
                name = f"{safe_name(file.get('subfolder', ''))}_{name}"
            target = folder / name
            if target.resolve().parent != folder.resolve():  # a link planted in the folder, say
                raise JobFailedError(
                    f"{client.url} named an output {file['filename']!r} that would land outside {folder}"
                )
            size = await client.download(file, target)
            source = f"{file.get('subfolder')}/{file['filename']}" if file.get("subfolder") else file["filename"]
            outputs.append({"file": f"{job.name}/{name}", "bytes": size, "source": source})
        return outputs


def output_name(file: dict, server: str) -> str:
    """The name an output file gets in `results/<job>/`: the server's own, if it is a plain file name.

    The server's answer is not trusted: a name with a folder in it (`../x`, `a/b`, `a\\b`), an absolute path,
    a drive (`C:x`), `.` or `..`, or control characters would make the download write elsewhere; such a job
    fails, naming the server and the name.
    """
    name = file.get("filename")
    problem = None
    if not isinstance(name, str) or not name:
        problem = "no file name"
    elif name in (".", "..") or any(c in name for c in "/\\:") or any(ord(c) < 32 for c in name):
        problem = "a file name with a path, drive or control character in it"
    if problem:
        raise JobFailedError(
            f"{server} answered {problem} for an output ({name!r}); refusing to write it outside the job's folder. "
            "Is this a ComfyUI server?"
        )
    return name
