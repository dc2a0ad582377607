"""The steps on the shared run pipeline, without training: what they write and how they stop."""

from __future__ import annotations

import io
import json

import optuna
import pytest
import yaml
from conftest import TINY, compose_grid

from scaling_search.models.scaling import Rounding
from scaling_search.steps import step1
from scaling_search.steps.pipeline import RunFolder, check_apart
from scaling_search.train.execution import RunFailed, RunInterrupted
from scaling_search.train.records import TrialStore


def _record(store: TrialStore, cid: str, role: str, coefficients: tuple[float, float, float], top1: float | None):
    a, b, g = coefficients
    spec = {"trial_id": f"t_{cid}_s0", "candidate_id": cid, "seed": 0}
    columns = {"role": role, "depth_coef": a, "width_coef": b, "resolution_coef": g, "product": a * b * b * g * g,
               "depth_mult": a, "width_mult": b, "resolution_mult": g, "resolution_px": 16, "params": 1000,
               "macs": int(1e6 * a * b * b * g * g), "activations": 10, "macs_ratio": a * b * b * g * g,
               "merged": ""}
    row = ({"trial_id": spec["trial_id"], "status": "ok", "error": "", "final_top1": top1, "best_top1": top1}
           if top1 is not None else
           {"trial_id": spec["trial_id"], "status": "failed", "error": "Diverged: diverged in epoch 1"})
    store.save(spec, row, [], columns)


def test_a_continuous_winner_is_frozen_at_full_precision(tmp_path):
    """A TPE winner such as alpha=1.2345678901 must read back exactly, not to 6 digits."""
    alpha, beta = 1.2345678901234, 1.0123456789
    gamma = (2 / (alpha * beta**2)) ** 0.5
    store = TrialStore(tmp_path)
    _record(store, "d1.0000_w1.0000_r1.0000", "baseline", (1.0, 1.0, 1.0), 0.5)
    _record(store, "d1.2346_w1.0123_r1.2541", "candidate", (alpha, beta, gamma), 0.9)
    outcome = step1.summarise(tmp_path, "resnet18", "digits", Rounding(), (1.0,), 10, io.StringIO())
    frozen = yaml.safe_load((tmp_path / "coefficients.yaml").read_text())
    assert frozen == {"depth_coef": alpha, "width_coef": beta, "resolution_coef": gamma}
    assert yaml.safe_load((tmp_path / "step2" / "coefficients.yaml").read_text()) == frozen
    assert outcome.winner["depth_coef"] == alpha


class _CutOffRunner:
    """Reports the first trial of each batch, then returns: what Ray Tune does on Ctrl-C."""

    concurrency = 2
    resume = True

    def __init__(self):
        self.batches = 0

    def run(self, specs, data, trainer, on_result, progress=None):
        self.batches += 1
        spec = specs[0]
        on_result(spec, {"trial_id": spec.trial_id, "status": "ok", "error": "", "final_top1": 0.5},
                  [{"epoch": 1, "val/top1": 0.5}])


def test_ctrl_c_stops_a_tpe_search_and_leaves_no_trial_running(tmp_path, monkeypatch):
    settings = compose_grid(tmp_path, *TINY, "runner=optuna_tpe", "runner.executor=local", "runner.n_trials=4")
    runner = _CutOffRunner()
    monkeypatch.setattr(step1, "make_runner", lambda *a, **k: runner)
    with pytest.raises(RunInterrupted, match="1 of 2 TPE samples"):
        step1.run_search(settings, io.StringIO())
    assert runner.batches == 1  # the search stopped; it did not sample on
    study = optuna.load_study(study_name=None,
                              storage=f"sqlite:///{settings.out_dir / 'optuna.db'}")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    (done,) = [t for t in trials if t.user_attrs.get("trained")]  # (infeasible samples are not)
    assert done.state == optuna.trial.TrialState.COMPLETE and done.value == 0.5
    (cut,) = [t for t in trials if t.user_attrs.get("interrupted")]
    assert cut.state == optuna.trial.TrialState.FAIL
    assert len(TrialStore(settings.out_dir).load()) == 1


