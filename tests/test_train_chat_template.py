"""--chat-template FILE for train reward, dpo and ppo, as train sft has it: the votes' prompts are
rendered with the file (checked against the template rendered by jinja2 and tokenized by
transformers, not by tiankong), each run saves it (chat_template.jinja) so chat and the next stage use
the same format, and PPO reads prompts in the format its reward model learned or refuses to start."""

from __future__ import annotations

import json
import re

import jinja2
import pytest
from helpers import cli, one_thread  # noqa: F401 (one_thread is an autouse fixture)
from test_train_ppo import ppo_config
from tiny_models import make_model

from tiankong.engine.engine import Engine
from tiankong.engine.errors import InputError
from tiankong.engine.model import load_model
from tiankong.trainers.dpo import DPOConfig, DPOTrainer
from tiankong.trainers.ppo import PPOTrainer
from tiankong.trainers.preferences import Encoder
from tiankong.trainers.reward import RewardConfig, RewardModel, RewardTrainer

# Not tiankong's default (<|user|>...): a run that ignored the file would render other text.
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '### ' + m['role'] + ':\\n' + m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}"
)
OTHER = TEMPLATE.replace("### ", ">> ")

VOTES = [{"prompt": f"Story {i}:", "chosen": " a happy fox ran", "rejected": " a sad dog sat"} for i in range(6)] + [
    {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Best pet?"}],
        "chosen": [{"role": "assistant", "content": " a fox"}],
        "rejected": [{"role": "assistant", "content": " a dog"}],
    }
]
PROMPTS = [
    "Once upon a time",
    {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]},
]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    """A tiny llama whose tokenizer has no chat template (a base model)."""
    folder = make_model(tmp_path_factory.mktemp("tpl-llama"), "llama")
    assert Encoder.from_folder(folder).template is None
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tpl-files")
    (folder / "chat.jinja").write_text(TEMPLATE)
    (folder / "other.jinja").write_text(OTHER)
    (folder / "votes.jsonl").write_text("".join(json.dumps(v) + "\n" for v in VOTES))
    (folder / "prompts.jsonl").write_text(
        "".join(json.dumps(p if isinstance(p, dict) else {"prompt": p}) + "\n" for p in PROMPTS)
    )
    return folder


@pytest.fixture(scope="module")
def hf_tokenizer(llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama_dir)


def rendered(tok, messages, generation_prompt, template=TEMPLATE):
    """The reference: the template rendered by plain jinja2 with the tokenizer's special tokens."""
    return (
        jinja2.Environment()
        .from_string(template)
        .render(
            messages=messages,
            add_generation_prompt=generation_prompt,
            bos_token=tok.bos_token,
            eos_token=tok.eos_token,
        )
    )


def ids(tok, messages, generation_prompt, template=TEMPLATE):
    return tok.encode(rendered(tok, messages, generation_prompt, template), add_special_tokens=False)


def as_messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def vote_ids(tok):
    """Every answer of VOTES after its prompt, as the template renders the conversation (its EOS last)."""
    seqs = set()
    for v in VOTES:
        for side in ("chosen", "rejected"):
            answer = v[side] if isinstance(v[side], str) else v[side][0]["content"]
            seqs.add(tuple(ids(tok, as_messages(v["prompt"]) + [{"role": "assistant", "content": answer}], False)))
    return seqs


def check_trainer_ids(trainer, tok):
    """The trainer's sequences are the template's, and each answer starts after its rendered prompt."""
    groups = trainer.data.groups
    assert {tuple(s) for g in groups for s in g.seqs} == vote_ids(tok)
    prompts = [ids(tok, as_messages(v["prompt"]), True) for v in VOTES]
    for g in groups:
        for seq, start in zip(g.seqs, g.starts, strict=True):
            assert any(seq[:start] == p and start == len(p) for p in prompts)


