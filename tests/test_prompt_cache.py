"""Prompt cache across turns (engine/context.py PromptCache) and context fitting (fit_messages).

A cached turn must equal a cold run of the same prompt: the same greedy tokens, the same log-probs
and candidates, on every architecture and on each way a model runs (compiled decode step, torch
with packed weights, plain modules).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from tiny_models import make_model

from tiankong.engine import native
from tiankong.engine.context import PromptCache, answer_room, drop_turns, fit_messages, turn_starts
from tiankong.engine.engine import Engine
from tiankong.engine.errors import ContextOverflow, InputError
from tiankong.engine.events import Finished, TokenEvent
from tiankong.engine.llama import Llama
from tiankong.engine.llama_packed import PackedLlama
from tiankong.engine.model import load_model
from tiankong.engine.packed import can_pack, pack_linears
from tiankong.engine.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, max_new_tokens=12, seed=0)
ARCHS = [
    *[("llama", {}), ("mistral", dict(sliding_window=8)), ("qwen2", {}), ("qwen3", {}), ("gpt2", {})],
    ("phi3", {}),  # partial rotary, long-rope (its long factors start at 16: inside the turns)
    *[("gemma2", {}), ("gemma3", {})],
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {arch: make_model(tmp_path_factory.mktemp(arch), arch, **ov) for arch, ov in ARCHS}


def engine(folder, path: str) -> Engine:
    """The model run one way: "native" (compiled step), "torch" (packed weights, no compiled step),
    "plain" (the training modules)."""
    if path == "native" and native.library() is None:
        pytest.skip(f"no compiled decode step here: {native.reason()}")
    if path == "plain":
        return Engine.load(folder, device="cpu", dtype="float32", pack=False)
    eng = Engine.load(folder, device="cpu", dtype="float32")
    if path == "torch":
        if not can_pack(torch.device("cpu"), torch.float32):
            pytest.skip("oneDNN packing is unavailable here")
        model = load_model(folder, "cpu", "float32")[0]
        model = PackedLlama(model, native=False) if isinstance(model, Llama) else pack_linears(model)
        eng = replace(eng, model=model)
    assert getattr(eng.model, "native", False) == (path == "native")
    return eng


def run(eng, ids, cache=None, n=12):
    events = list(eng.generate([ids], [GREEDY.replace(max_new_tokens=n)], top_logprobs=5, prompt_cache=cache))
    fin = events[-1]
    assert isinstance(fin, Finished)
    return [e for e in events if isinstance(e, TokenEvent)], fin


def assert_same(cached, cold):
    (toks, fin), (ref, ref_fin) = cached, cold
    assert [e.id for e in toks] == [e.id for e in ref]
    assert fin.finish_reason == ref_fin.finish_reason and fin.text == ref_fin.text
    for a, b in zip(toks, ref, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
        assert [c.id for c in a.candidates] == [c.id for c in b.candidates]
        assert [c.logprob for c in a.candidates] == pytest.approx([c.logprob for c in b.candidates], abs=1e-4)


def count_prefill(eng):
    """Wrap the model's forward to record how many tokens each call reads."""
    seen, forward = [], eng.model.forward

    def spy(tokens, *args, **kw):
        seen.append(tokens.shape[1])
        return forward(tokens, *args, **kw)

    eng.model.forward = spy
    return seen