def test_a_run_folder_holding_another_run_is_refused_before_anything_is_written(tmp_path):
    first = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search")
    with first:
        first.open({"seed": 0}, None, None)
    other = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet50"}, "search")
    with pytest.raises(ValueError, match="holds a search with different backbone"):
        other.check()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".lock", "config.yaml", "environment.json", "optuna.db", "search.json"]


HOLD = """
import sys, time
from pathlib import Path
from scaling_search.steps.pipeline import RunFolder, check_apart
run = RunFolder(Path(sys.argv[1]), "search.json", {"backbone": "resnet18"}, "search")
with run:
    run.open({}, None, None)
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_second_driver_is_refused_and_names_the_first(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        second = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search")
        with pytest.raises(ValueError, match=rf"is in use by another run \(pid {holder.pid} on .+ since 20"):
            with second:
                second.open({}, None, None)
    finally:
        holder.kill()
        holder.wait()
    # Killed without releasing: the kernel dropped its lock; the next driver takes it over and says so.
    third = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search")
    said = io.StringIO()
    with third:
        third.open({}, None, None, out=said)
    assert said.getvalue().startswith(f"took over the lock of pid {holder.pid} on ")
    assert not (tmp_path / "run" / ".lock.json").exists()  # released when the step ended


def test_the_study_belongs_to_the_run_not_to_its_folder_name(tmp_path):
    """A copied or renamed run folder must resume its own study, not start a second one."""
    identity = {"backbone": "resnet18", "space": {"step": "0.1"}}
    a = RunFolder(tmp_path / "a", "search.json", identity, "search")
    b = RunFolder(tmp_path / "renamed", "search.json", dict(identity), "search")
    other = RunFolder(tmp_path / "a", "search.json", {**identity, "backbone": "resnet50"}, "search")
    assert a.study_name == b.study_name != other.study_name
    assert a.study_name.startswith("search-")


def _summarise(run_dir):
    return step1.summarise(run_dir, "resnet18", "digits", Rounding(), (1.0,), 10, io.StringIO())


def test_a_search_whose_every_trial_failed_freezes_nothing(tmp_path):
    store = TrialStore(tmp_path)
    _record(store, "d1.00_w1.00_r1.00", "baseline", (1.0, 1.0, 1.0), None)
    _record(store, "d1.20_w1.10_r1.15", "candidate", (1.2, 1.1, 1.15), None)
    with pytest.raises(RunFailed, match="every one of the 2 trials failed .first error: Diverged"):
        _summarise(tmp_path)
    assert not (tmp_path / "coefficients.yaml").exists() and not (tmp_path / "step2").exists()
    assert (tmp_path / "results.csv").is_file()  # the errors are there to read


def test_a_search_whose_every_candidate_failed_freezes_nothing(tmp_path):
    store = TrialStore(tmp_path)
    _record(store, "d1.00_w1.00_r1.00", "baseline", (1.0, 1.0, 1.0), 0.6)
    _record(store, "d1.20_w1.10_r1.15", "candidate", (1.2, 1.1, 1.15), None)
    with pytest.raises(RunFailed, match="every candidate failed, only the baseline trained"):
        _summarise(tmp_path)
    assert not (tmp_path / "coefficients.yaml").exists()


def test_the_verdict_says_what_the_winner_was_chosen_among(tmp_path):
    store = TrialStore(tmp_path)
    _record(store, "d1.00_w1.00_r1.00", "baseline", (1.0, 1.0, 1.0), 0.6)
    _record(store, "d1.20_w1.10_r1.15", "candidate", (1.2, 1.1, 1.15), None)
    _record(store, "d1.00_w1.10_r1.30", "candidate", (1.0, 1.1, 1.3), 0.7)
    _record(store, "d2.00_w1.00_r1.00", "candidate", (2.0, 1.0, 1.0), 0.65)
    out = io.StringIO()
    outcome = step1.summarise(tmp_path, "resnet18", "digits", Rounding(), (1.0,), 10, out)
    assert outcome.winner["candidate_id"] == "d1.00_w1.10_r1.30"
    assert ("1 of 3 candidates failed in every seed (d1.20_w1.10_r1.15); the winner was chosen among "
            "the other 2") in out.getvalue()


def test_a_run_folder_inside_the_data_folder_is_refused(tmp_path):
    """It used to be read as a class on the next run: its plots became training images."""
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    inside = tmp_path / "imgs" / "run"
    settings = compose_grid(tmp_path, *TINY, "data=imagefolder", f"data.root={tmp_path / 'imgs'}",
                            "runner=local", f"out_dir={inside}")
    with pytest.raises(ValueError, match="lies inside data.root .*choose an out_dir outside the data folder"):
        step1.run_search(settings, io.StringIO())
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["cat", "dog"]
    with pytest.raises(ValueError, match="data.root .* lies inside out_dir"):
        check_apart(tmp_path, str(tmp_path / "imgs"))
    check_apart(tmp_path / "elsewhere", str(tmp_path / "imgs"))  # apart: fine


def test_a_damaged_file_in_a_run_folder_is_named_with_what_to_do(tmp_path):
    """A cut-off search.json or trial record used to give only the parser's message."""
    run = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search")
    with run:
        run.open({}, None, None)
    (tmp_path / "run" / "search.json").write_text('{"backbone": "res')
    with pytest.raises(ValueError, match=r"run/search.json is damaged .*delete that folder to start the run anew"):
        run.check()
    store = TrialStore(tmp_path / "run")
    _record(store, "d1.00_w1.00_r1.00", "baseline", (1.0, 1.0, 1.0), 0.5)
    (store.dir / "t_d1.00_w1.00_r1.00_s0.json").write_text('{"spec": {"trial_id": "t"')
    with pytest.raises(ValueError, match=r"trial record .*t_d1.00_w1.00_r1.00_s0.json is damaged .*delete it"):
        store.load()


