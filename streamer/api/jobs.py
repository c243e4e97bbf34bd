"""Upload jobs kept on disk (`api.state_dir`/jobs/ID/), so they survive a daemon restart.

Each job directory holds `job.json` (written atomically on every state change and now and then
while it runs), the uploaded `input` file until the job ends, and `result.jsonl` (the finals,
one JSON object a line, as the transcript files hold them) once it is done. At start-up, jobs
that were queued or running are queued again and run from the start of their file (the
pipeline's state is not checkpointed; a job is a pure function of its file and options, so a
rerun gives the same result); after MAX_ATTEMPTS starts a job fails with a message saying so
instead of crashing the daemon in a loop. Finished jobs are removed `api.result_ttl` seconds
after they finished.

`Job.public()` and `expired()` are pure; `JobStore` does the file I/O.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamer.events import Final, parse_event

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")


@dataclass
class Job:
    id: str
    filename: str
    options: dict[str, Any]
    created: float
    state: str = "queued"
    audio_seconds: float = 0.0
    done_seconds: float = 0.0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    attempts: int = 0
    # Runtime only: wall time the current run started and its audio position then (for the rate).
    _run_wall: float | None = field(default=None, repr=False, compare=False)

    def to_doc(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("_run_wall", None)
        return d

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Job:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and not k.startswith("_")}
        return cls(**known)

    def eta(self, now: float) -> float | None:
        """Seconds left, from the audio rate of the current run; None until it can be estimated."""
        if self.state != "running" or self._run_wall is None or self.done_seconds <= 0:
            return None
        elapsed = now - self._run_wall
        if elapsed <= 0:
            return None
        rate = self.done_seconds / elapsed  # audio seconds per wall second
        return max(0.0, (self.audio_seconds - self.done_seconds) / rate) if rate > 0 else None

    def public(self, now: float, ttl: float) -> dict[str, Any]:
        total = self.audio_seconds
        done = (
            total if self.state == "done" else min(self.done_seconds, total) if total else self.done_seconds
        )
        eta = self.eta(now)
        doc: dict[str, Any] = {
            "id": self.id,
            "object": "transcription.job",
            "state": self.state,
            "filename": self.filename,
            "model": self.options.get("model"),
            "task": self.options.get("task"),
            "progress": round(done / total, 4) if total > 0 else (1.0 if self.state == "done" else 0.0),
            "audio_seconds": round(total, 3),
            "audio_seconds_done": round(done, 3),
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "created_at": int(self.created),
            "started_at": int(self.started) if self.started else None,
            "finished_at": int(self.finished) if self.finished else None,
            "expires_at": int(self.finished + ttl) if self.finished else None,
            "attempts": self.attempts,
            "error": {"message": self.error, "type": "job_error"} if self.error else None,
        }
        if self.state == "done":
            doc["results"] = {
                ext: f"/v1/jobs/{self.id}/result.{ext}" for ext in ("txt", "srt", "vtt", "json")
            }
        return doc


def expired(job: Job, now: float, ttl: float) -> bool:
    return job.state in FINISHED and job.finished is not None and now - job.finished >= ttl


_NODE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_HEX = frozenset("0123456789abcdef")


def new_id(node: str | None = None) -> str:
    """`job_<24 hex>`, or `job_<node>_<24 hex>` with `api.node` set.

    The node name in the id is what lets a proxy in front of several daemons send
    `/v1/jobs/{id}` to the daemon that holds the job, with no shared storage and no table in the
    proxy (deploy/haproxy/haproxy.cfg routes on this prefix).
    """
    token = secrets.token_hex(12)
    return f"job_{node}_{token}" if node else f"job_{token}"


def _valid_id(job_id: str) -> bool:
    # A job id names a directory: only these exact shapes, never a path.
    if not job_id.startswith("job_"):
        return False
    node, sep, token = job_id[4:].rpartition("_")
    if sep and not (0 < len(node) <= 32 and set(node) <= _NODE_CHARS and node[0] != "-"):
        return False
    return len(token) == 24 and set(token) <= _HEX


class JobStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "jobs"
        self.tmp = Path(state_dir) / "uploads"

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # Uploads that were being received when the daemon stopped: nobody will finish them.
        for stale in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()

    def dir(self, job_id: str) -> Path:
        if not _valid_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def input_path(self, job: Job) -> Path:
        return self.dir(job.id) / "input"

    def result_path(self, job: Job) -> Path:
        return self.dir(job.id) / "result.jsonl"

    def create(self, job: Job, upload: Path) -> None:
        d = self.dir(job.id)
        d.mkdir(parents=True)
        os.replace(upload, d / "input")  # same file system: state_dir/uploads -> state_dir/jobs
        self.save(job)

    def save(self, job: Job) -> None:
        path = self.dir(job.id) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(job.to_doc(), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    def save_result(self, job: Job, finals: list[Final]) -> None:
        path = self.result_path(job)
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            for fin in finals:
                f.write(fin.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            self.input_path(job).unlink()

    def load_result(self, job: Job) -> list[Final]:
        out: list[Final] = []
        for line in self.result_path(job).read_text(encoding="utf-8").splitlines():
            if line.strip():
                ev = parse_event(json.loads(line))
                if isinstance(ev, Final):
                    out.append(ev)
        return out

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.dir(job_id), ignore_errors=True)

    def load_all(self) -> list[Job]:
        jobs: list[Job] = []
        for d in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            try:
                doc = json.loads((d / "job.json").read_text(encoding="utf-8"))
                jobs.append(Job.from_doc(doc))
            except (OSError, ValueError, TypeError) as e:
                log.warning("job state %s unreadable (%s): removed", d.name, e)
                shutil.rmtree(d, ignore_errors=True)
        return jobs
