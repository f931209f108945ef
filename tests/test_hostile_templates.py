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

# namespace(l=...) holding a list of 1000 ones, doubled 30 times without copying: [l, l], [[l, l], [l, l]] ...
SHARED_LISTS = "{% set ns = namespace(l=[1] * 1000) %}{% for i in range(30) %}{% set ns.l = [ns.l, ns.l] %}{% endfor %}"
# namespace(l=...) holding the same 1,000,000-character string 1024 times
SHARED_STRINGS = (
    "{% set ns = namespace(l=['a' * 1000000]) %}{% for i in range(10) %}{% set ns.l = ns.l + ns.l %}{% endfor %}"
)

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
    # Writing out a value whose text is far bigger than its memory: shared lists, 2**30 * 4000 characters.
    "print_shared_lists": SHARED_LISTS + "{{ ns.l }}",
    "print_namespace": SHARED_LISTS + "{{ ns }}",
    "tojson_shared_lists": SHARED_LISTS + "{{ ns.l|tojson|length }}",
    "string_filter_shared_lists": SHARED_LISTS + "{{ ns.l|string|length }}",
    "pprint_shared_lists": SHARED_LISTS + "{{ ns.l|pprint|length }}",
    "upper_filter_shared_lists": SHARED_LISTS + "{{ ns.l|upper|length }}",
    "join_filter_shared_lists": SHARED_LISTS + "{{ ns.l|join|length }}",
    "tilde_shared_lists": SHARED_LISTS + "{{ (ns.l ~ '')|length }}",
    "percent_shared_lists": SHARED_LISTS + "{{ ('%s' % ns.l)|length }}",
    "format_shared_lists": SHARED_LISTS + "{{ '{}'.format(ns.l)|length }}",
    "raise_exception_shared_lists": SHARED_LISTS + "{{ raise_exception(ns.l) }}",
    "list_mult_shared_lists": "{% set a = [1] * 100000 %}{% set b = [a] * 100000 %}{{ b|length }}",
    # A shared big string, written many times by one operation.
    "str_join_generator": SHARED_STRINGS + "{{ ''.join(ns.l|select)|length }}",
    "join_filter_generator": SHARED_STRINGS + "{{ ns.l|select|join|length }}",
    "format_repeated_field": "{% set s = 'a' * 1000000 %}{{ ('{0}' * 1000).format(s)|length }}",
    "percent_repeated_key": "{% set s = 'a' * 1000000 %}{{ ('%(a)s' * 1000 % {'a': s})|length }}",
    "macro_output": "{% set s = 'a' * 1000000 %}{% macro f() %}{% for i in range(1000) %}{{ s }}{% endfor %}"
    "{% endmacro %}{{ f()|length }}",
    "set_block_output": "{% set s = 'a' * 1000000 %}{% set x %}{% for i in range(1000) %}{{ s }}{% endfor %}"
    "{% endset %}{{ x|length }}",
    "replace_filter_on_list": "{% set s = 'a' * 10000 %}{{ ([1] * 100000)|replace('1', s)|length }}",
    "pprint_long_key": "{{ {'k' * 1000000: [1] * 1000}|pprint|length }}",
    "translate": "{% set t = {120: 'y' * 100000} %}{{ ('x' * 100000).translate(t)|length }}",
    "percent_negative_star_width": "{{ '%*s' % (-10**9, 'a') }}",
    "sum_of_lists": "{{ ([[1]] * 100000)|sum(start=[])|length }}",
    # bytes, limited like str
    "bytes_mult": "{{ ('x'.encode('utf-8') * 10**9)|length }}",
    "bytes_mult_300M": "{{ ('x'.encode('utf-8') * 3 * 10**8)|length }}",
    "bytes_plus_doubling": "{% set ns = namespace(b='a'.encode()) %}{% for i in range(100) %}"
    "{% set ns.b = ns.b + ns.b %}{% endfor %}{{ ns.b|length }}",
    "bytes_center": "{{ 'a'.encode().center(10**9)|length }}",
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


