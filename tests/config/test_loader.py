"""Reading the routing YAML: interpolation, problems with path and line, key-less vendors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.loader import ConfigError, Problem, interpolate, load_config, parse_config
from gateway.config.snapshot import ConfigSnapshot

REPO = Path(__file__).resolve().parents[2]


def parse(text: str):
    return parse_config(textwrap.dedent(text), "policy.yaml")


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A}", {}, ""),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-fallback}", {"A": ""}, "fallback"),  # like the shell's :-, empty counts as unset
        ("${A:-}", {}, ""),
        ("${A:-http://h:8000/v1}", {}, "http://h:8000/v1"),
        ("pre-${A}-${B:-b}-post", {"A": "a"}, "pre-a-b-post"),
        ("$A and ${not-a-name}", {"A": "x"}, "$A and ${not-a-name}"),
    ],
)
def test_interpolate(text, env, expected):
    assert interpolate(text, env) == expected


def test_environment_reaches_nested_values(monkeypatch):
    monkeypatch.setenv("GW_TEST_KEY", "sk-from-env")
    monkeypatch.setenv("GW_TEST_URL", "http://10.0.0.5:8000/v1")
    monkeypatch.delenv("GW_TEST_UNSET", raising=False)
    config, warnings = parse(
        """
        backends:
          local:
            type: vllm
            base_url: ${GW_TEST_URL}
            api_key: ${GW_TEST_KEY}
            headers: {X-Team: "${GW_TEST_UNSET:-research}"}
            models:
              qwen/qwen3-32b: {}
        """
    )
    backend = config.backends["local"]
    assert (backend.base_url, backend.api_key, backend.headers) == (
        "http://10.0.0.5:8000/v1",
        "sk-from-env",
        {"X-Team": "research"},
    )
    assert warnings == []


def test_interpolated_numbers_are_validated_as_numbers(monkeypatch):
    monkeypatch.setenv("GW_TEST_TIMEOUT", "12.5")
    config, _ = parse("backends:\n  m:\n    type: mock\n    timeout_s: ${GW_TEST_TIMEOUT}\n    models: {m/x: {}}\n")
    assert config.backends["m"].timeout_s == 12.5


def test_wrong_type_names_the_field_and_its_line():
    problems = problems_of(
        """
        backends:
          up:
            type: openai
            base_url: http://x/v1
            timeout_s: soon
        """
    )
    assert [(p.path, p.line) for p in problems] == [("backends.up.timeout_s", 6)]
    assert "number" in problems[0].message
    assert str(problems[0]).startswith("backends.up.timeout_s (line 6): ")


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        """
        backends:
          up:
            type: nonsense
          other:
            type: openai
            base_url: http://x/v1
            colour: blue
            models:
              a/b: {context_length: -1}
        routes:
          auto:
            strategy: fastest
            models: []
        """
    )
    assert {(p.path, p.line) for p in problems} == {
        ("backends.up.type", 4),
        ("backends.other.colour", 8),  # unknown keys are refused, not ignored
        ("backends.other.models.a/b.context_length", 10),
        ("routes.auto.strategy", 13),
        ("routes.auto.models", 14),
    }


def test_model_ids_must_be_canonical():
    problems = problems_of("backends:\n  m:\n    type: mock\n    models:\n      no-slash: {}\n")
    assert [(p.path, p.line) for p in problems] == [("backends.m.models", 4)]
    assert "author/slug" in problems[0].message


def test_routes_must_name_served_models():
    problems = problems_of(
        """
        backends:
          m:
            type: mock
            models:
              mock/small: {}
        routes:
          auto:
            models: [mock/small, mock/missing]
            tasks:
              code: [mock/other]
          bad/name:
            models: [mock/small]
        """
    )
    assert {(p.path, p.line) for p in problems} == {
        ("routes.auto.models[1]", 9),
        ("routes.auto.tasks.code[0]", 11),
        ("routes.bad/name", 12),
    }
    assert "mock/missing" in next(p.message for p in problems if p.path == "routes.auto.models[1]")


def test_names_yaml_reads_as_booleans_or_numbers_are_explained():
    problems = problems_of("backends:\n  off:\n    type: mock\n  m:\n    type: mock\n    models:\n      404: {}\n")
    assert [(p.path, p.line) for p in problems] == [("backends", 1), ("backends.m.models", 6)]
    assert "`false` is not a string" in problems[0].message and "quotes" in problems[0].message
    assert "`404` is not a string" in problems[1].message


def test_invalid_yaml_points_at_its_line():
    problems = problems_of("backends:\n  m:\n    type: mock\n   bad: [unclosed\n")
    assert len(problems) == 1 and problems[0].line is not None and "not valid YAML" in problems[0].message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n"])
def test_file_must_be_a_mapping(text):
    assert "must be a mapping" in problems_of(text)[0].message


def test_vendor_without_its_key_is_disabled_with_one_warning(monkeypatch):
    monkeypatch.delenv("GW_TEST_OPENROUTER_KEY", raising=False)
    text = """
        backends:
          openrouter:
            type: openrouter
            api_key: ${GW_TEST_OPENROUTER_KEY}
            models:
              deepseek/deepseek-v3.2: {}
          local:
            type: vllm
            models:
              qwen/qwen3-32b: {}
          spare:
            type: deepseek
            enabled: false
            models:
              deepseek/deepseek-v3.2: {}
        routes:
          auto:
            models: [deepseek/deepseek-v3.2, qwen/qwen3-32b]
        """
    config, warnings = parse(text)
    # The variable the file reads, not the vendor's usual one (hostile testing: setting the
    # variable named changed nothing, and the same advice came back).
    assert warnings == ["backend `openrouter` (openrouter) has no API key (set GW_TEST_OPENROUTER_KEY): disabled"]
    snapshot = ConfigSnapshot.build(config, warnings=warnings)
    assert set(snapshot.backends) == {"local"}
    assert "deepseek/deepseek-v3.2" not in snapshot.offers  # no enabled backend serves it now

    monkeypatch.setenv("GW_TEST_OPENROUTER_KEY", "sk-or-1")
    config, warnings = parse(text)
    assert warnings == [] and set(ConfigSnapshot.build(config).backends) == {"openrouter", "local"}


def test_a_vendor_without_an_api_key_line_is_told_to_write_one():
    text = "backends:\n  openrouter:\n    type: openrouter\n    models: {deepseek/deepseek-v3.2: {}}\n"
    _, warnings = parse(text)
    assert warnings == [
        "backend `openrouter` (openrouter) has no API key "
        "(set `api_key:`, e.g. `api_key: ${OPENROUTER_API_KEY}`): disabled"
    ]


def test_base_url_is_required_where_no_vendor_default_exists():
    problems = problems_of("backends:\n  x:\n    type: openai\n")
    assert problems[0].path == "backends.x" and "base_url" in problems[0].message


def test_load_config_reports_an_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in caught.value.problems[0].message
    assert str(tmp_path / "missing.yaml") in str(caught.value)


def test_shipped_default_policy_is_valid():
    config, _ = load_config(REPO / "policies" / "default.yaml")
    assert config.routes and config.backends


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("backends:\n  m: {type: mock}\n", "no backend declares any model"),
    ],
)
def test_a_policy_that_would_serve_nothing_is_rejected(text, fragment):
    # A truncated save must not be hot-swapped in and stop every route.
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "policy.yaml")
    assert fragment in str(caught.value.problems[0])


TASK_LIST = "code, math, reasoning, translation, long_context, tool_use, vision, chat"


@pytest.mark.parametrize("key", ["coding", '"coding"', "'coding'"])
def test_an_unknown_task_is_called_that_with_the_tasks_listed(key):
    # Quoted or not, `coding` is a string: the problem is the name, not YAML's typing.
    problems = problems_of(
        f"""
        backends:
          m: {{type: mock, models: {{mock/a: {{}}}}}}
        routes:
          auto:
            models: [mock/a]
            tasks:
              {key}: [mock/a]
        """
    )
    assert [str(p) for p in problems] == [
        f"routes.auto.tasks.coding (line 8): `coding` is not a task (did you mean `code`?); the tasks are {TASK_LIST}"
    ]


def test_an_unknown_task_with_no_near_name_lists_the_tasks():
    problems = problems_of(
        "backends:\n  m: {type: mock, models: {mock/a: {}}}\n"
        "routes:\n  auto:\n    models: [mock/a]\n    tasks:\n      poetry: [mock/a]\n"
    )
    assert [str(p) for p in problems] == [
        f"routes.auto.tasks.poetry (line 7): `poetry` is not a task; the tasks are {TASK_LIST}"
    ]


def test_a_task_name_yaml_typed_as_a_boolean_still_says_to_quote_it():
    problems = problems_of(
        "backends:\n  m: {type: mock, models: {mock/a: {}}}\n"
        "routes:\n  auto:\n    models: [mock/a]\n    tasks:\n      on: [mock/a]\n"
    )
    assert [str(p) for p in problems] == [
        "routes.auto.tasks (line 6): the name `true` is not a string (YAML reads unquoted "
        "yes/no/on/off/true/false, null and numbers as values): put it in quotes"
    ]


def test_duplicate_keys_are_rejected_with_both_lines():
    # YAML itself keeps the last `auto:` silently: the first route would vanish.
    problems = problems_of(
        """
        backends:
          m:
            type: mock
            models: {mock/a: {}, mock/b: {}}
            type: mock
        routes:
          auto:
            models: [mock/a]
          auto:
            models: [mock/b]
        """
    )
    assert [str(p) for p in problems] == [
        "backends.m.type (line 6): `type` is defined twice, on lines 4 and 6: YAML would keep only the second; "
        "remove or rename one",
        "routes.auto (line 10): `auto` is defined twice, on lines 8 and 10: YAML would keep only the second; "
        "remove or rename one",
    ]


def test_merge_keys_are_not_duplicates():
    config, _ = parse(
        """
        backends:
          m:
            type: mock
            models: {mock/a: {}}
        routes:
          base: &base {strategy: cost, models: [mock/a]}
          auto:
            <<: *base
            strategy: ordered
        """
    )
    assert config.routes["auto"].strategy == "ordered"


def test_a_typo_in_a_field_name_suggests_the_nearest_field():
    problems = problems_of(
        """
        backends:
          m:
            type: mock
            timout_s: 3
            models:
              mock/a: {input_prize: 1.0}
        routes:
          auto: {models: [mock/a], stratgy: cost}
        gateway:
          fallback: {max_attempt: 2}
        """
    )
    assert sorted(str(p) for p in problems) == [
        "backends.m.models.mock/a.input_prize (line 7): unknown field `input_prize`: did you mean `input_price`?",
        "backends.m.timout_s (line 5): unknown field `timout_s`: did you mean `timeout_s`?",
        "gateway.fallback.max_attempt (line 11): unknown field `max_attempt`: did you mean `max_attempts`?",
        "routes.auto.stratgy (line 9): unknown field `stratgy`: did you mean `strategy`?",
    ]


def test_an_unknown_field_with_no_near_name_lists_the_fields():
    problems = problems_of("backends:\n  m: {type: mock, models: {mock/a: {}}}\nrate_limits: {colour: blue}\n")
    assert [str(p) for p in problems] == [
        "rate_limits.colour (line 3): unknown field `colour`; the fields here are default_key_rpm, keys, routes"
    ]


def test_a_route_naming_an_unserved_model_suggests_a_served_one():
    problems = problems_of(
        "backends:\n  m: {type: mock, models: {mock/mock-small: {}}}\nroutes:\n  auto: {models: [mock/mock-smal]}\n"
    )
    assert [str(p) for p in problems] == [
        "routes.auto.models[0] (line 4): model `mock/mock-smal` is not served by any backend "
        "(did you mean `mock/mock-small`?)"
    ]


def test_a_models_entry_no_backend_serves_is_warned_about():
    # Warned, not rejected: metadata kept for a commented-out backend is legitimate, but a
    # typo would silently drop the capabilities the entry declares.
    config, warnings = parse(
        """
        backends:
          m: {type: mock, models: {mock/mock-small: {}}}
        models:
          mock/mock-smal: {capabilities: [tools]}
          deepseek/deepseek-v3.2: {tasks: [code]}
        """
    )
    assert warnings == [
        "models.mock/mock-smal (line 5): no backend serves `mock/mock-smal`, so this entry has no effect "
        "(did you mean `mock/mock-small`?)",
        "models.deepseek/deepseek-v3.2 (line 6): no backend serves `deepseek/deepseek-v3.2`, so this entry has no effect",
    ]
    assert set(config.models) == {"mock/mock-smal", "deepseek/deepseek-v3.2"}


def test_a_typo_in_a_top_level_section_suggests_the_section():
    problems = problems_of("backends:\n  m: {type: mock, models: {mock/a: {}}}\nroute:\n  auto: {models: [mock/a]}\n")
    assert [str(p) for p in problems] == ["route (line 3): unknown field `route`: did you mean `routes`?"]


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7)
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: &a [*a]\n", "(line 1): an alias refers to a value that contains it"),
        ("a: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply"),
        ("a: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 levels"),
        (LAUGHS, "expands to more than 100,000 values"),
    ],
)
def test_a_file_whose_aliases_or_nesting_cannot_be_loaded_is_a_problem_not_a_crash(text, fragment):
    """Each was a RecursionError traceback (a 500 on POST /admin/reload) or, for aliases that
    expand to 10^8 values, minutes of a frozen event loop; each is now one problem, at once."""
    [problem] = problems_of(text)
    assert fragment in str(problem)


def test_aliases_a_policy_uses_to_share_values_still_load():
    config, _ = parse(
        """
        backends:
          m:
            type: mock
            models:
              mock/small: &prices {input_price: 1.0, output_price: 2.0}
              mock/big: {<<: *prices, output_price: 3.0}
        routes:
          auto: {models: [mock/small, mock/big]}
        """
    )
    assert config.backends["m"].models["mock/big"].input_price == 1.0


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ('{"X-Ok": "a\\nInjected: b"}', "line break"),
        ('{"X-Bad\\nName": "v"}', "is not a header name"),
        ('{"Bad Header": "v"}', "is not a header name"),
        ('{"X-Nul": "a\\u0000b"}', "control character"),
    ],
)
def test_backend_headers_an_http_request_cannot_carry_are_refused_where_they_are(headers, says):
    """Hostile testing: these passed `gateway validate` and hot reload, then every call to the
    backend failed (502) or sent a field no HTTP server accepts."""
    text = f"backends:\n  b:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\n    headers: {headers}\n"
    [problem] = problems_of(text + "    models: {m/x: {}}\n")
    assert problem.path.startswith("backends.b.headers") and says in problem.message and problem.line == 5


def test_backend_headers_with_tabs_and_punctuation_are_accepted():
    text = (
        "backends:\n  b:\n    type: openai\n    base_url: http://127.0.0.1:9/v1\n"
        '    headers: {"X-Title": "My app\\t(v2); see https://x.example/?a=b", "HTTP-Referer": "https://x.example"}\n'
        "    models: {m/x: {}}\n"
    )
    config, warnings = parse(text)
    assert config.backends["b"].headers["X-Title"].startswith("My app\t(v2)")


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        # YAML 1.1 reads yes/on/true as booleans, and pydantic took one for a number: a limit of 1.
        ("rate_limits: {default_key_rpm: yes}\n", "rate_limits.default_key_rpm"),
        ("rate_limits: {keys: {ci: on}}\n", "rate_limits.keys"),
        ("rate_limits: {routes: {auto: true}}\n", "rate_limits.routes"),
        ("gateway: {default_completion_tokens: true}\n", "gateway.default_completion_tokens"),
    ],
)
def test_a_boolean_where_a_number_belongs_is_refused(yaml_text, where):
    base = "backends:\n  m: {type: mock, models: {mock/a: {}}}\n"
    [problem] = map(str, problems_of(base + yaml_text))
    assert problem.startswith(f"{where} (line 3): ") and "not true/false" in problem, problem


def test_booleans_stay_booleans_and_quoted_numbers_numbers():
    config, _ = parse_config(
        "backends:\n  m: {type: mock, timeout_s: '30', models: {mock/a: {}}}\n"
        "routes: {r: {models: [mock/a], task_fallback: no}}\nrate_limits: {keys: {ci: '60'}}\n"
    )
    assert config.rate_limits.keys == {"ci": 60} and config.routes["r"].task_fallback is False
    assert config.backends["m"].timeout_s == 30.0


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        # Hostile testing: `.inf` passed every `ge=0`: `gateway models` listed `$inf` per 1M
        # tokens, `explain` scored it `$inf`, and every call's cost was infinite.
        (
            "backends:\n  m: {type: mock, models: {mock/a: {output_price: .inf}}}\n",
            "backends.m.models.mock/a.output_price",
        ),
        ("backends:\n  m: {type: mock, timeout_s: 1.0e+400, models: {mock/a: {}}}\n", "backends.m.timeout_s"),
        ("backends:\n  m: {type: mock, delay_ms: .inf, models: {mock/a: {}}}\n", "backends.m.delay_ms"),
        # NaN failed `ge=0` too, but with "should be greater than or equal to 0".
        ("backends:\n  m: {type: mock, models: {mock/a: {weight: .nan}}}\n", "backends.m.models.mock/a.weight"),
    ],
)
def test_an_infinite_or_nan_number_is_refused_where_it_is(yaml_text, where):
    [problem] = map(str, problems_of(yaml_text))
    assert problem.startswith(f"{where} (line 2): ") and "finite number" in problem, problem


def test_an_interpolated_inf_is_refused_like_a_written_one(monkeypatch):
    monkeypatch.setenv("PRICE", "inf")
    [problem] = map(str, problems_of("backends:\n  m: {type: mock, models: {mock/a: {input_price: '${PRICE}'}}}\n"))
    assert "input_price" in problem and "finite number" in problem, problem


def test_a_name_with_a_control_character_is_escaped_in_the_problem_line():
    """Hostile testing: a backend named "mo\\nx" with a bad price printed its problem across
    two lines (`gateway validate`, the reload log, `/admin/status`), its path cut in half."""
    [problem] = map(
        str, problems_of('backends:\n  "mo\\nx\\u001b[2J": {type: mock, models: {mock/a: {input_price: -1}}}\n')
    )
    assert problem.startswith("backends.mo\\nx\\x1b[2J.models.mock/a.input_price (line 2): "), problem
    assert problem.isprintable(), problem


def test_an_upstream_id_with_a_control_character_is_refused():
    """Hostile testing: `upstream_id: "up\\e[2J"` was valid, and `gateway models` wrote it
    raw to the terminal (cleared it); no upstream names a model so."""
    [problem] = map(str, problems_of('backends:\n  m: {type: mock, models: {mock/a: {upstream_id: "up\\u001b[2J"}}}\n'))
    assert problem.startswith("backends.m.models.mock/a.upstream_id (line 2): ") and "control character" in problem
    assert problem.isprintable(), problem


def test_a_file_far_larger_than_a_policy_is_refused_unread(tmp_path):
    """Hostile testing: `gateway validate /dev/zero` read until it died of a MemoryError
    (a traceback), and a multi-GB log named by mistake was read whole, then parsed."""
    from gateway.config.loader import MAX_POLICY_BYTES

    big = tmp_path / "gateway.log"
    big.write_bytes(b"# " + b"x" * MAX_POLICY_BYTES + b"\n")
    for path in (big, Path("/dev/zero")):
        with pytest.raises(ConfigError) as refused:
            load_config(path)
        [problem] = map(str, refused.value.problems)
        assert problem == f"<file>: cannot read the file: larger than {MAX_POLICY_BYTES // 2**20} MiB: not a policy"