@pytest.mark.parametrize("path", ["native", "torch", "plain"])
@pytest.mark.parametrize("arch", [a for a, _ in ARCHS])
def test_cached_turns_equal_cold_runs(folders, arch, path):
    eng = engine(folders[arch], path)
    cache = PromptCache()
    enc = lambda text: eng.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    turn1 = eng.encode("Once upon a time there was a little girl named Lily.", raw=True)
    first = run(eng, turn1, cache)
    assert_same(first, run(eng, turn1))
    assert cache.ids == turn1 + [e.id for e in first[0]][:-1]  # the last token was never fed back

    # Turn 2: the whole of turn 1 (prompt and answer) plus a new message; only the new part is read.
    turn2 = turn1 + list(first[1].token_ids) + enc(" The quick brown fox jumps over the lazy dog.")
    seen = count_prefill(eng)
    second = run(eng, turn2, cache)
    assert seen[0] == len(turn2) - len(turn1) - len(first[0]) + 1
    del eng.model.forward
    assert_same(second, run(eng, turn2))

    # Regenerate: the same prompt again reads one token (its last), and answers the same.
    seen = count_prefill(eng)
    assert_same(run(eng, turn2, cache), second)
    assert seen[0] == 1
    del eng.model.forward

    # The prompt diverges mid-way through what is cached (an edited message).
    mid = len(turn2) // 2
    edited = turn2[:mid] + enc(" Emoji are fun and so is text. Numbers: 1234567890.")
    assert_same(run(eng, edited, cache), run(eng, edited))

    # Dropped turns: only the first token is shared, so everything else is read again, once.
    dropped = turn1[:1] + turn2[len(turn1) + 5 :]
    assert_same(run(eng, dropped, cache), run(eng, dropped))


@pytest.mark.parametrize("path", ["native", "torch", "plain"])
def test_long_rope_turns_equal_cold_runs(folders, path):
    """Phi-3's long factors start at 16 positions. A turn that crosses 16 while decoding, and a
    turn whose prompt crosses it after a short cached one, read their keys again with the long
    factors (as transformers' generate does), so both equal cold runs."""
    eng = engine(folders["phi3"], path)
    cache = PromptCache()
    enc = lambda text: eng.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    turn1 = eng.encode("Once", raw=True)
    short = run(eng, turn1, cache, n=4)
    assert len(cache.ids) < 16
    assert_same(short, run(eng, turn1, n=4))
    turn2 = turn1 + list(short[1].token_ids) + enc(" The quick brown fox jumps over the lazy dog.")
    assert len(turn2) > 16
    assert_same(run(eng, turn2, cache), run(eng, turn2))
    cache = PromptCache()
    assert_same(run(eng, turn1, cache, n=20), run(eng, turn1, n=20))  # crosses 16 while decoding


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_cache_grows_past_its_first_size_and_hits_the_context(folders, arch):
    eng = engine(folders[arch], "plain")
    cache = PromptCache()
    ids = eng.encode("Once upon a time", raw=True)
    run(eng, ids, cache, n=4)
    first = cache.kv.max_len
    ctx = eng.cfg.max_seq_len
    long = (ids * 200)[: ctx - 3]
    toks, fin = run(eng, long, cache, n=12)
    assert cache.kv.max_len > first and cache.kv.max_len <= ctx
    assert fin.finish_reason == "context" and len(toks) == 3  # cut by the context, not by max_new_tokens
    cold_toks, cold_fin = run(eng, long, None, n=12)
    assert [e.id for e in toks] == [e.id for e in cold_toks] and cold_fin.finish_reason == "context"


def test_length_is_the_presets_limit(folders):
    eng = engine(folders["llama"], "plain")
    _, fin = run(eng, eng.encode("Once upon a time", raw=True), n=3)
    assert fin.finish_reason in ("length", "eos")


def test_one_cache_serves_one_row(folders):
    eng = engine(folders["llama"], "plain")
    ids = eng.encode("Once", raw=True)
    with pytest.raises(InputError, match="one row"):
        list(eng.generate([ids, ids], [GREEDY, GREEDY], prompt_cache=PromptCache()))


def test_a_cache_serves_one_call_at_a_time(folders):
    """A second call with a cache that a paused generator still decodes from would overwrite its keys
    and values (its answer came out wrong, silently): the second call is refused, the first is right,
    and the first generator's end, close() or collection frees the cache."""
    import gc

    eng = engine(folders["llama"], "plain")
    a, b = eng.encode("Once upon a time there was", raw=True), eng.encode("The dog", raw=True)
    cache = PromptCache()
    first = eng.generate([a], [GREEDY], prompt_cache=cache)
    head = [next(first) for _ in range(4)]
    with pytest.raises(InputError, match="in use by another generate"):
        eng.generate([b], [GREEDY], prompt_cache=cache)  # refused by the call, before it reads anything
    events = head + list(first)
    cold_toks, cold_fin = run(eng, a)
    assert [e.id for e in events[:-1]] == [e.id for e in cold_toks] and events[-1].text == cold_fin.text
    assert not cache.in_use  # finished: free again
    for end in ("close", "collect", "never started"):
        g = eng.generate([b], [GREEDY], prompt_cache=cache)
        if end != "never started":
            next(g)
        assert cache.in_use
        if end == "close":
            g.close()
        del g
        gc.collect()
        assert not cache.in_use, end
    assert_same(run(eng, b, cache), run(eng, b))


