"""Bad input to the three apps, in one table: each row is refused before any work with one line
``prog: error: ...`` naming what is wrong, exit status 2, no traceback, and the scratch folder
(the out_dir, the run folder a report reads) exactly as it was before.

The grid and scale rows run the apps' preflight in this process (what ``python -m`` runs before
Hydra starts: it composes every job's config and checks it), the report rows its ``main``; a
handful at the end run as real subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from scaling_search import grid, scale
from scaling_search.analysis.results import RESULT_COLUMNS
from scaling_search.cli import preflight
from scaling_search.report import main as report_main
from scaling_search.steps.pipeline import collect
from scaling_search.train.records import TrialStore

GRID, SCALE, REPORT = "grid", "scale", "report"
APPS = {GRID: grid, SCALE: scale}
TINY_GRID = ("backbone=resnet18", "proxy.depth_mult=0.5", "proxy.width_mult=0.25", "proxy.resolution_px=16",
             "space=coarse", "space.tolerance=0.02")

ROWS = [
    # --- grid: Hydra's own syntax, checked before Hydra starts
    (GRID, ["out_dir={tmp}/r${hydra:job.nothere}"], "${hydra:job.nothere} names no Hydra setting with a value; fix"),
    (GRID, ["out_dir={tmp}/r${hydra:job.num}"], "${hydra:job.num} names no Hydra setting with a value (it is set "
                                                "only in a --multirun)"),
    (GRID, ["--multirun", "trainer.epochs=1,0", "out_dir={tmp}/r${hydra:job.num}"],
     "trainer.epochs must be a positive integer, got 0"),
    (GRID, ["seed=0,1"], "seed=0,1 is a sweep (one job per value), which needs --multirun: add --multirun"),
    (GRID, ["racing.enabled=true", "racing.budget_train_macs=1", "seeds_per_candidate=3"],
     "racing.budget_train_macs=1 is less than the race's first round, which always runs"),
    (SCALE, ["train=true", "baselines=[fast,d1_w8_r1]"],
     "baselines fast and d1_w8_r1 are the same rule (depth, width, resolution shares 0.1, 0.8, 0.1)"),
    # --- grid: the size of the grid, counted before it is enumerated
    (GRID, ["space.step=0.0001"], "10,001 x 5,001 x 5,001 = 250,125,020,001 points"),
    (GRID, ["space.step=0.01"], "101 x 51 x 51 = 262,701 points (alpha x beta x gamma), over the limit of 100,000"),
    (GRID, ["space.step=1e-300"], "over the limit of 100,000; use a coarser space.step"),
    (GRID, ["space.depth_range=[1,1000]"], "space.step=0.1 makes a grid of 9,991 x 6 x 6 = 359,676 points"),
    (GRID, ["space.step=0"], "space.step must be > 0"),
    (GRID, ["space.step=-0.1"], "space.step must be > 0"),
    (GRID, ["space.step=inf"], "space.step must be a number, got inf"),
    (GRID, ["space.step=nan"], "space.step must be a number, got nan"),
    (GRID, ["space.target=inf"], "space.target must be a number, got inf"),
    (GRID, ["space.tolerance=-1"], "space.tolerance must be >= 0"),
    (GRID, ["space.depth_range=[2,1]"], "space.depth_range must satisfy 1 <= low <= high"),
    (GRID, ["space.width_range=[0.5,1.5]"], "space.width_range must satisfy 1 <= low <= high"),
    (GRID, ["space.resolution_range=[1]"], "space.resolution_range must be [low, high]"),
    (GRID, ["space.filter_on=exact"], "space.filter_on must be 'formula' or 'measured'"),
    # --- grid: how far a candidate or the winner's emitted family may grow
    (GRID, ["space.depth_range=[1,2000]", "space.step=100", "space.target=1000", "space.tolerance=10",
            "proxy.depth_mult=1"],
     "space: at phi=1 the depth grows by 1010^1 = 1.01e+03x, over the limit of 1,000x"),
    (GRID, ["emit.phis=[100]"], "emit.phis: at phi=100 the depth grows by 2^100 = 1.27e+30x"),
    (GRID, ["emit.phis=[1,12]"], "at phi=12 the depth grows by 2^12 = 4.1e+03x, over the limit of 1,000x; the winner's "
                                     "coefficients may reach the top of the space's ranges: keep emit.phis <= 9.97"),
    (GRID, ["emit.phis=[inf]"], "emit.phis must be finite numbers, got inf"),
    (GRID, ["emit.phis=[]"], "emit.phis must be a non-empty list of numbers"),
    (GRID, ["emit.num_classes=0"], "emit.num_classes must be a positive integer"),
    (GRID, ["proxy.depth_mult=0"], "proxy.depth_mult must be a number > 0, got 0.0"),
    (GRID, ["proxy.depth_mult=inf"], "proxy.depth_mult must be a finite number > 0, got inf"),
    (GRID, ["proxy.width_mult=nan"], "proxy.width_mult must be a finite number > 0, got nan"),
    (GRID, ["proxy.width_mult=5000"], "proxy.width_mult must be at most 1,000"),
    (GRID, ["proxy.resolution_px=0"], "proxy.resolution_px must be a positive integer"),
    # --- grid: numbers finite and in range
    (GRID, ["trainer.lr=inf"], "trainer.lr must be a finite number > 0, got inf"),
    (GRID, ["trainer.lr=nan"], "trainer.lr must be a finite number > 0, got nan"),
    (GRID, ["trainer.lr=0"], "trainer.lr must be a number > 0, got 0.0"),
    (GRID, ["trainer.lr=-0.1"], "trainer.lr must be a number > 0, got -0.1"),
    (GRID, ["trainer.momentum=-1"], "trainer.momentum must be a number in [0, 1), got -1.0"),
    (GRID, ["trainer.momentum=1"], "trainer.momentum must be a number in [0, 1), got 1.0"),
    (GRID, ["trainer.momentum=nan"], "trainer.momentum must be a finite number in [0, 1)"),
    (GRID, ["trainer.weight_decay=inf"], "trainer.weight_decay must be a finite number >= 0, got inf"),
    (GRID, ["trainer.weight_decay=-1e-4"], "trainer.weight_decay must be a number >= 0"),
    (GRID, ["trainer.warmup_epochs=-1"], "trainer.warmup_epochs must be a number >= 0, got -1.0"),
    (GRID, ["trainer.warmup_epochs=inf"], "trainer.warmup_epochs must be a finite number >= 0"),
    (GRID, ["trainer.label_smoothing=1"], "trainer.label_smoothing must be a number in [0, 1)"),
    (GRID, ["trainer.label_smoothing=nan"], "trainer.label_smoothing must be a finite number in [0, 1)"),
    (GRID, ["trainer.epochs=0"], "trainer.epochs must be a positive integer"),
    (GRID, ["trainer.epochs=-3"], "trainer.epochs must be a positive integer"),
    (GRID, ["trainer.batch_size=0"], "trainer.batch_size must be a positive integer"),
    (GRID, ["trainer.eval_batch_size=0"], "trainer.eval_batch_size must be a positive integer"),
    (GRID, ["trainer.num_threads=0"], "trainer.num_threads must be a positive integer"),
    (GRID, ["trainer.epochs=1.5"], "trainer.epochs: Value '1.5' of type 'float' could not be converted"),
    (GRID, ["trainer.optimizer=adam"], "trainer.optimizer must be sgd, adamw or rmsprop"),
    (GRID, ["trainer.lr_schedule=step"], "trainer.lr_schedule must be cosine or constant"),
    (GRID, ["trainer.device=tpu"], "trainer.device must be auto, cpu or cuda"),
    (GRID, ["data.val_fraction=1"], "data.val_fraction must be a number in (0, 1), got 1.0"),
    (GRID, ["data.val_fraction=0"], "data.val_fraction must be a number in (0, 1), got 0.0"),
    (GRID, ["data.val_fraction=nan"], "data.val_fraction must be a finite number in (0, 1)"),
    (GRID, ["data.val_fraction=-0.2"], "data.val_fraction must be a number in (0, 1)"),
    (GRID, ["data.split_seed=-1"], "data.split_seed must be an integer in [0, 4294967295], got -1"),
    (GRID, ["data.split_seed=4294967296"], "data.split_seed must be an integer in [0, 4294967295]"),
    (GRID, ["data.num_images=0"], "data.num_images must be a positive integer"),
    (GRID, ["data.image_px=0"], "data.image_px must be a positive integer"),
    (GRID, ["data.name=imagenet"], "data.name 'imagenet' is unknown"),
    (GRID, ["data=cifar10"], "data.root must name the folder holding cifar10"),
    (GRID, ["seed=-1"], "seed must be an integer >= 0, got -1"),
    (GRID, ["seed=4294967295", "seeds_per_candidate=2"], "goes past 4,294,967,295, the largest 32-bit seed"),
    (GRID, ["seed=abc"], "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (GRID, ["seeds_per_candidate=0"], "seeds_per_candidate must be a positive integer"),
    (GRID, ["freeze=luckiest"], "freeze must be best or cheapest_tied (the best mean top-1, or the fewest MACs "
                                "among those tied with it), got 'luckiest'"),
    (GRID, ["racing.enabled=true"], "racing.enabled=true adds seeds up to seeds_per_candidate (the seed budget), "
                                     "which is 1; set seeds_per_candidate=3 (or more)"),
    (GRID, ["racing.enabled=true", "seeds_per_candidate=3", "runner=optuna_tpe"],
     "racing.enabled=true races a grid's candidates over seeds, and runner=optuna_tpe samples its own"),
    (GRID, ["racing.budget_train_macs=-1"], "racing.budget_train_macs must be a number > 0, got -1.0"),
    (GRID, ["racing.budget_train_macs=nan"], "racing.budget_train_macs must be a finite number > 0"),
    (GRID, ["racing.enabled=sometimes"], "racing.enabled must be true or false, got 'sometimes'"),
    (GRID, ["data.mode=disk"], "data.mode must be auto, memory or stream, got 'disk'"),
    (GRID, ["data.transforms=crop"], "data.transforms=crop needs data=imagefolder"),
    (GRID, ["data=imagefolder", "data.root=/nonexistent/imgs"], "is not a folder"),
    (GRID, ["seeds_per_candidate=1000000"], "seeds_per_candidate must be at most 1,000, got 1000000"),
    # --- grid: booleans are booleans (OmegaConf alone reads any integer as one)
    (GRID, ["dry_run=maybe"], "dry_run must be true or false, got 'maybe'"),
    (GRID, ["dry_run=2"], "dry_run must be true or false, got 2"),
    (GRID, ["dry_run=-1"], "dry_run must be true or false, got -1"),
    (GRID, ["include_baseline=maybe"], "include_baseline must be true or false, got 'maybe'"),
    (GRID, ["include_baseline=0.5"], "include_baseline must be true or false, got 0.5"),
    (GRID, ["report=sure"], "report must be true or false, got 'sure'"),
    (GRID, ["trainer.amp=2"], "trainer.amp must be true or false, got 2"),
    (GRID, ["data.flip=perhaps"], "data.flip must be true or false, got 'perhaps'"),
    (GRID, ["runner.asha=3"], "runner.asha must be true or false, got 3"),
    (GRID, ["runner.checkpoint=null"], "runner.checkpoint must be true or false, got None"),
    # --- grid: the runner
    (GRID, ["runner.cpus_per_trial=0"], "runner.cpus_per_trial must be a number > 0"),
    (GRID, ["runner.cpus_per_trial=inf"], "runner.cpus_per_trial must be a finite number > 0"),
    (GRID, ["runner.num_cpus=2", "runner.cpus_per_trial=3"],
     "runner.cpus_per_trial=3 but the local Ray has 2 CPUs; set runner.cpus_per_trial to at most 2"),
    (GRID, ["runner.gpus_per_trial=nan"], "runner.gpus_per_trial must be a finite number >= 0 (or null), got nan"),
    (GRID, ["runner.gpus_per_trial=inf"], "runner.gpus_per_trial must be a finite number >= 0 (or null), got inf"),
    (GRID, ["runner.gpus_per_trial=-1"], "runner.gpus_per_trial must be a number >= 0 (or null)"),
    (GRID, ["runner.gpus_per_trial=1.5"], "runner.gpus_per_trial above 1 must be whole"),
    (GRID, ["runner.max_concurrent=0"], "runner.max_concurrent must be a positive integer"),
    (GRID, ["runner.num_cpus=0"], "runner.num_cpus must be a positive integer"),
    (GRID, ["runner.reduction_factor=1"], "runner.reduction_factor must be >= 2"),
    (GRID, ["runner.grace_period=0"], "runner.grace_period must be a positive integer"),
    (GRID, ["runner.kind=slurm"], "runner.kind must be ray, local or optuna_tpe"),
    (GRID, ["runner=optuna_tpe", "runner.n_trials=0"], "runner.n_trials must be a positive integer"),
    (GRID, ["runner=optuna_tpe", "runner.executor=slurm"], "runner.executor must be ray or local"),
    # --- grid: the output folder
    (GRID, ["out_dir={tmp}/notes.txt"], "notes.txt' is a file, not a folder"),
    (GRID, ["out_dir={tmp}/notes.txt/run"], "cannot be created: '{tmp}/notes.txt' is a file"),
    (GRID, ["out_dir=/proc/self/run"], "is not writable by this user"),
    (GRID, ["out_dir="], "out_dir must be a folder path"),
    # --- grid: a folder that is not its own run is never written into (a user's, another kind's)
    (GRID, ["out_dir={tmp}/my_files"], "out_dir '{tmp}/my_files' holds files that no search wrote (data.csv, "
                                       "thesis.tex); a run writes only into a new or empty folder, or resumes its "
                                       "own: choose a new or empty out_dir"),
    (GRID, ["out_dir={tmp}/many_files"], "holds files that no search wrote (a0.txt, a1.txt, a2.txt, a3.txt, a4.txt, "
                                         "... (7 in all))"),
    (GRID, ["out_dir={tmp}/step2_results_cut_between_rows"],
     "holds files that no search wrote (family.csv, step2.json)"),
    (GRID, ["out_dir={tmp}/family_summary_ragged"], "holds files that no search wrote (summary.csv)"),
    (GRID, ["out_dir={tmp}/grid_search_json_cut"], "grid_search_json_cut/search.json is damaged"),
    (GRID, ["--multirun", "seed=0,1", "out_dir={tmp}/run,{tmp}/my_files"],
     "my_files' holds files that no search wrote"),
    # --- grid: the run folder and the data apart, in every job of a sweep
    (GRID, ["data=imagefolder", "data.root={tmp}/imgs", "out_dir={tmp}/imgs/run"],
     "out_dir '{tmp}/imgs/run' lies inside data.root '{tmp}/imgs': its files would be read as images of a class"),
    (GRID, ["data=imagefolder", "data.root={tmp}/imgs", "out_dir={tmp}"], "data.root '{tmp}/imgs' lies inside out_dir"),
    (GRID, ["--multirun", "data=imagefolder", "data.root={tmp}/imgs", "out_dir={tmp}/run,{tmp}/imgs/cat/run"],
     "out_dir '{tmp}/imgs/cat/run' lies inside data.root"),
    (GRID, ["--multirun", "data=digits,imagefolder", "data.root={tmp}/imgs", "out_dir={tmp}/imgs/run"],
     "lies inside data.root"),
    # --- grid: names, keys and sweeps
    (GRID, ["backbone.name=nope"], "unknown backbone 'nope'"),
    (GRID, ["backbone=nope"], "Could not find 'backbone/nope'"),
    (GRID, ["imports=[no_such_module_xyz]"], "no_such_module_xyz"),
    (GRID, ["study.storage=optuna.db"], "study.storage must be an SQLAlchemy URL"),
    (GRID, ["+foo=1"], "Key 'foo' not in 'GridConfig'"),
    (GRID, ["trainer.foo=1"], "Could not override 'trainer.foo'"),
    (GRID, ["rounding.channel_divisor=0"], "rounding.channel_divisor must be a positive integer"),
    (GRID, ["--multirun", "seed=0,-1"], "seed must be an integer >= 0, got -1"),
    (GRID, ["--multirun", "dry_run=true,2"], "dry_run must be true or false, got 2"),
    (GRID, ["--multirun", "trainer.lr=0.1,inf"], "trainer.lr must be a finite number > 0, got inf"),
    # --- scale: the range of phi, bounded by how far each dimension grows
    (SCALE, ["phis=[100]"], "phis: at phi=100 the depth grows by 1.2^100 = 8.28e+07x, over the limit of 1,000x; "
                            "keep phis <= 37.9 with these coefficients"),
    (SCALE, ["phis=[1e10]"], "the depth grows by 1.2^1e+10 = about 10^791812460x"),
    (GRID, ["data.num_images=1", "dry_run=true"], "digits with data.num_images=1 and data.val_fraction=0.2 "
                                                  "leaves 0 training and 1 validation images"),
    (GRID, ["runner.asha=true", "runner.grace_period=5", "trainer.epochs=2"],
     "runner.grace_period=5 with trainer.epochs=2: ASHA stops no trial before its grace period ends"),
    (SCALE, ["phis=[1,1.0000000001]"], "phis lists phi=1.0 and phi=1.0000000001, which name the same member (phi1)"),
    (SCALE, ["phis=[2,2]"], "phis lists phi=2.0 and phi=2.0, which name the same member (phi2)"),
    (GRID, ["emit.phis=[1,1]"], "emit.phis lists phi=1.0 and phi=1.0, which name the same member (phi1)"),
    (SCALE, ["phis=[1e308]"], "over the limit of 1,000x"),
    (SCALE, ["phis=[1,38]"], "at phi=38 the depth grows by 1.2^38 = 1.02e+03x"),
    (SCALE, ["phis=[inf]"], "phis must be finite numbers, got inf"),
    (SCALE, ["phis=[-inf]"], "phis must be finite numbers, got -inf"),
    (SCALE, ["phis=[nan]"], "phis must be finite numbers, got nan"),
    (SCALE, ["phis=[]"], "phis must be a non-empty list of numbers"),
    (SCALE, ["coefficients.depth_coef=2", "coefficients.width_coef=1", "coefficients.resolution_coef=1",
             "phis=[11]"], "the depth grows by 2^11 = 2.05e+03x"),
    (SCALE, ["constraint.tolerance=null", "coefficients.width_coef=100", "phis=[2]"],
     "at phi=2 the width grows by 100^2 = 1e+04x"),
    (SCALE, ["base.depth_mult=500", "phis=[5]"], "the depth grows by 500 x 1.2^5 = 1.24e+03x"),
    # alpha*beta^2*gamma^2 = 1.2*1.1^2*1.15^2 = 1.92027: a baseline along one dimension matched to
    # the compound member's MACs grows its depth by 1.92027^phi, its width or pixels by 1.38574^phi
    (SCALE, ["train=true", "phis=[12]"], "the depth of the depth-only baseline grows by 1.92027^12 = 2.51e+03x, "
                                         "over the limit of 1,000x; keep phis <= 10.6"),
    (SCALE, ["train=true", "baselines=[width]", "phis=[25]"],
     "the width of the width-only baseline grows by 1.38574^25 = 3.48e+03x"),
    (SCALE, ["dry_run=true", "baselines=[resolution]", "phis=[25]"],
     "the resolution of the resolution-only baseline grows by 1.38574^25"),
    # --- scale: numbers finite and in range
    (SCALE, ["base.depth_mult=0"], "base.depth_mult must be a number > 0"),
    (SCALE, ["base.depth_mult=inf"], "base.depth_mult must be a finite number > 0, got inf"),
    (SCALE, ["base.width_mult=nan"], "base.width_mult must be a finite number > 0, got nan"),
    (SCALE, ["base.width_mult=2000"], "base.width_mult must be at most 1,000"),
    (SCALE, ["resolution_px=0"], "resolution_px must be a positive integer"),
    (SCALE, ["num_classes=0"], "num_classes must be a positive integer"),
    (SCALE, ["num_classes=ten"], "num_classes: Value 'ten' of type 'str' could not be converted to Integer"),
    (SCALE, ["coefficients.depth_coef=0.9"], "coefficients.depth_coef must be >= 1"),
    (SCALE, ["coefficients.width_coef=nan"], "coefficients.width_coef must be finite"),
    (SCALE, ["coefficients.resolution_coef=inf"], "coefficients.resolution_coef must be finite"),
    (SCALE, ["constraint.target=inf"], "constraint.target must be a finite number >= 0, got inf"),
    (SCALE, ["constraint.tolerance=nan"], "constraint.tolerance must be a finite number >= 0, got nan"),
    (SCALE, ["constraint.tolerance=-1"], "constraint.tolerance must be a number >= 0"),
    (SCALE, ["coefficients_file={tmp}/nothing.yaml"], "nothing.yaml' does not exist"),
    (SCALE, ["coefficients_file={tmp}/notes.txt"], "must hold exactly depth_coef, width_coef, resolution_coef"),
    (SCALE, ["coefficients_file={tmp}/broken.yaml"], "broken.yaml' is not valid YAML"),
    (SCALE, ["coefficients_file={tmp}/twice.yaml"], "twice.yaml' is not valid YAML (depth_coef is given twice)"),
    (SCALE, ["coefficients_file={tmp}/resnet_run"], "was found by a resnet18 search, and this run scales "
                                                    "efficientnet_b0: give backbone=resnet18, or copy its three"),
    (SCALE, ["coefficients_file={tmp}/resnet_run", "coefficients.depth_coef=1.5"],
     "coefficients.* and coefficients_file are both given"),
    (SCALE, ["train=true", "seeds_per_member=0"], "seeds_per_member must be a positive integer"),
    (SCALE, ["train=true", "seeds_per_member=5000"], "seeds_per_member must be at most 1,000"),
    (SCALE, ["train=true", "macs_tolerance=0"], "macs_tolerance must be a fraction between 0 and 1"),
    (SCALE, ["train=true", "macs_tolerance=nan"], "macs_tolerance must be a fraction between 0 and 1"),
    (SCALE, ["train=true", "seed=-1"], "seed must be an integer >= 0, got -1"),
    (SCALE, ["train=true", "trainer.lr=inf"], "trainer.lr must be a finite number > 0, got inf"),
    (SCALE, ["train=true", "trainer.momentum=1.5"], "trainer.momentum must be a number in [0, 1), got 1.5"),
    (SCALE, ["train=true", "data.val_fraction=1"], "data.val_fraction must be a number in (0, 1)"),
    (SCALE, ["train=true", "runner.gpus_per_trial=inf"], "runner.gpus_per_trial must be a finite number"),
    (SCALE, ["train=true", "runner.kind=optuna_tpe"], "runner.kind must be ray or local for Step 2"),
    (SCALE, ["train=true", "baselines=[height]"], "baselines must be a list drawn from"),
    # --- scale: booleans, the output folder, names
    (SCALE, ["train=maybe"], "train must be true or false, got 'maybe'"),
    (SCALE, ["train=2"], "train must be true or false, got 2"),
    (SCALE, ["compare_published=perhaps"], "compare_published must be true or false, got 'perhaps'"),
    (SCALE, ["dry_run=3"], "dry_run must be true or false, got 3"),
    (SCALE, ["out_dir={tmp}/notes.txt"], "notes.txt' is a file, not a folder"),
    (SCALE, ["out_dir={tmp}/notes.txt/family"], "cannot be created: '{tmp}/notes.txt' is a file"),
    (SCALE, ["out_dir=/proc/self/family"], "is not writable by this user"),
    (SCALE, ["train=true", "out_dir={tmp}/notes.txt"], "notes.txt' is a file, not a folder"),
    (SCALE, ["train=true", "out_dir=/proc/self/run"], "is not writable by this user"),
    (SCALE, ["train=true", "out_dir={tmp}/my_files"], "holds files that no Step-2 run wrote (data.csv, thesis.tex)"),
    (SCALE, ["train=true", "out_dir={tmp}/grid_results_ragged"], "holds files that no Step-2 run wrote (search.json)"),
    (SCALE, ["train=true", "out_dir={tmp}/step2_json_cut"], "step2_json_cut/step2.json is damaged"),
    (SCALE, ["train=true", "data=imagefolder", "data.root={tmp}/imgs", "out_dir={tmp}/imgs/run"],
     "lies inside data.root '{tmp}/imgs'"),
    (SCALE, ["--multirun", "train=true", "phis=[1]", "seed=0,1", "out_dir={tmp}/run,{tmp}/my_files"],
     "my_files' holds files that no Step-2 run wrote"),
    (SCALE, ["backbone.name=nope"], "unknown backbone 'nope'"),
    (SCALE, ["rounding=bogus"], "Could not find 'rounding/bogus'"),
    (SCALE, ["phis=[1,x]"], "phis[1]: Value 'x' of type 'str' could not be converted to Float"),
    (SCALE, ["--multirun", "phis=[1],[100]"], "phis: at phi=100"),
    # --- report: a table or record it cannot read completely, and folders that are no run
    (REPORT, ["{tmp}/grid_results_cut_in_a_row"], "results.csv' is incomplete (it ends in the middle of a line)"),
    (REPORT, ["{tmp}/grid_results_cut_between_rows"],
     "results.csv' is incomplete (it has 2 rows, but the run's trials/ folder holds 4 trial records)"),
    (REPORT, ["{tmp}/grid_results_ragged"],
     f"results.csv' is incomplete (line 10 has 3 fields, the header {len(RESULT_COLUMNS)})"),
    (REPORT, ["{tmp}/grid_results_open_quote"], "results.csv' is not a readable table (Error: unexpected end of data)"),
    (REPORT, ["{tmp}/grid_results_empty"], "results.csv' is not a readable table (EmptyDataError"),
    (REPORT, ["{tmp}/grid_results_binary"], "results.csv' is not a readable table (UnicodeDecodeError"),
    (REPORT, ["{tmp}/grid_results_extra_field"],
     f"results.csv' is incomplete (line 10 has 41 fields, the header {len(RESULT_COLUMNS)})"),
    (REPORT, ["{tmp}/grid_epochs_cut_in_a_row"], "epochs.csv' is incomplete (it ends in the middle of a line)"),
    (REPORT, ["{tmp}/grid_search_json_cut"], "search.json' is damaged (Expecting value: line 1 column 50"),
    (REPORT, ["{tmp}/grid_environment_json_cut"], "environment.json' is damaged"),
    (REPORT, ["{tmp}/step2_results_cut_between_rows"], "results.csv' is incomplete (it has 3 rows"),
    (REPORT, ["{tmp}/step2_family_cut_in_a_row"], "family.csv' is incomplete (it ends in the middle of a line)"),
    (REPORT, ["{tmp}/step2_json_cut"], "step2.json' is damaged"),
    (REPORT, ["{tmp}/family_summary_cut_in_a_row"], "summary.csv' is incomplete (it ends in the middle of a line)"),
    (REPORT, ["{tmp}/family_summary_ragged"], "summary.csv' is incomplete (line 4 has 2 fields, the header 3)"),
    (REPORT, ["{tmp}/multirun_summary_cut_in_a_row"], "multirun_summary.csv' is incomplete"),
    (REPORT, ["{tmp}/no_such_run"], "no_such_run' does not exist"),
    (REPORT, ["{tmp}/notes.txt"], "notes.txt' is not a folder"),
    (REPORT, ["{tmp}/empty_folder"], "is not a scaling_search run: it holds none of"),
]


def _trial(i: int, seed: int) -> tuple[dict, dict, list[dict], dict]:
    """A failed trial's record (spec, row, history, candidate columns), as a run writes it."""
    cid = f"d1.{i}0_w1.00_r1.00"
    spec = {"trial_id": f"b0_{cid}_s{seed}", "candidate_id": cid, "seed": seed}
    row = {"trial_id": spec["trial_id"], "status": "failed", "epochs": 1,
           "error": "Diverged: loss is nan,\nlower trainer.lr"}  # a comma and a line break: quoted
    history = [{"epoch": 1, "train/loss": float("nan"), "val/loss": float("nan"), "val/top1": 0.1}]
    candidate = {"role": "candidate", "depth_coef": 1 + i / 10, "width_coef": 1.0, "resolution_coef": 1.0,
                 "macs": 1000 * (i + 1)}
    return spec, row, history, candidate


