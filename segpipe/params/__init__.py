"""``params.yaml`` read and validated into typed objects (:class:`Params`); every mistake is a one-line error.

The sections live by concern: :mod:`.data` (base, ingest, clean, split, augment), :mod:`.model`, :mod:`.training`
(train, pretrain, evaluate, export) and :mod:`.orchestration` (tracking, sweeps, Prefect). Every section class is
importable from here. ("config", in segpipe, is only ever a model's config, the dict ``model.pt`` keeps.)
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from segpipe.catalog import model_problem, task_problem
from segpipe.errors import SegpipeError
from segpipe.params.data import (  # noqa: F401 (re-exported)
    AugmentParams,
    BaseParams,
    CityscapesParams,
    ClassSpec,
    CleanParams,
    CocoPanopticParams,
    CocoPanopticSplit,
    CocoParams,
    CocoSplit,
    ColorJitterParams,
    DropOrFail,
    IngestParams,
    LimitsParams,
    MaskFolderParams,
    Normalize,
    SplitFolders,
    SplitName,
    SplitParams,
    SyntheticParams,
    VocParams,
    YoloSegParams,
    YoloSplit,
)
from segpipe.params.model import (  # noqa: F401 (re-exported)
    MaskRCNNParams,
    ModelParams,
    PanopticParams,
    UNetParams,
)
from segpipe.params.orchestration import (  # noqa: F401 (re-exported)
    OrchestrationParams,
    PruningParams,
    RangeSpec,
    SweepParams,
    TrackingParams,
)
from segpipe.params.section import Section, refuse
from segpipe.params.training import (  # noqa: F401 (re-exported)
    EarlyStoppingParams,
    EvaluateParams,
    ExportParams,
    LossParams,
    OptimizerParams,
    PretrainParams,
    ScheduleParams,
    TrainParams,
    TrialParams,
)

DEFAULT_PARAMS = Path("params.yaml")


class Params(Section):
    task: str = Field("semantic", description="semantic, instance or panoptic (segpipe.catalog.TASKS)")
    base: BaseParams = BaseParams()
    ingest: IngestParams = IngestParams()
    clean: CleanParams = CleanParams()
    split: SplitParams = SplitParams()
    augment: AugmentParams = AugmentParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    pretrain: PretrainParams = PretrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    export: ExportParams = ExportParams()
    tracking: TrackingParams = TrackingParams()
    orchestration: OrchestrationParams = OrchestrationParams()

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        return refuse(task_problem(value), value)

    @model_validator(mode="after")
    def _model_fits_task(self) -> Params:
        problem = model_problem(self.task, self.model.name)
        if problem:
            raise ValueError(problem)
        return self


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at the parent of ``loc`` (for 'did you mean' hints)."""
    model: Any = Params
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _data_loc(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``int``, ``list[float]``): only keys the data has."""
    kept, node = [], data
    for part in loc:
        if isinstance(node, dict):
            match = next((k for k in node if str(k) == str(part)), None)
            if match is not None:
                kept.append(part)
                node = node[match]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            kept.append(part)
            node = node[part]
    return tuple(kept)


def _describe(error: dict[str, Any], source: str, data: Any) -> str:
    loc = tuple(part for part in error["loc"] if not str(part).startswith("function-"))
    if error["type"] != "missing":
        loc = _data_loc(data, loc) or loc
    key = ".".join(str(part) for part in loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1, cutoff=0.6)
        parent = "".join(f"{part}." for part in loc[:-1])
        hint = f"did you mean '{parent}{close[0]}'?" if close else "check the spelling; see params.yaml in the project"
        return f"{source}: unknown key '{key}' ({hint})"
    got = error.get("input")
    detail = error["msg"].removeprefix("Value error, ")
    if isinstance(got, str) and kind in {"float_type", "int_type", "bool_type"}:
        detail += "; write it without quotes"
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: {key or '<top level>'}: {detail}{shown}"


def parse_params(data: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate a params mapping strictly (no quoted numbers); raise :class:`SegpipeError` naming the first bad key.

    Validation goes through JSON so that YAML lists fill tuples while strict mode still refuses ``"0.003"``
    for a number or ``1`` for a boolean.
    """
    try:
        text = json.dumps(data or {}, default=str)
    except (TypeError, ValueError) as exc:
        raise SegpipeError(f"{source}: holds a value that is not plain YAML data ({exc})") from None
    try:
        return Params.model_validate_json(text, strict=True)
    except ValidationError as exc:
        data = json.loads(text)
        # of the alternatives a union reports, the one that got deepest into the value says most
        errors = sorted(exc.errors(), key=lambda e: -len(_data_loc(data, tuple(e["loc"]))))
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise SegpipeError(_describe(errors[0], source, data) + more) from None


class ParamsLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers as YAML 1.2 (and DVC, which writes ``-S`` values) does: ``1e-07``
    is a float, not the string YAML 1.1 makes of it."""


ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)\.?[0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(text: str) -> Any:
    """The YAML document in ``text``, read by :class:`ParamsLoader`."""
    return yaml.load(text, Loader=ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate ``params.yaml``."""
    path = Path(path)
    if not path.is_file():
        raise SegpipeError(f"{path}: not found; run from the project root or pass the params file")
    try:
        data = read_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SegpipeError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is not None and not isinstance(data, dict):
        raise SegpipeError(f"{path}: must be a mapping of sections (base, ingest, ...)")
    return parse_params(data, str(path))
