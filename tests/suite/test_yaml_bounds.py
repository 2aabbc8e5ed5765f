"""Every YAML text segbench reads is bounded by the same safe loader: `-s` values as much as suite files."""

from __future__ import annotations

from pathlib import Path

import pytest

from segbench import safe_yaml
from tests.helpers import FAULT_PLUGIN, segbench


def string_bomb(levels: int = 4, width: int = 9, chars: int = 4000) -> str:
    """A flow-style value of width**levels aliases of one long string: few values, tens of MB once written out."""
    text = f"[&s0 {'y' * chars}"
    for level in range(1, levels + 1):
        text += f", &s{level} [" + ", ".join(f"*s{level - 1}" for _ in range(width)) + "]"
    return text + "]"


def test_aliases_of_a_long_string_are_refused_by_their_expanded_characters() -> None:
    """Issue 34 item 9: the loader counted values only, so 6,561 aliases of a 4 KB string (26 MB once a suite copy
    or an error message writes them out) passed."""
    with pytest.raises(safe_yaml.YamlRefused, match="million characters"):
        safe_yaml.load_text(string_bomb())
    assert safe_yaml.load_text(f"[&s {'y' * 4000}, *s, *s]")[2] == "y" * 4000  # a few aliases stay fine


def test_an_alias_bomb_in_a_set_value_is_one_line(tmp_path: Path) -> None:
    """Issue 34 item 9: `-s KEY=VALUE` went past the suite file's YAML limits (the bomb in a free-form field ran to
    gigabytes while the run folder's suite copy was written); it is refused in one line naming `-s` and the key."""
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nplugins: [{FAULT_PLUGIN}]\nmodels: [test-tiny]\nresolutions: [16]\n")
    value = "[{name: test-tiny, options: {x: " + string_bomb() + "}}]"
    done = segbench("run", str(suite), "--dry-run", "-s", f"models={value}", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[:2000]
    [line] = done.stderr.strip().splitlines()
    assert "-s models" in line and "characters" in line, line
