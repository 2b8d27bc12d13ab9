"""Tests use the gateway's public surface: no test reads or calls a private attribute
(`obj._name`) of another object, so a component's internals can change without breaking
tests that never meant to pin them.

Read with `ast`. `self._x` (a test helper's own state) is fine. The known exceptions are
listed by file and attribute: objects of other libraries, and debts in tests of modules
being edited elsewhere; like tests/test_layers.py's lists, they only ever shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent

ALLOWED: set[tuple[str, str]] = {
    ("cli/test_readme_commands.py", "_actions"),  # argparse has no public list of subcommands
    ("cli/test_readme_commands.py", "_SubParsersAction"),
    ("protocol/test_responses.py", "_completed_response"),  # the openai SDK's stream accumulator
    ("e2e/test_messages_wire_errors_e2e.py", "_request_id"),  # the anthropic SDK's documented request id
    ("test_ids.py", "_exit"),  # os._exit: a forked child leaves without the parent's cleanup
    # Fault injection: the recorder's wake event is replaced by one that raises, so its loop
    # dies the way an unexpected bug would and the supervisor's restart can be observed.
    ("test_supervise.py", "_wake"),
    # A race between threads on one SQLite connection cannot be caught from outside reliably:
    # the test checks that every read gets the connection holding the store's lock.
    ("tenants/test_store_contract.py", "_current"),
    ("tenants/test_store_contract.py", "_lock"),
    # Scripted models: subclasses of the tests' own fake upstreams extend their request handlers.
    ("e2e/test_coding_agents_e2e.py", "_messages"),
    ("e2e/test_coding_agents_e2e.py", "_responses"),
}


def private_reads(root: Path = TESTS) -> set[tuple[str, str]]:
    found = set()
    for path in root.rglob("*.py"):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(("support/", "js/")):
            continue  # test infrastructure, reading its own state
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_") or node.attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.add((relative, node.attr))
    return found


def test_tests_read_no_private_attributes():
    found = private_reads()
    assert found - ALLOWED == set(), "tests reaching into private attributes: give the component a public surface"
    assert ALLOWED - found == set(), "fixed: remove them from ALLOWED"


def test_the_check_sees_a_private_read(tmp_path):
    (tmp_path / "test_x.py").write_text("def test_x(recorder):\n    assert recorder._buffer\n    self._ok = 1\n")
    assert private_reads(tmp_path) == {("test_x.py", "_buffer")}
