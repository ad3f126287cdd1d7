"""README's Python example, run as written (with the test model and a fixture table in place of
the tour's), so the front door stays true."""

import re

import pyarrow as pa

from conftest import REPO, TABLES


def test_the_readme_example_runs(run_dir, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    section = text.split("## From Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "tour").mkdir()
    (tmp_path / "tour" / "run").symlink_to(run_dir)
    (tmp_path / "tour" / "digits.parquet").symlink_to(TABLES / "hf_bytes.parquet")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    out = scope["out"]
    assert isinstance(out, pa.Table) and out.column_names[-3:] == ["stn_image", "stn_theta", "stn_error"]
    assert out.column("stn_error").null_count == out.num_rows
