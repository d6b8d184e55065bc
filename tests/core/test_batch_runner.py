"""The batch runner against fake ComfyUI servers (aiohttp on loopback): retries, resume, several servers, errors.

The fake speaks the parts of ComfyUI's API the tool uses, with ComfyUI's message and history shapes; the real
server is exercised by tests/host/test_batch_server.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp import web  # noqa: E402

from xdyna_tools import batch  # noqa: E402
from xdyna_tools.jobs import Job  # noqa: E402
from xdyna_tools.manifest import MANIFEST_NAME, QUEUED, Manifest  # noqa: E402
from xdyna_tools.runner import BatchRunner, BatchSettings  # noqa: E402
from xdyna_tools.workflow import WorkflowTemplate  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = {
    "ref": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "drv": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
    "sampler": {"class_type": "XDyna_TemporalSampler", "inputs": {"seed": 0, "steps": 2, "frames": 16}},
    "save": {"class_type": "SaveVideo", "inputs": {"video": ["sampler", 0], "filename_prefix": "video/out"}},
}


@dataclass
class FakeComfy:
    """A ComfyUI stand-in: runs a queued prompt after `delay` s; references named `bad*` fail `failures` times."""

    delay: float = 0.05
    failures: dict[str, int] = field(default_factory=dict)  # reference stem → executions that raise first
    reject: bool = False
    node_types: tuple[str, ...] = ("LoadImage", "LoadVideo", "XDyna_TemporalSampler", "SaveVideo")
    hold: threading.Event | None = None  # when set up, prompts wait for it before finishing
    vanish: int = 0  # this many prompts disappear without a trace, as when the server restarts
    partly_invalid: bool = False  # answer 200 with node_errors, as ComfyUI does when only some outputs validate
    output_name: str | None = None  # a hostile server: the file name its history gives for the saved video
    prompts: list[dict] = field(default_factory=list)
    history: dict[str, dict] = field(default_factory=dict)
    queue: dict[str, dict] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)  # prompt ids taken off the queue by the client
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/object_info", self.object_info)
        app.router.add_post("/upload/image", self.upload)
        app.router.add_post("/prompt", self.post_prompt)
        app.router.add_get("/history", self.all_history)
        app.router.add_get("/history/{pid}", self.get_history)
        app.router.add_get("/queue", self.get_queue)
        app.router.add_post("/queue", self.ok)
        app.router.add_post("/interrupt", self.ok)
        app.router.add_get("/view", self.view)
        app.router.add_get("/ws", self.websocket)
        return app

    async def object_info(self, request):
        return web.json_response({t: {} for t in self.node_types})

    async def all_history(self, request):
        return web.json_response(self.history)

    async def ok(self, request):
        if request.path == "/queue":
            for pid in (await request.json()).get("delete", []):
                self.queue.pop(pid, None)
                self.deleted.append(pid)
        return web.json_response({})

    async def upload(self, request):
        post = await request.post()
        name = f"{post['subfolder']}/{post['image'].filename}"
        self.uploads[name] = post["image"].file.read()
        return web.json_response({"name": post["image"].filename, "subfolder": post["subfolder"], "type": "input"})

    async def post_prompt(self, request):
        body = await request.json()
        prompt, pid = body["prompt"], body.get("prompt_id") or str(uuid.uuid4())
        if self.reject:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
            }
            node_errors = {
                "model": {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": "ckpt_name: 'x.ckpt' not in []",
                        }
                    ],
                    "class_type": "XDyna_LoadModel",
                }
            }
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        for name in (prompt["ref"]["inputs"]["image"], prompt["drv"]["inputs"]["file"]):
            assert name in self.uploads, f"{name} was not uploaded first"
        self.prompts.append(prompt)
        self.queue[pid] = prompt
        node_errors = {}
        if self.partly_invalid:
            node_errors = {
                "save": {
                    "errors": [
                        {
                            "type": "required_input_missing",
                            "message": "Required input is missing",
                            "details": "video",
                        }
                    ],
                    "dependent_outputs": ["save"],
                    "class_type": "SaveVideo",
                }
            }
        asyncio.get_running_loop().create_task(self.execute(pid, prompt, body.get("client_id")))
        return web.json_response({"prompt_id": pid, "number": len(self.prompts), "node_errors": node_errors})

    async def send(self, client_id, kind, data):
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    async def execute(self, pid, prompt, client_id):
        await asyncio.sleep(self.delay)
        if pid in self.deleted:
            return
        while self.hold is not None and not self.hold.is_set():
            await asyncio.sleep(0.02)
        if self.vanish > 0:
            self.vanish -= 1
            self.queue.pop(pid, None)
            return
        await self.send(client_id, "execution_start", {"prompt_id": pid})
        stem = PurePosixPath(prompt["ref"]["inputs"]["image"]).stem.split("-", 1)[1]
        steps = prompt["sampler"]["inputs"]["steps"]
        if self.failures.get(stem, 0) > 0:
            self.failures[stem] -= 1
            error = {
                "prompt_id": pid,
                "node_id": "ref",
                "node_type": "LoadImage",
                "exception_type": "PIL.UnidentifiedImageError",
                "exception_message": "cannot identify image file 'x.png'",
            }
            await self.send(client_id, "execution_error", error)
            status = {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}
            self.history[pid] = {"prompt": [0, pid, prompt], "outputs": {}, "status": status}
        else:
            for step in range(1, steps + 1):
                await self.send(
                    client_id, "progress", {"value": step, "max": steps, "prompt_id": pid, "node": "sampler"}
                )
            prefix = PurePosixPath(prompt["save"]["inputs"]["filename_prefix"])
            name = self.output_name or f"{prefix.name}_00001_.mp4"
            self.files[f"{prefix.parent}/{name}"] = (
                f"video of {pid} seed {prompt['sampler']['inputs']['seed']}".encode()
            )
            outputs = {
                "save": {
                    "images": [{"filename": name, "subfolder": str(prefix.parent), "type": "output"}],
                    "animated": [True],
                }
            }
            status = {
                "status_str": "success",
                "completed": True,
                "messages": [["execution_success", {"prompt_id": pid}]],
            }
            self.history[pid] = {"prompt": [0, pid, prompt], "outputs": outputs, "status": status}
            await self.send(client_id, "executing", {"node": None, "prompt_id": pid})
        self.queue.pop(pid, None)

    async def get_history(self, request):
        pid = request.match_info["pid"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def get_queue(self, request):
        items = [[i, pid, p, {}, []] for i, (pid, p) in enumerate(self.queue.items())]
        return web.json_response({"queue_running": items[:1], "queue_pending": items[1:]})

    async def view(self, request):
        q = request.rel_url.query
        data = self.files.get(f"{q['subfolder']}/{q['filename']}")
        return web.Response(body=data) if data is not None else web.Response(status=404)

    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[request.rel_url.query.get("clientId", "")] = ws
        await ws.send_str(json.dumps({"type": "status", "data": {"status": {}}}))
        async for _ in ws:
            pass
        return ws


class Servers:
    """Fake servers running on one background event loop."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners = []

    def start(self, fake: FakeComfy) -> FakeComfy:
        async def up():
            runner = web.AppRunner(fake.app())
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            return runner.addresses[0][1]

        port = asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        fake.url = f"http://127.0.0.1:{port}"
        return fake

    def close(self):
        async def down():
            for runner in self.runners:
                await runner.cleanup()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:  # prompts a test left held
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(down(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def servers():
    s = Servers()
    yield s
    s.close()


@pytest.fixture
def jobs(tmp_path):
    made = []
    for name in ("alice", "bob", "bad"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"{name}.png").write_bytes(f"image {name}".encode())
        (tmp_path / "in" / f"{name}.mp4").write_bytes(f"video {name}".encode())
        made.append(Job(name, tmp_path / "in" / f"{name}.png", tmp_path / "in" / f"{name}.mp4"))
    return made


def run(jobs, out, urls, **options) -> tuple[BatchRunner, object]:
    settings = BatchSettings(out_dir=out, servers=urls, backoff=0.01, poll_interval=0.05, **options)
    runner = BatchRunner(jobs, WorkflowTemplate.from_prompt(WORKFLOW), settings, Manifest.open(out))
    runner.validate()
    return runner, asyncio.run(runner.run())


def test_jobs_run_and_their_outputs_are_downloaded(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy())
    _, report = run(jobs[:2], tmp_path / "out", [fake.url], seed=77)
    assert [o.status for o in report.outcomes.values()] == ["done", "done"]
    state = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["jobs"]
    for name in ("alice", "bob"):
        (output,) = state[name]["outputs"]
        assert output["file"] == f"{name}/out_00001_.mp4"
        assert (tmp_path / "out" / output["file"]).read_bytes().endswith(b"seed 77")
        assert state[name]["status"] == "done" and state[name]["server"] == fake.url
    assert len(fake.prompts) == 2 and len(fake.uploads) == 4
    assert {p["save"]["inputs"]["filename_prefix"] for p in fake.prompts} == {
        "xdyna_batch/alice/out",
        "xdyna_batch/bob/out",
    }
    assert not list((tmp_path / "out").rglob("*.part")) and not (tmp_path / "out" / "xdyna-batch.lock").exists()


def test_a_rerun_skips_finished_jobs_and_reruns_changed_ones(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy())
    run(jobs[:2], tmp_path / "out", [fake.url])
    _, report = run(jobs[:2], tmp_path / "out", [fake.url])
    assert [o.status for o in report.outcomes.values()] == ["skipped", "skipped"] and len(fake.prompts) == 2
    jobs[0].reference.write_bytes(b"a new picture")  # changed input: alice is not finished any more
    _, report = run(jobs[:2], tmp_path / "out", [fake.url])
    assert report.outcomes["alice"].status == "done" and report.outcomes["bob"].status == "skipped"
    _, report = run(jobs[:2], tmp_path / "out", [fake.url], seed=5)  # changed settings: both again
    assert len(fake.prompts) == 5


def test_a_failing_job_is_retried_then_succeeds(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy(failures={"bad": 2}))
    _, report = run(jobs[2:], tmp_path / "out", [fake.url], attempts=3)
    assert report.outcomes["bad"].status == "done" and report.outcomes["bad"].attempts == 3
    record = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["jobs"]["bad"]
    assert record["failures"] == 2 and len(record["errors"]) == 2 and "UnidentifiedImageError" in record["errors"][0]
    assert len(fake.prompts) == 3


def test_a_job_failing_every_attempt_is_reported_with_the_servers_error(servers, jobs, tmp_path, capsys):
    fake = servers.start(FakeComfy(failures={"bad": 99}))
    argv = [
        str(tmp_path / "in"),
        "--out",
        str(tmp_path / "out"),
        "--server",
        fake.url,
        "--attempts",
        "2",
        "--backoff",
        "0",
    ]
    workflow = tmp_path / "api.json"
    workflow.write_text(json.dumps(WORKFLOW))
    code = batch.main([*argv, "--workflow", str(workflow)])
    out = capsys.readouterr().out
    assert code == 1
    assert "2 done, 0 skipped (finished before), 1 failed" in out
    assert (
        "FAILED bad after 2 attempt(s): node ref (LoadImage) raised PIL.UnidentifiedImageError: "
        "cannot identify image file 'x.png'" in out
    )
    assert len(fake.prompts) == 4  # alice, bob, bad twice


def test_a_rejected_prompt_names_the_node_and_the_validation_error(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy(reject=True))
    _, report = run(jobs[:1], tmp_path / "out", [fake.url], attempts=1)
    error = report.outcomes["alice"].error
    assert error.startswith("prompt rejected: Prompt outputs failed validation")
    assert "node model (XDyna_LoadModel): Value not in list: ckpt_name: 'x.ckpt' not in []" in error


def test_two_servers_share_the_queue_and_a_dead_one_costs_no_attempts(servers, jobs, tmp_path):
    a, b = servers.start(FakeComfy(delay=0.2)), servers.start(FakeComfy(delay=0.2))
    more = [Job(f"{j.name}{i}", j.reference, j.driving) for i in range(2) for j in jobs[:2]]
    runner, report = run(more, tmp_path / "out", [a.url, b.url, "http://127.0.0.1:9"])
    assert all(o.status == "done" for o in report.outcomes.values())
    assert len(a.prompts) >= 1 and len(b.prompts) >= 1 and len(a.prompts) + len(b.prompts) == 4
    assert "http://127.0.0.1:9" in runner._retired  # unreachable: retried, then given up
    state = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["jobs"]
    assert all(r["failures"] == 0 for r in state.values())


def test_a_server_without_the_node_types_is_not_used(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy(node_types=("LoadImage",)))
    _, report = run(jobs[:1], tmp_path / "out", [fake.url])
    assert report.outcomes["alice"].status == "failed"
    assert "lacks the node types LoadVideo, SaveVideo, XDyna_TemporalSampler" in report.outcomes["alice"].error
    assert fake.prompts == []


def test_an_interrupted_run_leaves_a_consistent_state_and_the_next_collects_the_queued_prompt(servers, jobs, tmp_path):
    hold = threading.Event()
    fake = servers.start(FakeComfy(hold=hold))
    out = tmp_path / "out"
    settings = BatchSettings(out_dir=out, servers=[fake.url], backoff=0.01, poll_interval=0.05)
    runner = BatchRunner(jobs[:1], WorkflowTemplate.from_prompt(WORKFLOW), settings, Manifest.open(out))

    async def interrupted():
        task = asyncio.create_task(runner.run())
        while not fake.prompts:
            await asyncio.sleep(0.02)
        task.cancel()  # what Ctrl-C does to the running batch
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    record = json.loads((out / MANIFEST_NAME).read_text())["jobs"]["alice"]
    assert record["status"] == QUEUED and record["prompt_id"] in fake.queue
    assert not (out / "xdyna-batch.lock").exists()

    hold.set()  # the server finishes the prompt while no batch runs
    _, report = run(jobs[:1], out, [fake.url])
    assert report.outcomes["alice"].status == "done"
    assert len(fake.prompts) == 1, "the prompt queued before the interruption was queued again"


def test_a_prompt_lost_by_a_restarting_server_is_queued_again_without_spending_an_attempt(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy(vanish=1))
    _, report = run(jobs[:1], tmp_path / "out", [fake.url], attempts=1)
    assert report.outcomes["alice"].status == "done" and len(fake.prompts) == 2
    assert json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())["jobs"]["alice"]["failures"] == 0


def test_a_job_running_past_the_timeout_is_cancelled_and_counts_as_failed(servers, jobs, tmp_path):
    fake = servers.start(FakeComfy(hold=threading.Event()))
    _, report = run(jobs[:1], tmp_path / "out", [fake.url], attempts=1, timeout=0.3)
    assert report.outcomes["alice"].status == "failed"
    assert "no result after 0.3 s (--timeout); the prompt was cancelled" in report.outcomes["alice"].error


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_command_stops_cleanly_on_a_signal(servers, jobs, tmp_path, sig):
    fake = servers.start(FakeComfy(hold=threading.Event()))
    workflow = tmp_path / "api.json"
    workflow.write_text(json.dumps(WORKFLOW))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "xdyna_tools.batch", str(tmp_path / "in"), "--out", str(out)]
    command += ["--workflow", str(workflow), "--server", fake.url]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not fake.prompts and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(sig)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, output
    assert "interrupted; run the same command again to continue" in output
    record = json.loads((out / MANIFEST_NAME).read_text())["jobs"]["alice"]
    assert record["status"] == QUEUED and record["prompt_id"] in fake.queue
    assert not (out / "xdyna-batch.lock").exists()


