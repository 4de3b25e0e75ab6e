"""The params of tracking (MLflow), sweeps and orchestration (Prefect)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

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


class PruningParams(Section):
    """The pruner's settings, in epochs (the steps a trial reports)."""

    startup_trials: int = Field(1, ge=0, description="median: trials that finish before any is pruned")
    warmup_epochs: int = Field(1, ge=0, description="median: epochs every trial runs before any pruning decision")
    min_epochs: int = Field(1, ge=1, description="successive_halving / hyperband: the smallest budget of a rung")
    reduction_factor: int = Field(3, ge=2, description="successive_halving / hyperband: 1 / the share kept per rung")


class SweepParams(Section):
    method: Literal["grid", "random", "bayes"] = "grid"
    study: str = Field("segpipe-sweep", description="Optuna study name: a sweep with the same name continues it")
    storage: str = Field(".segpipe/optuna.journal", description="a journal file (relative to the project) or a "
                                                               "database URL such as postgresql://user@host/db")
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    pruning: PruningParams = PruningParams()
    deployment: str | None = Field(None, description="run each trial as a run of this pipeline deployment "
                                                     "(e.g. segmentation-pipeline/segpipe) on its work pool")
    trials: int = Field(4, ge=1, description="finished trials the study should hold (random, bayes); grid runs "
                                              "every combination the study lacks")
    concurrency: int = Field(1, ge=1, description="trials at once: 1 on a 2-core CPU, more with GPU workers")
    objective: str | None = Field(
        None, description="validation metric the sweep optimises; null = the task's (val_miou, val_mask_ap, val_pq)")
    allow_test_objective: bool = Field(
        False, description="let objective name a test metric (an experiment that compares arms, not a selection)")
    direction: Literal["maximize", "minimize"] = "maximize"
    space: dict[str, list[Any] | RangeSpec] = Field(default_factory=dict, description="dotted key -> values or range")
    results: str | None = Field(None, description="a JSON file for the trials and, with base.seed in a grid's space, "
                                                  "the mean and std of each arm over its seeds")
    budget_minutes: float | None = Field(None, gt=0, description="start no trial after this many minutes; the next "
                                                                 "sweep run of the same study goes on with the rest")

    @property
    def compares_arms(self) -> bool:
        """Whether the objective is a test metric: the sweep is then an experiment that compares its arms and chooses
        nothing (which ``allow_test_objective`` must say)."""
        return bool(self.objective and self.objective.startswith("test_"))

    @model_validator(mode="after")
    def _selects_on_validation(self) -> SweepParams:
        if self.compares_arms and not self.allow_test_objective:
            raise ValueError(f"objective '{self.objective}' is a test metric: choosing hyperparameters on the test "
                             f"set makes the reported score optimistic; use val_{self.objective.removeprefix('test_')}"
                             f" (or null), or set allow_test_objective: true for an experiment that selects nothing")
        return self

    @model_validator(mode="after")
    def _prunes_on_validation(self) -> SweepParams:
        if self.compares_arms and self.pruner != "none":
            raise ValueError(f"pruner '{self.pruner}' prunes on the epoch curve, which a test objective "
                             f"('{self.objective}') does not have: set pruner: none, or a validation objective")
        return self

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> SweepParams:
        if self.method == "grid" and any(isinstance(v, RangeSpec) for v in self.space.values()):
            raise ValueError("grid search needs a list of values for every key; use random or bayes for ranges")
        return self

    @model_validator(mode="after")
    def _no_password_in_storage(self) -> SweepParams:
        if "://" in self.storage and urlsplit(self.storage).password:
            raise ValueError("storage holds a password, which would reach params files, logs and every worker's "
                             "run parameters; give it through PGPASSWORD or ~/.pgpass on each machine instead")
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
