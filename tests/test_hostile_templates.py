"""Hostile chat templates end in one ChatTemplateError line, in bounded time and memory.

Each bomb renders in a fresh Python process (so a regression cannot take the test runner down:
the child's address space is capped), which reports the time taken, how much its peak memory
grew and the error line.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tiankong.engine.chat import ChatTemplate
from tiankong.engine.errors import ChatTemplateError

BOMBS = {
    "str_mult": "{{ 'a' * 10**8 }}",
    "str_mult_reversed": "{{ 100000000 * 'a' }}",
    "replace_bomb": "{% set s = 'a' * 1000 %}{{ s.replace('a', s).replace('a', s).replace('a', s) }}",
    "replace_filter_bomb": "{% set s = 'a' * 1000 %}{{ s|replace('a', s)|replace('a', s)|replace('a', s) }}",
    "nested_range_loops": "{% for i in range(10**5) %}{% for j in range(10**5) %}{% for k in range(10**5) %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "nested_loops_one_range": "{% set r = range(10**5) %}{% for i in r %}{% for j in r %}{% for k in r %}"
    "{% endfor %}{% endfor %}{% endfor %}",
    "nested_loops_over_string": "{% set s = 'a' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "loops_writing_output": "{% for i in range(10**5) %}{% for j in range(10**5) %}x{% endfor %}{% endfor %}",
    "huge_range": "{{ range(10**10)|length }}",
    "center": "{{ 'a'.center(10**9) }}",
    "ljust": "{{ 'a'.ljust(10**9) }}",
    "rjust": "{{ 'a'.rjust(10**9) }}",
    "zfill": "{{ '1'.zfill(10**9) }}",
    "center_filter": "{{ 'a'|center(10**9) }}",
    "expandtabs": "{{ ('\t' * 1000).expandtabs(10**6) }}",
    "indent_filter": "{{ ('a\n' * 1000)|indent(10**6) }}",
    "list_mult": "{{ ([1] * 10**9)|length }}",
    "list_mult_reversed": "{{ (10**9 * [messages])|length }}",
    "batch_fill": "{{ ([1]|batch(10**9, 'x')|list)|length }}",
    "macro_recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "macro_fan_out": "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
    "deep_nesting_blocks": "{% if true %}" * 200 + "x" + "{% endif %}" * 200,
    "deep_nesting_parens": "{{ " + "(" * 10000 + "1" + ")" * 10000 + " }}",
    "deep_nesting_lists": "{{ " + "[" * 10000 + "]" * 10000 + " }}",
    "division_by_zero": "{{ 1 / 0 }}",
    "floor_division_by_zero": "{{ 1 // 0 }}",
    "modulo_by_zero": "{{ 1 % 0 }}",
    "lipsum_paragraphs": "{{ lipsum(10**9) }}",
    "lipsum_words": "{{ lipsum(1, False, 10**8, 10**9) }}",
    "int_power": "{{ 2 ** (10 ** 9) }}",
    "float_power": "{{ 10.0 ** 10000 }}",
    "format_width": "{{ '{:>1000000000}'.format(1) }}",
    "format_computed_width": "{{ '{:>{w}}'.format(1, w=10**9) }}",
    "percent_width": "{{ '%1000000000s' % 'a' }}",
    "percent_star_width": "{{ '%*s' % (10**9, 'a') }}",
    "format_filter_width": "{{ '%1000000000s'|format('a') }}",
    "tojson_indent": "{{ [[[[1]]]]|tojson(indent=10**8) }}",
    "tilde_doubling": "{% set ns = namespace(s='a') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "plus_doubling": "{% set ns = namespace(s='a') %}{% for i in range(100) %}{% set ns.s = ns.s + ns.s %}"
    "{% endfor %}{{ ns.s|length }}",
    "join_big_parts": "{% set s = 'a' * 1000000 %}{{ [s, s, s, s, s]|join }}",
    "huge_output": "{% set s = 'a' * 1000000 %}{% for i in range(100) %}{{ s }}{% endfor %}",
    "many_distinct_strings": "{% set s = 'a' * 1000000 %}{% set ns = namespace(l=[]) %}"
    "{% for i in range(100000) %}{% set ns.l = ns.l + [s ~ i] %}{% endfor %}",
}

_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a regression fails here, not the machine
from tiankong.engine.chat import ChatTemplate
from tiankong.engine.errors import ChatTemplateError
source = sys.stdin.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    ChatTemplate(source, "<s>", "</s>").render([{"role": "user", "content": "hi"}])
    error = None
except ChatTemplateError as e:
    error = str(e)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"error": error, "seconds": time.monotonic() - start, "grown_mb": grown / 1024}))
"""


@pytest.mark.parametrize("name", BOMBS)
def test_bomb_fails_cleanly_in_bounded_time_and_memory(name):
    run = subprocess.run([sys.executable, "-c", _CHILD], input=BOMBS[name], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    error = result["error"]
    assert error is not None, f"{name} rendered"
    assert error.startswith("chat template"), error
    assert "\n" not in error and "use raw mode" in error
    assert result["seconds"] < 5, result
    assert result["grown_mb"] < 500, result


def test_limits_are_what_the_error_names():
    with pytest.raises(ChatTemplateError, match=r"^chat template failed: the operator '\*' would build a string"):
        ChatTemplate("{{ 'a' * 10**8 }}", None, None).render([{"role": "user", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="took longer than"):
        ChatTemplate(
            "{% for i in range(10**5) %}{% for j in range(10**5) %}{% endfor %}{% endfor %}", None, None
        ).render([{"role": "user", "content": "hi"}])


def test_ordinary_uses_of_the_checked_operations_still_work():
    source = (
        "{{ 'ab' * 3 }}|{{ [1, 2] * 2 }}|{{ 'x'.center(5) }}|{{ 'a-b'.replace('-', '+') }}|{{ 2 ** 10 }}|"
        "{{ '%-4s|%3d' % ('a', 7) }}|{{ '{:>4}'.format(1) }}|{{ 'l1\nl2'|indent(2) }}|{{ range(3)|list }}|"
        "{{ [1, 2, 3]|batch(2)|list }}|{{ 'a' ~ 1 ~ 'b' }}|{{ ['a', 'b']|join(', ') }}|{{ 7 // 2 }} {{ 7 % 4 }} "
        "{{ 7 / 2 }}|{% for m in messages if m.role == 'user' %}{{ loop.index }}/{{ loop.length }}{% endfor %}|"
        "{{ messages|tojson(indent=1) }}|{{ lipsum(1, false, 3, 4)|wordcount > 0 }}"
    )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    out = ChatTemplate(source, None, None).render(messages)
    assert out == (
        "ababab|[1, 2, 1, 2]|  x  |a+b|1024|a   |  7|   1|l1\n  l2|[0, 1, 2]|[[1, 2], [3]]|a1b|a, b|3 3 3.5|1/1|"
        + __import__("json").dumps(messages, indent=1)
        + "|True"
    )


def test_a_thousand_message_chat_renders_fast():
    from test_chat import LLAMA3

    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20} for i in range(1000)]
    out = ChatTemplate(LLAMA3, "<s>", "</s>").render(messages)
    assert out.count("<|eot_id|>") == 1000
