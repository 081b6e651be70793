"""benchmarks.readme refreshes only README's marked benchmark section from accuracy.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.readme import main, refresh

README = """# title
| none | 1.0 | old |
<!-- round2-results:start -->
| block | top-1 |
|---|---:|
| none | 50.0 |
| nonlocal | 60.0 |
| kept by hand | 1.0 |

Default group: `g` (1 of 3 search seeds finished).
- mean − nonlocal: **+1.0 points**: not met.

Prose stays.
<!-- round2-results:end -->
tail
"""

ACCURACY = """# Accuracy
| block | top-1 |
|---|---:|
| none | 55.0 |
| nonlocal | 61.0 |
| random cell 9 | not run |

## Targets

Default group: `g` (3 of 3 search seeds finished).
- mean − nonlocal: **+3.0 points**: met.

## Search groups
| search group | x |
"""


def test_rows_and_targets_are_refreshed_inside_the_markers_only() -> None:
    text, changed = refresh(README, ACCURACY)
    assert changed == 2
    assert "| none | 55.0 |" in text and "| nonlocal | 61.0 |" in text
    assert "| none | 1.0 | old |" in text  # outside the markers: untouched
    assert "| kept by hand | 1.0 |" in text and "Prose stays." in text and "not run" not in text
    assert "Default group: `g` (3 of 3 search seeds finished).\n- mean − nonlocal: **+3.0 " \
           "points**: met.\n\nProse stays." in text
    assert text.endswith("<!-- round2-results:end -->\ntail\n")
    assert refresh(text, ACCURACY) == (text, 0)  # idempotent


def test_cli_writes_in_place_and_refuses_a_readme_without_markers(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    readme, acc = tmp_path / "README.md", tmp_path / "accuracy.md"
    readme.write_text(README)
    acc.write_text(ACCURACY)
    assert main(["--readme", str(readme), "--accuracy", str(acc)]) == 0
    assert "| none | 55.0 |" in readme.read_text()
    readme.write_text("# no section\n")
    assert main(["--readme", str(readme), "--accuracy", str(acc)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no <!-- round2-results:start -->" in err[0]
    assert readme.read_text() == "# no section\n"
