"""README's measured tables are generated (scripts/readme_numbers.py, ``make readme-numbers``):
every marked block is one the script knows, replacing a block touches nothing outside it, and the
cheapest block really runs and writes what the command measured."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from helpers import ROOT, cli_env

spec = importlib.util.spec_from_file_location("readme_numbers", ROOT / "scripts" / "readme_numbers.py")
rn = importlib.util.module_from_spec(spec)
sys.modules["readme_numbers"] = rn  # dataclasses look their module up
spec.loader.exec_module(rn)


def test_every_readme_block_is_known_and_paired():
    text = (ROOT / "README.md").read_text()
    names = rn.blocks_in(text)
    assert {"default", "methods", "bench", "sizes"} <= set(names)
    assert len(names) == len(set(names))
    for name in names:
        assert name in rn.BY_NAME, name
        start, end = rn.marker(name)
        assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), name


def test_replace_block_is_idempotent_and_local():
    text = "intro\n<!-- numbers:a -->\nold a\n<!-- /numbers:a -->\nmiddle\n<!-- numbers:b -->\nold b\n<!-- /numbers:b -->\nend\n"
    once = rn.replace_block(text, "a", "new a")
    assert once == text.replace("old a", "new a")
    assert rn.replace_block(once, "a", "new a") == once
    with pytest.raises(SystemExit, match="no <!-- numbers:c -->"):
        rn.replace_block(text, "c", "x")


@pytest.mark.slow
def test_sizes_block_writes_what_summary_measures(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- numbers:sizes -->\nstale\n<!-- /numbers:sizes -->\ntail\n")
    p = subprocess.run([sys.executable, "scripts/readme_numbers.py", "--only", "sizes", "--readme", str(readme),
                        "--out", str(tmp_path / "out")], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "sizes" / "summary.json").read_text().strip().splitlines()[-1])
    text = readme.read_text()
    assert "stale" not in text and text.endswith("tail\n")
    assert f"{summary['patch_bytes']:,} bytes" in text and f"{summary['delta_params']:,} ∆ parameters" in text
    assert "make readme-numbers ONLY=sizes" in text
