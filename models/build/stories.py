"""Seeded generators of short children's stories in English and Chinese (written for this repository, MIT).

A story is built from a plot (lost thing, sharing, a new friend, learning a skill, a rainy day, helping,
a trip, a present, a scary night, a day and its weather) and a cast (a hero, a friend, a grown-up), with
several phrasings for every sentence and many words for every slot, so a language model trained on the
output sees genuinely spread next-token distributions rather than one memorised text.

    rng = random.Random(0)
    story_en(rng)                          # -> str
    story_zh(rng, hero=Hero.animal(rng, "cat", "咪咪", lang="zh"), plot="lost")

Everything draws from the `rng` it is given, in a fixed order: the same seed gives the same stories.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .lexicon import (
    ACTIVITIES,
    ANIMAL,
    ANIMALS,
    CHILD_EN,
    CHILD_ZH,
    COLORS,
    FEEL_BAD,
    FEEL_GOOD,
    FOODS,
    INTROS,
    NAMES_EN,
    NAMES_ZH_CHILD,
    NAMES_ZH_PET,
    OBJECTS,
    OPENINGS,
    PLACES,
    SKILLS,
    SPOTS,
    TRAITS,
    Animal,
    a,
    cap,
)

MADE_UP_SHARE = 0.4  # heroes and friends with a made-up name
PLOTS = ("lost", "share", "friend", "learn", "rain", "help", "trip", "gift", "night", "day")

# the plural/"the ..." form of each food for sentences such as "shared the apples"
FOOD_THE = {
    "apple": "the apples",
    "banana": "the bananas",
    "cake": "the cake",
    "cookie": "the cookies",
    "bread": "the bread",
    "noodle": "the noodles",
    "dumpling": "the dumplings",
    "strawberry": "the strawberries",
    "cherry": "the cherries",
    "carrot": "the carrots",
    "pear": "the pears",
    "peach": "the peaches",
    "watermelon": "the watermelon",
    "grape": "the grapes",
    "corn": "the corn",
    "orange": "the oranges",
    "sandwich": "the sandwiches",
    "pie": "the pie",
    "rice ball": "the rice balls",
    "bun": "the buns",
}


# Made-up names (thousands of them), so a name in a story can only be predicted by copying it from
# earlier in the text: the signal that teaches a small model to keep its characters straight.
_SYL_EN = [
    "Ba",
    "Be",
    "Bo",
    "Da",
    "Di",
    "Do",
    "Fa",
    "Fi",
    "Ga",
    "Go",
    "Ha",
    "Ji",
    "Ka",
    "Ki",
    "Ko",
    "La",
    "Li",
    "Lo",
    "Lu",
    "Ma",
    "Mi",
    "Mo",
    "Na",
    "Ni",
    "No",
    "Pa",
    "Pe",
    "Pi",
    "Po",
    "Ra",
    "Ri",
    "Ro",
    "Sa",
    "Si",
    "So",
    "Ta",
    "Te",
    "Ti",
    "To",
    "Va",
    "Wi",
    "Ya",
    "Yo",
    "Za",
    "Zi",
    "Zu",
]
_END_EN = ["", "n", "x", "l", "m", "ly", "ra", "bo", "mi", "ki", "nda", "lo", "ta", "si", "ro", "pa"]
_CHARS_ZH = (
    "乐欢贝豆果朵丁毛球点圆团糖米花宝星月亮多宁安心喜福兰明美甜晶飞云雪冬春夏秋阳天玉珠琪琳佳可萌"
    "嘟皮胖丫笨聪妙叮当布奇奇"
)


def made_up_name(rng: random.Random, lang: str) -> str:
    if lang == "en":
        return rng.choice(_SYL_EN) + rng.choice(_SYL_EN).lower() * (rng.random() < 0.3) + rng.choice(_END_EN)
    c = rng.choice(_CHARS_ZH)
    return rng.choice([c + c, "小" + c, c + rng.choice(_CHARS_ZH), "阿" + c])


@dataclass
class Hero:
    name: str
    gender: str  # m / f
    animal: Animal | None  # None: a child
    trait_en: str = ""
    trait_zh: str = ""
    kind_en: str = ""  # boy / little girl (children)
    kind_zh: str = ""

    @staticmethod
    def random(rng: random.Random, lang: str, child_share: float = 0.3, exclude: tuple[str, ...] = ()) -> Hero:
        while True:
            if rng.random() < child_share:
                h = Hero.child(rng, lang=lang)
            else:
                h = Hero.animal(rng, rng.choice(ANIMALS).key, lang=lang)
            if h.name not in exclude and (h.animal is None or h.animal.key not in exclude):
                return h

    @staticmethod
    def child(rng: random.Random, name: str | None = None, gender: str | None = None, lang: str = "en") -> Hero:
        if name is None and rng.random() < MADE_UP_SHARE:
            name = made_up_name(rng, lang)
        if name is None:
            name, gender = rng.choice(NAMES_EN if lang == "en" else NAMES_ZH_CHILD)
        gender = gender or rng.choice("mf")
        trait = rng.choice(TRAITS)
        return Hero(name, gender, None, trait[0], trait[1], rng.choice(CHILD_EN[gender]), rng.choice(CHILD_ZH[gender]))

    @staticmethod
    def animal(
        rng: random.Random, key: str, name: str | None = None, gender: str | None = None, lang: str = "en"
    ) -> Hero:
        if name is None and rng.random() < MADE_UP_SHARE:
            name = made_up_name(rng, lang)
        if name is None:
            if lang == "en":
                name, gender = rng.choice(NAMES_EN)
            else:
                name = rng.choice(NAMES_ZH_PET)
        gender = gender or rng.choice("mf")
        trait = rng.choice(TRAITS)
        return Hero(name, gender, ANIMAL[key], trait[0], trait[1])

    # --- English
    @property
    def he(self) -> str:
        return "he" if self.gender == "m" else "she"

    @property
    def him(self) -> str:
        return "him" if self.gender == "m" else "her"

    @property
    def his(self) -> str:
        return "his" if self.gender == "m" else "her"

    @property
    def himself(self) -> str:
        return "himself" if self.gender == "m" else "herself"

    @property
    def kind(self) -> str:
        return self.animal.en if self.animal else self.kind_en.split()[-1]

    def desc_en(self, rng: random.Random) -> str:
        noun = self.animal.en if self.animal else self.kind_en.split()[-1]
        adj = self.trait_en
        return rng.choice(
            [
                f"{a(adj)} {noun} named {self.name}",
                f"{a(noun)} named {self.name}",
                f"{a(adj)} {noun} called {self.name}",
                f"{a(adj)} little {noun} named {self.name}"
                if adj != "little"
                else f"a little {noun} named {self.name}",
            ]
        )

    def the_en(self) -> str:  # "the cat" / "the boy"
        return f"the {self.kind}"

    # --- Chinese
    @property
    def ta(self) -> str:
        if self.animal:
            return "它"
        return "他" if self.gender == "m" else "她"

    def desc_zh(self, rng: random.Random) -> str:
        if self.animal:
            cls, noun = self.animal.zh_cls, self.animal.zh
        else:
            cls, noun = "个", self.kind_zh
        return rng.choice(
            [
                f"一{cls}名叫{self.name}的{noun}",
                f"一{cls}{self.trait_zh}{noun}，名叫{self.name}",
                f"一{cls}{noun}，它的名字叫{self.name}"
                if self.animal
                else f"一{cls}{noun}，{self.ta}的名字叫{self.name}",
                f"一{cls}{self.trait_zh}{noun}{self.name}",
            ]
        )


@dataclass
class Grownup:
    en: str  # "his mother" (filled in per hero) / "Grandma"
    he: str
    zh: str


def grownup(rng: random.Random, hero: Hero) -> Grownup:
    options = [
        ("{his} mother", "she", "妈妈"),
        ("{his} dad", "he", "爸爸"),
        ("Grandma", "she", "奶奶"),
        ("Grandpa", "he", "爷爷"),
        ("{his} big sister", "she", "姐姐"),
        ("{his} big brother", "he", "哥哥"),
    ]
    en, he, zh = rng.choice(options)
    if hero.animal and rng.random() < 0.4 and zh in ("妈妈", "爸爸"):
        zh = hero.animal.zh_base + zh  # 猫妈妈, 熊爸爸
        en = f"Mother {cap(hero.animal.en)}" if zh.endswith("妈妈") else f"Father {cap(hero.animal.en)}"
    return Grownup(en.format(his=hero.his), he, zh)


def _join(parts: list[str]) -> str:
    return " ".join(p for p in parts if p)


def _list_en(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _list_zh(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "、".join(items[:-1]) + "和" + items[-1]


# ======================================================================== English


def _intro_en(rng: random.Random, h: Hero) -> list[str]:
    opening = rng.choice(INTROS)[0]
    desc = h.desc_en(rng)
    first = rng.choice(
        [
            f"{opening}, there was {desc}.",
            f"{opening}, there lived {desc}.",
            f"There once was {desc}.",
            f"{cap(desc)} lived {h.animal.home_en if h.animal else 'in a small house near ' + rng.choice(PLACES)[0]}.",
        ]
    )
    out = [first]
    if h.animal:
        extra = [
            f"{cap(h.he)} lived {h.animal.home_en}.",
            f"{cap(h.he)} had {h.animal.look_en}.",
            f"{cap(h.he)} liked to eat {h.animal.food_en}.",
            f"{cap(h.he)} could {h.animal.can_en}.",
        ]
    else:
        act = rng.choice(ACTIVITIES)
        extra = [
            f"{cap(h.he)} liked to {act[0]}.",
            f"{cap(h.he)} was {h.trait_en if h.trait_en != 'little' else 'six years old'}.",
            f"{cap(h.he)} had {a(rng.choice(COLORS)[0])} {rng.choice(['bag', 'coat', 'hat'])}.",
        ]
    extra = [s for s in extra if s.split(" ", 2)[-1].rstrip(".") not in first]  # not what the first sentence said
    out += rng.sample(extra, k=min(len(extra), rng.choice([0, 1, 1, 2])))
    return out


def _ending_en(rng: random.Random, h: Hero, f: Hero | None, moral: list[str]) -> list[str]:
    ends = [f"That night, {h.name} fell asleep with a big smile.", f"It was a very good day for {h.name}."]
    if f:
        ends += [
            f"From that day on, {h.name} and {f.name} were best friends.",
            f"{h.name} and {f.name} played together every day after that.",
        ]
    out = [rng.choice(ends)]
    if moral and rng.random() < 0.5:
        out.append(rng.choice(moral))
    return out


def _plot_lost_en(rng, h, f, g):
    obj, _, _ = rng.choice(OBJECTS)
    color = rng.choice(COLORS)[0]
    place, _prep, _, _ = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)
    s1, s2, s3 = rng.sample(SPOTS, 3)
    sad = rng.choice([FEEL_BAD[0], FEEL_BAD[1], FEEL_BAD[4]])[0]
    happy = rng.choice(FEEL_GOOD[:3])[0]
    p1 = [
        rng.choice(
            [
                f"{h.name} had {a(color)} {obj}.",
                f"{h.name}'s favourite toy was {a(color)} {obj}.",
                f"{h.name} loved {h.his} {color} {obj} more than anything.",
            ]
        ),
        rng.choice([f"{cap(h.he)} took it everywhere.", f"{cap(h.he)} played with it every day.", ""]),
        rng.choice(
            [
                f"One day, {h.he} took the {obj} to {place} to {act[0]}.",
                f"One morning, {h.name} went to {place} with {h.his} {obj}.",
                f"{rng.choice(OPENINGS[1:])[0]}, {h.name} and {h.his} {obj} went to {place}.",
            ]
        ),
        rng.choice([f"{cap(h.he)} {act[1]} and had a lot of fun.", f"{cap(h.he)} {act[1]} all morning.", ""]),
    ]
    p2 = [
        rng.choice(
            [
                f"But when it was time to go home, the {obj} was gone!",
                f"Later, {h.name} looked around, but {h.his} {obj} was not there.",
                f"Then {h.name} saw that {h.his} {obj} was missing.",
            ]
        ),
        rng.choice([f"{h.name} felt very {sad}.", f"{h.name} was {sad}.", ""]),
        rng.choice(
            [
                f'"Oh no! Where is my {obj}?" {h.he} cried.',
                f'"Where did my {obj} go?" {h.he} said.',
                f'"I have lost my {obj}!" said {h.name}.',
            ]
        ),
    ]
    p3 = [
        rng.choice(
            [
                f"Just then, {f.desc_en(rng)} came by.",
                f"Just then, {h.his} friend {f.name} the {f.kind} came by.",
                f"Soon {f.desc_en(rng)} walked over.",
            ]
        ),
        rng.choice(
            [f'"Why are you so {sad}, {h.name}?" asked {f.name}.', f'"What is wrong, {h.name}?" asked {f.name}.']
        ),
        f'"I lost my {color} {obj}," said {h.name}.',
        rng.choice(
            [
                f'"Don\'t worry. I will help you look for it," said {f.name}.',
                f'"Let\'s look for it together," said {f.name}.',
            ]
        ),
        rng.choice([f"They looked {s1[0]}, but the {obj} was not there.", f"First they looked {s1[0]}. Nothing!"]),
        rng.choice([f"They looked {s2[0]}. It was not there either.", ""]),
    ]
    p4 = [
        rng.choice(
            [
                f"At last, {f.name} found the {obj} {s3[0]}!",
                f"Then {h.name} saw something {color} {s3[0]}. It was {h.his} {obj}!",
                f"At last, they found it {s3[0]}.",
            ]
        ),
        rng.choice([f"{h.name} was so {happy}.", f"{h.name} jumped for joy.", f"{h.name} gave the {obj} a big hug."]),
        rng.choice(
            [
                f'"Thank you, {f.name}!" {h.he} said.',
                f'"Thank you for helping me, {f.name}," said {h.name}.',
                f'"You are a good friend," said {h.name}.',
            ]
        ),
    ]
    moral = ["Good friends help each other.", "It is always good to have a friend who helps."]
    return [p1, p2, p3, p4 + _ending_en(rng, h, f, moral)]


def _plot_share_en(rng, h, f, g):
    food = rng.choice(FOODS)
    the = FOOD_THE[food[0]]
    place, prep, _, _ = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)
    p1 = [
        rng.choice(
            [
                f"{cap(g.en)} gave {h.name} {food[1]}.",
                f"{h.name} had {food[1]} for lunch.",
                f"{h.name} found {food[1]} on the kitchen table.",
                f"{h.name} picked {food[1]} at the market."
                if food[0] in ("apple", "pear", "peach", "cherry", "grape", "orange", "strawberry")
                else f"{h.name} made {food[1]} with {g.en}.",
            ]
        ),
        rng.choice(
            [
                f"{cap(h.he)} took {the} to {place}.",
                f"{cap(h.he)} went to {place} to eat {the}.",
                f"{cap(h.he)} sat down {prep} {place} to eat.",
            ]
        ),
    ]
    p2 = [
        rng.choice([f"There {h.he} met {f.desc_en(rng)}.", f"Soon {f.desc_en(rng)} came along."]),
        rng.choice(
            [f"{f.name} looked very hungry.", f"{f.name}'s tummy went rumble, rumble.", f"{f.name} had nothing to eat."]
        ),
        rng.choice([f'"I forgot my lunch," said {f.name} sadly.', f'"I am so hungry," said {f.name}.', ""]),
        rng.choice([f"{h.name} looked at {the}.", f"{h.name} thought for a moment.", ""]),
        rng.choice(
            [
                f'"Would you like to share {the} with me?" asked {h.name}.',
                f'"Here, you can have some of {the}," said {h.name}.',
                f'"Let\'s share {the}," said {h.name} with a smile.',
            ]
        ),
        rng.choice([f'"Yes, please! Thank you!" said {f.name}.', f'{f.name} smiled. "Thank you, {h.name}!"']),
    ]
    p3 = [
        rng.choice([f"They sat together and shared {the}.", f"So they ate {the} together."]),
        rng.choice([f"{cap(the)} tasted even better with a friend.", "It was the best lunch ever.", ""]),
        rng.choice(
            [f"After lunch, they {act[1]} together until the sun went down.", f"Then they {act[1]} together.", ""]
        ),
    ]
    moral = [
        "Sharing makes everyone happy.",
        f"{h.name} learned that sharing is caring.",
        "When we share, we make new friends.",
    ]
    return [p1, p2, p3 + _ending_en(rng, h, f, moral)]


def _plot_friend_en(rng, h, f, g):
    place, prep, _, _ = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)
    spot = rng.choice(SPOTS)[0]
    p1 = [
        rng.choice(
            [
                f"{h.name} did not have any friends, and {h.he} often felt lonely.",
                f"{h.name} had just moved to a new home. {cap(h.he)} did not know anyone there.",
                f"{h.name} wanted a friend to play with.",
            ]
        ),
        rng.choice([f"One day, {h.name} went to {place}.", f"{rng.choice(OPENINGS[1:])[0]}, {h.he} went to {place}."]),
        rng.choice(
            [
                f"There {h.he} saw {f.desc_en(rng)} sitting all alone {spot}.",
                f"{cap(prep)} {place}, {h.he} saw {f.desc_en(rng)}.",
            ]
        ),
    ]
    p2 = [
        rng.choice([f"{h.name} wanted to say hello, but {h.he} felt shy.", f"{h.name} was a little shy.", ""]),
        rng.choice(
            [
                f'At last, {h.he} walked over and said, "Hello! My name is {h.name}. What is your name?"',
                f'{h.name} took a deep breath and said, "Hi! I am {h.name}."',
            ]
        ),
        rng.choice([f'"I am {f.name}," said the {f.kind}.', f'"My name is {f.name}," said the {f.kind} with a smile.']),
        rng.choice(
            [
                f'"Do you want to {act[0]} with me?" asked {h.name}.',
                f'"Would you like to {act[0]} together?" asked {h.name}.',
            ]
        ),
        rng.choice([f'"Yes!" said {f.name}.', f'"I would love to!" said {f.name}.']),
    ]
    p3 = [
        rng.choice([f"So they {act[1]} together.", f"They {act[1]} all afternoon."]),
        rng.choice(["They laughed and laughed.", "They had so much fun.", ""]),
        rng.choice(
            [
                f"When the sun went down, {h.name} did not feel lonely any more.",
                f"{h.name} was so glad {h.he} had said hello.",
            ]
        ),
    ]
    moral = ["A friend can be found anywhere, if you say hello.", "Saying hello is the first step to a new friendship."]
    return [p1, p2, p3 + _ending_en(rng, h, f, moral)]


def _plot_learn_en(rng, h, f, g):
    skill = rng.choice(SKILLS)
    bad = rng.choice([FEEL_BAD[0], FEEL_BAD[5], FEEL_BAD[4]])[0]
    p1 = [
        rng.choice([f"{h.name} wanted to learn to {skill[0]}.", f"{h.name} wished {h.he} could {skill[0]}."]),
        rng.choice(
            [
                f"{cap(h.he)} watched the others {skill[0]} and wanted to do it too.",
                f"{cap(skill[1])} looked like so much fun.",
                "",
            ]
        ),
        rng.choice([f"One day, {h.he} tried for the first time.", f"So {h.he} tried."]),
        rng.choice(["But it was very hard.", "But it did not work.", f"But {h.he} could not do it."]),
    ]
    p2 = [
        rng.choice([f"{h.name} felt {bad}.", f"{h.name} was {bad}."]),
        rng.choice([f'"I can\'t do it," {h.he} said.', f'"It is too hard," said {h.name}.']),
        rng.choice(
            [
                f'"Don\'t give up," said {g.en}. "Everybody needs practice."',
                f'{cap(g.en)} said, "Try again, a little bit every day."',
                f'"When I was little, I could not {skill[0]} either," said {g.en}. "Keep trying."',
            ]
        ),
    ]
    p3 = [
        rng.choice(
            [f"So {h.name} tried again the next day, and the day after that.", f"So {h.name} practised every day."]
        ),
        rng.choice([f"Every day {h.he} got a little better.", f"Slowly, {h.he} got better and better.", ""]),
        rng.choice(
            [f"One morning, {h.name} could {skill[0]} all by {h.himself}!", f"At last, {h.name} could {skill[0]}!"]
        ),
        rng.choice(['"I did it!" ' + h.he + " shouted.", f'"Look at me!" {h.he} called.']),
        rng.choice([f'{cap(g.en)} smiled. "I am so proud of you," {g.he} said.', f"{cap(g.en)} clapped and cheered."]),
        rng.choice([f"{h.name} felt very proud.", f"{h.name} was very happy."]),
    ]
    moral = ["If you keep trying, you can learn new things.", "Practice helps us get better."]
    return [p1, p2, p3 + _ending_en(rng, h, None, moral)]


INDOOR_EN = [
    ("build a fort with blankets", "built a fort with blankets", "用毯子搭了一个小城堡"),
    ("bake cookies", "baked cookies", "烤了饼干"),
    ("draw pictures", "drew pictures", "画了画"),
    ("read stories", "read stories", "读了故事书"),
    ("play a board game", "played a board game", "下了棋"),
    ("make paper boats", "made paper boats", "折了纸船"),
    ("sing songs", "sang songs", "唱了歌"),
]


def _plot_rain_en(rng, h, f, g):
    place, _prep, _, _ = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)
    indoor = rng.choice(INDOOR_EN)
    p1 = [
        rng.choice(
            [
                f"One morning, {h.name} woke up and looked out of the window. It was raining.",
                f"It was raining. {h.name} looked out of the window.",
                f"{rng.choice(['One day', 'On Saturday', 'That day'])}, the rain came down all morning.",
            ]
        ),
        rng.choice(
            [
                f'"Oh no," said {h.name}. "I wanted to go to {place} and {act[0]}."',
                f"{h.name} wanted to go to {place}, but it was too wet.",
            ]
        ),
        rng.choice([f"{h.name} felt {rng.choice(FEEL_BAD)[0]}.", ""]),
    ]
    p2 = [
        rng.choice([f'"We can have fun inside too," said {g.en}.', f'{cap(g.en)} had an idea. "Let\'s {indoor[0]}!"']),
        rng.choice([f"So they {indoor[1]}.", f"They {indoor[1]} together."]),
        rng.choice([f"Soon {h.name} forgot all about the rain.", "It was a lot of fun.", ""]),
    ]
    p3 = [
        rng.choice(["In the afternoon, the rain stopped and the sun came out.", "After lunch, the rain stopped."]),
        rng.choice(["There was a big rainbow in the sky.", "A beautiful rainbow appeared in the sky.", ""]),
        rng.choice([f'"A rainbow appears when sunlight shines through raindrops," said {g.en}.', ""]),
        rng.choice(
            [f"Now {h.name} could go to {place} after all.", f"{h.name} ran outside and jumped in the puddles."]
        ),
    ]
    return [p1, p2, p3 + _ending_en(rng, h, None, ["Even a rainy day can be a happy day."])]


HELP_EN = ["bird", "duck", "kite", "turtle", "chick"]


def _plot_help_en(rng, h, f, g):
    place, prep, _, _ = rng.choice(PLACES)
    need = rng.choice(HELP_EN)
    p1 = [
        rng.choice(
            [
                f"One day, {h.name} was walking {prep} {place} when {h.he} heard someone crying.",
                f"{rng.choice(OPENINGS)[0]}, {h.name} went for a walk {prep} {place}. Suddenly {h.he} heard a small voice.",
            ]
        )
    ]
    if need == "bird":
        p2 = [
            "It was a baby bird. It had fallen out of its nest.",
            '"I can\'t get back up," it cried.',
            f'"Don\'t worry, I will help you," said {h.name}.',
            rng.choice(
                [
                    f"{h.name} gently picked up the little bird and put it back in its nest.",
                    f"{h.name} asked {g.en} for help, and together they put the bird back in its nest.",
                ]
            ),
            "The mother bird sang a happy song.",
        ]
    elif need == "duck":
        p2 = [
            "It was a little duckling. It had lost its mother.",
            '"Where is my mama?" it cried.',
            f'"Don\'t worry, I will help you find her," said {h.name}.',
            f"{h.name} walked with the duckling to the pond.",
            rng.choice(
                ['There was the mother duck! "Quack, quack!" she said.', "The mother duck was waiting by the water."]
            ),
            "The duckling swam to its mother.",
        ]
    elif need == "kite":
        p2 = [
            f"It was {f.name} the {f.kind}. {cap(f.his)} kite was stuck in a tall tree.",
            f'"My kite is stuck!" cried {f.name}.',
            f'"Don\'t worry, I will help you," said {h.name}.',
            rng.choice(
                [
                    f"{h.name} found a long stick and gently pushed the kite down.",
                    f"{h.name} climbed up on a big rock and pulled the kite free.",
                ]
            ),
            f"{f.name} was so happy to have {f.his} kite back.",
        ]
    elif need == "turtle":
        p2 = [
            "It was an old turtle. It was lying on its back and could not turn over.",
            '"Please help me," said the turtle.',
            f'"Of course," said {h.name}.',
            f"{h.name} carefully turned the turtle over.",
            "The turtle smiled and walked slowly home.",
        ]
    else:
        p2 = [
            "It was a little chick. It was lost and far from the farm.",
            '"I want to go home," it cried.',
            f'"I know the way. Come with me," said {h.name}.',
            f"{h.name} walked with the chick all the way back to the farm.",
            "The mother hen was very glad to see it.",
        ]
    p3 = [
        rng.choice(['"Thank you!" they said.', '"Thank you so much!"', ""]),
        rng.choice([f"{h.name} felt warm and happy inside.", f"{h.name} smiled all the way home."]),
    ]
    moral = ["Helping others makes us feel good.", "It is good to help when someone needs it."]
    return [p1, p2, p3 + _ending_en(rng, h, None, moral)]


SEE_EN = {
    "the zoo": ["lions", "elephants", "monkeys", "pandas", "penguins", "kangaroos", "tigers"],
    "the farm": ["cows", "pigs", "sheep", "horses", "chickens", "goats", "ducks"],
    "the beach": ["shells", "crabs", "seagulls", "big waves", "boats"],
    "the forest": ["tall trees", "squirrels", "birds", "mushrooms", "a deer"],
    "the park": ["ducks", "dogs", "flowers", "a fountain", "kites"],
    "the river": ["fish", "ducks", "a little boat", "frogs"],
    "the orchard": ["apple trees", "pear trees", "bees", "birds"],
}


def _plot_trip_en(rng, h, f, g):
    place = rng.choice(list(SEE_EN))
    seen = rng.sample(SEE_EN[place], 3)
    food = rng.choice(FOODS)
    act = rng.choice(ACTIVITIES)
    p1 = [
        rng.choice(
            [
                f"{rng.choice(OPENINGS[1:])[0]}, {h.name} and {g.en} went to {place}.",
                f"On Sunday, {g.en} took {h.name} to {place}.",
            ]
        ),
        rng.choice([f"{h.name} was very excited.", f"{h.name} had never been there before.", ""]),
        rng.choice([f"At {place}, {h.he} saw {_list_en(seen)}.", f"There were {_list_en(seen)}."]),
        rng.choice([f"{h.name} liked the {seen[0]} best.", f'"Look at the {seen[1]}!" said {h.name}.', ""]),
    ]
    p2 = [
        rng.choice([f"At noon, they ate {food[1]}.", f"They had a picnic with {food[1]}."]),
        rng.choice([f"Then they {act[1]}.", ""]),
        rng.choice(["In the evening, they went home.", "When the sun went down, it was time to go home."]),
        rng.choice([f"{h.name} was tired but happy.", f"{h.name} was very tired."]),
        rng.choice([f"That night, {h.he} dreamed about the {seen[2]}.", f'"Can we go again?" asked {h.name}.']),
    ]
    return [p1, p2]


def _plot_gift_en(rng, h, f, g):
    color = rng.choice(COLORS)[0]
    place = rng.choice(PLACES)[0]
    gift = rng.choice(
        [
            f"drew a picture of {f.name} and {h.himself} playing in {place}",
            f"picked some {color} flowers and tied them with a ribbon",
            f"made {a(color)} card with a big heart on it",
            f"baked a little cake with {g.en}",
            f"made a necklace from {color} beads",
        ]
    )
    p1 = [
        rng.choice([f"Tomorrow was {f.name}'s birthday.", f"{h.name} knew that tomorrow was {f.name}'s birthday."]),
        rng.choice([f"{f.name} the {f.kind} was {h.name}'s best friend.", ""]),
        rng.choice(
            [
                f"{h.name} wanted to give {f.name} a present, but {h.he} had no money.",
                f"{h.name} thought and thought about the best present.",
            ]
        ),
        f"So {h.he} {gift}.",
    ]
    p2 = [
        rng.choice(
            [f"At the party, {f.name} opened the present.", f"The next day, {h.name} gave the present to {f.name}."]
        ),
        rng.choice(
            [
                f'"I love it!" said {f.name}. "This is the best present ever."',
                f'{f.name} smiled a big smile. "Thank you, {h.name}!"',
            ]
        ),
        rng.choice(["Everyone sang a birthday song and ate cake.", "They played games and ate birthday cake.", ""]),
        rng.choice(
            [
                f"{h.name} was happy that {h.his} present made {f.name} smile.",
                "A present made with love is the best present.",
            ]
        ),
    ]
    return [p1, p2 + _ending_en(rng, h, f, [])]


def _plot_night_en(rng, h, f, g):
    if rng.random() < 0.5:
        p1 = [
            rng.choice(["One night, there was a big storm.", "One evening, dark clouds filled the sky."]),
            rng.choice(["Boom! went the thunder.", "Flash! went the lightning. Then came a loud boom."]),
            rng.choice([f"{h.name} was scared and hid under {h.his} blanket.", f"{h.name} was very scared."]),
        ]
        p2 = [
            f"{cap(g.en)} came and sat on the bed.",
            rng.choice(
                [
                    '"Thunder is just the sound that lightning makes," ' + g.he + " said.",
                    '"Thunder cannot hurt you inside the house," ' + g.he + " said.",
                ]
            ),
            rng.choice(
                [
                    '"We see the flash first, because light travels faster than sound."',
                    '"Let\'s count between the flash and the boom."',
                ]
            ),
            rng.choice(["They counted together: one, two, three, four, five.", "Soon the storm moved far away."]),
        ]
    else:
        p1 = [
            rng.choice([f"{h.name} did not like the dark.", f"Every night, {h.name} was afraid of the dark."]),
            rng.choice(
                ["When the light went off, the room looked strange.", "The shadows on the wall looked like monsters."]
            ),
        ]
        p2 = [
            f"{cap(g.en)} opened the curtains.",
            '"Look," ' + g.he + ' said. "The moon is shining for you."',
            rng.choice(
                [
                    '"The moon does not make its own light. It shines because sunlight bounces off it."',
                    '"And look at all the stars. They are very, very far away."',
                ]
            ),
            rng.choice(
                [f"{h.name} looked at the moon and the stars and smiled.", f"{h.name} was not afraid any more."]
            ),
        ]
    p3 = [
        rng.choice([f"{h.name} closed {h.his} eyes.", f"{h.name} was not scared any more."]),
        rng.choice([f"Soon {h.he} was fast asleep.", f"{cap(h.he)} fell asleep and dreamed happy dreams."]),
    ]
    return [p1, p2, p3]


WEATHER_EN = [
    ("sunny", "so {he} put on {his} {color} hat", "wore a sun hat"),
    ("rainy", "so {he} took {his} {color} umbrella", ""),
    ("cold", "so {he} put on a warm {color} scarf", ""),
    ("windy", "so it was a perfect day to fly a kite", ""),
    ("snowy", "so {he} built a big snowman", ""),
]


def _plot_day_en(rng, h, f, g):
    w, then, _ = rng.choice(WEATHER_EN)
    color = rng.choice(COLORS)[0]
    food = rng.choice(FOODS)
    place, prep, _, _ = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)
    p1 = [
        rng.choice([f"{h.name} woke up early.", f"In the morning, {h.name} jumped out of bed.", "The sun came up."]),
        rng.choice([f"{cap(h.he)} ate {food[1]} for breakfast.", f"{cap(h.he)} had breakfast with {g.en}.", ""]),
        f"It was {w} outside, " + then.format(he=h.he, his=h.his, color=color) + ".",
        rng.choice([f"Then {h.he} went to {place}.", f"After that, {h.he} and {f.name} went to {place}."]),
        rng.choice([f"{cap(prep)} {place}, {h.he} {act[1]}.", f"There {h.he} {act[1]} with {f.name}."]),
    ]
    p2 = [
        rng.choice(
            [
                f"When {h.he} came home, {h.he} was hungry, so {g.en} made {h.him} some soup.",
                f"{h.name} was tired, so {h.he} took a nap.",
                f"In the evening, {h.name} told {g.en} about {h.his} day.",
            ]
        ),
        rng.choice(["It was a good day.", f"{h.name} felt {rng.choice(FEEL_GOOD)[0]}.", ""]),
    ]
    return [p1, p2]


_PLOTS_EN = {
    "lost": _plot_lost_en,
    "share": _plot_share_en,
    "friend": _plot_friend_en,
    "learn": _plot_learn_en,
    "rain": _plot_rain_en,
    "help": _plot_help_en,
    "trip": _plot_trip_en,
    "gift": _plot_gift_en,
    "night": _plot_night_en,
    "day": _plot_day_en,
}


def story_en(rng: random.Random, hero: Hero | None = None, plot: str | None = None, intro: bool = True) -> str:
    """One English story: paragraphs separated by newlines."""
    h = hero or Hero.random(rng, "en")
    f = Hero.random(rng, "en", exclude=(h.name,))
    g = grownup(rng, h)
    plot = plot or rng.choice(PLOTS)
    paras = _PLOTS_EN[plot](rng, h, f, g)
    if intro:
        paras[0] = _intro_en(rng, h) + paras[0]
    return "\n".join(_join(p) for p in paras if _join(p))


# ======================================================================== Chinese


def _intro_zh(rng: random.Random, h: Hero) -> list[str]:
    opening = rng.choice(INTROS)[1]
    desc = h.desc_zh(rng)
    out = [
        rng.choice(
            [
                f"{opening}，有{desc}。",
                f"{rng.choice(['在一个小村子里', '在森林旁边', '在一座小城里', '从前'])}，住着{desc}。",
                f"从前有{desc}。",
            ]
        )
    ]
    if h.animal:
        extra = [
            f"{h.ta}住{h.animal.home_zh}。",
            f"{h.ta}有{h.animal.look_zh}。",
            f"{h.ta}最喜欢吃{h.animal.food_zh}。",
            f"{h.ta}会{h.animal.can_zh}。",
        ]
    else:
        act = rng.choice(ACTIVITIES)
        extra = [
            f"{h.ta}最喜欢{act[2]}。",
            f"{h.ta}今年{rng.choice(['五', '六', '七', '八'])}岁。",
            f"{h.ta}有一个{rng.choice(COLORS)[1]}的书包。",
        ]
    out += rng.sample(extra, k=rng.choice([0, 1, 1, 2]))
    return out


def _ending_zh(rng, h, f, moral):
    ends = [f"那天晚上，{h.name}带着甜甜的微笑睡着了。", f"这真是{h.name}快乐的一天。"]
    if f:
        ends += [f"从那以后，{h.name}和{f.name}成了最好的朋友。", f"后来，{h.name}和{f.name}每天都一起玩。"]
    out = [rng.choice(ends)]
    if moral and rng.random() < 0.5:
        out.append(rng.choice(moral))
    return out


def _fdesc_zh(rng, f: Hero) -> str:
    if f.animal:
        return rng.choice([f"一{f.animal.zh_cls}{f.animal.zh}{f.name}", f"{f.animal.zh}{f.name}"])
    return rng.choice([f"{f.kind_zh}{f.name}", f"{f.name}"])


def _plot_lost_zh(rng, h, f, g):
    _obj, obj_zh, cls = rng.choice(OBJECTS)
    color = rng.choice(COLORS)[1]
    place = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)[2]
    s1, s2, s3 = rng.sample(SPOTS, 3)
    sad = rng.choice([FEEL_BAD[0], FEEL_BAD[1], FEEL_BAD[4]])[1]
    p1 = [
        rng.choice([f"{h.name}有一{cls}{color}的{obj_zh}。", f"{h.name}最喜欢的东西是一{cls}{color}的{obj_zh}。"]),
        rng.choice([f"{h.ta}走到哪里都带着它。", f"{h.ta}每天都和它一起玩。", ""]),
        rng.choice(
            [f"有一天，{h.ta}带着{obj_zh}去{place[2]}{act}。", f"一天早上，{h.name}拿着{obj_zh}去了{place[2]}。"]
        ),
        rng.choice([f"{h.ta}玩得很开心。", ""]),
    ]
    p2 = [
        rng.choice([f"可是到了回家的时候，{obj_zh}不见了！", f"过了一会儿，{h.name}发现{h.ta}的{obj_zh}不见了。"]),
        rng.choice([f"{h.name}非常{sad}。", f"{h.name}急得快哭了。"]),
        rng.choice([f"“我的{obj_zh}去哪儿了？”{h.ta}说。", f"“哎呀，我的{obj_zh}丢了！”{h.name}叫道。"]),
    ]
    p3 = [
        rng.choice([f"正在这时，{_fdesc_zh(rng, f)}走了过来。", f"这时候，{h.ta}的好朋友{f.name}来了。"]),
        rng.choice([f"“{h.name}，你怎么了？”{f.name}问。", f"“你为什么这么{sad}呀？”{f.name}问。"]),
        f"“我的{color}{obj_zh}丢了。”{h.name}说。",
        rng.choice([f"“别着急，我帮你一起找。”{f.name}说。", f"“别担心，我们一起找吧！”{f.name}说。"]),
        rng.choice(
            [
                f"它们先在{s1[1]}找，可是没有找到。" if h.animal and f.animal else f"他们先在{s1[1]}找，可是没有找到。",
                f"{s1[1]}没有。{s2[1]}也没有。",
            ]
        ),
    ]
    p4 = [
        rng.choice(
            [
                f"最后，{f.name}在{s3[1]}找到了{obj_zh}！",
                f"突然，{h.name}看见{s3[1]}有一个{color}的东西。那正是{h.ta}的{obj_zh}！",
            ]
        ),
        rng.choice([f"{h.name}高兴得跳了起来。", f"{h.name}开心极了。"]),
        rng.choice([f"“谢谢你，{f.name}！”{h.ta}说。", f"“你真是我的好朋友！”{h.name}说。"]),
    ]
    return [p1, p2, p3, p4 + _ending_zh(rng, h, f, ["好朋友会互相帮助。"])]


def _plot_share_zh(rng, h, f, g):
    food = rng.choice(FOODS)
    place = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)[2]
    p1 = [
        rng.choice(
            [f"{g.zh}给了{h.name}{food[3]}。", f"{h.name}带了{food[3]}当午饭。", f"{h.name}和{g.zh}一起做了{food[3]}。"]
        ),
        rng.choice([f"{h.ta}带着{food[2]}来到{place[3]}。", f"{h.ta}坐在{place[3]}，准备吃{food[2]}。"]),
    ]
    p2 = [
        rng.choice([f"这时，{h.ta}遇见了{_fdesc_zh(rng, f)}。", f"不一会儿，{_fdesc_zh(rng, f)}走了过来。"]),
        rng.choice([f"{f.name}看起来很饿。", f"{f.name}的肚子咕咕地叫。", f"{f.name}什么吃的也没有。"]),
        rng.choice([f"“我忘了带午饭。”{f.name}难过地说。", f"“我好饿呀。”{f.name}说。", ""]),
        rng.choice([f"{h.name}想了想。", f"{h.name}看了看手里的{food[2]}。", ""]),
        rng.choice([f"“我们一起吃{food[2]}吧！”{h.name}说。", f"“给你一些{food[2]}。”{h.name}笑着说。"]),
        rng.choice([f"“太好了，谢谢你！”{f.name}说。", f"{f.name}笑了：“谢谢你，{h.name}！”"]),
    ]
    p3 = [
        rng.choice(
            [
                f"它们坐在一起，分享了{food[2]}。" if h.animal and f.animal else f"他们坐在一起，分享了{food[2]}。",
                f"两个好朋友一起吃{food[2]}。",
            ]
        ),
        rng.choice([f"和朋友一起吃，{food[2]}变得更好吃了。", "这是最好吃的一顿午饭。", ""]),
        rng.choice([f"吃完饭，{h.name}和{f.name}一起{act}，一直玩到太阳下山。", ""]),
    ]
    return [p1, p2, p3 + _ending_zh(rng, h, f, ["分享让大家都快乐。", f"{h.name}明白了，分享是一件快乐的事。"])]


def _plot_friend_zh(rng, h, f, g):
    place = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)[2]
    spot = rng.choice(SPOTS)[1]
    p1 = [
        rng.choice(
            [f"{h.name}没有朋友，常常觉得很孤单。", f"{h.name}刚刚搬了新家，谁也不认识。", f"{h.name}很想有一个朋友。"]
        ),
        rng.choice([f"有一天，{h.name}来到{place[3]}。", f"{rng.choice(OPENINGS[1:])[1]}，{h.ta}去了{place[2]}。"]),
        rng.choice(
            [f"{h.ta}看见{_fdesc_zh(rng, f)}一个人坐在{spot}。", f"在{place[3]}，{h.ta}看见了{_fdesc_zh(rng, f)}。"]
        ),
    ]
    p2 = [
        rng.choice([f"{h.name}想打招呼，可是有点害羞。", f"{h.name}有一点害羞。", ""]),
        rng.choice(
            [
                f"最后，{h.ta}走过去说：“你好！我叫{h.name}。你叫什么名字？”",
                f"{h.name}鼓起勇气说：“你好，我是{h.name}！”",
            ]
        ),
        rng.choice([f"“我叫{f.name}。”{f.name}说。", f"“我是{f.name}。”{f.name}笑着说。"]),
        rng.choice([f"“你想和我一起{act}吗？”{h.name}问。", f"“我们一起{act}吧！”{h.name}说。"]),
        rng.choice(["“好呀！”", f"“太好了！”{f.name}说。"]),
    ]
    p3 = [
        rng.choice(
            [f"于是，它们一起{act}。" if h.animal and f.animal else f"于是，他们一起{act}。", "他们玩了一整个下午。"]
        ),
        rng.choice(["他们笑呀笑呀，开心极了。", "他们玩得可开心了。", ""]),
        rng.choice([f"太阳下山的时候，{h.name}一点也不孤单了。", f"{h.name}很高兴自己主动打了招呼。"]),
    ]
    return [p1, p2, p3 + _ending_zh(rng, h, f, ["只要主动说一声“你好”，就能交到新朋友。"])]


def _plot_learn_zh(rng, h, f, g):
    skill = rng.choice(SKILLS)[2]
    p1 = [
        rng.choice([f"{h.name}很想学会{skill}。", f"{h.name}希望自己也会{skill}。"]),
        rng.choice([f"{h.ta}看见别人{skill}，觉得很好玩。", ""]),
        rng.choice([f"有一天，{h.ta}第一次试了试。", f"于是，{h.ta}开始练习。"]),
        rng.choice(["可是太难了。", f"可是{h.ta}怎么也学不会。"]),
    ]
    p2 = [
        rng.choice([f"{h.name}很{rng.choice(['难过', '伤心', '不高兴'])}。", f"{h.name}有点想放弃。"]),
        rng.choice([f"“我学不会。”{h.ta}说。", f"“太难了！”{h.name}说。"]),
        rng.choice(
            [
                f"“别放弃，”{g.zh}说，“每个人都需要练习。”",
                f"{g.zh}说：“每天练一点点，你一定能学会。”",
                f"“我小时候也不会{skill}，”{g.zh}说，“要坚持呀。”",
            ]
        ),
    ]
    p3 = [
        rng.choice([f"于是，{h.name}第二天又练，第三天还练。", f"{h.name}每天都认真练习。"]),
        rng.choice([f"{h.ta}一天比一天进步。", ""]),
        rng.choice([f"一天早上，{h.name}终于学会了{skill}！", f"终于，{h.name}会{skill}了！"]),
        rng.choice([f"“我成功了！”{h.ta}大声说。", f"“快看我！”{h.ta}喊道。"]),
        rng.choice([f"{g.zh}笑着说：“我真为你骄傲！”", f"{g.zh}给{h.ta}鼓掌。"]),
        rng.choice([f"{h.name}觉得很自豪。", f"{h.name}开心极了。"]),
    ]
    return [p1, p2, p3 + _ending_zh(rng, h, None, ["只要坚持，就能学会新本领。", "多练习，就会越来越好。"])]


def _plot_rain_zh(rng, h, f, g):
    place = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)[2]
    indoor = rng.choice(INDOOR_EN)[2]
    p1 = [
        rng.choice(
            [
                f"一天早上，{h.name}醒来往窗外一看，外面下雨了。",
                f"下雨了。{h.name}趴在窗边往外看。",
                f"{rng.choice(['这天', '星期六', '一天'])}，雨下了一整个上午。",
            ]
        ),
        rng.choice(
            [f"“哎呀，”{h.name}说，“我本来想去{place[2]}{act}的。”", f"{h.name}想去{place[2]}，可是外面太湿了。"]
        ),
        rng.choice([f"{h.name}有点{rng.choice(FEEL_BAD)[1]}。", ""]),
    ]
    p2 = [
        rng.choice([f"“我们在家里也可以玩得很开心。”{g.zh}说。", f"{g.zh}想了一个好主意。"]),
        rng.choice([f"于是，他们一起{indoor}。", f"{h.name}和{g.zh}一起{indoor}。"]),
        rng.choice([f"很快，{h.name}就忘了下雨的事。", "大家玩得很开心。", ""]),
    ]
    p3 = [
        rng.choice(["下午，雨停了，太阳出来了。", "吃完午饭，雨停了。"]),
        rng.choice(["天上出现了一道美丽的彩虹。", "天边挂着一道大大的彩虹。", ""]),
        rng.choice([f"“阳光照在雨滴上，就会出现彩虹。”{g.zh}说。", ""]),
        rng.choice([f"{h.name}终于可以去{place[2]}了。", f"{h.name}跑到外面去踩水坑。"]),
    ]
    return [p1, p2, p3 + _ending_zh(rng, h, None, ["下雨天也可以是快乐的一天。"])]


def _plot_help_zh(rng, h, f, g):
    place = rng.choice(PLACES)
    need = rng.choice(HELP_EN)
    p1 = [
        rng.choice(
            [
                f"有一天，{h.name}在{place[3]}散步，忽然听见有人在哭。",
                f"{rng.choice(OPENINGS)[1]}，{h.name}去{place[2]}散步。突然，{h.ta}听到一个小小的声音。",
            ]
        )
    ]
    if need == "bird":
        p2 = [
            "原来是一只小鸟从鸟窝里掉了下来。",
            "“我回不去了。”小鸟哭着说。",
            f"“别怕，我来帮你。”{h.name}说。",
            rng.choice([f"{h.name}轻轻地捧起小鸟，把它放回了鸟窝。", f"{h.name}请{g.zh}帮忙，一起把小鸟送回了鸟窝。"]),
            "鸟妈妈高兴地唱起了歌。",
        ]
    elif need == "duck":
        p2 = [
            "原来是一只小鸭子找不到妈妈了。",
            "“我的妈妈在哪里？”小鸭子哭着问。",
            f"“别着急，我帮你找。”{h.name}说。",
            f"{h.name}带着小鸭子来到池塘边。",
            rng.choice(["鸭妈妈就在那里！“嘎嘎，嘎嘎！”", "鸭妈妈正在水边等着呢。"]),
            "小鸭子游到了妈妈身边。",
        ]
    elif need == "kite":
        p2 = [
            f"原来是{f.name}的风筝挂在了高高的树上。",
            f"“我的风筝下不来了！”{f.name}着急地说。",
            f"“别担心，我来帮你。”{h.name}说。",
            rng.choice(
                [f"{h.name}找来一根长长的树枝，轻轻地把风筝拨了下来。", f"{h.name}爬上一块大石头，把风筝拉了下来。"]
            ),
            f"{f.name}拿回了风筝，高兴极了。",
        ]
    elif need == "turtle":
        p2 = [
            "原来是一只老乌龟翻倒了，怎么也翻不过身来。",
            "“请帮帮我。”老乌龟说。",
            f"“当然可以。”{h.name}说。",
            f"{h.name}小心地帮老乌龟翻过身来。",
            "老乌龟笑了笑，慢慢地爬回家去了。",
        ]
    else:
        p2 = [
            "原来是一只小鸡迷路了，离农场很远。",
            "“我想回家。”小鸡哭着说。",
            f"“我认识路，跟我来吧。”{h.name}说。",
            f"{h.name}带着小鸡一直走回了农场。",
            "鸡妈妈看见小鸡，高兴极了。",
        ]
    p3 = [
        rng.choice(["“谢谢你！”", "“太谢谢你了！”", ""]),
        rng.choice([f"{h.name}心里暖暖的，非常快乐。", f"{h.name}一路笑着回了家。"]),
    ]
    return [p1, p2, p3 + _ending_zh(rng, h, None, ["帮助别人，自己也会快乐。"])]


SEE_ZH = {
    "动物园": ["狮子", "大象", "猴子", "熊猫", "企鹅", "袋鼠", "老虎"],
    "农场": ["奶牛", "小猪", "绵羊", "小马", "小鸡", "山羊", "鸭子"],
    "海边": ["贝壳", "螃蟹", "海鸥", "大浪花", "小船"],
    "森林": ["高高的大树", "松鼠", "小鸟", "蘑菇", "一只小鹿"],
    "公园": ["鸭子", "小狗", "鲜花", "喷泉", "风筝"],
    "河边": ["小鱼", "鸭子", "一条小船", "青蛙"],
    "果园": ["苹果树", "梨树", "蜜蜂", "小鸟"],
}


def _plot_trip_zh(rng, h, f, g):
    place = rng.choice(list(SEE_ZH))
    seen = rng.sample(SEE_ZH[place], 3)
    food = rng.choice(FOODS)
    act = rng.choice(ACTIVITIES)[2]
    p1 = [
        rng.choice(
            [f"{rng.choice(OPENINGS[1:])[1]}，{h.name}和{g.zh}去了{place}。", f"星期天，{g.zh}带{h.name}去{place}玩。"]
        ),
        rng.choice([f"{h.name}非常兴奋。", f"{h.name}以前从来没有去过那里。", ""]),
        rng.choice([f"在{place}，{h.ta}看到了{_list_zh(seen)}。", f"那里有{_list_zh(seen)}。"]),
        rng.choice([f"{h.name}最喜欢{seen[0]}。", f"“快看那边的{seen[1]}！”{h.name}说。", ""]),
    ]
    p2 = [
        rng.choice([f"中午，他们吃了{food[3]}。", f"他们带着{food[3]}野餐。"]),
        rng.choice([f"然后，他们一起{act}。", ""]),
        rng.choice(["傍晚，他们回家了。", "太阳下山了，该回家了。"]),
        rng.choice([f"{h.name}虽然很累，但是很开心。", f"{h.name}累坏了。"]),
        rng.choice([f"那天晚上，{h.ta}梦见了{seen[2]}。", f"“我们还能再来吗？”{h.name}问。"]),
    ]
    return [p1, p2]


def _plot_gift_zh(rng, h, f, g):
    color = rng.choice(COLORS)[1]
    place = rng.choice(PLACES)[3]
    gift = rng.choice(
        [
            f"画了一幅画，画的是{h.ta}和{f.name}在{place}玩",
            f"摘了一些{color}的花，用丝带扎了起来",
            f"做了一张{color}的卡片，上面画着一颗大大的爱心",
            f"和{g.zh}一起烤了一个小蛋糕",
            f"用{color}的珠子串了一条项链",
        ]
    )
    p1 = [
        rng.choice([f"明天是{f.name}的生日。", f"{h.name}知道，明天是{f.name}的生日。"]),
        rng.choice([f"{f.name}是{h.name}最好的朋友。", ""]),
        rng.choice([f"{h.name}想送{f.name}一份礼物，可是{h.ta}没有钱。", f"{h.name}想了又想，要送什么礼物呢？"]),
        f"于是，{h.ta}{gift}。",
    ]
    p2 = [
        rng.choice([f"生日会上，{f.name}打开了礼物。", f"第二天，{h.name}把礼物送给了{f.name}。"]),
        rng.choice(
            [f"“我太喜欢了！”{f.name}说，“这是我收到的最好的礼物。”", f"{f.name}笑得合不拢嘴：“谢谢你，{h.name}！”"]
        ),
        rng.choice(["大家一起唱生日歌，吃蛋糕。", "大家一起做游戏，吃生日蛋糕。", ""]),
        rng.choice([f"看到{f.name}这么开心，{h.name}也很开心。", "用心做的礼物是最好的礼物。"]),
    ]
    return [p1, p2 + _ending_zh(rng, h, f, [])]


def _plot_night_zh(rng, h, f, g):
    if rng.random() < 0.5:
        p1 = [
            rng.choice(["一天夜里，下起了大暴雨。", "一天晚上，天上布满了乌云。"]),
            rng.choice(["轰隆隆！打雷了。", "一道闪电划过天空，接着是一声巨响。"]),
            rng.choice([f"{h.name}害怕极了，躲进了被子里。", f"{h.name}非常害怕。"]),
        ]
        p2 = [
            f"{g.zh}走过来，坐在床边。",
            rng.choice([f"“雷声就是闪电发出的声音。”{g.zh}说。", f"“在家里，打雷伤不到你。”{g.zh}说。"]),
            rng.choice(
                ["“我们总是先看到闪电，后听到雷声，因为光比声音跑得快。”", "“我们来数一数，从闪电到雷声有几秒。”"]
            ),
            rng.choice(["他们一起数：一、二、三、四、五。", "不久，暴风雨走远了。"]),
        ]
    else:
        p1 = [
            rng.choice([f"{h.name}很怕黑。", f"每天晚上，{h.name}都害怕黑黑的房间。"]),
            rng.choice(["灯一关，房间看起来很奇怪。", "墙上的影子看起来像怪兽。"]),
        ]
        p2 = [
            f"{g.zh}拉开了窗帘。",
            f"“看，”{g.zh}说，“月亮在为你照亮呢。”",
            rng.choice(["“月亮自己不会发光，它的光是反射的太阳光。”", "“你看那些星星，它们离我们非常非常远。”"]),
            rng.choice([f"{h.name}看着月亮和星星，笑了。", f"{h.name}不再害怕了。"]),
        ]
    p3 = [
        rng.choice([f"{h.name}闭上了眼睛。", f"{h.name}一点也不害怕了。"]),
        rng.choice([f"很快，{h.ta}就睡着了。", f"{h.ta}睡着了，做了一个甜甜的梦。"]),
    ]
    return [p1, p2, p3]


WEATHER_ZH = [
    ("天气晴朗", "所以{ta}戴上了{color}的帽子"),
    ("下着雨", "所以{ta}带上了{color}的雨伞"),
    ("天气很冷", "所以{ta}围上了一条{color}的围巾"),
    ("风很大", "正好适合放风筝"),
    ("下着雪", "所以{ta}堆了一个大雪人"),
]


def _plot_day_zh(rng, h, f, g):
    w, then = rng.choice(WEATHER_ZH)
    color = rng.choice(COLORS)[1]
    food = rng.choice(FOODS)
    place = rng.choice(PLACES)
    act = rng.choice(ACTIVITIES)[2]
    p1 = [
        rng.choice([f"{h.name}早早地起了床。", f"早上，{h.name}从床上跳了起来。", "太阳升起来了。"]),
        rng.choice([f"早饭{h.ta}吃了{food[2]}。", f"{h.ta}和{g.zh}一起吃早饭。", ""]),
        f"外面{w}，" + then.format(ta=h.ta, color=color) + "。",
        rng.choice([f"然后，{h.ta}去了{place[2]}。", f"吃完早饭，{h.ta}和{f.name}一起去了{place[2]}。"]),
        rng.choice([f"在{place[3]}，{h.ta}{act}。", f"{h.ta}和{f.name}在那里{act}。"]),
    ]
    p2 = [
        rng.choice(
            [
                f"回到家，{h.ta}饿了，所以{g.zh}给{h.ta}做了一碗汤。",
                f"{h.name}累了，所以睡了一个午觉。",
                f"晚上，{h.name}把今天的事讲给{g.zh}听。",
            ]
        ),
        rng.choice(["这真是美好的一天。", f"{h.name}觉得很{rng.choice(FEEL_GOOD)[1]}。", ""]),
    ]
    return [p1, p2]


_PLOTS_ZH = {
    "lost": _plot_lost_zh,
    "share": _plot_share_zh,
    "friend": _plot_friend_zh,
    "learn": _plot_learn_zh,
    "rain": _plot_rain_zh,
    "help": _plot_help_zh,
    "trip": _plot_trip_zh,
    "gift": _plot_gift_zh,
    "night": _plot_night_zh,
    "day": _plot_day_zh,
}


def story_zh(rng: random.Random, hero: Hero | None = None, plot: str | None = None, intro: bool = True) -> str:
    """One Chinese story: paragraphs separated by newlines."""
    h = hero or Hero.random(rng, "zh")
    f = Hero.random(rng, "zh", exclude=(h.name,))
    g = grownup(rng, h)
    plot = plot or rng.choice(PLOTS)
    paras = _PLOTS_ZH[plot](rng, h, f, g)
    if intro:
        paras[0] = _intro_zh(rng, h) + paras[0]
    return "\n".join("".join(p) for p in paras if "".join(p))