def _tree(folder) -> dict:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_a_users_folder_is_never_written_into(tmp_path):
    """A folder of a user's own files used to get a search's files beside them."""
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "thesis.tex").write_text("chapter 1\n")
    (mine / "notes" / "a.txt").write_text("a\n")
    before = _tree(mine)
    settings = compose_grid(tmp_path, *TINY, "runner=local", f"out_dir={mine}")
    with pytest.raises(ValueError, match=r"'.*/mine' holds files that no search wrote \(notes, thesis.tex\); "
                                         "a run writes only into a new or empty folder"):
        step1.run_search(settings, io.StringIO())
    assert _tree(mine) == before


def test_a_run_of_another_kind_is_not_resumed(tmp_path):
    grid_run = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search", step1.OUTPUTS)
    with grid_run:
        grid_run.open({}, None, None)
    before = _tree(tmp_path / "run")
    step2_run = RunFolder(tmp_path / "run", "step2.json", {"backbone": "resnet18"}, "Step-2 run")
    with pytest.raises(ValueError, match=r"holds files that no Step-2 run wrote \(search.json\)"):
        step2_run.check()
    assert _tree(tmp_path / "run") == before


def test_a_run_killed_before_it_wrote_its_identity_is_resumed(tmp_path):
    """Killed between taking the lock and writing search.json (or mid-way through an atomic
    write): what it left is the run's own, so the same command takes the folder over."""
    run_dir = tmp_path / "run"
    (run_dir / "trials").mkdir(parents=True)
    (run_dir / ".lock").touch()
    (run_dir / ".lock.json").write_text('{"pid": 4194999, "host": "gone", "started": "2026-01-01T00:00:00+00:00"}')
    (run_dir / ".search.json.k3j9x.tmp").write_text('{"back')
    (run_dir / ".step2.x81q.staging").mkdir()
    (run_dir / ".hydra").mkdir()  # Hydra's own, where hydra.run.dir is the out_dir
    run = RunFolder(run_dir, "search.json", {"backbone": "resnet18"}, "search", step1.OUTPUTS)
    run.check()
    said = io.StringIO()
    with run:
        run.open({}, None, None, out=said)
    assert said.getvalue().startswith("took over the lock of pid 4194999 on gone")
    assert json.loads((run_dir / "search.json").read_text()) == {"backbone": "resnet18"}


