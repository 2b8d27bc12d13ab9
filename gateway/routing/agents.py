"""Recognising a coding agent's request from its tool set and system prompt.

Coding agents (Claude Code, Codex CLI, OpenCode, Cline, Gemini CLI...) send tools on every
request, and their turns are often short ("go on", a tool result) or long enough to count as
long context, so neither the text nor the size says what the work is. What does is the
harness itself: a tool that runs shell commands beside tools that read, write, edit or patch
files is a coding agent's tool set, and their system prompts say so in a few stock phrases.

The names are the ones the agents send (checked against their published tool references):
Claude Code `Bash`, `Read`, `Write`, `Edit`, `MultiEdit`, `Glob`, `Grep`, `LS`, `NotebookEdit`;
Codex CLI `shell`, `shell_command`, `exec_command`, `local_shell`, `apply_patch`,
`read_file`, `list_dir`, `grep_files`; others' `run_shell_command`, `execute_command`,
`write_file`, `write_to_file`, `replace_in_file`, `edit_file`, `str_replace_editor`.
Compared lower-cased. Cheap: one pass over the tools' names (tens at most) and a few
substring tests on the head of the system prompt.
"""

from __future__ import annotations

from typing import Any

SHELL_TOOLS = frozenset(
    [
        "bash",
        "shell",
        "shell_command",
        "exec_command",
        "local_shell",
        "run_shell_command",
        "execute_command",
        "run_terminal_cmd",
        "terminal",
        "powershell",
    ]
)
FILE_TOOLS = frozenset(
    [
        # Claude Code
        "read",
        "write",
        "edit",
        "multiedit",
        "glob",
        "grep",
        "ls",
        "notebookedit",
        # Codex CLI
        "apply_patch",
        "read_file",
        "list_dir",
        "grep_files",
        # OpenCode, Cline, Gemini CLI, Cursor, Anthropic's text editor tool
        "patch",
        "write_file",
        "write_to_file",
        "replace_in_file",
        "edit_file",
        "search_files",
        "list_files",
        "list_directory",
        "search_file_content",
        "str_replace_editor",
        "str_replace_based_edit_tool",
        "codebase_search",
    ]
)
# Tools that change files: two of these (edit + write) are an editing harness even without a shell.
EDIT_TOOLS = frozenset(
    [
        "write",
        "edit",
        "multiedit",
        "apply_patch",
        "patch",
        "write_file",
        "write_to_file",
        "replace_in_file",
        "edit_file",
        "str_replace_editor",
        "str_replace_based_edit_tool",
    ]
)
# Stock phrases of coding agents' system prompts, lower-cased.
SYSTEM_MARKS = (
    "claude code",
    "codex cli",
    "coding agent",
    "coding assistant",
    "software engineering task",
    "agentic coding",
    "pair programming",
)
_SYSTEM_HEAD = 4000  # characters of the system prompt searched: the identity comes first


def tool_names(tools: Any) -> list[str]:
    """The names of the offered tools, lower-cased, in either wire shape: chat's
    `{"type": "function", "function": {"name": ...}}` or a flat `{"name": ...}`."""
    names = []
    if isinstance(tools, list):
        for tool in tools:
            if not isinstance(tool, dict):
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, dict) else tool.get("name")
            if isinstance(name, str):
                names.append(name.lower())
            elif tool.get("type") == "local_shell":
                names.append("local_shell")
    return names


def coding_agent(tools: Any, system: str) -> str | None:
    """Why this request looks like a coding agent's turn, or None if it does not."""
    names = tool_names(tools)
    shell = [n for n in names if n in SHELL_TOOLS]
    files = [n for n in names if n in FILE_TOOLS]
    if shell and files:
        return f"coding agent tools: {shell[0]}, {files[0]}"
    edits = [n for n in files if n in EDIT_TOOLS]
    if len(edits) >= 2:
        return f"coding agent tools: {edits[0]}, {edits[1]}"
    if names and system:
        head = system[:_SYSTEM_HEAD].lower()
        for mark in SYSTEM_MARKS:
            if mark in head:
                return f"coding agent system prompt: {mark!r}"
    return None
