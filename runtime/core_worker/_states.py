"""The core worker's modes and life-cycle states."""

from __future__ import annotations

import enum


class WorkerMode(enum.Enum):
    DRIVER = "driver"
    WORKER = "worker"


class State(enum.Enum):
    NEW = "NEW"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