def test_a_resumed_run_keeps_a_users_file_beside_it(tmp_path):
    """A run folder of its own kind is resumed even where a user put a file in it."""
    run = RunFolder(tmp_path / "run", "search.json", {"backbone": "resnet18"}, "search", step1.OUTPUTS)
    with run:
        run.open({}, None, None)
    (tmp_path / "run" / "my_notes.txt").write_text("lr too high?\n")
    run.check()
    assert (tmp_path / "run" / "my_notes.txt").read_text() == "lr too high?\n"


def _spec(trial: str):
    from scaling_search.models.backbones import get_backbone
    from scaling_search.models.scaling import Coefficients, Multipliers
    from scaling_search.train.trial import TrialSpec

    model = get_backbone("resnet18").scale(Multipliers(0.5, 0.25), Rounding(), 16)
    return TrialSpec.of(trial, "d1.00_w1.00_r1.00", 0, Coefficients(1.0, 1.0, 1.0), model, 16, Rounding(), ())


def test_recording_a_trial_is_idempotent_by_its_id_and_outcome(tmp_path):
    """Recorded once per outcome: again from this driver, or from another that added it meanwhile
    (``known`` is the snapshot a driver took when it started); a failed trial that trains again
    and completes is added beside its failure."""
    from scaling_search.train.study import grid_params, open_study, record_trial, recorded_ids

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    dists = step1.grid_distributions(compose_grid(tmp_path, *TINY).space)
    one, other = open_study(url, "s"), open_study(url, "s")  # two drivers on one study
    spec = _spec("r18_d1.00_w1.00_r1.00_s0")
    ok = {"trial_id": spec.trial_id, "status": "ok", "final_top1": 0.5}
    failed = {"trial_id": spec.trial_id, "status": "failed", "error": "Diverged: loss is nan"}
    history = [{"epoch": 1, "val/top1": 0.5}]
    snapshot = recorded_ids(other)
    assert snapshot == set()

    def add(study, row, known):
        record_trial(study, spec, row, history, grid_params(spec), dists, {}, known)

    def states():
        return [(t.user_attrs["trial_id"], t.state.name) for t in optuna.load_study(study_name="s", storage=url).trials]

    known = recorded_ids(one)
    add(one, failed, known)
    add(one, failed, known)
    add(one, failed, recorded_ids(one))
    assert states() == [(spec.trial_id, "FAIL")]
    add(one, ok, known)  # trained again, and completed
    assert states() == [(spec.trial_id, "FAIL"), (spec.trial_id, "COMPLETE")]
    add(other, ok, snapshot)  # taken before `one` recorded anything
    add(other, failed, snapshot)
    assert states() == [(spec.trial_id, "FAIL"), (spec.trial_id, "COMPLETE")]


def _record_correct(store: TrialStore, cid: str, role: str, coefficients, right: int, of: int = 100):
    """A trial whose final model got the first ``right`` of ``of`` validation images right."""
    import numpy as np

    from scaling_search.train.records import pack_correct

    _record(store, cid, role, coefficients, right / of)
    path = store.dir / f"t_{cid}_s0.json"
    record = json.loads(path.read_text())
    record["row"]["val_correct"] = pack_correct(np.arange(of) < right)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("rule, frozen", [("best", "d1.40_w1.00_r1.20"), ("cheapest_tied", "d2.00_w1.00_r1.00")])