def check_saved(out, tok):
    """The folder holds the template, and a model loaded from it renders and encodes as jinja2 does."""
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    engine = Engine.load(out, device="cpu")
    assert engine.template.render(CHAT, add_generation_prompt=True) == rendered(tok, CHAT, True)
    assert engine.encode(messages=CHAT) == ids(tok, CHAT, True)


def small(**kw):
    return dict(steps=2, batch_size=4, lr=1e-3, eval_fraction=0, device="cpu", progress=False, **kw)


@pytest.fixture(scope="module")
def reward_run(llama_dir, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("tpl-rm") / "rm"
    cfg = RewardConfig(
        model=str(llama_dir),
        data=str(files / "votes.jsonl"),
        output=str(out),
        chat_template=str(files / "chat.jinja"),
        **small(),
    )
    trainer = RewardTrainer(cfg)
    return trainer, trainer.train()


def test_reward_renders_votes_with_the_file_and_its_folder_keeps_it(reward_run, hf_tokenizer):
    trainer, out = reward_run
    check_trainer_ids(trainer, hf_tokenizer)
    check_saved(out, hf_tokenizer)
    info = json.loads((out / "reward_config.json").read_text())
    assert info["prompt_format"]["raw"] is False
    # Loaded back (reward score, PPO), the reward model encodes a vote as it trained on it.
    rm = RewardModel.load(out, "cpu")
    assert rm.encoder.template.source == TEMPLATE
    v = VOTES[-1]
    seq, _ = rm.encoder.pair(v["prompt"], v["chosen"][0]["content"])
    assert seq == ids(hf_tokenizer, v["prompt"] + v["chosen"], False)


def test_dpo_renders_votes_with_the_file_and_saves_it(llama_dir, files, hf_tokenizer, tmp_path, capsys):
    cfg = DPOConfig(
        model=str(llama_dir),
        data=str(files / "votes.jsonl"),
        output=str(tmp_path / "dpo"),
        chat_template=str(files / "chat.jinja"),
        **small(),
    )
    trainer = DPOTrainer(cfg)
    out = trainer.train()
    assert "has no chat template" not in capsys.readouterr().err  # the file is its template
    check_trainer_ids(trainer, hf_tokenizer)
    check_saved(out, hf_tokenizer)


def ppo_cfg(llama_dir, files, reward, out, **kw):
    """test_train_ppo's tiny run, one step of it, rendering its prompts (not raw) unless told."""
    small = dict(steps=1, batch_size=2, num_mini_batches=1, ppo_epochs=1, response_length=4, raw=False)
    return ppo_config(llama_dir, reward, files / "prompts.jsonl", out, **{**small, **kw})


def test_ppo_renders_prompts_with_the_file_in_the_reward_models_format(
    llama_dir, files, reward_run, hf_tokenizer, tmp_path, capsys
):
    _, rm = reward_run
    trainer = PPOTrainer(ppo_cfg(llama_dir, files, rm, tmp_path / "ppo", chat_template=str(files / "chat.jinja")))
    out = trainer.train()
    assert "has no chat template" not in capsys.readouterr().err
    want = [ids(hf_tokenizer, as_messages(p if isinstance(p, str) else p["messages"]), True) for p in PROMPTS]
    assert sorted(trainer.prompts) == sorted(want)
    # The reward model scores the policy's ids as they are: its recorded template is this run's.
    assert trainer.reward_model.encoder.template.source == trainer.encoder.template.source == TEMPLATE
    assert trainer.reward_model.encoder.prompt(as_messages(PROMPTS[0])) == want[0]
    check_saved(out, hf_tokenizer)
    assert (out / "value" / "chat_template.jinja").read_text() == TEMPLATE


def test_ppo_refuses_a_prompt_format_its_reward_model_did_not_learn(llama_dir, files, reward_run, tmp_path):
    _, rm = reward_run
    # Without the file the policy reads plain text, which this reward model never saw: the fix names its file.
    with pytest.raises(
        InputError,
        match=re.escape(f"plain text; pass --chat-template {rm / 'chat_template.jinja'} (without --raw)") + "$",
    ):
        PPOTrainer(ppo_cfg(llama_dir, files, rm, tmp_path / "a")).setup()
    with pytest.raises(InputError, match="another chat template than this run's; pass --chat-template "):
        PPOTrainer(ppo_cfg(llama_dir, files, rm, tmp_path / "b", chat_template=str(files / "other.jinja"))).setup()
    # The reward model's own file, as the message says: the run starts.
    fixed = PPOTrainer(ppo_cfg(llama_dir, files, rm, tmp_path / "c", chat_template=str(rm / "chat_template.jinja")))
    fixed.setup()
    assert fixed.encoder.template.source == TEMPLATE
    # A reward model that learned plain text, and a run given a template.
    base, mcfg = load_model(llama_dir, "cpu", "float32")
    plain = RewardModel(base, mcfg, encoder=Encoder.from_folder(llama_dir, raw=True))
    plain = plain.save(tmp_path / "plain-rm", tokenizer_from=llama_dir)
    assert not (plain / "chat_template.jinja").exists()
    with pytest.raises(InputError, match=r"with a chat template; pass --raw \(without --chat-template\)"):
        PPOTrainer(ppo_cfg(llama_dir, files, plain, tmp_path / "d", chat_template=str(files / "chat.jinja"))).setup()


def sft_line(llama_dir, missing, tmp_path):
    """What train sft says of a missing --chat-template file."""
    from tiankong.trainers.sft import SFTConfig, SFTTrainer

    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "completion": "Hello"}) + "\n")
    cfg = SFTConfig(model=str(llama_dir), data=str(data), output=str(tmp_path / "sft"), chat_template=str(missing))
    with pytest.raises(InputError) as e:
        SFTTrainer(cfg).setup()
    return str(e.value)