def _trained_run(run: Path, identity_file: str) -> Path:
    """A run folder written by the project's own writers: trial records, then the tables."""
    store = TrialStore(run)
    for i in range(2):
        for seed in range(2):
            store.save(*_trial(i, seed))
    collect(run)
    (run / identity_file).write_text(json.dumps({"backbone": "efficientnet_b0", "data": {"name": "digits"}}))
    (run / "environment.json").write_text(json.dumps({"python": "3"}))
    (run / "report.html").write_text("the previous report\n")
    return run


def _family_run(run: Path) -> Path:
    run.mkdir(parents=True)
    pd.DataFrame({"name": ["b0_phi0", "b0_phi1"], "phi": [0.0, 1.0], "macs": [1000, 2000]}).to_csv(
        run / "summary.csv", index=False)
    (run / "report.html").write_text("the previous report\n")
    return run


def _cut_in_a_row(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[:text.index("\n", len(text) // 2) + 5])


def _keep_rows(path: Path, rows: int) -> None:
    """The header and the first ``rows`` records (records may span lines: the CSV is re-read)."""
    pd.read_csv(path).head(rows).to_csv(path, index=False)


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def _cut_json(path: Path) -> None:
    path.write_text(path.read_text()[:-10])


def _multirun(sweep: Path) -> Path:
    sweep.mkdir(parents=True)
    pd.DataFrame({"out_dir": ["a", "b"], "data": ["digits"] * 2, "seed": [0, 1]}).to_csv(
        sweep / "multirun_summary.csv", index=False)
    _cut_in_a_row(sweep / "multirun_summary.csv")
    return sweep


RUNS = {  # a report row's run folder: (template, damage)
    "grid_results_cut_in_a_row": ("grid", lambda r: _cut_in_a_row(r / "results.csv")),
    "grid_results_cut_between_rows": ("grid", lambda r: _keep_rows(r / "results.csv", 2)),
    "grid_results_ragged": ("grid", lambda r: _append(r / "results.csv", "x,y,z\n")),
    "grid_results_open_quote": ("grid", lambda r: _append(r / "results.csv", 'x,"an error that\nnever ends\n')),
    "grid_results_empty": ("grid", lambda r: (r / "results.csv").write_text("")),
    "grid_results_binary": ("grid", lambda r: (r / "results.csv").write_bytes(b"\xff\xfe\x00\x81garbage\n")),
    "grid_results_extra_field": ("grid", lambda r: _append(r / "results.csv", "," * 40 + "\n")),
    "grid_epochs_cut_in_a_row": ("grid", lambda r: _cut_in_a_row(r / "epochs.csv")),
    "grid_search_json_cut": ("grid", lambda r: _cut_json(r / "search.json")),
    "grid_environment_json_cut": ("grid", lambda r: _cut_json(r / "environment.json")),
    "step2_results_cut_between_rows": ("step2", lambda r: _keep_rows(r / "results.csv", 3)),
    "step2_family_cut_in_a_row": ("step2", lambda r: _cut_in_a_row(r / "family.csv")),
    "step2_json_cut": ("step2", lambda r: _cut_json(r / "step2.json")),
    "family_summary_cut_in_a_row": ("family", lambda r: _cut_in_a_row(r / "summary.csv")),
    "family_summary_ragged": ("family", lambda r: _append(r / "summary.csv", "b0_phi2,2.0\n")),
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, Path]:
    """One complete run of each kind, copied and damaged by a report row."""
    root = tmp_path_factory.mktemp("templates")
    step2 = _trained_run(root / "step2", "step2.json")
    pd.DataFrame({"member_id": ["compound_phi0", "compound_phi1", "depth_phi1"], "phi": [0.0, 1.0, 1.0],
                  "macs": [1000, 2000, 2010]}).to_csv(step2 / "family.csv", index=False)
    return {"grid": _trained_run(root / "grid", "search.json"), "step2": step2,
            "family": _family_run(root / "family")}


@pytest.fixture
def scratch(tmp_path, templates) -> Path:
    """What the rows name: a file, two YAML files, and the report's run folders."""
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "broken.yaml").write_text("depth_coef: [1.2\n")
    (tmp_path / "twice.yaml").write_text("depth_coef: 1.2\nwidth_coef: 1.1\nresolution_coef: 1.15\ndepth_coef: 1.4\n")
    (tmp_path / "resnet_run").mkdir()  # a ResNet-18 search's frozen winner, as step1 writes its header
    (tmp_path / "resnet_run" / "coefficients.yaml").write_text(
        "# Step-1 winner of /runs/r18 (resnet18 proxy on digits):\n# d1.20_w1.10_r1.15, validation top-1 0.9\n"
        "depth_coef: 1.2\nwidth_coef: 1.1\nresolution_coef: 1.15\n")
    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "my_files").mkdir()  # a user's folder: a run must not write into it
    (tmp_path / "my_files" / "thesis.tex").write_text("chapter 1\n")
    (tmp_path / "my_files" / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "many_files").mkdir()
    for i in range(7):
        (tmp_path / "many_files" / f"a{i}.txt").write_text(f"{i}\n")
    for c in ("cat", "dog"):  # an image folder of two classes
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0 if c == "cat" else 255)).save(tmp_path / "imgs" / c / f"{i}.png")
    for name, (template, damage) in RUNS.items():
        damage(Path(shutil.copytree(templates[template], tmp_path / name)))
    _multirun(tmp_path / "multirun_summary_cut_in_a_row")
    return tmp_path