def test_the_tied_set_is_named_and_the_freeze_rule_chooses_within_it(tmp_path, rule, frozen):
    """One seed: paired over 100 validation images. 90 vs 88 right (2 discordant pairs): tied;
    90 vs 70 (20 discordant, McNemar p ~ 2e-6): not. d2 costs fewer MACs than d1.4 x r1.2."""
    store = TrialStore(tmp_path)
    _record_correct(store, "d1.00_w1.00_r1.00", "baseline", (1.0, 1.0, 1.0), 60)
    _record_correct(store, "d1.40_w1.00_r1.20", "candidate", (1.4, 1.0, 1.2), 90)
    _record_correct(store, "d2.00_w1.00_r1.00", "candidate", (2.0, 1.0, 1.0), 88)
    _record_correct(store, "d1.00_w1.40_r1.00", "candidate", (1.0, 1.4, 1.0), 70)
    out = io.StringIO()
    outcome = step1.summarise(tmp_path, "resnet18", "digits", Rounding(), (1.0,), 10, out, freeze=rule)
    text = out.getvalue()
    assert outcome.winner["candidate_id"] == frozen
    assert ("tied with the best at 95% (paired over 100 images): 2 of 3 candidates: "
            "d1.40_w1.00_r1.20, d2.00_w1.00_r1.00") in text
    assert ": significant)" in text  # 90 or 88 of 100 against the baseline's 60
    ranking = __import__("pandas").read_csv(tmp_path / "ranking.csv").set_index("candidate_id")
    assert ranking["tied_with_best"].to_dict() == {"d1.40_w1.00_r1.20": True, "d2.00_w1.00_r1.00": True,
                                                   "d1.00_w1.40_r1.00": False, "d1.00_w1.00_r1.00": False}
    header = (tmp_path / "coefficients.yaml").read_text()
    assert f"# freeze rule: {rule}" in header and "tied with the best at 95% (2 of 3)" in header
    assert ranking["frozen"].to_dict() == {c: c == frozen for c in ranking.index}
    (tmp_path / "search.json").write_text("{}")
    page = __import__("scaling_search.analysis.report", fromlist=["grid_page"]).grid_page(tmp_path)
    coefs = {"d1.40_w1.00_r1.20": "1.4, 1, 1.2", "d2.00_w1.00_r1.00": "2, 1, 1"}[frozen]
    assert dict(page.summary)["winner (α, β, γ)"].startswith(f"{coefs}: top-1")  # the report shows the frozen one


def test_a_best_apart_from_every_other_candidate_is_named_alone(tmp_path):
    """90 of 100 against 70 and 60 (20 and 30 discordant pairs, all one way): nothing ties."""
    store = TrialStore(tmp_path)
    _record_correct(store, "d1.40_w1.00_r1.20", "candidate", (1.4, 1.0, 1.2), 90)
    _record_correct(store, "d2.00_w1.00_r1.00", "candidate", (2.0, 1.0, 1.0), 70)
    _record_correct(store, "d1.00_w1.40_r1.00", "candidate", (1.0, 1.4, 1.0), 60)
    out = io.StringIO()
    step1.summarise(tmp_path, "resnet18", "digits", Rounding(), (1.0,), 10, out)
    assert ("tied with the best at 95% (paired over 100 images): none; d1.40_w1.00_r1.20 is apart from "
            "the other 2 candidates") in out.getvalue()


def test_a_proxy_that_cannot_separate_the_candidates_says_so(tmp_path):
    store = TrialStore(tmp_path)
    _record_correct(store, "d1.40_w1.00_r1.20", "candidate", (1.4, 1.0, 1.2), 90)
    _record_correct(store, "d2.00_w1.00_r1.00", "candidate", (2.0, 1.0, 1.0), 89)
    out = io.StringIO()
    step1.summarise(tmp_path, "resnet18", "digits", Rounding(), (1.0,), 10, out)
    assert "2 of 2 candidates" in out.getvalue() and "the proxy cannot separate the candidates" in out.getvalue()


