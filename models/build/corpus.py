"""The pretraining corpus: generated English and Chinese stories, facts and animal descriptions.

    python -m models.build.corpus --out corpus.txt --docs 60000 --seed 1

Writes plain UTF-8 text, one document after another separated by lines holding only <|endoftext|>
(the separator `tiankong train pretrain` reads). The same --seed and --docs give the same bytes on
any machine: every choice comes from one random.Random(seed), walked in a fixed order.

Mix (per document, drawn at random): stories 33% English, 27% Chinese; facts 7% + 7%; animal
descriptions 4% + 4%; memory games (one child says a list of words, the other says it back) 4% + 4%;
workbook lessons (opposites, colours of things, English-Chinese words, animal sounds, counting
stories with a sum) 5% + 5%.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tiankong.engine.model_list import human_bytes

from .facts import FACTS
from .lexicon import (
    ANIMALS,
    COLORS,
    FOODS,
    OBJECTS,
    OPPOSITES,
    THING_COLORS,
    a,
    cap,
    word_pairs,
    zh_word,
)
from .stories import Hero, grownup, story_en, story_zh

SEPARATOR = "<|endoftext|>"
MIX = (
    ("story_en", 0.33),
    ("story_zh", 0.27),
    ("facts_en", 0.07),
    ("facts_zh", 0.07),
    ("animal_en", 0.04),
    ("animal_zh", 0.04),
    ("game_en", 0.04),
    ("game_zh", 0.04),
    ("lesson_en", 0.05),
    ("lesson_zh", 0.05),
)


def facts_en(rng: random.Random, topic: str | None = None, k: int | None = None) -> str:
    topic = topic or rng.choice(list(FACTS))
    name, _, facts = FACTS[topic]
    k = k or rng.randint(1, min(4, len(facts)))
    chosen = [f[0] for f in rng.sample(facts, k)]
    style = rng.random()
    if style < 0.35:
        head = rng.choice(
            [
                f"Here are some facts about {name}.",
                f"Let's learn about {name}.",
                f"Do you know these facts about {name}?",
                f"Some things to know about {name}:",
            ]
        )
        return head + " " + " ".join(chosen)
    if style < 0.55:
        return "\n".join(f"{i}. {c}" for i, c in enumerate(chosen, 1)) if k > 1 else f"Did you know? {chosen[0]}"
    if style < 0.75:
        return cap(name) + "\n" + " ".join(chosen)
    # a child asks, a grown-up answers (facts with a question only)
    qa = [f for f in facts if len(f) == 4]
    if not qa:
        return "Did you know? " + " ".join(chosen)
    fact = rng.choice(qa)
    h = Hero.child(rng, lang="en") if rng.random() < 0.6 else Hero.animal(rng, rng.choice(ANIMALS).key, lang="en")
    g = grownup(rng, h)
    ask = rng.choice(
        [
            f'One day, {h.name} asked {g.en}, "{fact[2]}"',
            f'"{fact[2]}" asked {h.name}.',
            f'{h.name} looked up and asked, "{fact[2]}"',
        ]
    )
    answer = rng.choice([f'"{fact[0]}" said {g.en}.', f'{cap(g.en)} smiled and said, "{fact[0]}"'])
    end = rng.choice(
        [
            f'"Wow!" said {h.name}.',
            f"{h.name} thought that was very interesting.",
            f'"I did not know that," said {h.name}.',
            "",
        ]
    )
    return " ".join(p for p in (ask, answer, end) if p)


def facts_zh(rng: random.Random, topic: str | None = None, k: int | None = None) -> str:
    topic = topic or rng.choice(list(FACTS))
    _, name, facts = FACTS[topic]
    k = k or rng.randint(1, min(4, len(facts)))
    chosen = [f[1] for f in rng.sample(facts, k)]
    style = rng.random()
    if style < 0.35:
        head = rng.choice(
            [f"关于{name}，有这样一些知识。", f"我们来认识一下{name}。", f"你知道这些关于{name}的知识吗？"]
        )
        return head + "".join(chosen)
    if style < 0.55:
        return "\n".join(f"{i}. {c}" for i, c in enumerate(chosen, 1)) if k > 1 else f"你知道吗？{chosen[0]}"
    if style < 0.75:
        return name + "\n" + "".join(chosen)
    qa = [f for f in facts if len(f) == 4]
    if not qa:
        return "你知道吗？" + "".join(chosen)
    fact = rng.choice(qa)
    h = Hero.child(rng, lang="zh") if rng.random() < 0.6 else Hero.animal(rng, rng.choice(ANIMALS).key, lang="zh")
    g = grownup(rng, h)
    ask = rng.choice(
        [f"有一天，{h.name}问{g.zh}：“{fact[3]}”", f"“{fact[3]}”{h.name}问。", f"{h.name}抬起头问：“{fact[3]}”"]
    )
    answer = rng.choice([f"{g.zh}说：“{fact[1]}”", f"{g.zh}笑着说：“{fact[1]}”"])
    end = rng.choice([f"“哇！”{h.name}说。", f"{h.name}觉得真有意思。", f"“原来是这样！”{h.name}说。", ""])
    return ask + answer + end


def animal_en(rng: random.Random, key: str | None = None) -> str:
    an = next(x for x in ANIMALS if x.key == key) if key else rng.choice(ANIMALS)
    subj = rng.choice([cap(a(an.en)), f"The {an.en}"])
    parts = [
        f"{subj} has {an.look_en}.",
        f"It lives {an.home_en}.",
        f"It likes to eat {an.food_en}.",
        f"It can {an.can_en}.",
    ]
    rng.shuffle(parts)
    parts[0] = parts[0].replace("It ", subj + " ", 1) if parts[0].startswith("It ") else parts[0]
    parts = [p.replace(subj + " ", "It ", 1) if i and p.startswith(subj + " ") else p for i, p in enumerate(parts)]
    if an.sound_en:
        parts.append(
            rng.choice(
                [f'{cap(a(an.en))} says "{an.sound_en}".', f'When it talks, it says "{an.sound_en}, {an.sound_en}".']
            )
        )
    k = rng.randint(2, len(parts))
    return " ".join(parts[:k])


def animal_zh(rng: random.Random, key: str | None = None) -> str:
    an = next(x for x in ANIMALS if x.key == key) if key else rng.choice(ANIMALS)
    parts = [f"它有{an.look_zh}。", f"它住{an.home_zh}。", f"它喜欢吃{an.food_zh}。", f"它会{an.can_zh}。"]
    rng.shuffle(parts)
    parts[0] = an.zh + parts[0][1:]
    if an.sound_zh:
        parts.append(f"{an.zh}{an.sound_zh}叫。" if not an.sound_zh.endswith("地") else f"{an.zh}{an.sound_zh}吼叫。")
    k = rng.randint(2, len(parts))
    return "".join(parts[:k])


def _game_words(rng: random.Random, lang: str, k: int) -> list[str]:
    pool = (
        [an.en for an in ANIMALS] + [o[0] for o in OBJECTS] + [f[0] for f in FOODS] + [c[0] for c in COLORS]
        if lang == "en"
        else [zh_word(an) for an in ANIMALS] + [o[1] for o in OBJECTS] + [f[2] for f in FOODS] + [c[1] for c in COLORS]
    )
    return rng.sample(pool, k)


def game_en(rng: random.Random) -> str:
    """A memory game: one child says a list, the other says it back (copying, in a story)."""
    h = Hero.random(rng, "en")
    f = Hero.random(rng, "en", exclude=(h.name,))
    out = [
        rng.choice(
            [
                f"{h.name} and {f.name} played a memory game.",
                f"{h.name} and {f.name} liked to play the echo game.",
                f"One rainy afternoon, {h.name} taught {f.name} a memory game.",
            ]
        )
    ]
    for turn in range(rng.randint(1, 3)):
        a_, b_ = (h, f) if turn % 2 == 0 else (f, h)
        words = ", ".join(_game_words(rng, "en", rng.randint(3, 6)))
        out.append(
            rng.choice(
                [
                    f'{a_.name} said, "{cap(words)}."',
                    f'"{cap(words)}," said {a_.name}.',
                    f'It was {a_.name}\'s turn. "{cap(words)}."',
                ]
            )
        )
        if rng.random() < 0.85:
            out.append(
                rng.choice(
                    [
                        f'{b_.name} said it back: "{cap(words)}."',
                        f'"{cap(words)}," said {b_.name}. "I remembered!"',
                        f'{b_.name} listened carefully and said, "{cap(words)}."',
                    ]
                )
            )
            out.append(rng.choice(['"Well done!"', f'"Yes!" said {a_.name}.', ""]))
        else:
            out.append(f"{b_.name} forgot one word, and they both laughed.")
    out.append(rng.choice([f"{h.name} and {f.name} played until it was time for dinner.", "It was a fun game.", ""]))
    return " ".join(p for p in out if p)


def game_zh(rng: random.Random) -> str:
    h = Hero.random(rng, "zh")
    f = Hero.random(rng, "zh", exclude=(h.name,))
    out = [
        rng.choice(
            [
                f"{h.name}和{f.name}在玩记忆游戏。",
                f"{h.name}教{f.name}玩一个传话游戏。",
                f"下雨的下午，{h.name}和{f.name}玩起了记忆游戏。",
            ]
        )
    ]
    for turn in range(rng.randint(1, 3)):
        a_, b_ = (h, f) if turn % 2 == 0 else (f, h)
        words = "、".join(_game_words(rng, "zh", rng.randint(3, 6)))
        out.append(rng.choice([f"{a_.name}说：“{words}。”", f"轮到{a_.name}了：“{words}。”"]))
        if rng.random() < 0.85:
            out.append(
                rng.choice([f"{b_.name}认真地听，然后说：“{words}。”", f"{b_.name}马上说：“{words}。我记住了！”"])
            )
            out.append(rng.choice(["“真棒！”", f"“对了！”{a_.name}说。", ""]))
        else:
            out.append(f"{b_.name}忘了一个词，两个人都笑了。")
    out.append(rng.choice([f"{h.name}和{f.name}一直玩到吃晚饭。", "这个游戏真好玩。", ""]))
    return "".join(out)


COUNTABLE = [
    f
    for f in FOODS
    if f[0]
    in (
        "apple",
        "banana",
        "cookie",
        "dumpling",
        "strawberry",
        "cherry",
        "carrot",
        "pear",
        "peach",
        "orange",
        "bun",
        "rice ball",
    )
]


def _plural_en(food: tuple) -> str:
    return {
        "cherry": "cherries",
        "strawberry": "strawberries",
        "peach": "peaches",
        "sandwich": "sandwiches",
        "corn": "ears of corn",
        "bread": "loaves of bread",
        "rice ball": "rice balls",
    }.get(food[0], food[0] + "s")


def lesson_en(rng: random.Random) -> str:
    """A page of a children's workbook: opposites, colours of things, English-Chinese words, animal
    sounds, or counting (a small story with a sum)."""
    kind = rng.randrange(5)
    if kind == 0:
        pairs = rng.sample(OPPOSITES, rng.randint(2, 5))
        parts = [
            rng.choice(
                [f"The opposite of {x} is {y}.", f"{cap(x)} and {y} are opposites.", f'The opposite of "{x}" is "{y}".']
            )
            for x, y, _, _ in pairs
        ]
        return rng.choice(["Opposites\n", "Let's learn opposites. ", ""]) + " ".join(parts)
    if kind == 1:
        things = rng.sample(THING_COLORS, rng.randint(2, 5))
        parts = [f"{cap(t)} {'are' if pl else 'is'} {c}." for t, c, _, _, pl in things]
        return rng.choice(["Colours\n", "What colour is it? ", ""]) + " ".join(parts)
    if kind == 2:
        pairs = rng.sample(word_pairs(), rng.randint(3, 6))
        style = rng.randrange(3)
        if style == 0:
            return "English and Chinese words\n" + "\n".join(f"{e} - {z}" for e, z in pairs)
        if style == 1:
            return " ".join(f'"{e}" in Chinese is "{z}".' for e, z in pairs)
        return " ".join(f'The Chinese word "{z}" means "{e}".' for e, z in pairs)
    if kind == 3:
        an = rng.sample([x for x in ANIMALS if x.sound_en and x.sound_en != "roar"], rng.randint(2, 4))
        return rng.choice(["Animal sounds\n", "What do the animals say? ", ""]) + " ".join(
            f'{cap(a(x.en))} says "{x.sound_en}".' for x in an
        )
    h = Hero.random(rng, "en")
    food = rng.choice(COUNTABLE)
    x, y = rng.randint(1, 10), rng.randint(1, 10)
    if rng.random() < 0.6:
        return (
            f"{h.name} had {x} {_plural_en(food) if x != 1 else food[0]}. {rng.choice(['A friend', cap(grownup(rng, h).en)])} "
            f"gave {h.him} {y} more. {x} plus {y} is {x + y}, so now {h.name} has {x + y} {_plural_en(food)}."
        )
    x, y = max(x, y), min(x, y)
    return (
        f"{h.name} had {x} {_plural_en(food) if x != 1 else food[0]}. {cap(h.he)} ate {y}. "
        f"{x} minus {y} is {x - y}, so now {h.name} has {x - y} left."
    )


def lesson_zh(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        pairs = rng.sample(OPPOSITES, rng.randint(2, 5))
        parts = [rng.choice([f"“{x}”的反义词是“{y}”。", f"“{x}”和“{y}”是一对反义词。"]) for _, _, x, y in pairs]
        return rng.choice(["反义词\n", "我们来学反义词。", ""]) + "".join(parts)
    if kind == 1:
        things = rng.sample(THING_COLORS, rng.randint(2, 5))
        return rng.choice(["颜色\n", "它们是什么颜色的？", ""]) + "".join(f"{t}是{c}的。" for _, _, t, c, _ in things)
    if kind == 2:
        pairs = rng.sample(word_pairs(), rng.randint(3, 6))
        style = rng.randrange(3)
        if style == 0:
            return "中英文词语\n" + "\n".join(f"{z} - {e}" for e, z in pairs)
        if style == 1:
            return "".join(f"“{z}”用英语说是“{e}”。" for e, z in pairs)
        return "".join(f"英语单词“{e}”的意思是“{z}”。" for e, z in pairs)
    if kind == 3:
        an = rng.sample([x for x in ANIMALS if x.sound_zh and not x.sound_zh.endswith("地")], rng.randint(2, 4))
        return rng.choice(["动物的叫声\n", "小动物们怎么叫？", ""]) + "".join(f"{x.zh}{x.sound_zh}叫。" for x in an)
    h = Hero.random(rng, "zh")
    food = rng.choice(COUNTABLE)
    x, y = rng.randint(1, 10), rng.randint(1, 10)
    if rng.random() < 0.6:
        return (
            f"{h.name}有{x}个{food[2]}，{grownup(rng, h).zh}又给了{h.ta}{y}个。{x}加{y}等于{x + y}，"
            f"所以{h.name}现在有{x + y}个{food[2]}。"
        )
    x, y = max(x, y), min(x, y)
    return f"{h.name}有{x}个{food[2]}，吃掉了{y}个。{x}减{y}等于{x - y}，所以{h.name}还剩{x - y}个{food[2]}。"


GENERATORS = {
    "story_en": story_en,
    "story_zh": story_zh,
    "facts_en": facts_en,
    "facts_zh": facts_zh,
    "animal_en": animal_en,
    "animal_zh": animal_zh,
    "game_en": game_en,
    "game_zh": game_zh,
    "lesson_en": lesson_en,
    "lesson_zh": lesson_zh,
}


def documents(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    return [GENERATORS[rng.choices(kinds, weights)[0]](rng) for _ in range(n)]


def write_corpus(path: Path, n: int, seed: int) -> dict:
    docs = documents(n, seed)
    text = f"\n{SEPARATOR}\n".join(docs) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return {"docs": len(docs), "chars": len(text), "bytes": len(text.encode("utf-8"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--docs", type=int, default=60000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    stats = write_corpus(args.out, args.docs, args.seed)
    print(f"{args.out}: {stats['docs']} documents, {human_bytes(stats['bytes'])}")


if __name__ == "__main__":
    main()