@pytest.mark.parametrize("name", ["reward", "dpo", "ppo"])
def test_cli_missing_template_file_is_sfts_one_line(name, llama_dir, files, reward_run, monkeypatch, capsys, tmp_path):
    missing = tmp_path / "nope.jinja"
    line = sft_line(llama_dir, missing, tmp_path)
    assert line == f"chat template file {missing} does not exist; pass a .jinja file or leave --chat-template empty"
    data = ["--prompts", files / "prompts.jsonl", "--reward", reward_run[1]] if name == "ppo" else []
    data = data or ["--data", files / "votes.jsonl"]
    run = ("train", name, "-m", llama_dir, *data, "--device", "cpu", "--no-progress", "--steps", 1)
    code, _, err = cli(monkeypatch, capsys, *run, "-o", tmp_path / "out", "--chat-template", missing)
    assert code == 2 and [x for x in err.splitlines() if x.strip()][-1] == f"error: {line}", err
    code, _, err = cli(monkeypatch, capsys, *run, "-o", tmp_path / "raw", "--raw", "--chat-template", missing)
    assert code == 2 and err.rstrip().endswith(
        "--raw renders prompts without a chat template and --chat-template gives one; pass one"
    ), err


def test_the_no_template_note_names_the_trainers_own_option(llama_dir, files):
    note = Encoder.from_folder(llama_dir).no_template_note(llama_dir)
    assert note is not None and note.endswith(
        "to train with roles, pass --chat-template FILE (a Jinja template; the output saves it)"
    )
    assert "train sft" not in note
    given = Encoder.from_folder(llama_dir, chat_template=str(files / "chat.jinja"))
    assert given.no_template_note(llama_dir) is None


@pytest.mark.parametrize("name", ["reward", "dpo", "ppo"])
def test_help_offers_the_option(name, monkeypatch, capsys):
    monkeypatch.delenv("COLUMNS", raising=False)  # captured: 80 columns
    code, out, _ = cli(monkeypatch, capsys, "train", name, "--help")
    words = " ".join(out.replace("│", " ").split())
    assert code == 0 and "--chat-template" in words, out
    assert "A Jinja chat template file to render the prompts with instead of the model's own" in words, out
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines()), out