def test_a_cache_in_use_in_another_thread_is_refused(folders):
    import threading

    eng = engine(folders["llama"], "plain")
    ids = eng.encode("Once upon a time there was", raw=True)
    cache, started, go, out = PromptCache(), threading.Event(), threading.Event(), []

    def answer() -> None:
        for ev in eng.generate([ids], [GREEDY], prompt_cache=cache):
            started.set()
            go.wait(30)
            out.append(ev)

    t = threading.Thread(target=answer)
    t.start()
    assert started.wait(30)
    with pytest.raises(InputError, match="in use by another generate"):
        eng.generate([ids], [GREEDY], prompt_cache=cache)
    go.set()
    t.join(30)
    assert out[-1].text == run(eng, ids)[1].text and not cache.in_use


def test_a_cancelled_answer_leaves_a_valid_cache(folders):
    import threading

    eng = engine(folders["llama"], "plain")
    cache, cancel = PromptCache(), threading.Event()
    ids = eng.encode("Once upon a time there was", raw=True)
    for ev in eng.generate([ids], [GREEDY], prompt_cache=cache, cancel=cancel):
        if isinstance(ev, TokenEvent) and ev.index == 2:
            cancel.set()
    assert cache.ids[: len(ids)] == ids and len(cache.ids) == len(ids) + 3  # tokens 0-2, each fed back
    nxt = cache.ids + eng.tokenizer.encode(" The dog.", add_special_tokens=False)
    assert_same(run(eng, nxt, cache), run(eng, nxt))


# ---------------------------------------------------------------- fitting a conversation


def chat(n_turns: int, system: bool = True) -> list[dict]:
    msgs = [{"role": "system", "content": "sys"}] if system else []
    for i in range(n_turns):
        msgs += [
            {"role": "user", "content": f"question {i} " * 3},
            {"role": "assistant", "content": f"answer {i} " * 5},
        ]
    return msgs[:-1]  # ends with the last question


def words(msgs):  # a stand-in tokenizer: one id per word
    return [0 for m in msgs for _ in m["content"].split()]


def test_turn_starts():
    assert turn_starts(chat(3)) == [1, 3, 5]
    assert turn_starts(chat(2, system=False)) == [0, 2]
    assert turn_starts([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}]) == [0, 1]


def test_fit_drops_oldest_turns_and_keeps_the_system_message():
    msgs = chat(5)  # sys 1 word, each turn 6 + 10 words, the last 6
    assert fit_messages(words, msgs, 1000) == (words(msgs), 0)
    ids, dropped = fit_messages(words, msgs, 40)
    assert dropped == 2 and len(ids) == 1 + 2 * 16 + 6  # sys + two whole turns + the last question
    kept = msgs[:1] + msgs[1 + 2 * dropped :]
    assert ids == words(kept)
    # at_least keeps earlier drops; slack frees more room than needed, once.
    assert fit_messages(words, msgs, 1000, at_least=2)[1] == 2
    assert fit_messages(words, msgs, 40, slack=10)[1] == 3
    assert fit_messages(words, msgs, 40, slack=1000)[1] == 2  # slack that cannot be had is skipped
    with pytest.raises(InputError, match="system message and the last message are 7 tokens"):
        fit_messages(words, msgs, 6)


