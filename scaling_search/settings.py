"""Typed, validated settings built from plain dicts (what an entry point's Hydra config becomes).

Entry points call ``OmegaConf.to_container(cfg, resolve=True)`` once and pass the dict here;
everything below them sees frozen dataclasses only. Every error is a ``ValueError`` whose
message names the offending field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from scaling_search.models.backbones import get_backbone, import_plugins
from scaling_search.models.scaling import Coefficients, Rounding

from scaling_search.plan.family import DIMENSIONS
from scaling_search.plan.space import SearchSpace
from scaling_search.train.data import DataSettings
from scaling_search.train.trainer import TrainSettings


AUTO_GPUS_PER_TRIAL = 0.25  # four small proxies share a GPU unless the config says otherwise


@dataclass(frozen=True)
class RaySettings:
    """How trials are placed (the ``runner`` config group, ``runner=ray``).

    Attributes:
        address: an existing cluster (``ray://host:10001`` or ``auto``); None starts a local Ray.
        num_cpus: CPUs of a local Ray; None = all of this machine's.
        cpus_per_trial, gpus_per_trial: resources of one trial; a fraction of a GPU packs
            several small proxies on one GPU. ``gpus_per_trial=None`` (the default) means
            ``AUTO_GPUS_PER_TRIAL`` where the Ray cluster has GPUs and 0 where it has none.
        max_concurrent: cap on trials at once; None = as many as resources allow.
        asha: stop poor trials early with ASHA on ``val/top1`` (by epoch).
        grace_period, reduction_factor: ASHA's minimum epochs and halving rate.
        checkpoint: save each epoch's state so a restored trial resumes mid-way.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    asha: bool = False
    grace_period: int = 1
    reduction_factor: int = 3
    checkpoint: bool = True

    def __post_init__(self) -> None:
        if not self.cpus_per_trial > 0:
            raise ValueError(f"runner.cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        if self.gpus_per_trial is None:
            return
        if self.gpus_per_trial < 0:
            raise ValueError(f"runner.gpus_per_trial must be >= 0, got {self.gpus_per_trial}")
        if self.gpus_per_trial > 1 and self.gpus_per_trial != int(self.gpus_per_trial):
            raise ValueError(f"runner.gpus_per_trial above 1 must be whole, got {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"runner.max_concurrent must be >= 1 or null, got {self.max_concurrent}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise ValueError("runner.grace_period must be >= 1 and runner.reduction_factor >= 2")


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The given SQLAlchemy URL, or a SQLite file in ``run_dir``."""
    if storage:
        if not isinstance(storage, str) or "://" not in storage:
            raise ValueError(f"study.storage must be an SQLAlchemy URL such as sqlite:///abs/path.db "
                             f"or postgresql+psycopg2://user@host/db, got {storage!r}")
        return storage
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"



def _mapping(d: object, where: str) -> Mapping:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a mapping, got {d!r}")
    return d


def _build(cls, d: object, where: str):
    """``cls(**d)`` that names unknown or missing fields instead of a TypeError."""
    d = _mapping(d, where)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(f"{where}.") else f"{where}.{msg}") from None


def coefficients_from(d: object, require_at_least_one: bool = True) -> Coefficients:
    """α, β, γ from ``{depth_coef, width_coef, resolution_coef}``."""
    coefficients = _build(Coefficients, d, "coefficients")
    if require_at_least_one:
        try:
            coefficients.require_at_least_one()
        except ValueError as e:
            raise ValueError(f"coefficients.{e}") from None
    return coefficients


def rounding_from(d: object) -> Rounding:
    return _build(Rounding, d, "rounding")


def _positive_int(value: object, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@dataclass(frozen=True)
class ScaleSettings:
    """Settings of ``python -m scaling_search.scale``: Step-2 emission, and training when ``train``.

    The family scales a base network (the backbone at ``base_depth_mult``, ``base_width_mult``
    and ``resolution_px``) by α^φ, β^φ, γ^φ. With ``train`` it is trained on ``data`` beside
    the single-dimension ``baselines`` matched to its measured MACs at each φ ≠ 0.
    """

    backbone: str
    coefficients: Coefficients
    phis: tuple[float, ...]
    rounding: Rounding
    resolution_px: int | None
    num_classes: int
    out_dir: Path
    imports: tuple[str, ...] = ()
    compare_published: bool = True
    coefficients_source: str | None = None  # the coefficients file they came from, if any
    base_depth_mult: float = 1.0
    base_width_mult: float = 1.0
    train: bool = False
    backbone_tag: str | None = None
    baselines: tuple[str, ...] = ("depth", "width", "resolution")
    data: DataSettings | None = None
    trainer: TrainSettings | None = None
    runner_kind: str = "ray"
    runner: RaySettings | None = None
    seed: int = 0
    seeds_per_member: int = 1
    study_storage: str | None = None
    study_name: str | None = None
    dry_run: bool = False
    report: bool = True

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds_per_member)]

    @property
    def tag(self) -> str:
        return self.backbone_tag or self.backbone

    @classmethod
    def from_dict(cls, d: Mapping) -> ScaleSettings:
        d = dict(_mapping(d, "config"))
        _check_keys(d, {"backbone", "coefficients", "coefficients_file", "constraint", "phis", "rounding",
                        "resolution_px", "num_classes", "out_dir", "imports", "compare_published", "base",
                        "train", "baselines", "data", "trainer", "runner", "seed", "seeds_per_member",
                        "study", "dry_run", "report", "experiment"}, "config")
        imports = import_plugins(d.get("imports"))
        backbone, tag = d.get("backbone"), None
        if isinstance(backbone, Mapping):  # the backbone config group: {name, tag}
            _check_keys(backbone, {"name", "tag"}, "backbone")
            backbone, tag = backbone.get("name"), backbone.get("tag")
        if not isinstance(backbone, str):
            raise ValueError(f"backbone must be a registry name, got {backbone!r}")
        get_backbone(backbone)
        phis = d.get("phis")
        if isinstance(phis, (int, float)) and not isinstance(phis, bool):
            phis = [phis]
        if not isinstance(phis, (list, tuple)) or not phis:
            raise ValueError(f"phis must be a non-empty list of numbers, got {phis!r}")
        for phi in phis:
            if isinstance(phi, bool) or not isinstance(phi, (int, float)):
                raise ValueError(f"phis must be numbers, got {phi!r} in {phis!r}")
        out_dir = d.get("out_dir")
        if not out_dir or not isinstance(out_dir, str):
            raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
        source = d.get("coefficients_file")
        if source is not None:
            coefficients, source = coefficients_file(source)
        else:
            coefficients = coefficients_from(d.get("coefficients"))
        check_constraint(coefficients, d.get("constraint"), source)
        base = dict(_mapping(d.get("base") or {}, "base"))
        _check_keys(base, {"depth_mult", "width_mult"}, "base")
        for k in ("depth_mult", "width_mult"):
            v = base.get(k, 1.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"base.{k} must be a number > 0, got {v!r}")
        settings = dict(
            backbone=backbone, coefficients=coefficients, phis=tuple(float(p) for p in phis),
            rounding=rounding_from(d.get("rounding", {})),
            resolution_px=_positive_int(d.get("resolution_px"), "resolution_px", optional=True),
            num_classes=_positive_int(d.get("num_classes", 1000), "num_classes"),
            out_dir=Path(out_dir).expanduser().resolve(), imports=imports,
            compare_published=bool(d.get("compare_published", True)), coefficients_source=source,
            base_depth_mult=float(base.get("depth_mult", 1.0)),
            base_width_mult=float(base.get("width_mult", 1.0)),
            train=bool(d.get("train", False)), backbone_tag=tag,
            dry_run=bool(d.get("dry_run", False)), report=bool(d.get("report", True)))
        if settings["train"] or settings["dry_run"]:
            settings.update(_training_settings(d))
        return cls(**settings)


def _training_settings(d: dict) -> dict:
    """The Step-2 training part of the scale app's config."""

    baselines = d.get("baselines", list(DIMENSIONS))
    if baselines is None:
        baselines = []
    if isinstance(baselines, str) or not isinstance(baselines, (list, tuple)) or \
            any(b not in DIMENSIONS for b in baselines):
        raise ValueError(f"baselines must be a list drawn from {list(DIMENSIONS)}, got {baselines!r}")
    runner = dict(_mapping(d.get("runner"), "runner"))
    kind = runner.pop("kind", "ray")
    if kind not in ("ray", "local"):
        raise ValueError(f"runner.kind must be ray or local for Step 2 (it trains a fixed family; "
                         f"optuna_tpe samples Step-1 coefficients), got {kind!r}")
    runner.pop("n_trials", None)
    runner.pop("executor", None)
    study = dict(_mapping(d.get("study") or {}, "study"))
    _check_keys(study, {"storage", "name"}, "study")
    if study.get("storage") is not None:
        storage_url(study["storage"], Path("."))
    seed = d.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return dict(
        baselines=tuple(b for b in DIMENSIONS if b in baselines),
        data=_build(DataSettings, d.get("data"), "data"),
        trainer=_build(TrainSettings, d.get("trainer"), "trainer"),
        runner_kind=kind, runner=_build(RaySettings, runner, "runner"), seed=seed,
        seeds_per_member=_positive_int(d.get("seeds_per_member", 1), "seeds_per_member"),
        study_storage=study.get("storage"), study_name=study.get("name"))


COEFFICIENT_KEYS = ("depth_coef", "width_coef", "resolution_coef")


def coefficients_file(path: object) -> tuple[Coefficients, str]:
    """α, β, γ from a Step-1 ``coefficients.yaml`` (or the run folder holding one)."""
    import yaml

    if not isinstance(path, str) or not path:
        raise ValueError(f"coefficients_file must be a file path, got {path!r}")
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        p = p / "coefficients.yaml"
    if not p.is_file():
        raise ValueError(f"coefficients_file {str(p)!r} does not exist; give a Step-1 run's "
                         "coefficients.yaml (or its run folder)")
    try:
        d = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"coefficients_file {str(p)!r} is not valid YAML "
                         f"({str(e).splitlines()[0]})") from None
    if not isinstance(d, Mapping) or set(d) != set(COEFFICIENT_KEYS):
        got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(f"coefficients_file {str(p)!r} must hold exactly {', '.join(COEFFICIENT_KEYS)} "
                         f"(got {got})")
    for k in COEFFICIENT_KEYS:
        if isinstance(d[k], bool) or not isinstance(d[k], (int, float)):
            raise ValueError(f"coefficients_file {str(p)!r}: {k} must be a number, got {d[k]!r}")
    try:
        return coefficients_from(d), str(p)
    except ValueError as e:
        raise ValueError(f"coefficients_file {str(p)!r}: {e}") from None


def check_constraint(c: Coefficients, constraint: object, source: str | None = None) -> None:
    """|α·β²·γ² − target| ≤ tolerance (skipped when the tolerance is null)."""
    constraint = dict(_mapping(constraint or {}, "constraint"))
    _check_keys(constraint, {"target", "tolerance"}, "constraint")
    target, tolerance = constraint.get("target", 2.0), constraint.get("tolerance", 0.1)
    if tolerance is None:
        return
    for k, v in (("target", target), ("tolerance", tolerance)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"constraint.{k} must be a number >= 0, got {v!r}")
    if abs(c.product - target) > tolerance + 1e-12:
        where = f"coefficients_file {source!r}" if source else "coefficients"
        raise ValueError(
            f"{where} break the constraint: alpha*beta^2*gamma^2 = {c.depth_coef:g}*{c.width_coef:g}^2*"
            f"{c.resolution_coef:g}^2 = {c.product:.4g}, not within {tolerance:g} of {target:g}; "
            "fix them, or set constraint.tolerance=null to scale anyway")


def _check_keys(d: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class GridSettings:
    """Settings of ``python -m scaling_search.grid`` (Step 1), from its composed config."""

    backbone: str
    backbone_tag: str
    proxy_depth_mult: float
    proxy_width_mult: float
    proxy_resolution_px: int | None
    space: SearchSpace
    data: DataSettings
    trainer: TrainSettings
    runner_kind: str  # ray, local or optuna_tpe
    runner: RaySettings  # placement of trials (optuna_tpe uses it too)
    tpe_trials: int
    executor: str  # what trains optuna_tpe's samples: ray or local
    rounding: Rounding
    seed: int
    seeds_per_candidate: int
    include_baseline: bool
    dry_run: bool
    out_dir: Path
    study_storage: str | None
    study_name: str | None
    emit_phis: tuple[float, ...]
    emit_num_classes: int
    imports: tuple[str, ...] = ()
    report: bool = True

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds_per_candidate)]

    @classmethod
    def from_dict(cls, d: Mapping) -> GridSettings:
                
        d = dict(_mapping(d, "config"))
        _check_keys(d, {"backbone", "proxy", "space", "data", "trainer", "runner", "rounding", "seed",
                        "seeds_per_candidate", "include_baseline", "dry_run", "out_dir", "study",
                        "emit", "imports", "experiment", "report"}, "config")
        imports = import_plugins(d.get("imports"))
        bb = dict(_mapping(d.get("backbone"), "backbone"))
        _check_keys(bb, {"name", "tag"}, "backbone")
        if not isinstance(bb.get("name"), str):
            raise ValueError(f"backbone.name must be a registry name, got {bb.get('name')!r}")
        get_backbone(bb["name"])
        proxy = dict(_mapping(d.get("proxy", {}), "proxy"))
        _check_keys(proxy, {"depth_mult", "width_mult", "resolution_px"}, "proxy")
        for k in ("depth_mult", "width_mult"):
            v = proxy.get(k, 1.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"proxy.{k} must be a number > 0, got {v!r}")
        data = _build(DataSettings, d.get("data"), "data")
        runner = dict(_mapping(d.get("runner"), "runner"))
        kind = runner.pop("kind", "ray")
        if kind not in ("ray", "local", "optuna_tpe"):
            raise ValueError(f"runner.kind must be ray, local or optuna_tpe, got {kind!r}")
        tpe_trials = runner.pop("n_trials", 20)
        executor = runner.pop("executor", "ray")
        if executor not in ("ray", "local"):
            raise ValueError(f"runner.executor must be ray or local, got {executor!r}")
        ray_settings = _build(RaySettings, runner, "runner")
        space = d.get("space")
        _check_keys(_mapping(space, "space"), {"depth_range", "width_range", "resolution_range", "step",
                                              "target", "tolerance", "filter_on"}, "space")
        study = dict(_mapping(d.get("study", {}), "study"))
        _check_keys(study, {"storage", "name"}, "study")
        if study.get("storage") is not None:
                storage_url(study["storage"], Path("."))  # the format; the connection is tried before a run
        emit = dict(_mapping(d.get("emit", {}), "emit"))
        _check_keys(emit, {"phis", "num_classes"}, "emit")
        phis = emit.get("phis", [1, 2, 3, 4, 5, 6, 7])
        if not isinstance(phis, (list, tuple)) or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) for p in phis):
            raise ValueError(f"emit.phis must be a list of numbers, got {phis!r}")
        seed = d.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        out_dir = d.get("out_dir")
        if not out_dir or not isinstance(out_dir, str):
            raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
        return cls(
            backbone=bb["name"], backbone_tag=str(bb.get("tag") or bb["name"]),
            proxy_depth_mult=float(proxy.get("depth_mult", 1.0)),
            proxy_width_mult=float(proxy.get("width_mult", 1.0)),
            proxy_resolution_px=_positive_int(proxy.get("resolution_px"), "proxy.resolution_px", True),
            space=SearchSpace.from_values(**space), data=data,
            trainer=_build(TrainSettings, d.get("trainer"), "trainer"),
            runner_kind=kind, runner=ray_settings,
            tpe_trials=_positive_int(tpe_trials, "runner.n_trials"), executor=executor,
            rounding=rounding_from(d.get("rounding", {})), seed=seed,
            seeds_per_candidate=_positive_int(d.get("seeds_per_candidate", 1), "seeds_per_candidate"),
            include_baseline=bool(d.get("include_baseline", True)), dry_run=bool(d.get("dry_run", False)),
            out_dir=Path(out_dir).expanduser().resolve(),
            study_storage=study.get("storage"), study_name=study.get("name"),
            emit_phis=tuple(float(p) for p in phis),
            emit_num_classes=_positive_int(emit.get("num_classes", 1000), "emit.num_classes"),
            imports=imports, report=bool(d.get("report", True)),
        )
