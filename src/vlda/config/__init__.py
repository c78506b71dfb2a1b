"""Run configuration: typed sections (pydantic), YAML + ``key=value`` overrides, one-sentence
errors. The lowest layer: everything that starts a run (CLI, engine, demo, a user's script)
builds a :class:`RunConfig` first."""

from vlda.config.loading import (
    ConfigError,
    apply_override,
    build_config,
    load_config,
    read_raw,
    validation_message,
)
from vlda.config.sections import (
    AugmentConfig,
    CacheConfig,
    DataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RstConfig,
    RunConfig,
    ScheduleConfig,
    SelectionConfig,
    TrainConfig,
)

__all__ = [
    "AugmentConfig", "CacheConfig", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "OptimConfig",
    "RstConfig", "RunConfig", "ScheduleConfig", "SelectionConfig", "TrainConfig", "apply_override", "build_config",
    "load_config", "read_raw", "validation_message",
]
