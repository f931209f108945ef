"""Instruction-answer pairs for SFT, in English and Chinese, generated from the same lexicon and facts.

    python -m models.build.sft_data --out sft.jsonl --rows 12000 --seed 2

One JSON object per line: {"messages": [{"role": "user", ...}, {"role": "assistant", ...}, ...]}, the
format `tiankong train sft` reads. Every answer is correct by construction: stories are generated
around the hero and theme the instruction names, facts come from facts.py, translations from the
word and sentence pairs in lexicon.py, sums are computed. Same --seed and --rows, same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from .corpus import animal_en, animal_zh
from .facts import FACTS
from .lexicon import (
    ANIMALS,
    CATEGORIES,
    COLORS,
    NAMES_EN,
    NAMES_ZH_CHILD,
    NUM_EN,
    OBJECTS,
    OPPOSITES,
    THING_COLORS,
    a,
    cap,
    word_pairs,
    zh_word,
)
from .stories import Hero, story_en, story_zh

MODEL_NAME = "Tiankong Mini"

# theme of a story -> (plot, english phrasings, chinese phrasings)
THEMES = {
    "lost": (
        "lost",
        ["losing something", "a lost toy", "finding something that was lost"],
        ["丢东西", "找回丢失的玩具"],
    ),
    "share": ("share", ["sharing", "sharing food with a friend"], ["分享", "和朋友分享食物"]),
    "friend": ("friend", ["making a new friend", "friendship"], ["交朋友", "友谊"]),
    "learn": ("learn", ["learning something new", "not giving up"], ["学习新本领", "不放弃"]),
    "rain": ("rain", ["a rainy day"], ["下雨天"]),
    "help": ("help", ["helping others", "kindness"], ["帮助别人", "善良"]),
    "trip": ("trip", ["a day trip", "a family trip"], ["一次出游", "和家人出去玩"]),
    "gift": ("gift", ["a birthday present", "a birthday"], ["生日礼物", "过生日"]),
    "night": ("night", ["being afraid of the dark", "a stormy night"], ["怕黑", "打雷的夜晚"]),
    "day": ("day", ["an ordinary happy day"], ["快乐的一天"]),
}
# Names that never appear in the corpus stories, so the model learns to copy the name it is given.
EXTRA_NAMES_EN = [
    "Biscuit",
    "Pepper",
    "Mochi",
    "Ziggy",
    "Bubbles",
    "Socks",
    "Patch",
    "Nugget",
    "Pumpkin",
    "Waffles",
    "Sprout",
    "Button",
    "Maple",
    "Pebble",
    "Clover",
    "Rocky",
    "Shadow",
    "Cookie",
    "Peanut",
    "Honey",
    "Bean",
    "Tiger",
    "Snowy",
    "Jelly",
    "Olive",
    "Teddy",
    "Marble",
    "Fluffy",
    "Dot",
    "Pixel",
]
ZH_NAME_CHARS = "乐欢贝豆果朵丁毛球点圆团糖米花宝星月亮多宁安心喜福小兰明美甜"
CATEGORY_CLS = {"planets": "颗", "things you can see in the sky": "样", "seasons": "个"}
SENT_ADJ = [
    ("happy", "开心"),
    ("big", "大"),
    ("small", "小"),
    ("hungry", "饿"),
    ("tired", "累"),
    ("sad", "难过"),
    ("cute", "可爱"),
    ("fast", "快"),
    ("slow", "慢"),
    ("sleepy", "困"),
]
PHRASES = [
    ("Hello!", "你好！"),
    ("Thank you!", "谢谢你！"),
    ("Good night!", "晚安！"),
    ("Good morning!", "早上好！"),
    ("I love you.", "我爱你。"),
    ("How are you?", "你好吗？"),
    ("See you tomorrow!", "明天见！"),
    ("Happy birthday!", "生日快乐！"),
    ("I am hungry.", "我饿了。"),
    ("Let's play together.", "我们一起玩吧。"),
    ("The sun is hot.", "太阳很热。"),
    ("It is raining.", "下雨了。"),
    ("I like to read books.", "我喜欢看书。"),
]


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def bot(text: str) -> dict:
    return {"role": "assistant", "content": text}


def _name_en(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.3:
        return rng.choice(EXTRA_NAMES_EN), rng.choice("mf")
    return rng.choice(NAMES_EN)


def _name_zh(rng: random.Random) -> str:
    if rng.random() < 0.3:
        c = rng.choice(ZH_NAME_CHARS)
        return c + c if rng.random() < 0.7 else "小" + c
    return rng.choice(
        [
            "咪咪",
            "旺财",
            "豆豆",
            "花花",
            "球球",
            "毛毛",
            "点点",
            "乐乐",
            "贝贝",
            "嘟嘟",
            "皮皮",
            "胖胖",
            "团团",
            "圆圆",
            "跳跳",
            "果果",
            "甜甜",
            "欢欢",
            "小白",
            "小黑",
            "阿福",
            "布丁",
        ]
    )


# ---------------------------------------------------------------- stories


def story_task_en(rng: random.Random) -> list[dict]:
    an = rng.choice(ANIMALS)
    name, gender = _name_en(rng)
    theme = rng.choice(list(THEMES)) if rng.random() < 0.35 else None
    plot, phr_en, _ = THEMES[theme] if theme else (None, None, None)
    child = rng.random() < 0.2
    hero = Hero.child(rng, name, gender, "en") if child else Hero.animal(rng, an.key, name, gender, "en")
    who = f"{a(hero.kind_en.split()[-1])} named {name}" if child else f"{a(an.en)} named {name}"
    about = f" about {rng.choice(phr_en)}" if theme else ""
    k = rng.random()
    if theme and k < 0.25:
        prompt = rng.choice(
            [f"Write a short story{about}.", f"Tell me a story{about}.", f"Can you write a story{about}?"]
        )
        hero = None
    elif k < 0.4 and not child:
        prompt = rng.choice(
            [
                f"Tell me a bedtime story about {a(an.en)}.",
                f"Write a short story about {a(an.en)}.",
                f"Write a story about a little {an.en}.",
            ]
        )
        hero = Hero.animal(rng, an.key, lang="en")
    else:
        prompt = rng.choice(
            [
                f"Write a short story about {who}{about}.",
                f"Tell me a story about {who}{about}.",
                f"Can you write a story{about} about {who}?" if theme else f"Can you write a story about {who}?",
                f"Write a story about {name} the {hero.kind}{about}.",
                f"Please write a short story about {who.replace(' named ', ' called ')}{about}.",
            ]
        )
    if hero is None:
        hero = Hero.random(rng, "en")
    return [user(prompt), bot(story_en(rng, hero=hero, plot=plot))]


def story_task_zh(rng: random.Random) -> list[dict]:
    an = rng.choice(ANIMALS)
    name = _name_zh(rng)
    theme = rng.choice(list(THEMES)) if rng.random() < 0.35 else None
    plot, _, phr_zh = THEMES[theme] if theme else (None, None, None)
    child = rng.random() < 0.2
    if child:
        cname, gender = rng.choice(NAMES_ZH_CHILD)
        hero = Hero.child(rng, cname, gender, "zh")
        who = f"名叫{cname}的{hero.kind_zh}"
    else:
        hero = Hero.animal(rng, an.key, name, lang="zh")
        who = rng.choice([f"名叫{name}的{an.zh}", f"{an.zh}{name}"])
    about = rng.choice(phr_zh) if theme else ""
    k = rng.random()
    if theme and k < 0.25:
        prompt = rng.choice(
            [f"写一个关于{about}的故事。", f"讲一个关于{about}的故事。", f"用中文写一个关于{about}的短故事。"]
        )
        hero = Hero.random(rng, "zh")
    elif k < 0.4 and not child:
        prompt = rng.choice(
            [f"用中文写一个关于{an.zh}的故事。", f"给我讲一个{an.zh}的睡前故事。", f"写一个关于{an.zh}的短故事。"]
        )
        hero = Hero.animal(rng, an.key, lang="zh")
    else:
        tail = f"，主题是{about}" if theme else ""
        prompt = rng.choice(
            [
                f"写一个关于{who}的故事{tail}。",
                f"给我讲一个关于{who}的故事{tail}。",
                f"请写一个{who}的短故事{tail}。",
                f"用中文写一个关于{who}的故事{tail}。",
            ]
        )
    return [user(prompt), bot(story_zh(rng, hero=hero, plot=plot))]


def story_cross(rng: random.Random) -> list[dict]:
    """Ask in one language for a story in the other."""
    an = rng.choice(ANIMALS)
    if rng.random() < 0.5:
        hero = Hero.animal(rng, an.key, lang="zh")
        return [
            user(
                rng.choice(
                    [
                        f"Write a short story in Chinese about {a(an.en)}.",
                        f"Tell me a story about {a(an.en)} in Chinese.",
                    ]
                )
            ),
            bot(story_zh(rng, hero=hero)),
        ]
    hero = Hero.animal(rng, an.key, lang="en")
    return [
        user(rng.choice([f"用英语写一个关于{an.zh}的故事。", f"用英文讲一个{an.zh}的故事。"])),
        bot(story_en(rng, hero=hero)),
    ]


CONTINUE_KINDS = [
    "story_en",
    "story_zh",
    "story_en",
    "story_zh",
    "facts_en",
    "facts_zh",
    "animal_en",
    "animal_zh",
    "game_en",
    "game_zh",
    "lesson_en",
    "lesson_zh",
]


def _split_first(doc: str, zh: bool) -> tuple[str, str]:
    """(the first paragraph or sentence, the rest)."""
    if "\n" in doc:
        head, rest = doc.split("\n", 1)
        return head, rest
    ends = "。！？" if zh else ".!?"
    for i, ch in enumerate(doc):
        if ch in ends and i > 8:
            j = i + 1
            while j < len(doc) and doc[j] in '”"':
                j += 1
            return doc[:j].strip(), doc[j:].strip()
    return doc, ""


def continue_task(rng: random.Random) -> list[dict]:
    """Continue a text of any kind the corpus holds: keeps SFT from forgetting plain text."""
    from . import corpus

    while True:
        kind = rng.choice(CONTINUE_KINDS)
        zh = kind.endswith("zh")
        head, rest = _split_first(corpus.GENERATORS[kind](rng), zh)
        if rest:
            break
    if kind.startswith("story"):
        ask = (
            rng.choice(["续写这个故事：\n", "接着讲这个故事：\n"])
            if zh
            else rng.choice(["Continue the story:\n", "Finish this story:\n", "What happens next?\n"])
        )
    else:
        ask = (
            rng.choice(["续写这段文字：\n", "接着写：\n"]) if zh else rng.choice(["Continue this text:\n", "Go on:\n"])
        )
    return [user(ask + head), bot(rest)]


# ---------------------------------------------------------------- facts


def fact_task_en(rng: random.Random) -> list[dict]:
    topic = rng.choice(list(FACTS))
    name, _, facts = FACTS[topic]
    r = rng.random()
    if r < 0.45:
        qa = [f for f in facts if len(f) == 4] or facts
        f = rng.choice(qa)
        if len(f) == 4:
            return [user(f[2]), bot(f[0])]
    if r < 0.75:
        f = rng.choice(facts)[0]
        prompt = rng.choice(
            [
                f"Tell me a fact about {name}.",
                f"Tell me something about {name}.",
                f"What is an interesting fact about {name}?",
                f"Give me a fun fact about {name}.",
            ]
        )
        answer = rng.choice([f, f"Here is a fact about {name}: {f}", f"Did you know? {f}"])
        return [user(prompt), bot(answer)]
    k = rng.choice([2, 3, 3]) if len(facts) >= 3 else 2
    chosen = [f[0] for f in rng.sample(facts, k)]
    word = NUM_EN[k]
    prompt = rng.choice(
        [
            f"Tell me {word} facts about {name}.",
            f"Give me {word} facts about {name}.",
            f"List {word} facts about {name}.",
        ]
    )
    return [
        user(prompt),
        bot(f"Here are {word} facts about {name}:\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(chosen, 1))),
    ]


def fact_task_zh(rng: random.Random) -> list[dict]:
    topic = rng.choice(list(FACTS))
    _, name, facts = FACTS[topic]
    r = rng.random()
    if r < 0.45:
        qa = [f for f in facts if len(f) == 4] or facts
        f = rng.choice(qa)
        if len(f) == 4:
            return [user(f[3]), bot(f[1])]
    if r < 0.75:
        f = rng.choice(facts)[1]
        prompt = rng.choice([f"告诉我一个关于{name}的知识。", f"说一个关于{name}的小知识。", f"讲讲{name}吧。"])
        return [user(prompt), bot(rng.choice([f, f"你知道吗？{f}", f"关于{name}，有一个小知识：{f}"]))]
    k = rng.choice([2, 3, 3]) if len(facts) >= 3 else 2
    chosen = [f[1] for f in rng.sample(facts, k)]
    num = "两三"[k - 2]
    prompt = rng.choice([f"告诉我{num}个关于{name}的知识。", f"说出{num}个关于{name}的小知识。"])
    return [
        user(prompt),
        bot(f"关于{name}的{num}个小知识：\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(chosen, 1))),
    ]


# ---------------------------------------------------------------- animals, words, small tasks


def animal_task(rng: random.Random) -> list[dict]:
    an = rng.choice(ANIMALS)
    zh = rng.random() < 0.5
    if rng.random() < 0.45:
        sounders = [x for x in ANIMALS if x.sound_en]
        an = rng.choice(sounders)
        if zh:
            sound = f"{an.zh}{an.sound_zh}叫。" if not an.sound_zh.endswith("地") else f"{an.zh}{an.sound_zh}吼叫。"
            return [user(rng.choice([f"{an.zh}怎么叫？", f"{zh_word(an)}的叫声是什么样的？"])), bot(sound)]
        verb = "roars" if an.sound_en == "roar" else f'says "{an.sound_en}"'
        return [
            user(rng.choice([f"What sound does {a(an.en)} make?", f"What does {a(an.en)} say?"])),
            bot(f"{cap(a(an.en))} {verb}."),
        ]
    if zh:
        return [user(rng.choice([f"介绍一下{an.zh}。", f"描述一下{zh_word(an)}。"])), bot(animal_zh(rng, an.key))]
    return [
        user(rng.choice([f"Describe {a(an.en)}.", f"Tell me about {a(an.en)}.", f"What is {a(an.en)} like?"])),
        bot(animal_en(rng, an.key)),
    ]


def translate_task(rng: random.Random) -> list[dict]:
    r = rng.random()
    if r < 0.45:
        en, zh = rng.choice(word_pairs())
        k = rng.randrange(4)
        if k == 0:
            return [user(f'How do you say "{en}" in Chinese?'), bot(f'"{en}" in Chinese is "{zh}".')]
        if k == 1:
            return [user(f'What does "{zh}" mean in English?'), bot(f'"{zh}" means "{en}" in English.')]
        if k == 2:
            return [user(f"“{zh}”用英语怎么说？"), bot(f"“{zh}”用英语说是“{en}”。")]
        return [user(f"“{en}”是什么意思？"), bot(f"“{en}”的意思是“{zh}”。")]
    # sentences, built in both languages at once
    s = rng.randrange(4)
    if s == 0:
        an = rng.choice(ANIMALS)
        adj = rng.choice(SENT_ADJ)
        en, zh = f"The {an.en} is {adj[0]}.", f"{zh_word(an)}很{adj[1]}。"
    elif s == 1:
        fruit = rng.choice(CATEGORIES[5][2])
        en, zh = f"I like {fruit[0]}.", f"我喜欢{fruit[1]}。"
    elif s == 2:
        obj = rng.choice(OBJECTS)
        col = rng.choice(COLORS[:10])
        en, zh = f"I have {a(col[0])} {obj[0]}.", f"我有一{obj[2]}{col[1]}的{obj[1]}。"
    else:
        en, zh = rng.choice(PHRASES)
    if rng.random() < 0.5:
        return [
            user(
                rng.choice(
                    [f"Translate into Chinese: {en}", f"Translate to Chinese: {en}", f"把这句话翻译成中文：{en}"]
                )
            ),
            bot(zh),
        ]
    return [
        user(rng.choice([f"Translate into English: {zh}", f"翻译成英语：{zh}", f"把这句话翻译成英文：{zh}"])),
        bot(en),
    ]


def opposite_task(rng: random.Random) -> list[dict]:
    firsts = [o[0] for o in OPPOSITES]
    seconds = [o[1] for o in OPPOSITES]
    o = rng.choice(OPPOSITES)
    reverse = rng.random() < 0.4 and seconds.count(o[1]) == 1 and o[1] not in firsts
    x, y, xz, yz = (o[1], o[0], o[3], o[2]) if reverse else o
    if rng.random() < 0.5:
        return [
            user(rng.choice([f'What is the opposite of "{x}"?', f"What is the opposite of {x}?"])),
            bot(f'The opposite of "{x}" is "{y}".'),
        ]
    return [user(f"“{xz}”的反义词是什么？"), bot(f"“{xz}”的反义词是“{yz}”。")]


def colour_task(rng: random.Random) -> list[dict]:
    thing, col, thing_zh, col_zh, plural = rng.choice(THING_COLORS)
    if rng.random() < 0.5:
        word = rng.choice(["colour", "color"])
        verb = "are" if plural else "is"
        return [user(f"What {word} {verb} {thing}?"), bot(f"{cap(thing)} {verb} {col}.")]
    return [user(f"{thing_zh}是什么颜色的？"), bot(f"{thing_zh}是{col_zh}的。")]


def list_task(rng: random.Random) -> list[dict]:
    name, name_zh, members = rng.choice(CATEGORIES)
    k = rng.choice([2, 3, 3, 4]) if len(members) > 4 else 2
    chosen = rng.sample(members, k)
    if rng.random() < 0.5:
        word = NUM_EN[k]
        items = [m[0] for m in chosen]
        text = items[0] if k == 1 else ", ".join(items[:-1]) + " and " + items[-1]
        return [
            user(rng.choice([f"Name {word} {name}.", f"Can you name {word} {name}?", f"List {word} {name}."])),
            bot(rng.choice([f"Here are {word} {name}: {text}.", f"{cap(text)}."])),
        ]
    num = "零一两三四"[k]
    cls = CATEGORY_CLS.get(name, "种")
    items = [m[1] for m in chosen]
    text = "、".join(items[:-1]) + "和" + items[-1]
    return [user(rng.choice([f"说出{num}{cls}{name_zh}。", f"请列举{num}{cls}{name_zh}。"])), bot(f"{text}。")]


def math_task(rng: random.Random) -> list[dict]:
    x, y = rng.randint(0, 10), rng.randint(0, 10)
    minus = rng.random() < 0.35
    if minus:
        x, y = max(x, y), min(x, y)
    z = x - y if minus else x + y
    r = rng.random()
    if r < 0.4:
        word = "minus" if minus else "plus"
        return [
            user(rng.choice([f"What is {x} {word} {y}?", f"What's {x} {word} {y}?"])),
            bot(f"{x} {word} {y} is {z}."),
        ]
    if r < 0.6:
        op = "-" if minus else "+"
        return [user(f"What is {x} {op} {y}?"), bot(f"{x} {op} {y} = {z}")]
    op = "减" if minus else "加"
    return [user(rng.choice([f"{x}{op}{y}等于几？", f"{x}{op}{y}等于多少？"])), bot(f"{x}{op}{y}等于{z}。")]


CHAT_EN = {
    "greet": (
        ["Hello!", "Hi!", "Hi there!", "Hello", "Good morning!", "Hey!"],
        [
            "Hello! What would you like to do? I can tell you a story or a fact.",
            "Hi! Would you like a story, a fact, or a little word game?",
            "Hello there! I can write short stories, tell you facts and answer simple questions.",
        ],
    ),
    "who": (
        ["Who are you?", "What is your name?", "What are you?"],
        [
            f"I am {MODEL_NAME}, a very small language model. I know simple stories and facts in English and Chinese.",
            f"My name is {MODEL_NAME}. I am a tiny language model that was trained on children's stories and simple facts.",
        ],
    ),
    "can": (
        ["What can you do?", "How can you help me?"],
        [
            (
                "I can write short stories about animals and children, tell you simple facts, translate simple words "
                "and do small sums. I work in English and in Chinese."
            ),
            "I can tell stories, share facts about animals, space and nature, and answer easy questions.",
        ],
    ),
    "thanks": (
        ["Thank you!", "Thanks!", "Thank you very much."],
        ["You are welcome!", "You're welcome! Have a nice day."],
    ),
    "bye": (
        ["Goodbye!", "Bye!", "Good night!"],
        ["Goodbye! See you soon.", "Bye! Have a lovely day.", "Good night! Sleep well."],
    ),
}
CHAT_ZH = {
    "greet": (
        ["你好！", "你好", "嗨！", "早上好！"],
        ["你好！我可以给你讲故事，也可以告诉你一些小知识。", "你好呀！你想听故事，还是想知道一个小知识？"],
    ),
    "who": (
        ["你是谁？", "你叫什么名字？"],
        [
            f"我是{MODEL_NAME}，一个很小的语言模型。我会用中文和英文讲简单的故事和小知识。",
            f"我叫{MODEL_NAME}，是一个用童话故事和简单知识训练出来的小模型。",
        ],
    ),
    "can": (
        ["你会做什么？", "你能帮我做什么？"],
        ["我会写关于小动物和小朋友的短故事，讲简单的小知识，翻译简单的词语，还会做简单的加减法。"],
    ),
    "thanks": (["谢谢你！", "谢谢！"], ["不客气！", "不用谢！祝你开心。"]),
    "bye": (["再见！", "晚安！"], ["再见！下次见。", "晚安，做个好梦！"]),
}


def chat_task(rng: random.Random) -> list[dict]:
    table = CHAT_EN if rng.random() < 0.5 else CHAT_ZH
    prompts, answers = table[rng.choice(list(table))]
    return [user(rng.choice(prompts)), bot(rng.choice(answers))]


TASKS = [
    (story_task_en, 0.15),
    (story_task_zh, 0.13),
    (story_cross, 0.02),
    (continue_task, 0.14),
    (fact_task_en, 0.10),
    (fact_task_zh, 0.10),
    (animal_task, 0.06),
    (translate_task, 0.08),
    (opposite_task, 0.04),
    (colour_task, 0.04),
    (list_task, 0.04),
    (math_task, 0.06),
    (chat_task, 0.04),
]


def conversation(rng: random.Random) -> list[dict]:
    fns, weights = zip(*TASKS, strict=True)
    msgs = rng.choices(fns, weights)[0](rng)
    if rng.random() < 0.06:  # a second turn
        msgs = msgs + rng.choices(fns, weights)[0](rng)
    return msgs


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"messages": conversation(rng)} for _ in range(n)]


def write_rows(path: Path, n: int, seed: int, exclude: Path | None = None) -> dict:
    """Write n rows; with `exclude`, drop rows that also occur there (a held-out set disjoint from training)."""
    lines = [json.dumps(r, ensure_ascii=False) for r in rows(n, seed)]
    dropped = 0
    if exclude is not None:
        seen = set(exclude.read_text(encoding="utf-8").splitlines())
        kept = [ln for ln in lines if ln not in seen]
        dropped = len(lines) - len(kept)
        lines = kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return {"rows": len(lines), "dropped_as_duplicates": dropped}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=12000)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--exclude", type=Path, default=None, help="drop rows that occur in this JSONL file")
    args = p.parse_args(argv)
    stats = write_rows(args.out, args.rows, args.seed, args.exclude)
    print(f"{args.out}: {stats['rows']} rows ({stats['dropped_as_duplicates']} duplicates of --exclude dropped)")


if __name__ == "__main__":
    main()
