"""The README's result blocks are generated from the committed files: a block whose text differs from what
its file gives fails here (fix: make readme), and a block on a missing file or column is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from whatmatters.apps.readme import readme
from whatmatters.records.committed import COMMITTED_DIR, legacy_stems
from whatmatters.report.readme import BLOCK, ReadmeError, render

ROOT = Path(__file__).parents[1]
TABLE = """# table2: m, s suite

- a note

| method   | hellaswag   | Avg   | key   |
|:---------|:------------|:------|:------|
| Baseline | 42.0 ± 3.5  | 37.1  | b58e  |
| Attn-8   | 41.5 ± 3.5  | 36.6  | 4938  |
"""


def test_readme_result_blocks_match_the_committed_files():
    text = (ROOT / "README.md").read_text()
    assert len(BLOCK.findall(text)) >= 5  # the results tables are blocks, not typed
    assert render(text, ROOT, set(legacy_stems(ROOT / COMMITTED_DIR))) == text, "run make readme"


def test_a_block_takes_the_listed_columns_of_a_table_file_and_links_it(tmp_path):
    (tmp_path / "t.md").write_text(TABLE)
    text = "before\n<!-- results: t.md | method; Avg -->\nstale\n<!-- end results -->\nafter\n"
    assert render(text, tmp_path, set()) == (
        "before\n<!-- results: t.md | method; Avg -->\n"
        "| method | Avg |\n| --- | --- |\n| Baseline | 37.1 |\n| Attn-8 | 36.6 |\n\n"
        "From [`t.md`](t.md) by `make readme`.\n<!-- end results -->\nafter\n"
    )


def test_a_csv_block_rounds_numbers_to_three_digits_and_marks_a_legacy_file(tmp_path):
    (tmp_path / "c.csv").write_text("key,n,ΔAvg\nk1,4,-2.1234567\nk2,8,\n")
    out = render("<!-- results: c.csv -->\n<!-- end results -->", tmp_path, {"c"})
    assert "| key | n | ΔAvg |\n| --- | --- | --- |\n| k1 | 4 | -2.12 |\n| k2 | 8 |  |\n" in out
    assert "a legacy file: its run records were lost" in out


@pytest.mark.parametrize(
    ("block", "match"),
    [
        ("t.md | method; SDR", r"no column \['SDR'\]; it has \['method'"),
        ("gone.md", "gone.md, which does not"),
    ],
)
def test_a_block_on_a_missing_file_or_column_is_an_error_naming_it(tmp_path, block, match):
    (tmp_path / "t.md").write_text(TABLE)
    with pytest.raises(ReadmeError, match=match):
        render(f"<!-- results: {block} -->\n<!-- end results -->", tmp_path, set())


def test_readme_app_rewrites_stale_blocks_and_check_mode_refuses_them(tmp_path):
    (tmp_path / "t.md").write_text(TABLE)
    stale = "<!-- results: t.md | Avg -->\n| Avg |\n| 99 |\n<!-- end results -->\n"
    (tmp_path / "README.md").write_text(stale)
    cfg = OmegaConf.create(
        {"readme": str(tmp_path / "README.md"), "committed_dir": str(tmp_path), "check": True}
    )
    with pytest.raises(SystemExit, match="make readme"):
        readme(cfg)
    assert (tmp_path / "README.md").read_text() == stale
    cfg.check = False
    assert readme(cfg) and "| 37.1 |" in (tmp_path / "README.md").read_text()
    assert not readme(cfg)  # a second run changes nothing