def _member(store: TrialStore, role: str, phi: float, macs: int, right: int, seed: int = 0, of: int = 200):
    """A Step-2 trial whose final model got the first ``right`` of ``of`` validation images right."""
    import numpy as np

    from scaling_search.train.records import pack_correct

    cid = f"{role}_phi{phi:g}"
    spec = {"trial_id": f"t_{cid}_s{seed}", "candidate_id": cid, "seed": seed}
    columns = {"role": role, "phi": phi, "depth_scale": 1.0, "width_scale": 1.0, "resolution_scale": 1.0,
               "resolution_px": 32, "params": 1000, "macs": macs, "activations": 10, "macs_ratio": 1.0,
               "target_macs": macs, "macs_mismatch": 0.0, "depth_mult": 1.0, "width_mult": 1.0,
               "resolution_mult": 1.0}
    row = {"trial_id": spec["trial_id"], "status": "ok", "error": "", "final_top1": right / of,
           "best_top1": right / of, "val_correct": pack_correct(np.arange(of) < right)}
    store.save(spec, row, [], columns)


def test_step2_verdicts_are_paired_and_flag_unmatched_macs(tmp_path):
    """One seed, 200 validation images. Compound gets 190 right; depth 150 (40 discordant images,
    all compound's: McNemar p = 2 * 0.5^40); resolution 188 (2 discordant: tied) but at 11.6%
    more MACs, beyond the 5% tolerance. The p-value and interval come from scipy, not the code."""
    from scipy import stats

    from scaling_search.steps import step2

    store = TrialStore(tmp_path)
    _member(store, "compound", 0, 1_000_000, 170)
    _member(store, "compound", 1, 2_000_000, 190)
    _member(store, "depth", 1, 2_020_000, 150)
    _member(store, "resolution", 1, 2_232_000, 188)
    out = io.StringIO()
    outcome = step2.summarise(tmp_path, out, macs_tolerance=0.05)
    v = outcome.verdicts.set_index("rule")
    assert list(v.index) == ["depth", "resolution"] and list(v["verdict"]) == ["beats", "ties"]
    assert v.loc["depth", "diff"] == pytest.approx(0.2)
    assert v.loc["depth", "p_mcnemar"] == pytest.approx(stats.binomtest(40, 40, 0.5).pvalue)
    ci = stats.binomtest(2, 2, 0.5).proportion_ci(0.95, method="exact")  # resolution: 2 discordant
    assert (v.loc["resolution", "diff_lo"], v.loc["resolution", "diff_hi"]) == pytest.approx(
        (2 / 200 * (2 * ci.low - 1), 2 / 200 * (2 * ci.high - 1)))
    assert list(v["macs_flag"]) == [False, True] and v.loc["resolution", "macs_mismatch"] == pytest.approx(0.116)
    text = out.getvalue()
    assert "phi=1: compound (top-1 0.9500) beats depth (0.7500) by +0.2000, 95% interval" in text
    assert "over 200 images, at matched MACs (+1.0%)" in text
    assert ("ties with resolution (0.9400): +0.0100, 95% interval" in text
            and "at MACs +11.6% apart, beyond the 5% tolerance: not a matched comparison" in text)
    assert "1 of 2 verdicts compare networks whose MACs differ by more than 5%" in text
    written = __import__("pandas").read_csv(tmp_path / "verdicts.csv")
    assert list(written["verdict"]) == ["beats", "ties"] and list(written["macs_flag"]) == [False, True]
    # a wider tolerance matches them; several seeds pair over the seeds instead of the images
    assert not step2.summarise(tmp_path, io.StringIO(), macs_tolerance=0.2).verdicts["macs_flag"].any()
    for seed, (c, d) in enumerate([(180, 150), (185, 160)], start=1):
        _member(store, "compound", 1, 2_000_000, c, seed)
        _member(store, "depth", 1, 2_020_000, d, seed)
    v = step2.summarise(tmp_path, io.StringIO()).verdicts.set_index("rule")
    diffs = [0.2, 0.15, 0.125]
    lo, hi = stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=stats.sem(diffs))
    assert v.loc["depth", "paired_by"] == "3 seeds" and v.loc["depth", "verdict"] == "beats"
    assert (v.loc["depth", "diff_lo"], v.loc["depth", "diff_hi"]) == pytest.approx((lo, hi))
    assert v.loc["resolution", "verdict"] == "ties"  # still one common seed: over its images


