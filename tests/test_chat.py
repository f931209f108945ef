"""Chat templates render exactly like transformers' apply_chat_template, and prompts become the same ids."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from tiankong.engine.chat import ChatTemplate, render_prompt, validate_messages
from tiankong.engine.errors import ChatTemplateError, InputError
from tiankong.engine.tokenizer import load_tokenizer

# Templates written after well-known models' ones; each exercises a different Jinja corner.
CHATML_QWEN = (  # loopcontrols (continue), whitespace control, a default system prompt
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' and loop.first %}{%- continue %}{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2 = (  # raise_exception on role alternation, bos/eos variables, .strip()
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
ZEPHYR = (  # trim_blocks / lstrip_blocks carry this one: indented block tags on their own lines
    "{% for message in messages %}\n  {% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "  {% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "  {% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "  {% endif %}\n  {% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n  {% endif %}\n"
    "{% endfor %}"
)
LLAMA3 = (  # trim filter, bos on the first message only
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
TOOLS_AND_DATES = (  # tojson without HTML escaping, namespace(), strftime_now, an undefined `tools`
    "{%- set ns = namespace(count=0) %}{%- for m in messages %}{%- set ns.count = ns.count + 1 %}{%- endfor %}"
    "{{- 'n=' ~ ns.count ~ ' date=' ~ strftime_now('%Y-%m') ~ '\n' }}"
    "{{- messages | tojson }}\n{{- {'html': '<b>&\\'</b>', 'x': [1, 2]} | tojson(indent=2) }}\n"
    "{%- if tools is not none %}TOOLS{% endif %}{{ unk_token }}|{{ pad_token }}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there!"}],
    [
        {"role": "system", "content": "Be brief. 简洁一点。"},
        {"role": "user", "content": "  What is <b>2+2</b>?  "},
        {"role": "assistant", "content": "4 😀"},
        {"role": "user", "content": 'And "3+3"?\n'},
    ],
]

CASES = {  # template name -> (template, tokenizer fixture)
    "chatml-qwen": (CHATML_QWEN, "bytelevel_folder"),
    "smollm2": (SMOLLM2, "bytelevel_folder"),
    "llama2": (LLAMA2, "llama_folder"),
    "zephyr": (ZEPHYR, "llama_folder"),
    "llama3": (LLAMA3, "llama_folder"),
    "tools-and-dates": (TOOLS_AND_DATES, "bytelevel_folder"),
}


def _transformers_tokenizer(folder: Path, template: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = template
    return tok


def _ours(folder: Path, template: str):
    tok = load_tokenizer(folder)
    extra = {k: v for k, v in tok.named_special_tokens.items() if k not in ("bos_token", "eos_token")}
    return tok, ChatTemplate(template, tok.bos_token, tok.eos_token, extra)


@pytest.mark.parametrize("name", CASES)
def test_render_matches_transformers(name, request):
    source, fixture = CASES[name]
    folder = request.getfixturevalue(fixture)
    theirs = _transformers_tokenizer(folder, source)
    tok, template = _ours(folder, source)
    for messages in CONVERSATIONS:
        for add in (True, False):
            expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
            assert template.render(messages, add_generation_prompt=add) == expected, (name, add)
        ids = theirs.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if not isinstance(ids, list) else ids  # transformers 5 returns a BatchEncoding
        assert render_prompt(template, tok, messages=messages) == list(ids), name


def test_render_kwargs_become_variables(bytelevel_folder):
    source = "{% if enable_thinking is defined and not enable_thinking %}/no_think {% endif %}{{ messages[0].content }}"
    theirs = _transformers_tokenizer(bytelevel_folder, source)
    _, template = _ours(bytelevel_folder, source)
    messages = CONVERSATIONS[0]
    expected = theirs.apply_chat_template(messages, tokenize=False, enable_thinking=False)
    assert template.render(messages, enable_thinking=False) == expected == "/no_think Hello there!"


def test_strftime_now_and_generation_tag(bytelevel_folder):
    _, template = _ours(bytelevel_folder, "{% generation %}{{ strftime_now('%Y') }}{% endgeneration %}")
    assert template.render(CONVERSATIONS[0]) == str(datetime.now().year)


def test_raise_exception_becomes_chat_template_error(llama_folder):
    _, template = _ours(llama_folder, LLAMA2)
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(ChatTemplateError, match="Conversation roles must alternate"):
        template.render(bad)


def test_template_errors(llama_folder):
    with pytest.raises(ChatTemplateError, match="syntax error on line 1"):
        ChatTemplate("{% for m in messages %}{{ m.content }", None, None)
    _, template = _ours(llama_folder, "{{ messages[0].content + 1 }}")
    with pytest.raises(ChatTemplateError, match="chat template failed"):
        template.render(CONVERSATIONS[0])
    _, sneaky = _ours(llama_folder, "{{ messages.__class__ }}{% set ns = namespace(_x=1) %}")
    with pytest.raises(ChatTemplateError):
        sneaky.render(CONVERSATIONS[0])


@pytest.mark.parametrize(
    "messages, problem",
    [
        ("hello", "must be a list"),
        ([], "empty"),
        (["hi"], "message 1 must be an object"),
        ([{"content": "hi"}], 'no "role"'),
        ([{"role": "user"}], 'no "content"'),
        ([{"role": "user", "content": 3}], "must be a string"),
        ([{"role": "user", "content": "ok"}, {"role": None, "content": "x"}], "message 2"),
    ],
)
def test_validate_messages_rejects(messages, problem):
    with pytest.raises(InputError, match=problem):
        validate_messages(messages)


def test_validate_messages_copies():
    messages = [{"role": "user", "content": "hi", "name": "ann"}]
    checked = validate_messages(messages)
    assert checked == messages and checked[0] is not messages[0]


def test_render_prompt_modes(llama_folder, bytelevel_folder):
    llama, template = _ours(llama_folder, ZEPHYR)
    assert render_prompt(None, llama, prompt="Once upon a") == llama.encode("Once upon a")
    assert render_prompt(template, llama, prompt="Once upon a", raw=True) == llama.encode("Once upon a")
    empty_chat = template.render([{"role": "user", "content": ""}])
    assert render_prompt(template, llama, prompt="") == llama.encode(empty_chat, add_special_tokens=False)
    assert render_prompt(None, llama, prompt="") == [llama.bos_id]
    byte, _ = _ours(bytelevel_folder, CHATML_QWEN)
    assert render_prompt(None, byte, prompt="") == []
    # Raw mode with messages: contents joined by a blank line.
    two = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "two"}]
    assert render_prompt(None, llama, messages=two) == llama.encode("one\n\ntwo")
    # Chat mode: a bare prompt is one user message; the rendered text carries its own special tokens.
    ids = render_prompt(template, llama, prompt="hi")
    assert ids == llama.encode("<|user|>\nhi</s>\n<|assistant|>\n", add_special_tokens=False)
    assert ids[0] in llama.special_ids
    with pytest.raises(InputError):
        render_prompt(template, llama)
    with pytest.raises(InputError):
        render_prompt(template, llama, prompt="a", messages=two)
    with pytest.raises(InputError):
        render_prompt(template, llama, messages=[{"role": "user"}])


def test_from_folder_sources(tmp_path, bytelevel_folder):
    tok = load_tokenizer(bytelevel_folder)
    assert ChatTemplate.from_folder(bytelevel_folder, tok) is None

    # transformers 5 saves the template as chat_template.jinja
    from transformers import AutoTokenizer

    theirs = AutoTokenizer.from_pretrained(bytelevel_folder)
    theirs.chat_template = CHATML_QWEN
    saved = tmp_path / "saved"
    theirs.save_pretrained(saved)
    template = ChatTemplate.from_folder(saved, load_tokenizer(saved))
    assert template is not None and template.source == CHATML_QWEN
    assert template.render(CONVERSATIONS[0]) == theirs.apply_chat_template(
        CONVERSATIONS[0], tokenize=False, add_generation_prompt=True
    )

    # Older folders keep it in tokenizer_config.json, as a string or as named templates.
    config_only = tmp_path / "config_only"
    config_only.mkdir()
    (config_only / "tokenizer_config.json").write_text(json.dumps({"chat_template": SMOLLM2}))
    assert ChatTemplate.from_folder(config_only, tok).source == SMOLLM2
    named = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": ZEPHYR}]
    (config_only / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert ChatTemplate.from_folder(config_only, tok).source == ZEPHYR
    (config_only / "tokenizer_config.json").write_text(json.dumps({"chat_template": named[:1]}))
    with pytest.raises(ChatTemplateError, match="default"):
        ChatTemplate.from_folder(config_only, tok)
    # ...or in a chat_template.json
    (config_only / "tokenizer_config.json").write_text("{}")
    (config_only / "chat_template.json").write_text(json.dumps({"chat_template": LLAMA3}))
    assert ChatTemplate.from_folder(config_only, tok).source == LLAMA3