def test_values_written_out_read_as_in_plain_jinja():
    """Sizing a value before writing it out changes nothing in what is written."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    source = (
        "{{ messages }}|{{ messages|string }}|{{ messages|pprint }}|{{ messages|map(attribute='content')|join(', ') }}|"
        "{{ messages|join }}|{{ '%s|%r|%5d' % (messages[0], 'x', 7) }}|{{ '%(a)s' % {'a': [1]} }}|"
        "{{ '{0}-{0!r}-{1:>5}-{k}'.format('a', 3, k=messages) }}|{{ '{x}'.format_map({'x': 2.5}) }}|"
        "{{ 'x'.encode() }}|{{ 'abc'.translate({97: 'zz'}) }}|{{ ', '.join(messages|map(attribute='role')) }}|"
        "{% macro m(x) %}<{{ x }}>{% endmacro %}{{ m(messages[0]) }}|{% set b %}[{{ 1 }}]{% endset %}{{ b }}|"
        "{{ messages ~ '!' }}|{% set ns = namespace(v=[1, 'two']) %}{{ ns }}|{{ ns.v * 2 }}|{{ messages.0.keys() }}|"
        "{{ {'a': (1, 2.5, none, true)}|upper }}|{{ [1, 2]|sum }}|{{ 'b'.encode() * 3 + 'c'.encode() }}"
    )
    messages = [{"role": "user", "content": "hi 'there'\n"}, {"role": "assistant", "content": "yo é \x00"}]
    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(source)
    assert ChatTemplate(source, None, None).render(messages) == plain.render(messages=messages)
    tojson = "{{ messages|tojson }}|{{ messages|tojson(indent=2) }}|{{ messages|tojson(ensure_ascii=true) }}"
    assert ChatTemplate(tojson, None, None).render(messages) == "|".join(
        (
            json.dumps(messages, ensure_ascii=False),
            json.dumps(messages, indent=2, ensure_ascii=False),
            json.dumps(messages),
        )
    )


# --- what a template does with the messages, and what its errors say ---------------------------------


def _tokenizer():
    """What ChatTemplate.for_tokenizer reads of a tokenizer."""
    from types import SimpleNamespace

    return SimpleNamespace(named_special_tokens={"bos_token": "<s>"}, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize(
    "source",
    [
        "Hello there, assistant:",  # never reads messages
        "{% for m in messages %}<|{{ m.role }}|>{% endfor %}",  # reads the roles only
        "{{ bos_token }}{{ messages|length }} messages",
    ],
)
def test_a_template_that_ignores_the_messages_is_refused(tmp_path, source):
    """At load for a --chat-template file; the model's own is refused when used (raw mode still works)."""
    path = tmp_path / "t.jinja"
    path.write_text(source)
    with pytest.raises(ChatTemplateError, match="ignores the messages") as error:
        ChatTemplate.from_file(path, _tokenizer())
    assert str(error.value).startswith(f"{path}: ") and "--chat-template FILE" in str(error.value)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": source}))
    own = ChatTemplate.from_folder(tmp_path, _tokenizer())
    with pytest.raises(ChatTemplateError, match=r"tokenizer_config.json: the chat template ignores the messages"):
        own.render([{"role": "user", "content": "hi"}])


def test_templates_that_read_the_messages_load(tmp_path):
    from test_chat import LLAMA3

    needs_system = (
        "{% if messages[0].role != 'system' %}{{ raise_exception('start with a system message') }}{% endif %}"
    )
    for source in (LLAMA3, "{{ messages[-1].content }}", needs_system + "{{ messages[1].content }}"):
        path = tmp_path / "t.jinja"
        path.write_text(source)
        assert ChatTemplate.from_file(path, _tokenizer()).source == source


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("line1\nline2\r\n\u2028line3", "line1 line2 line3"),
        ("\x1b]2;pwned\x1b\\ done", "]2;pwned\\ done"),
        ("x" * 10**6, "x" * 199 + "…"),
    ],
)
def test_raise_exception_is_one_short_inert_line(message, shown):
    source = "{{ raise_exception(" + json.dumps(message) + ") }}"
    with pytest.raises(ChatTemplateError) as error:
        ChatTemplate(source, None, None).render([{"role": "user", "content": "hi"}])
    assert str(error.value) == f"the chat template rejected the messages: {shown}"


def test_errors_quoting_the_template_are_one_short_line():
    for source in ("{{ messages." + "x" * 10**5 + "() }}", "{% " + "\x1b" * 10 + "x" * 10**5 + " %}"):
        with pytest.raises(ChatTemplateError) as error:
            ChatTemplate(source, None, None).render([{"role": "user", "content": "hi"}])
        text = str(error.value)
        assert "\n" not in text and "\x1b" not in text and len(text) < 400, text[:500]