def test_fit_drops_turns_by_characters_before_encoding():
    # QA: a conversation of more characters than encode takes (Engine._check_text) was refused before
    # any turn went; the turns encode would refuse now go by their characters, unencoded.
    msgs = chat(40)
    seen = []

    def capped(ms):  # as Engine.encode: more than 150 characters is refused unread
        seen.append(sum(len(m["content"]) for m in ms))
        if seen[-1] > 150:
            raise InputError("the prompt is far more than the context can hold")
        return words(ms)

    for budget, at_least in [(30, 0), (14, 0), (1000, 0), (30, 39)]:
        # the reference: the fewest drops (at least at_least) that encode takes and that fit, by trying each
        fits = [
            sum(len(m["content"]) for m in ms) <= 150 and len(words(ms)) <= budget
            for ms in map(drop_turns, [msgs] * 40, range(40))
        ]
        want = fits.index(True, at_least)
        ids, dropped = fit_messages(capped, msgs, budget, at_least=at_least, max_chars=150, context=budget + 8)
        assert dropped == want and ids == words(drop_turns(msgs, want))
    assert max(seen) <= 150
    # QA: the refusal said no length to aim for; now the budget (40 - 10), and the answer's room past it.
    with pytest.raises(
        ContextOverflow,
        match=r"are 236 characters \(the system message 200, the last message 36\), far more than the model's "
        r"context of 40 tokens can hold; shorten the system message to about 30 tokens, which leaves 10 for the answer$",
    ):
        fit_messages(capped, [{"role": "system", "content": "s" * 200}, *msgs[-3:]], 30, max_chars=150, context=40)
    with pytest.raises(ValueError, match="max_chars needs context"):
        fit_messages(capped, msgs, 30, max_chars=150)


def test_fit_names_the_part_too_long():
    # QA: a system message of 3000 words and the last message "hi" said "shorten the last message".
    def conv(system, last):
        return [{"role": "system", "content": system}, *chat(2, system=False)[:-1], {"role": "user", "content": last}]

    for system, last, which in [(100, 2, "the system message"), (2, 100, "the last message"), (100, 100, "both")]:
        with pytest.raises(
            ContextOverflow, match=f"\\(the system message {system}, the last message {last}\\).*; shorten {which}$"
        ):
            fit_messages(words, conv("w " * system, "w " * last), 50)
    with pytest.raises(ContextOverflow, match="shorten the system message or the last message$"):
        fit_messages(words, conv("w " * 30, "w " * 30), 50)
    with pytest.raises(ContextOverflow, match="^the last message is 100 tokens, .*; shorten the last message$"):
        fit_messages(words, conv("w " * 30, "w " * 100)[1:], 50)


def test_answer_room():
    assert answer_room(100, 512) == 100 and answer_room(1000, 512) == 128 and answer_room(5, 2) == 1


def test_engine_fit_uses_the_chat_template(folders):
    eng = engine(folders["qwen2"], "plain")
    msgs = chat(40)
    ids, dropped = eng.fit(msgs, max_new_tokens=32)
    ctx = eng.cfg.max_seq_len
    assert dropped > 0 and len(ids) <= ctx - 32
    assert ids == eng.encode(messages=msgs[:1] + msgs[1 + 2 * dropped :])


def test_generate_context_overflow_flag(monkeypatch, capsys, folders, tmp_path):
    import json

    from helpers import cli

    long = {"id": "long", "messages": chat(40)}
    short = {"id": "short", "messages": chat(1)}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(short) + "\n" + json.dumps(long) + "\n")
    args = ("generate", "-m", folders["llama"], "-i", src, "--seed", "1", "--max-new-tokens", "8")
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and "line 2" in err and out == ""  # error (the default): named, nothing generated
    assert "(or pass --context-overflow truncate to drop its oldest turns)" in err  # QA: the way out
    code, out, err = cli(monkeypatch, capsys, *args, "--context-overflow", "truncate")
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert "dropped_turns" not in recs[0] and recs[1]["dropped_turns"] > 0
    assert recs[1]["usage"]["prompt_tokens"] <= 256 - 8 and recs[1]["finish_reason"] in ("eos", "length")
    assert recs[1]["messages"] == long["messages"]  # the record keeps the conversation as given
    code, _, err = cli(monkeypatch, capsys, *args, "--context-overflow", "drop")
    assert code == 2 and "use error or truncate" in err


