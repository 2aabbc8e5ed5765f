"""Reading YAML a user (or an attacker) wrote: UTF-8 only, bounded nesting, bounded alias expansion.

PyYAML's safe loader never runs code, but an alias of an alias ("billion laughs") expands a 1 KB
file into gigabytes the moment anything walks it (pydantic, an error message), and deep nesting
ends in RecursionError. Here the composed node graph is measured first: aliases point at shared
nodes, so counting the expanded size with memoisation is cheap, and a text that would expand
beyond MAX_NODES values or MAX_CHARS characters of scalars, or nest deeper than MAX_DEPTH, is
refused with one line before any of it is built into Python objects. The character bound matters
as much as the count: a million aliases of one 4 KB string are a million values, but 4 GB the
moment anything writes them out (a run folder's suite copy, an error message). Every YAML text
segbench reads (suite files, `-s` values, card profiles, a run's suite copy) comes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_NODES = 1_000_000  # values after alias expansion; the largest real suite has a few hundred
MAX_DEPTH = 64  # nesting levels; a suite needs about five
MAX_CHARS = 16_000_000  # scalar characters after alias expansion; a real suite has a few kilobytes


class YamlRefused(ValueError):
    """The text is not YAML this tool will read; the message is one line ending with the fix."""


def decode_utf8(data: bytes) -> str:
    """The file's text (a UTF-8 byte-order mark is allowed), or one line naming the first bad byte."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise YamlRefused("the file is UTF-16 text; save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlRefused(
            f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 (latin-1 or another encoding?); save the file as "
            "UTF-8"
        ) from None


def _expanded_size(root: yaml.Node) -> tuple[int, int]:
    """(values, scalar characters) the document holds once every alias is expanded; refuses cycles and deep nesting
    on the way."""
    sizes: dict[int, tuple[int, int]] = {}
    # Iterative post-order walk: (node, depth, children done?), so deep files never recurse in Python.
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    on_path: set[int] = set()
    while stack:
        node, depth, expanded = stack.pop()
        key = id(node)
        if expanded:
            on_path.discard(key)
            sizes[key] = _own_size(node, [sizes[id(child)] for child in _children(node)])
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YamlRefused(
                "an alias refers to a node that contains it (a recursive structure); write the values out"
            )
        if depth > MAX_DEPTH:
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels; a suite needs far fewer")
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in _children(node) if id(child) not in sizes)
    return sizes[id(root)]


def _own_size(node: yaml.Node, children: list[tuple[int, int]]) -> tuple[int, int]:
    """A node's expanded (values, characters), capped just past the limits so the sums stay small integers."""
    values = 1 + sum(count for count, _ in children)
    chars = (len(node.value) if isinstance(node, yaml.ScalarNode) else 0) + sum(text for _, text in children)
    return min(values, MAX_NODES + 1), min(chars, MAX_CHARS + 1)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def load_text(text: str) -> Any:
    """YAML text to data with the safe loader, after the size and depth checks."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YamlRefused(f"nested deeper than {MAX_DEPTH} levels; a suite needs far fewer") from None
        if node is None:
            return None
        values, chars = _expanded_size(node)
        if values > MAX_NODES:
            raise YamlRefused(
                f"expands to over {MAX_NODES:,} values through aliases (&anchor / *alias); write the values out instead"
            )
        if chars > MAX_CHARS:
            raise YamlRefused(
                f"expands to over {MAX_CHARS // 1_000_000} million characters through aliases (&anchor / *alias); "
                "write the values out instead"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_file(path: Path) -> Any:
    """A YAML file's data; OSError and yaml.YAMLError propagate for the caller's own messages."""
    return load_text(decode_utf8(path.read_bytes()))