def test_named_templates_whose_default_has_no_text(tmp_path):
    config = {"chat_template": [{"name": "default"}, {"name": "tool_use", "template": "{{ messages }}"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match=r'tokenizer_config.json: the chat template named "default" has no'):
        ChatTemplate.from_folder(tmp_path, _tokenizer())


# --- which template failed, why in a template's terms, and whose fault it is (the server's or the request's) ---

FAILURES = {
    # Python's words leaked: "TypeError: no loader for this environment specified"
    "include": ("{% include 'x.jinja' %}{{ messages }}", "it includes, imports or extends another template, and "),
    "import": ("{% import 'os' as os %}{{ messages }}", "chat templates cannot read other files"),
    "extends": ("{% extends 'base' %}{{ messages }}", "chat templates cannot read other files"),
    # "Exceeds the limit (4300 digits) ... use sys.set_int_max_str_digits() to increase the limit"
    "long_number": ("{{ messages }}{{ (10**5000)|string }}", "it writes out a number too large (over 4300 digits);"),
    # "access to attribute '__init__' of 'type' object is unsafe.;" (the sandbox's full stop, then ours)
    "sandbox": (
        "{{ messages }}{{ cycler.__init__.__globals__ }}",
        "'__init__' of 'type' object is unsafe: chat templates run in a sandbox;",
    ),
    "recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ messages }}{{ f() }}", "it recurses too deeply"),
    "limit": ("{{ messages }}{{ 'a' * 10**8 }}", "the operator '*' would build a string"),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_a_failing_template_is_named_and_is_the_templates_fault(tmp_path, case):
    from tiankong.engine.errors import ChatTemplateFault

    source, words = FAILURES[case]
    path = tmp_path / "t.jinja"
    path.write_text(source)
    template = ChatTemplate.from_file(path, _tokenizer())
    with pytest.raises(ChatTemplateFault) as error:
        template.render([{"role": "user", "content": "hi"}])
    text = str(error.value)
    assert text.startswith(f"chat template failed ({path}): ") and words in text, text
    assert text.endswith(
        "; fix the template or pass another file (--chat-template FILE, or chat_template=PATH in "
        "Python), or use raw mode (generate --raw)"
    ), text
    for leak in ("TypeError", "ValueError", "sys.set_int_max_str_digits", ".;", "check the messages"):
        assert leak not in text, text


def test_raise_exception_is_the_messages_fault_not_the_templates():
    from tiankong.engine.errors import ChatTemplateFault

    with pytest.raises(ChatTemplateError) as error:
        ChatTemplate("{{ raise_exception('no system message') }}", None, None).render(
            [{"role": "user", "content": "hi"}]
        )
    assert not isinstance(error.value, ChatTemplateFault)


def test_the_models_own_template_is_named_by_its_file(tmp_path):
    from tiankong.engine.errors import ChatTemplateFault

    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}{{ 1 / 0 }}"}))
    template = ChatTemplate.from_folder(tmp_path, _tokenizer())
    with pytest.raises(ChatTemplateFault, match=rf"^chat template failed \({tmp_path / 'tokenizer_config.json'}\): "):
        template.render([{"role": "user", "content": "hi"}])


def test_a_template_writing_a_lone_surrogate_is_blamed_not_the_tokenizer():
    # Was: "the tokenizer cannot encode 'hi' (TextInputSequence must be str); ... fix tokenizer.json",
    # for a model without one.
    from tiny_models import STORIES

    from tiankong.engine.chat import render_prompt
    from tiankong.engine.errors import ChatTemplateFault
    from tiankong.engine.tokenizer import load_tokenizer

    template = ChatTemplate("{{ '\\udcff' }}{% for m in messages %}{{ m.content }}{% endfor %}", None, None)
    with pytest.raises(ChatTemplateFault) as error:
        render_prompt(template, load_tokenizer(STORIES), messages=[{"role": "user", "content": "hi"}])
    assert str(error.value).startswith(
        "chat template failed: it writes text that is not valid Unicode (a lone surrogate"
    )


def test_one_named_template_without_default_is_not_called_several(tmp_path):
    config = {"chat_template": [{"name": "other", "template": "{{ messages }}"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError) as error:
        ChatTemplate.from_folder(tmp_path, _tokenizer())
    assert str(error.value) == (
        f'{tmp_path / "tokenizer_config.json"} has one chat template, named other, but none named "default"; '
        'rename the one to use to "default" or pass another file (--chat-template FILE)'
    )


def test_a_given_template_is_checked_before_the_weights_load(tmp_path, monkeypatch):
    from tiny_models import STORIES

    import tiankong.engine.engine as engine

    def no_load(*args, **kwargs):
        raise AssertionError("the weights were loaded before the template was read")

    monkeypatch.setattr(engine, "load_model", no_load)
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}{{ m.content }")
    with pytest.raises(ChatTemplateError, match=rf"^{path}: chat template has a syntax error on line 1"):
        engine.Engine.load(STORIES, device="cpu", chat_template=path)
