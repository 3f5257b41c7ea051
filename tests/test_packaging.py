"""Packaging: the configs stay at the top of the repository and ship inside the wheel, the
dependencies are the design card's, and an installed wheel trains from any folder."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deltapatch.cli import CONF_DIR

from helpers import CHEAP_RUN, ROOT, cli_env

@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel ``pip wheel --no-deps --no-build-isolation`` builds from this checkout (from a copy
    of its sources, so that the build leaves no build/ or *.egg-info behind in the repository)."""
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "conf", src / "conf", ignore=skip)
    shutil.copytree(ROOT / "deltapatch", src / "deltapatch", symlinks=True, ignore=skip)  # keeps deltapatch/conf a link
    out = tmp_path_factory.mktemp("dist")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out), str(src)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return next(out.glob("deltapatch-*.whl"))


def test_configs_live_at_the_top_and_ship_in_the_wheel(wheel):
    link = ROOT / "deltapatch" / "conf"
    assert link.is_symlink() and link.resolve() == (ROOT / "conf").resolve() == CONF_DIR
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"deltapatch/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert len(configs) > 100 and configs <= names, sorted(configs - names)[:5]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    plain = {re.split(r"[<>=;\[ ]", r)[0].lower() for r in requires if "extra ==" not in r}
    assert {"pytorch-lightning", "wandb", "numpy", "huggingface_hub", "hydra-core"} <= plain
    assert "lightning" not in plain and "hydra-submitit-launcher" not in plain
    scripts = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/entry_points.txt"))).decode()
    assert all(f"deltapatch-{e} = deltapatch.{e}:main" in scripts for e in ("train", "evaluate", "summary", "report"))


@pytest.mark.slow
def test_installed_wheel_trains_outside_the_repo(wheel, tmp_path, base_cache):
    """``pip install`` of the wheel into a fresh venv (its heavy dependencies seen through a .pth line
    to this environment's site-packages), then ``deltapatch-train debug=fast`` from another folder."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=600)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "deltapatch_test_deps.pth").write_text("\n".join(ours) + "\n")
    env = {k: v for k, v in cli_env().items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    p = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import deltapatch.cli as c; print(c.__file__); print(c.CONF_DIR)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=600)
    module, conf = where.stdout.split()
    assert module.startswith(site) and conf.startswith(site), where.stdout  # the installed copy, not this checkout
    run_dir = tmp_path / "run"
    p = subprocess.run([str(venv / "bin" / "deltapatch-train"), *CHEAP_RUN, f"hydra.run.dir={run_dir}",
                        f"paths.cache_dir={base_cache}"], cwd=work, env=env, capture_output=True, text=True,
                       timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads((run_dir / "results.json").read_text())["base_acc_before"] is not None
