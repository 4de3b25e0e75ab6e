"""The params of tracking (MLflow), sweeps and orchestration (Prefect)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from segpipe.params.section import Section


class TrackingParams(Section):
    enabled: bool = Field(True, description="log runs to MLflow")
    experiment: str = "segpipe"
    registered_model: str | None = "segpipe-semantic"
    default_uri: str = Field("sqlite:///mlflow.db", description="used when MLFLOW_TRACKING_URI is not set")


class RangeSpec(Section):
    """A numeric range for random and Bayesian search."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError("needs low < high (and low > 0 with log: true)")
        return self


class SweepParams(Section):
    method: Literal["grid", "random", "bayes"] = "grid"
    trials: int = Field(4, ge=1, description="trials for random and bayes (grid runs every combination)")
    concurrency: int = Field(1, ge=1, description="trials at once: 1 on a 2-core CPU, more with GPU workers")
    objective: str | None = Field(
        None, description="validation metric the sweep optimises; null = the task's (val_miou, val_mask_ap, val_pq)")
    allow_test_objective: bool = Field(
        False, description="let objective name a test metric (an experiment that compares arms, not a selection)")
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict, description="dotted key -> values or range")
    results: str | None = Field(None, description="a JSON file for the trials and, with base.seed in a grid's space, "
                                                  "the mean and std of each arm over its seeds")

    @model_validator(mode="after")
    def _selects_on_validation(self) -> SweepParams:
        if self.objective and self.objective.startswith("test_") and not self.allow_test_objective:
            raise ValueError(f"objective '{self.objective}' is a test metric: choosing hyperparameters on the test "
                             f"set makes the reported score optimistic; use val_{self.objective.removeprefix('test_')}"
                             f" (or null), or set allow_test_objective: true for an experiment that selects nothing")
        return self

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> SweepParams:
        if self.method == "grid" and any(isinstance(v, RangeSpec) for v in self.space.values()):
            raise ValueError("grid search needs a list of values for every key; use random or bayes for ranges")
        return self


class OrchestrationParams(Section):
    retries: int = Field(1, ge=0, description="retries of a stage task after a transient failure")
    retry_delay_seconds: float = Field(10.0, ge=0)
    timeout_seconds: float = Field(86400.0, gt=0, description="a stage or sweep trial running longer is killed as "
                                                                "hung and fails, naming it")
    cron: str = Field("0 3 * * *", description="schedule of the deployments")
    timezone: str = "UTC"
    work_pool: str = "segpipe-cpu"
    sweep: SweepParams = SweepParams()