def test_a_prompt_queued_with_validation_errors_fails_with_them_and_is_taken_off_the_queue(servers, jobs, tmp_path):
    """ComfyUI answers 200 with node_errors and runs only the outputs that validate: that is the job's error."""
    fake = servers.start(FakeComfy(partly_invalid=True, delay=0.3))
    _, report = run(jobs[:1], tmp_path / "out", [fake.url], attempts=1, include_temp=True)
    outcome = report.outcomes["alice"]
    assert outcome.status == "failed"
    assert outcome.error.startswith("prompt rejected: some outputs failed validation")
    assert "node save (SaveVideo): Required input is missing: video" in outcome.error
    assert len(fake.prompts) == 1 and len(fake.deleted) == 1
    assert fake.history == {}, "the partly valid prompt was left to run"
    assert not (tmp_path / "out" / "alice").exists()


@pytest.mark.parametrize(
    "hostile",
    [
        "../../escaped.mp4",
        "../escaped.mp4",
        "<root>/escaped.mp4",
        "C:escaped.mp4",
        "C:\\escaped.mp4",
        "..\\escaped.mp4",
        "..",
    ],
)
def test_a_server_naming_files_outside_the_job_folder_is_refused(servers, jobs, tmp_path, hostile):
    root = tmp_path / "root"
    hostile = hostile.replace("<root>", str(root))  # an absolute path
    fake = servers.start(FakeComfy(output_name=hostile))
    out = root / "a" / "results"
    _, report = run(jobs[:1], out, [fake.url], attempts=1)
    outcome = report.outcomes["alice"]
    assert outcome.status == "failed"
    assert f"{fake.url} answered a file name with a path, drive or control character in it" in outcome.error
    assert repr(hostile) in outcome.error
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == ["a/results/xdyna-batch.json"], written
