"""The model card (models/tiankong-mini/README.md), rendered from build.py's report.

Every figure in the card comes from the report of the build that produced the weights next to it,
so card and model cannot drift apart. The prose lives here; edit it here and rebuild (or run
`python -m models.build.card models/build/work/report.json models/tiankong-mini/README.md`).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path

REBUILD = "python -m models.build.build"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _min(s: float) -> str:
    return f"{s / 60:.1f} min"


def _visible(text: str) -> str:
    """Control and separator characters (a model can emit any byte) as escapes, so the card reads back
    exactly as written and renders the same everywhere."""
    return "".join(
        ch
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp", "Cs")
        else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def _fence(text: str) -> str:
    text = _visible(text).replace("```", "`` `")
    return "```text\n" + (text if text.strip() else "(empty)") + "\n```"


def render(r: dict) -> str:
    init, data, ev, t = r["init"], r["data"], r["eval"], r["timings_s"]
    shape = init["shape"]
    pre_cfg, sft_cfg = r["configs"]["pretrain"], r["configs"]["sft"]
    pre, sft = r["pretrain"], r["sft"]
    steps_pre, steps_sft = int(pre.get("step", 0)), int(sft.get("step", 0))
    tokens_seen = r.get("pretrain_tokens_seen", 0)
    size = r.get("safetensors_bytes", init["parameters"] * 4)
    h = ev["heldout"]
    ins = ev["instructions"]
    lines: list[str] = []
    w = lines.append

    w("# tiankong-mini 填空小模型")
    w("")
    w(
        "A 3-million-parameter bilingual (English / Chinese) Llama model that ships with tiankong, so a fresh "
        "install can chat offline. It was pretrained and instruction-tuned with tiankong's own trainers on text "
        "that a script in this repository generates: children's stories, simple facts, and instruction-answer pairs. "
        "It writes short coherent stories in its little world, answers the kinds of instructions it was tuned on, "
        "and its next-token distributions are spread enough that the sampling presets visibly differ. It knows "
        "nothing outside that world."
    )
    w("")
    w("```bash")
    w("tiankong chat                                   # the bundled model is the default --model")
    w('tiankong generate --prompt "Write a short story about a cat named Tom." --preset creative --format text')
    w('tiankong generate --raw --prompt "Once upon a time" --top-logprobs 5')
    w("```")
    w("")
    w("## Model")
    w("")
    w("| | |")
    w("| --- | --- |")
    w("| architecture | `LlamaForCausalLM`: RoPE, RMSNorm, SwiGLU, grouped-query attention, tied embeddings |")
    w(
        f"| parameters | {init['parameters']:,} ({init['parameters'] - init['vocab_size'] * shape['dim']:,} without the embedding) |"
    )
    w(
        f"| shape | hidden {shape['dim']}, {shape['n_layers']} layers, {shape['n_heads']} query heads / "
        f"{shape['n_kv_heads']} key-value heads (head size {shape['dim'] // shape['n_heads']}), FFN {shape['ffn_dim']} |"
    )
    w(f"| context | {shape['max_seq_len']} tokens (pretrained on 256-token blocks, tuned on conversations up to 512) |")
    w(
        f"| tokenizer | SentencePiece BPE, {init['vocab_size']} pieces, byte fallback (no text is ever `<unk>`), "
        "trained on the corpus and the SFT conversations; Chinese pieces are at most 4 characters |"
    )
    w(
        "| chat format | tiankong's default template, saved in `tokenizer_config.json`: "
        "`<s><|user|>\\n{question}\\n<|assistant|>\\n{answer}</s>` (a `<|system|>` turn is accepted but was never trained) |"
    )
    w(f"| weights | `model.safetensors`, float32, {_mb(size)} |")
    w(
        "| loads with | `tiankong.engine.engine.Engine.load`, transformers `AutoModelForCausalLM` / `AutoTokenizer` (no remote code) |"
    )
    w("")
    w("## Data: where every piece comes from")
    w("")
    w(
        "Nothing was downloaded or scraped. All text is produced by the scripts in `models/build/`, written for "
        "tiankong and under tiankong's licence (MIT); the word lists (`lexicon.py`) and the 146 facts (`facts.py`, "
        "checked by hand, each in English and Chinese) were written for this repository. The build regenerates "
        "everything from fixed seeds, so the same command gives the same bytes on any machine; the generated files "
        "are not committed."
    )
    w("")
    c = data["corpus"]
    w("| set | generator | size | licence |")
    w("| --- | --- | --- | --- |")
    w(
        f"| pretraining corpus | `corpus.py --docs {c['docs']} --seed 1`: stories (10 plots; English 36%, "
        f"Chinese 30%), facts (16%), animal descriptions (8%), memory games (10%) | {c['docs']:,} documents, {_mb(c['bytes'])}, "
        f"{r.get('corpus_tokens', 0):,} tokens | MIT (generated) |"
    )
    w(
        f"| held-out text | `corpus.py --docs {data['corpus_eval']['docs']} --seed 101` | "
        f"{data['corpus_eval']['docs']:,} documents | MIT (generated) |"
    )
    w(
        f"| SFT conversations | `sft_data.py --rows {data['sft']['rows']} --seed 2`: story requests (named hero, theme, "
        "either language, cross-language), continue-the-story, facts and fact questions, animal sounds and "
        'descriptions, word and sentence translation, opposites, colours, "name three ...", sums and differences '
        "up to 10, greetings and who-are-you; 6% two-turn | "
        f"{data['sft']['rows']:,} conversations | MIT (generated) |"
    )
    w(
        f"| held-out conversations | `sft_data.py --seed 3`, exact duplicates of training rows removed | "
        f"{data['sft_eval']['rows']} conversations | MIT (generated) |"
    )
    w("")
    w(
        "Stories are assembled from a cast (30 animals and children; 50 English and 54 Chinese names, and for 40% "
        "of the characters a made-up name such as Kibaly or 琳天, so that a name can only be predicted by copying it "
        "from earlier in the story; 15 traits), "
        "18 places, 28 objects, 12 colours, 20 foods, 18 activities, 12 skills, feelings, weather and grown-ups, with "
        'two to four phrasings for every sentence, dialogue, and simple cause and effect ("It was cold outside, so '
        'she put on a warm scarf"). Some stories carry a fact in their dialogue (why thunder follows lightning, why '
        "the moon shines). SFT answers are correct by construction: stories are generated around the hero and theme "
        "the request names, facts and translations come from the tables, sums are computed."
    )
    w("")
    w("## Training")
    w("")
    w(
        f"One command rebuilds data, tokenizer and model: `{REBUILD}` (about {_min(t.get('total', 0))} here: "
        f"2 shared CPU cores, {r['threads']} torch thread, bfloat16 autocast "
        f"{'on' if r.get('autocast') else 'off'}). Stages and their measured wall times:"
    )
    w("")
    w("| stage | what | time |")
    w("| --- | --- | --- |")
    w(f"| data | generate corpus, held-out text, SFT and held-out conversations | {t.get('data', 0):.0f} s |")
    w(
        f"| init | train the tokenizer (`tiankong.trainers.corpus.train_tokenizer`), build and initialise the model "
        f"(`init_weights`, GPT-2 style), save as an HF folder | {t.get('init', 0):.0f} s |"
    )
    w(
        f"| pretrain | `tiankong train pretrain --config models/build/pretrain.toml --model work/init --data work/corpus.txt "
        f"--output work/base --autocast`: {steps_pre} steps, {tokens_seen:,} tokens | {_min(t.get('pretrain', 0))} |"
    )
    w(
        f"| sft | `tiankong train sft --config models/build/sft.toml --model work/base --data work/sft.jsonl "
        f"--output work/sft --autocast`: {steps_sft} steps, loss on answer tokens only | {_min(t.get('sft', 0))} |"
    )
    w(f"| eval | `evaluate.py`: the figures and samples below | {_min(t.get('eval', 0))} |")
    w("")
    w(
        "The model shape is not one of `tiankong train pretrain --size`'s names: micro (128 wide) leaves under a million "
        "parameters outside a 4096-piece embedding for two languages, and tiny (256 wide, 5.4M) ran at about half the "
        'tokens per second here, so the build saves an initialised "mini" model (192 wide, 6 layers) and pretrains it '
        "with `--model`. The tokenizer is trained by the build (with the trainer's own function and settings) rather "
        "than by `train pretrain`, so that it also sees the instruction wording and the chat markers, and with "
        "Chinese runs cut into chunks of 1-4 characters by a separator in the tokenizer's training text only: "
        "Chinese has no spaces, and on generated text BPE otherwise learns whole clauses as single pieces "
        '("它听到一个小小的声音"), which the playground would show as one "token" and which made any prompt that '
        "stopped mid-clause unlike anything the model had seen."
    )
    w("")
    w(
        "Batch size mattered more than anything else. On a CPU the tokens per second hardly depend on the batch, so "
        "the same 20 minutes buy either 1,400 steps of 16 blocks or 6,000+ steps of 4. With 16-block batches the model "
        "learned the templates but never learned to look back: a hero's name at its second mention got probability "
        "0.015 (chance), stories changed names every sentence and SFT answers ignored the animal or name asked for. "
        "With 4-block batches, copying from context appeared after about 2,500 steps. The figure is measured again "
        'by every build ("name copying" below).'
    )
    w("")
    w("`pretrain.toml`:")
    w("")
    w("```toml\n" + pre_cfg.strip() + "\n```")
    w("")
    w("`sft.toml`:")
    w("")
    w("```toml\n" + sft_cfg.strip() + "\n```")
    w("")
    w("## Results")
    w("")
    w(
        "Held-out loss (mean cross-entropy per token, nats) and perplexity, before SFT (the pretrained base) and "
        'after (this model). "Text": the held-out corpus, packed as pretraining packs it. "Answers": the '
        "answer tokens of the held-out conversations under the chat template, as SFT scores them (the base has "
        "never seen the template)."
    )
    w("")
    w("| held-out set | before SFT: loss | ppl | after SFT: loss | ppl |")
    w("| --- | --- | --- | --- | --- |")
    for key, name in (
        ("text", f"text ({h['sft']['text']['tokens']:,} tokens)"),
        ("answers", f"answers ({h['sft']['answers']['answer_tokens']:,} tokens)"),
    ):
        b, s = h["base"][key], h["sft"][key]
        w(f"| {name} | {b['loss']:.3f} | {b['ppl']:.2f} | {s['loss']:.3f} | {s['ppl']:.2f} |")
    w("")
    if "name_copy" in h["base"]:
        nb, ns = h["base"]["name_copy"], h["sft"]["name_copy"]
        w(
            f"Name copying: in {nb['mentions']} later mentions of a hero's name in fresh English stories (half of them "
            f"made-up names), the mean probability the model gives the name is {nb['mean_p']:.2f} before SFT and "
            f"{ns['mean_p']:.2f} after (chance: about 0.02)."
        )
        w("")
    if "eval_loss" in pre:
        w(
            f"The pretraining run's own held-out split (2% of the training blocks) ended at eval_loss "
            f"{pre['eval_loss']:.3f} (ppl {pre['eval_ppl']:.2f}); final training loss {pre['loss']:.3f} (pretrain), "
            f"{sft['loss']:.3f} (SFT, answer tokens)."
        )
        w("")
    cf = ins["closed_form"]
    tot = ins["closed_form_total"]
    w(
        f"Greedy answers to {tot['n']} closed-form instructions drawn with a seed training never used (exact match "
        "with the generator's answer, including stopping with EOS):"
    )
    w("")
    w("| kind | " + " | ".join(cf) + " | all |")
    w("| --- | " + " | ".join("---" for _ in cf) + " | --- |")
    w("| exact | " + " | ".join(f"{v['exact']}/{v['n']}" for v in cf.values()) + f" | {tot['exact']}/{tot['n']} |")
    w("")
    st = ins["stories"]
    w(
        f"Story requests with a fresh (animal, name) pair, half English, half Chinese, greedy: the story uses the "
        f"requested name in {st['name']}/{st['n']}, the animal in {st['animal']}/{st['n']}, and ends with EOS in "
        f"{st['eos']}/{st['n']} (mean {st['mean_tokens']} tokens)."
    )
    w("")
    w("<details><summary>Examples of the closed-form checks</summary>")
    w("")
    w("| kind | prompt | expected | answer |")
    w("| --- | --- | --- | --- |")
    for e in ins["closed_form_examples"]:

        def cell(s: str) -> str:
            return _visible(s).replace("|", "\\|").replace("\n", " ")

        w(
            f"| {e['kind']} | {cell(e['prompt'])} | {cell(e['expected'])} | {cell(e['answer'])} {'✓' if e['ok'] else '✗'} |"
        )
    w("")
    w("</details>")
    w("")
    w("## Presets")
    w("")
    w(
        "Per bundled preset, over 8 seeds of the same request (200 new tokens at most): how many different answers "
        "came out, and the mean number of candidates the sampler could pick from (p_sample > 0 among the model's "
        "top 50) at each generated token. The mean entropy is the model's own distribution along the sampled path."
    )
    w("")
    for prompt, row in ev["spread"].items():
        w(f"`{prompt}`")
        w("")
        w("| preset | distinct answers | candidates kept | model entropy (nats) | mean tokens |")
        w("| --- | --- | --- | --- | --- |")
        for name, v in row.items():
            w(
                f"| {name} | {v['distinct']}/{v['of']} | {v['mean_candidates_kept']} | {v['mean_entropy_nats']} | {v['mean_tokens']} |"
            )
        w("")
    w("### Samples per preset")
    w("")
    w(
        "Seed 0, each preset's own settings (at most 300 new tokens; raw completions 120). Not cherry-picked: these "
        "are whatever the build produced."
    )
    w("")
    for prompt, per in ev["samples"].items():
        w(f"#### {prompt if prompt.startswith('raw: ') else 'chat: ' + prompt}")
        w("")
        for name, v in per.items():
            w(f"**{name}** ({v['finish']})")
            w("")
            w(_fence(v["text"]))
            w("")
    w("## Known limits")
    w("")
    w(
        "- It knows only its generated world: the 30 animals, the places, objects and plots of its stories, the "
        "146 facts, the words in its tables. Ask about anything else and it answers with a confident story-shaped "
        'or fact-shaped sentence that is probably wrong; it cannot say "I don\'t know".'
    )
    w(
        "- Facts are reproduced, not understood: a question worded far from the tuned phrasings may get a fact "
        "about the wrong topic. Sums, opposites and word translation are the weakest skills (see the table): "
        "they need a word or number copied from the question and then mapped, which a 3M model trained for half "
        "an hour does only sometimes. Treat every answer as a sample, not as knowledge."
    )
    w("- Translation covers the word list and four simple sentence patterns; anything else is not translated.")
    w(
        "- Stories follow ten plots and mix details freely (a duck learning to ride a bike, a tiger sent a "
        "birthday cake). Sampled stories (temperature 0.7-1.0) now and then pick a token from the wrong language "
        "or a wrong name; presets with a repetition penalty (chat, creative) make that more likely, because a "
        "story has to repeat its hero's name."
    )
    w(
        "- SFT made the model a chat model: plain-text (raw) completion is still fine for English story openings "
        "but weaker than before SFT (held-out text loss above), and weaker in Chinese than in English."
    )
    w(
        "- Context: trained on 256-token blocks; conversations past about 500 tokens degrade. Multi-turn chats "
        "were only 6% of SFT, two turns at most. System prompts were never trained."
    )
    w(
        "- It is a toy for watching next-token prediction, comparing presets and trying RLHF on a laptop, not an "
        "assistant. The text was generated in children's-story style, but nothing filters the model's output."
    )
    w("")
    w("## Rebuild")
    w("")
    w("```bash")
    w(
        f"{REBUILD}        # data, tokenizer, pretrain, SFT, eval, this card; ~{t.get('total', 0) / 60:.0f} min on 2 CPU cores"
    )
    w("python -m models.build.build --smoke --work /tmp/tk --out /tmp/tk/model   # a 1-minute check of the pipeline")
    w("```")
    w("")
    w(
        "Options: `--threads N` (torch threads; 1 is fastest on a busy 2-core machine), `--autocast on|off|auto`, "
        "`--from-stage` / `--to-stage` to rerun part of it, `--work` for the scratch folder (default "
        "`models/build/work/`, ignored by git). Floating-point results differ slightly between CPUs and thread "
        "counts, so a rebuild elsewhere gives a model of the same quality, not the same bytes; the data and the "
        "tokenizer are byte-identical."
    )
    w("")
    w("## Licence")
    w("")
    w(
        "MIT, like tiankong: the weights, the tokenizer and all the training data are produced from this repository's "
        "own scripts and text."
    )
    w("")
    return "\n".join(lines)


if __name__ == "__main__":
    report = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    Path(sys.argv[2]).write_text(render(report), encoding="utf-8")
