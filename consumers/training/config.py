"""The training worker's configuration: one frozen dataclass, each default defined here once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpu_engine.training.dataset import MAX_DATASET_ROWS
from gpu_engine.training.dataset_source import MAX_DATASET_BYTES, check_dataset_roots
from streamer.config import TopicNames


@dataclass(frozen=True)
class TrainWorkerConfig:
    """What `lorastream train-worker` needs besides the transport and the topic names.

    `base_model_name`: the name TrainingRequest.base_model uses for this worker's base
    (default: the base directory's name); None in a request also means this base.
    `dataset_roots`: where a request's dataset may come from: absolute directories and
    `s3://bucket/prefix/` prefixes. None by default: which of the worker's files tenants may
    train on (and so read back through the adapter) is for the operator to say; built-in tasks
    are always allowed. `max_unfinished_runs`: a job whose runs ended this many times in a row
    without any outcome (the worker died each time) fails instead of running again.
    """

    base_model_path: str
    adapter_root: str
    work_dir: str  # <work_dir>/<job_id>/: spec.json, dataset.jsonl, checkpoints/, adapter/, job.log
    base_model_name: str | None = None
    group_id: str = "lorastream-training"
    device: str = "auto"
    job_threads: int | None = None  # torch threads of a job process (None: one per core)
    checkpoint_every_steps: int = 50
    progress_interval_s: float = 2.0
    log_every_s: float = 30.0  # the worker's own log: one progress line per job at most this often
    stop_grace_s: float = 60.0  # a cancelled/preempted job gets this long before it is killed
    training_partitions: int = 2  # used when the worker creates the topics
    publish_uri: str | None = None  # s3://bucket/prefix: adapters are also uploaded there and announced by that uri
    s3_endpoint_url: str | None = None
    dataset_roots: tuple[str, ...] = ()
    max_dataset_bytes: int = MAX_DATASET_BYTES
    max_dataset_rows: int = MAX_DATASET_ROWS
    max_unfinished_runs: int = 3
    base_lane: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset_roots", tuple(self.dataset_roots))
        for name in ("base_model_path", "adapter_root", "work_dir", "group_id"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        if self.job_threads is not None and self.job_threads < 1:
            raise ValueError("job_threads must be >= 1")
        if self.checkpoint_every_steps < 1:
            raise ValueError("checkpoint_every_steps must be >= 1")
        if min(self.progress_interval_s, self.stop_grace_s, self.log_every_s) < 0:
            raise ValueError("progress_interval_s, log_every_s and stop_grace_s must be >= 0")
        if self.training_partitions < 1:
            raise ValueError("training_partitions must be >= 1")
        if self.publish_uri is not None and not self.publish_uri.startswith("s3://"):
            raise ValueError("publish_uri must be an s3://bucket/prefix uri")
        check_dataset_roots(self.dataset_roots)
        if self.max_dataset_bytes < 1 or self.max_dataset_rows < 1:
            raise ValueError("max_dataset_bytes and max_dataset_rows must be >= 1")
        if self.max_unfinished_runs < 1:
            raise ValueError("max_unfinished_runs must be >= 1")
        if self.base_lane:
            TopicNames().training_requests_for(self.base_name)  # a lane is named by its base

    @property
    def base_name(self) -> str:
        return self.base_model_name or Path(self.base_model_path).name

    def requests_topic(self, topics: TopicNames) -> str:
        """The topic this worker reads: the shared training-requests topic, or its base's lane.
        Raises ValueError when the lane's name is too long for `topics`' prefix."""
        return topics.training_requests_for(self.base_name) if self.base_lane else topics.training_requests

    @property
    def consumer_group(self) -> str:
        """The group it reads in: `group_id`, or `<group_id>.<base_name>` in a lane."""
        return f"{self.group_id}.{self.base_name}" if self.base_lane else self.group_id
