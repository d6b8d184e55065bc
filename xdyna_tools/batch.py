"""Batch runs: (reference image, driving video) pairs through one or more ComfyUI servers' HTTP API.

    python -m xdyna_tools.batch INPUTS --out DIR [--workflow API.json] [--server URL ...]

INPUTS is a folder of pairs matched by file stem (`alice.png` + `alice.mp4`) or a CSV/JSON job list
(`jobs.py`). Each job's inputs are uploaded, the API-format workflow is rewritten for it (`workflow.py`) and
queued; progress comes over the websocket; the saved files are downloaded into `DIR/<job>/`. One worker per
server takes jobs from a shared queue. A failed job is retried (`--attempts`, exponential `--backoff`), on any
server; an unreachable server gives its job back without spending an attempt. The state file in DIR
(`manifest.py`) makes a re-run skip finished jobs and collect prompts that were still running when a run was
interrupted. The exit status is 0 when every job finished, 1 when some failed (each named, with the server's
error), 2 for unusable input, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from contextlib import suppress
from pathlib import Path

from .cli import say
from .jobs import BatchInputError, load_jobs
from .manifest import Manifest, ManifestError
from .runner import DEFAULT_SERVER, BatchReport, BatchRunner, BatchSettings
from .workflow import WorkflowError, WorkflowTemplate, parse_override

logger = logging.getLogger("xdyna.batch")

PACK_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKFLOW = PACK_ROOT / "example_workflows" / "api" / "xdyna_full.json"


def normalise_server(url: str) -> str:
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


# --- command line ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdyna-batch",
        description="Run (reference image, driving video) pairs through ComfyUI servers with an X-Dyna workflow.",
    )
    parser.add_argument(
        "inputs", type=Path, help="folder of pairs matched by stem (alice.png + alice.mp4), or a .csv/.json job list"
    )
    parser.add_argument(
        "-o", "--out", type=Path, required=True, help="output folder (results, and the state that makes re-runs resume)"
    )
    parser.add_argument(
        "-w",
        "--workflow",
        type=Path,
        help=f"API-format workflow (ComfyUI: Workflow → Export (API)); default {DEFAULT_WORKFLOW.relative_to(PACK_ROOT)}",
    )
    parser.add_argument(
        "-s", "--server", action="append", help=f"ComfyUI server URL, repeat for several (default {DEFAULT_SERVER})"
    )
    parser.add_argument(
        "--attempts", type=int, default=3, help="attempts per job before it counts as failed (default 3)"
    )
    parser.add_argument(
        "--backoff", type=float, default=5.0, help="seconds before the first retry, doubled each time (default 5)"
    )
    parser.add_argument(
        "--timeout", type=float, default=0, help="seconds a job may run before it is cancelled (default 0: no limit)"
    )
    parser.add_argument(
        "--seed", type=int, help="seed for jobs without their own (default: one derived from each job's name)"
    )
    parser.add_argument(
        "--frames", type=int, help="frames to generate (rewrites the frame counts and driving-frame caps)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NODE.input=VALUE",
        help="override a workflow input for every job (NODE: id, class type or title)",
    )
    parser.add_argument("--reference-node", help="id of the reference image loader, when the workflow has several")
    parser.add_argument("--driving-node", help="id of the driving video loader, when the workflow has several")
    parser.add_argument("--force", action="store_true", help="run every job again, finished or not")
    parser.add_argument("--include-temp", action="store_true", help="also download preview (temp) images")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every node the servers execute")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    return parser


def settings_from_args(args: argparse.Namespace) -> BatchSettings:
    if args.attempts < 1:
        raise BatchInputError("--attempts must be 1 or more")
    if args.frames is not None and args.frames < 1:
        raise BatchInputError("--frames must be 1 or more")
    servers = list(dict.fromkeys(normalise_server(u) for u in (args.server or [DEFAULT_SERVER])))
    return BatchSettings(
        out_dir=args.out,
        servers=servers,
        attempts=args.attempts,
        backoff=max(0.0, args.backoff),
        timeout=args.timeout or None,
        frames=args.frames,
        seed=args.seed,
        overrides=dict(parse_override(text) for text in args.overrides),
        force=args.force,
        include_temp=args.include_temp,
    )


async def _run_cancellable(runner: BatchRunner) -> BatchReport:
    task = asyncio.current_task()
    with suppress(NotImplementedError, RuntimeError, AttributeError):  # no signal handlers on Windows loops
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await runner.run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        settings = settings_from_args(args)
        workflow = args.workflow or DEFAULT_WORKFLOW
        if args.workflow is None and not DEFAULT_WORKFLOW.is_file():
            raise WorkflowError(f"no --workflow given and the default {DEFAULT_WORKFLOW} does not exist")
        template = WorkflowTemplate.load(workflow, args.reference_node, args.driving_node)
        jobs = load_jobs(args.inputs)
        manifest = Manifest.open(settings.out_dir)
        runner = BatchRunner(jobs, template, settings, manifest)
        runner.validate()
    except (BatchInputError, WorkflowError, ManifestError) as err:
        say(f"xdyna-batch: {err}", error=True)
        return 2
    logger.info("X-Dyna batch: %d job(s), workflow %s, output %s", len(jobs), workflow, settings.out_dir)
    try:
        report = asyncio.run(_run_cancellable(runner))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say(runner.report.summary(settings.out_dir))
        say("xdyna-batch: interrupted; run the same command again to continue", error=True)
        return 130
    except ManifestError as err:
        say(f"xdyna-batch: {err}", error=True)
        return 2
    say(report.summary(settings.out_dir))
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