def test_generate_truncates_a_conversation_of_any_length(monkeypatch, capsys, folders, tmp_path):
    # QA: a conversation of more characters than the model's context could hold was refused under
    # --context-overflow truncate (Engine.encode refused it whole before any turn was dropped).
    import json

    from helpers import cli

    eng = engine(folders["llama"], "plain")
    msgs = [{"role": "system", "content": "sys"}]
    while sum(len(m["content"]) for m in msgs) <= 300_000:  # more than encode takes ("far more than" below)
        msgs += [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "reply " * 40}]
    msgs.append({"role": "user", "content": "the end?"})
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": msgs}) + "\n")
    args = ("generate", "-m", folders["llama"], "-i", src, "--seed", "1", "--max-new-tokens", "8")
    code, out, err = cli(monkeypatch, capsys, *args, "--context-overflow", "truncate")
    assert code == 0, err
    rec = json.loads(out)
    ids, dropped = eng.fit(msgs, 8)
    assert rec["dropped_turns"] == dropped and rec["usage"]["prompt_tokens"] == len(ids) <= 256 - 8
    assert ids == eng.encode(messages=drop_turns(msgs, dropped))
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and "far more than" in err and "(or pass --context-overflow truncate" in err  # the way out

    # Where dropping turns cannot help, no such hint: the part too long is named instead.
    msgs = [{"role": "system", "content": "w " * 3000}, *chat(2, system=False)[:-1], {"role": "user", "content": "hi"}]
    src.write_text(json.dumps({"messages": msgs}) + "\n")
    code, out, err = cli(monkeypatch, capsys, *args)
    assert code == 2 and "--context-overflow truncate" not in err
    code, out, err = cli(monkeypatch, capsys, *args, "--context-overflow", "truncate")
    assert code == 2 and err.rstrip().endswith("shorten the system message")


def test_generate_truncate_refusal_by_characters_names_the_length_to_aim_for(monkeypatch, capsys, folders, tmp_path):
    # QA: under --context-overflow truncate, a last message too long in characters to tokenize said
    # only "shorten the last message", where a prompt refused the same way names the tokens to aim
    # for. The length: the context in config.json less the answer's room (max new tokens, at most a
    # quarter of the context: README, "context-overflow").
    import json

    from helpers import cli

    ctx = json.loads((folders["llama"] / "config.json").read_text())["max_position_embeddings"]
    msgs = [*chat(3), {"role": "user", "content": "word " * (100 * ctx)}]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"messages": msgs}) + "\n")
    for new, room in [(8, 8), (4 * ctx, ctx // 4)]:
        args = ("generate", "-m", folders["llama"], "-i", src, "--max-new-tokens", str(new), "--context-overflow")
        code, out, err = cli(monkeypatch, capsys, *args, "truncate")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.rstrip().endswith(
            f"the last message {len(msgs[-1]['content']):,}), far more than the model's context of {ctx} tokens can hold; "
            f"shorten the last message to about {ctx - room} tokens, which leaves {room} for the answer"
        ), err


def test_ppo_prompts_drop_oldest_turns(tmp_path, capsys):
    import json

    from test_train_ppo import ppo_config

    from tiankong.trainers.ppo import PPOTrainer
    from tiankong.trainers.preferences import Encoder
    from tiankong.trainers.reward import RewardModel

    lam = make_model(tmp_path / "llama", "llama")
    base, cfg = load_model(lam, "cpu", "float32")
    reward = RewardModel(base, cfg)
    reward.encoder = Encoder.from_folder(lam, raw=True)
    rm = reward.save(tmp_path / "rm", tokenizer_from=lam)
    src = tmp_path / "prompts.jsonl"
    src.write_text(
        "\n".join([json.dumps({"messages": chat(1, system=False)}), "word " * 400, json.dumps({"messages": chat(40)})])
        + "\n"
    )
    trainer = PPOTrainer(ppo_config(lam, rm, src, tmp_path / "out"))
    trainer.setup()
    limit = trainer.mcfg.max_seq_len - trainer.cfg.response_length
    assert len(trainer.prompts) == 2 and max(map(len, trainer.prompts)) <= limit
    err = capsys.readouterr().err
    assert "dropped the oldest turns of 1 conversation(s)" in err and "(lines 3)" in err
    assert "skipped 1 prompt(s)" in err and "(lines 2)" in err
