"""Everything a run can be refused for is found before anything trains, as one line: bad values
(item 7), folders it cannot write (item 5), data it cannot read (item 7's empty folders and
corrupt test image)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, cli_env

from deltapatch.errors import ConfigError
from deltapatch.scenarios import run
from deltapatch.scenarios.validation import config_problems


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything is trained."""
    import pytorch_lightning as pl

    def refuse(*a, **k):
        raise AssertionError("trained although the run should have been refused first")

    monkeypatch.setattr(pl.Trainer, "fit", refuse)


def image_folder(root: Path, train: dict[str, int], test: dict[str, int], corrupt: tuple[str, ...] = ()) -> Path:
    """``root/{train,test}/<class>/<i>.png`` with the given image counts; ``corrupt`` names
    ``split/class/file`` entries written as empty files."""
    from PIL import Image

    for split, counts in (("train", train), ("test", test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for c, n in counts.items():
            (root / split / c).mkdir(exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / c / f"{i}.png")
    for rel in corrupt:
        (root / rel).write_bytes(b"")
    return root


def folder_args(root: Path) -> list[str]:
    return ["dataset=image_folder", f"dataset.data_dir={root}", "base.classes=[0]", "scenario.tasks.patch.classes=[1]"]


# ---------------------------------------------------------------- values (item 7)
BAD_VALUES = [
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: trains forever"),
    ("trainer.max_epochs=abc", "trainer.max_epochs=abc: not a whole number"),
    ("seed=abc", "seed=abc: not a whole number"),
    ("dataset.batch_size=0", "dataset.batch_size=0: must be at least 1"),
    ("scenario.tasks.patch.classes=[cat,dog]", "class ids are integer indices into the dataset's classes, not cat"),
    ("scenario.tasks.patch.classes=[5,5]", "scenario.tasks.patch.classes=[5,5]: class 5 is listed twice"),
    ("scenario.tasks.patch.classes=[]", "scenario.tasks.patch.classes=[]: no classes"),
    ("base.classes=[0,-1]", "base.classes=[0,-1]: class indices cannot be negative"),
    ("trainer.limit_train_batches=1.5", "trainer.limit_train_batches=1.5: a batch count"),
]


@pytest.mark.parametrize("override,needle", BAD_VALUES)
def test_bad_values_are_refused_before_training(make_cfg, no_training, override, needle):
    with pytest.raises(ConfigError) as e:
        run(make_cfg(override))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_every_bad_value_is_named_at_once(make_cfg):
    problems = config_problems(make_cfg("seed=abc", "dataset.batch_size=0", "scenario.tasks.patch.classes=[5,5]"))
    assert len(problems) == 3


def test_the_shipped_configs_pass(make_cfg):
    for scenario in ("single", "joint", "sequential", "transfer", "zsda", "detection", "segmentation"):
        assert config_problems(make_cfg(f"scenario={scenario}")) == [], scenario


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deltapatch.train", *args], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=600)


def one_error_line(p: subprocess.CompletedProcess, needle: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("override,needle", [BAD_VALUES[i] for i in (0, 1, 4)])
def test_bad_values_through_the_entry_point(tmp_path, override, needle):
    p = cli(f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", override)
    one_error_line(p, needle)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "results.json").exists()


def test_empty_image_folder_through_the_entry_point(tmp_path):
    root = tmp_path / "folder"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    p = cli(f"hydra.run.dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", *folder_args(root))
    one_error_line(p, f"image_folder: no data at {root / 'train'}; it holds no class folders")


# ---------------------------------------------------------------- folders (item 5)
@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nothing can be written to, root included (a read-only tmpfs where mounting works)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs",
                                                            str(path)], capture_output=True).returncode != 0:
            pytest.skip("root without mount: cannot make a folder read-only")
        yield path
        subprocess.run(["umount", str(path)], capture_output=True)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


def test_read_only_cache_is_found_before_training(make_cfg, no_training, read_only_dir):
    with pytest.raises(ConfigError, match=rf"base.cache_dir={read_only_dir}/base is not writable .*paths.cache_dir="):
        run(make_cfg(f"paths.cache_dir={read_only_dir}"))


# ---------------------------------------------------------------- data
def test_empty_test_split_is_found_before_training(make_cfg, no_training, tmp_path):
    root = image_folder(tmp_path / "folder", train={"a": 4, "b": 4}, test={"a": 2, "b": 0})
    with pytest.raises(ConfigError, match=r"task 'patch' \(image_folder\): its test split is empty"):
        run(make_cfg(*folder_args(root)))


def test_corrupt_test_image_is_found_before_training(make_cfg, no_training, tmp_path):
    root = image_folder(tmp_path / "folder", train={"a": 4, "b": 4}, test={"a": 2, "b": 2}, corrupt=("test/b/0.png",))
    with pytest.raises(ConfigError, match=r"cannot read image .*test/b/0.png"):
        run(make_cfg(*folder_args(root)))


def test_all_problems_in_one_line(make_cfg, no_training, tmp_path, read_only_dir):
    root = image_folder(tmp_path / "folder", train={"a": 4, "b": 4}, test={"a": 2, "b": 0})
    with pytest.raises(ConfigError) as e:
        run(make_cfg(*folder_args(root), f"paths.cache_dir={read_only_dir}"))
    text = str(e.value)
    assert "not writable" in text and "test split is empty" in text and "\n" not in text


def test_missing_data_is_found_before_training(make_cfg, no_training, tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path / "nowhere")):
        run(make_cfg("dataset=image_folder", f"dataset.data_dir={tmp_path / 'nowhere'}"))



def test_read_only_cache_holding_the_base_is_used(make_cfg, tmp_path):
    """A cache a colleague built and others may only read: nothing needs writing there, so the
    run goes on (no lock taken: nothing will be built)."""
    from deltapatch.training.base_model import obtain_base

    cache = tmp_path / "cache"
    obtain_base(make_cfg(f"paths.cache_dir={cache}"))
    view = tmp_path / "view"
    view.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None or subprocess.run(["mount", "--bind", str(cache), str(view)]).returncode or \
                subprocess.run(["mount", "-o", "remount,bind,ro", str(view)]).returncode:
            pytest.skip("root without mount: cannot make a folder read-only")
    else:
        view.rmdir()
        shutil.copytree(cache, view)
        for p in view.rglob("*"):
            p.chmod(0o555 if p.is_dir() else 0o444)
        view.chmod(0o555)
    try:
        res = run(make_cfg(f"paths.cache_dir={view}"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(view)], capture_output=True)
    assert res["tasks"]["patch"] >= 0


def test_the_experiment_presets_pass():
    from hydra import compose, initialize_config_dir
    from helpers import CONF

    presets = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for folder in ("", "mini", "dense")
                     for p in (CONF / "experiment" / folder).glob("*.yaml"))
    assert len(presets) > 20
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in presets:
            cfg = compose("config", overrides=[f"experiment={name}", "paths.output_dir=/tmp/unused"])
            assert config_problems(cfg) == [], name