def _folder(root, per_class, shade=0):
    from PIL import Image

    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (40 * i + shade, 100 if c == "cat" else 0, 0)).save(root / c / f"{i}.png")


@pytest.mark.slow  # two small searches in-process
def test_a_resume_on_other_data_is_refused_naming_both(tmp_path, monkeypatch):
    """Images added to the folder, or a relative data.root that names another folder from another
    working directory: the run was trained on other contents, and a resume would mix them."""
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    _folder(tmp_path / "a" / "imgs", 4)
    out = tmp_path / "run"
    args = (*TINY, "trainer.epochs=1", "data=imagefolder", "data.root=imgs", "runner=local",
            f"data.cache_dir={tmp_path / 'cache'}", "report=false", f"out_dir={out}")
    step1.run_search(compose_grid(tmp_path, *args), io.StringIO())
    pin = json.loads((out / "data.json").read_text())
    assert pin["root"] == str(tmp_path / "a" / "imgs") and pin["images"] == 8
    step1.run_search(compose_grid(tmp_path, *args), io.StringIO())  # the same data: a resume is fine
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    _folder(tmp_path / "b" / "imgs", 4, shade=7)  # the same relative path, elsewhere
    monkeypatch.chdir(tmp_path / "b")
    import re

    want = (f"{out} was trained on {tmp_path / 'a' / 'imgs'} (8 images), but this run's data is "
            f"{tmp_path / 'b' / 'imgs'} (8 images), with other contents")
    with pytest.raises(ValueError, match=re.escape(want)):
        step1.run_search(compose_grid(tmp_path, *args), io.StringIO())
    monkeypatch.chdir(tmp_path / "a")
    _folder(tmp_path / "a" / "imgs", 6)  # two more images per class
    with pytest.raises(ValueError, match=r"\(8 images\), but this run's data is .*\(12 images\)"):
        step1.run_search(compose_grid(tmp_path, *args), io.StringIO())
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == kept  # nothing rewritten


def test_a_run_made_before_a_speed_switch_existed_still_resumes(tmp_path):
    """The trainer's speed switches (threads, graphs, cuDNN's autotuner, the GPU's layout) decide
    how fast a trial runs, not what it computes: an identity written with some of them, at any
    depth (a fidelity run holds its search's), matches one without; any other trainer key counts."""
    from scaling_search.train.execution import check_identity, trainer_identity
    from scaling_search.train.trainer import TrainSettings

    old = {"trainer": {"lr": 0.1, "cudnn_benchmark": True, "cuda_graphs": True},
           "search": {"trainer": {"lr": 0.1, "num_threads": 4}}}
    (tmp_path / "search.json").write_text(json.dumps(old))
    check_identity(tmp_path, "search.json", {"trainer": {"lr": 0.1}, "search": {"trainer": {"lr": 0.1}}})
    with pytest.raises(ValueError, match="holds a search with different trainer"):
        check_identity(tmp_path, "search.json", {"trainer": {"lr": 0.2}, "search": {"trainer": {"lr": 0.1}}})
    assert not {"num_threads", "cudnn_benchmark", "cuda_channels_last"} & set(trainer_identity(TrainSettings()))
    assert "channels_last" in trainer_identity(TrainSettings())  # the CPU's layout changes its kernels' sums