def _state(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _refused(err: str, prog: str, expected: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in err


def _args(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


@pytest.mark.parametrize("app,args,expected", ROWS, ids=[f"{a}:{' '.join(x)}" for a, x, _ in ROWS])
def test_bad_input_is_refused_up_front(app, args, expected, scratch, capsys, monkeypatch):
    monkeypatch.chdir(scratch)  # the default out_dir is relative: anything written lands here
    args, expected = _args(args, scratch), expected.replace("{tmp}", str(scratch))
    if app != REPORT and not any(a.startswith("out_dir=") for a in args):
        args.append(f"out_dir={scratch / 'run'}")
    before = _state(scratch)
    if app == REPORT:
        assert report_main(args) == 2
    else:
        with pytest.raises(SystemExit) as e:
            preflight(f"scaling_search.{app}", app, args, APPS[app].validate)
        assert e.value.code == 2
    out = capsys.readouterr()
    _refused(out.err, f"scaling_search.{app}", expected)
    assert out.out == ""
    assert _state(scratch) == before
    assert not (scratch / "run").exists()


def test_the_table_is_large_and_covers_every_app():
    assert len(ROWS) >= 100
    assert {app for app, _, _ in ROWS} == {GRID, SCALE, REPORT}


def test_a_complete_run_is_reported(templates, tmp_path):
    """The report's checks refuse only what is damaged: the same run, whole, gets its page, with
    a quoted error spanning two lines in results.csv."""
    run = Path(shutil.copytree(templates["grid"], tmp_path / "grid"))
    assert "\n" in pd.read_csv(run / "results.csv")["error"][0]
    assert report_main([str(run)]) == 0
    assert (run / "report.html").read_text() != "the previous report\n"


SUBPROCESS_ROWS = [  # as a user runs them: the whole app, from `python -m`
    ("scaling_search.grid", [*TINY_GRID, "space.step=0.00001"], "over the limit of 100,000"),
    ("scaling_search.grid", [*TINY_GRID, "out_dir={tmp}/notes.txt"], "is a file, not a folder"),
    ("scaling_search.grid", [*TINY_GRID, "include_baseline=2"], "include_baseline must be true or false, got 2"),
    ("scaling_search.scale", ["phis=[1e10]"], "the depth grows by 1.2^1e+10"),
    ("scaling_search.scale", ["train=true", "out_dir=/proc/self/run"], "is not writable by this user"),
    ("scaling_search.report", ["{tmp}/grid_results_cut_in_a_row"], "results.csv' is incomplete"),
    ("scaling_search.fidelity", ["run_dir={tmp}/grid_results_cut_between_rows"],
     "is not a finished Step-1 run: it has no config.yaml, ranking.csv, coefficients.yaml"),
    ("scaling_search.fidelity", ["run_dir={tmp}/empty_folder", "budget.epochs_factor=0"],
     "budget.epochs_factor must be a number > 0"),
]


@pytest.mark.parametrize("module,args,expected", SUBPROCESS_ROWS, ids=[f"{m}:{a[-1]}" for m, a, _ in SUBPROCESS_ROWS])
def test_bad_input_as_a_user_runs_it(run_cli, scratch, module, args, expected):
    args = _args(args, scratch)
    if module != "scaling_search.report" and not any(a.startswith("out_dir=") for a in args):
        args.append(f"out_dir={scratch / 'run'}")
    before = _state(scratch)
    r = run_cli(module, *args, cwd=scratch)
    assert r.returncode == 2, r.stderr[-2000:]
    _refused(r.stderr, module, expected)
    assert _state(scratch) == before


@pytest.mark.parametrize("module,arg", [("scaling_search.grid", "trainer.lr=-1"),
                                        ("scaling_search.scale", "coefficients.depth_coef=0.5"),
                                        ("scaling_search.fidelity", "budget.epochs_factor=0")])
def test_settings_refuse_bad_input_before_torch_loads(tmp_path, module, arg):
    """A user's typo is answered in about a second: the settings' checks import no torch (whose
    import, with torchvision's, takes 5-8 s on a 2-core machine)."""
    import subprocess
    import sys

    where = f"run_dir={tmp_path}" if module.endswith("fidelity") else f"out_dir={tmp_path / 'run'}"
    code = (f"import runpy, sys\nsys.argv = [{module!r}, {arg!r}, {where!r}]\n"
            f"try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["exit", "2", "False"], r.stdout + r.stderr[-2000:]
    assert arg.split("=")[0] in r.stderr


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('boom')\n",
     "imports: 'bad_plugin' failed while importing (RuntimeError: boom); fix the module"),
    ("def f(:\n", "imports: 'bad_plugin' has a syntax error (invalid syntax, "),
    ("import sys\nsys.exit(3)\n", "imports: 'bad_plugin' called sys.exit(3) while importing"),
    ("import no_such_dependency_xyz\n", "imports: 'bad_plugin' failed while importing (No module named "
                                        "'no_such_dependency_xyz')"),
])
def test_a_plugin_that_fails_to_import_is_one_line_naming_it(run_cli, tmp_path, monkeypatch, source, message):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "bad_plugin.py").write_text(source)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "plugins"))
    r = run_cli("scaling_search.grid", "imports=[bad_plugin]", "dry_run=true", f"out_dir={tmp_path / 'run'}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert message in lines[0]
    assert not (tmp_path / "run").exists()
