"""Words for the story and instruction generators, in English and Chinese side by side.

Everything here was written for this repository (MIT, like the rest of tiankong). Each entry is a
plain tuple or dict so the generators stay readable; lists are in a fixed order (the generators
draw from them with a seeded random.Random, so order is part of reproducibility).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Animal:
    key: str
    en: str            # singular noun
    en_pl: str         # plural noun
    zh: str            # the story name of the animal, e.g. 小猫
    zh_base: str       # for 猫妈妈, 猫宝宝
    zh_cls: str        # classifier: 只, 条, 头, 匹
    home_en: str       # "lived {home_en}"
    home_zh: str       # "住在{home_zh}"
    food_en: str       # "liked to eat {food_en}"
    food_zh: str
    can_en: str        # "could {can_en}"
    can_zh: str        # "会{can_zh}" / "能{can_zh}"
    look_en: str       # "had {look_en}"
    look_zh: str       # "有{look_zh}"
    sound_en: str = ""  # "says {sound_en}" (empty: no well-known sound)
    sound_zh: str = ""  # "{zh}{sound_zh}叫" e.g. 小猫喵喵叫
    group: str = "wild"  # pet, farm, wild, sea, bird, insect


ANIMALS: list[Animal] = [
    Animal("cat", "cat", "cats", "小猫", "猫", "只", "in a cozy house", "在一间温暖的小房子里", "fish", "鱼", "climb trees", "爬树",
           "soft fur", "软软的毛", "meow", "喵喵", "pet"),
    Animal("dog", "dog", "dogs", "小狗", "狗", "只", "in a little house by the gate", "在门口的小房子里", "bones", "骨头",
           "run very fast", "跑得很快", "a waggy tail", "一条爱摇的尾巴", "woof", "汪汪", "pet"),
    Animal("rabbit", "rabbit", "rabbits", "小兔子", "兔", "只", "in a hole under the hill", "在山坡下的洞里", "carrots", "胡萝卜",
           "hop very high", "跳得很高", "long ears", "长长的耳朵", "", "", "pet"),
    Animal("duck", "duck", "ducks", "小鸭子", "鸭", "只", "by the pond", "在池塘边", "water plants", "水草", "swim", "游泳",
           "orange feet", "橙色的脚掌", "quack", "嘎嘎", "bird"),
    Animal("bear", "bear", "bears", "小熊", "熊", "只", "in a big cave", "在一个大山洞里", "honey", "蜂蜜", "catch fish", "抓鱼",
           "thick brown fur", "厚厚的棕色的毛", "", "", "wild"),
    Animal("mouse", "mouse", "mice", "小老鼠", "鼠", "只", "in a tiny hole in the wall", "在墙角的小洞里", "cheese", "奶酪",
           "hide in small places", "躲进小小的地方", "a long thin tail", "一条细细长长的尾巴", "squeak", "吱吱", "wild"),
    Animal("bird", "bird", "birds", "小鸟", "鸟", "只", "in a nest in a tall tree", "在大树上的鸟窝里", "seeds", "种子", "fly", "飞",
           "bright feathers", "漂亮的羽毛", "tweet", "叽叽喳喳", "bird"),
    Animal("fox", "fox", "foxes", "小狐狸", "狐狸", "只", "in a den in the woods", "在树林里的洞里", "berries", "浆果",
           "run very quietly", "悄悄地跑", "a bushy tail", "一条毛茸茸的大尾巴", "", "", "wild"),
    Animal("frog", "frog", "frogs", "小青蛙", "青蛙", "只", "in a pond", "在池塘里", "bugs", "小虫子", "jump very far", "跳得很远",
           "green skin", "绿绿的皮肤", "ribbit", "呱呱", "wild"),
    Animal("pig", "pig", "pigs", "小猪", "猪", "只", "on a farm", "在农场上", "apples", "苹果", "roll in the mud", "在泥里打滚",
           "a curly tail", "一条卷卷的尾巴", "oink", "哼哼", "farm"),
    Animal("cow", "cow", "cows", "奶牛", "牛", "头", "on a farm", "在农场上", "grass", "青草", "walk slowly through the fields",
           "在田野里慢慢地走", "black and white spots", "黑白相间的花纹", "moo", "哞哞", "farm"),
    Animal("sheep", "sheep", "sheep", "小羊", "羊", "只", "on a green hill", "在绿绿的山坡上", "grass", "青草", "run up the hill",
           "跑上山坡", "soft white wool", "白白软软的羊毛", "baa", "咩咩", "farm"),
    Animal("horse", "horse", "horses", "小马", "马", "匹", "in a stable", "在马棚里", "hay", "干草", "gallop very fast", "跑得飞快",
           "a long mane", "长长的鬃毛", "", "", "farm"),
    Animal("chick", "chick", "chicks", "小鸡", "鸡", "只", "in a warm coop", "在温暖的鸡窝里", "corn", "玉米",
           "peck at the ground", "在地上啄来啄去", "fluffy yellow feathers", "毛茸茸的黄色羽毛", "cheep", "叽叽", "farm"),
    Animal("panda", "panda", "pandas", "熊猫", "熊猫", "只", "in a bamboo forest", "在竹林里", "bamboo", "竹子",
           "roll down hills", "从山坡上滚下来", "black and white fur", "黑白相间的毛", "", "", "wild"),
    Animal("elephant", "elephant", "elephants", "小象", "象", "头", "on the grassland", "在草原上", "leaves and fruit", "树叶和水果",
           "spray water with its trunk", "用鼻子喷水", "a long trunk", "长长的鼻子", "", "", "wild"),
    Animal("monkey", "monkey", "monkeys", "小猴子", "猴", "只", "in the jungle", "在丛林里", "bananas", "香蕉",
           "swing from tree to tree", "在树之间荡来荡去", "a long tail", "一条长长的尾巴", "", "", "wild"),
    Animal("lion", "lion", "lions", "小狮子", "狮子", "只", "on the grassland", "在草原上", "meat", "肉", "run fast", "跑得很快",
           "golden fur", "金黄色的毛", "roar", "嗷呜嗷呜地", "wild"),
    Animal("turtle", "turtle", "turtles", "小乌龟", "乌龟", "只", "by a quiet pond", "在安静的池塘边", "lettuce", "生菜",
           "hide in its shell", "把头缩进壳里", "a hard shell", "硬硬的壳", "", "", "wild"),
    Animal("owl", "owl", "owls", "猫头鹰", "猫头鹰", "只", "in a hole in an old tree", "在老树的树洞里", "mice", "老鼠",
           "see in the dark", "在黑暗中看清东西", "big round eyes", "大大的圆眼睛", "hoot", "咕咕", "bird"),
    Animal("bee", "bee", "bees", "小蜜蜂", "蜜蜂", "只", "in a hive", "在蜂巢里", "nectar", "花蜜", "make honey", "酿蜂蜜",
           "yellow and black stripes", "黄黑相间的条纹", "buzz", "嗡嗡", "insect"),
    Animal("squirrel", "squirrel", "squirrels", "小松鼠", "松鼠", "只", "in a tall tree", "在高高的树上", "nuts", "坚果",
           "climb very fast", "爬得很快", "a fluffy tail", "一条蓬松的大尾巴", "", "", "wild"),
    Animal("penguin", "penguin", "penguins", "小企鹅", "企鹅", "只", "on the ice far in the south", "在南边的冰上", "fish", "鱼",
           "swim very well", "游得很好", "a black and white coat", "黑白色的羽毛", "", "", "bird"),
    Animal("fish", "fish", "fish", "小鱼", "鱼", "条", "in the river", "在小河里", "tiny plants", "水草", "swim fast", "游得很快",
           "shiny scales", "亮晶晶的鳞片", "", "", "sea"),
    Animal("deer", "deer", "deer", "小鹿", "鹿", "只", "in the forest", "在森林里", "leaves", "树叶", "run and jump", "又跑又跳",
           "white spots on its back", "背上白色的斑点", "", "", "wild"),
    Animal("hedgehog", "hedgehog", "hedgehogs", "小刺猬", "刺猬", "只", "under a pile of leaves", "在落叶堆下面", "bugs", "小虫子",
           "roll into a ball", "缩成一个球", "sharp spines", "尖尖的刺", "", "", "wild"),
    Animal("tiger", "tiger", "tigers", "小老虎", "虎", "只", "in the forest", "在森林里", "meat", "肉", "swim across rivers",
           "游过小河", "orange and black stripes", "橙黑相间的条纹", "roar", "嗷呜嗷呜地", "wild"),
    Animal("butterfly", "butterfly", "butterflies", "蝴蝶", "蝴蝶", "只", "in a garden full of flowers", "在开满鲜花的花园里",
           "nectar", "花蜜", "fly from flower to flower", "在花丛中飞来飞去", "colourful wings", "五颜六色的翅膀", "", "", "insect"),
    Animal("goat", "goat", "goats", "小山羊", "山羊", "只", "on a rocky hill", "在石头山上", "grass and leaves", "青草和树叶",
           "climb steep rocks", "爬上陡峭的石头", "two small horns", "两只小小的角", "baa", "咩咩", "farm"),
    Animal("kangaroo", "kangaroo", "kangaroos", "小袋鼠", "袋鼠", "只", "in a wide dry land", "在宽广的草地上", "grass", "青草",
           "jump very far", "跳得很远", "strong back legs", "强壮的后腿", "", "", "wild"),
]
ANIMAL = {a.key: a for a in ANIMALS}
# The plain dictionary word (兔子 rather than the story name 小兔子 or the stem 兔)
_ZH_WORD = {"rabbit": "兔子", "duck": "鸭子", "mouse": "老鼠", "elephant": "大象", "monkey": "猴子", "tiger": "老虎",
            "chick": "小鸡", "cow": "牛", "kangaroo": "袋鼠", "squirrel": "松鼠", "hedgehog": "刺猬", "turtle": "乌龟",
            "penguin": "企鹅", "deer": "鹿", "bee": "蜜蜂", "goat": "山羊"}


def zh_word(animal: Animal) -> str:
    return _ZH_WORD.get(animal.key, animal.zh_base)

# (name, gender) - gender m/f decides he/she in English stories (animals too, as in picture books)
NAMES_EN: list[tuple[str, str]] = [
    ("Tom", "m"), ("Lily", "f"), ("Max", "m"), ("Mia", "f"), ("Ben", "m"), ("Emma", "f"), ("Sam", "m"), ("Lucy", "f"),
    ("Leo", "m"), ("Anna", "f"), ("Jack", "m"), ("Rosa", "f"), ("Finn", "m"), ("Zoe", "f"), ("Oliver", "m"),
    ("Ella", "f"), ("Noah", "m"), ("Ruby", "f"), ("Pip", "m"), ("Daisy", "f"), ("Milo", "m"), ("Nina", "f"),
    ("Hugo", "m"), ("Ivy", "f"), ("Oscar", "m"), ("Luna", "f"), ("Toby", "m"), ("Molly", "f"), ("Kai", "m"),
    ("Sara", "f"), ("Dan", "m"), ("Amy", "f"), ("Bruno", "m"), ("Hazel", "f"), ("Ollie", "m"), ("Poppy", "f"),
    ("Felix", "m"), ("Grace", "f"), ("Jasper", "m"), ("Maya", "f"), ("Sunny", "f"), ("Bobo", "m"), ("Coco", "f"),
    ("Lulu", "f"), ("Rex", "m"), ("Bella", "f"), ("Charlie", "m"), ("Tina", "f"), ("Ming", "m"), ("Mei", "f"),
]
# Chinese names: children's names and pet-style names (叠字) for animals; gender for 他/她 (children only).
NAMES_ZH_CHILD: list[tuple[str, str]] = [
    ("小明", "m"), ("小红", "f"), ("乐乐", "m"), ("朵朵", "f"), ("丁丁", "m"), ("贝贝", "f"), ("小刚", "m"), ("小兰", "f"),
    ("豆豆", "m"), ("甜甜", "f"), ("阳阳", "m"), ("小雨", "f"), ("小勇", "m"), ("妞妞", "f"), ("东东", "m"), ("欣欣", "f"),
    ("小军", "m"), ("小丽", "f"), ("天天", "m"), ("月月", "f"), ("小杰", "m"), ("婷婷", "f"), ("壮壮", "m"), ("静静", "f"),
]
NAMES_ZH_PET: list[str] = [
    "咪咪", "旺财", "豆豆", "花花", "球球", "毛毛", "点点", "乐乐", "贝贝", "嘟嘟", "皮皮", "胖胖", "丫丫", "团团", "圆圆",
    "跳跳", "笨笨", "聪聪", "果果", "甜甜", "欢欢", "小白", "小黑", "小黄", "阿福", "妙妙", "哈哈", "叮当", "糖糖", "布丁",
]

# Kinds of children in English ("a boy named Tom") and Chinese ("一个名叫小明的男孩")
CHILD_EN = {"m": ["boy", "little boy"], "f": ["girl", "little girl"]}
CHILD_ZH = {"m": ["男孩", "小男孩"], "f": ["女孩", "小女孩"]}

# (english adjective for a character, chinese adjective) - character traits
TRAITS: list[tuple[str, str]] = [
    ("little", "小小的"), ("kind", "善良的"), ("brave", "勇敢的"), ("curious", "好奇的"), ("shy", "害羞的"),
    ("happy", "快乐的"), ("clever", "聪明的"), ("sleepy", "爱睡觉的"), ("playful", "爱玩的"), ("gentle", "温柔的"),
    ("friendly", "友好的"), ("busy", "忙碌的"), ("funny", "有趣的"), ("quiet", "安静的"), ("cheerful", "开朗的"),
]

# (noun, preposition for being there, chinese place, chinese "at that place" form)
PLACES: list[tuple[str, str, str, str]] = [
    ("the park", "in", "公园", "公园里"), ("the beach", "at", "海边", "海边"), ("the garden", "in", "花园", "花园里"),
    ("the river", "by", "河边", "河边"), ("the forest", "in", "森林", "森林里"), ("the farm", "on", "农场", "农场上"),
    ("the market", "at", "集市", "集市上"), ("the meadow", "in", "草地", "草地上"), ("the hill", "on", "小山", "小山上"),
    ("school", "at", "学校", "学校里"), ("the zoo", "at", "动物园", "动物园里"), ("the village", "in", "村子", "村子里"),
    ("the lake", "by", "湖边", "湖边"), ("the playground", "in", "游乐场", "游乐场里"), ("the library", "in", "图书馆", "图书馆里"),
    ("the orchard", "in", "果园", "果园里"), ("the pond", "by", "池塘边", "池塘边"), ("the big field", "in", "大田野", "田野里"),
]

# (noun, chinese noun, chinese classifier)
OBJECTS: list[tuple[str, str, str]] = [
    ("ball", "球", "个"), ("kite", "风筝", "个"), ("hat", "帽子", "顶"), ("scarf", "围巾", "条"), ("book", "书", "本"),
    ("toy car", "玩具车", "辆"), ("drum", "鼓", "个"), ("balloon", "气球", "个"), ("teddy bear", "玩具熊", "只"),
    ("umbrella", "雨伞", "把"), ("cup", "杯子", "个"), ("toy boat", "小船", "只"), ("box", "盒子", "个"),
    ("key", "钥匙", "把"), ("blanket", "毯子", "条"), ("bell", "铃铛", "个"), ("shell", "贝壳", "个"), ("bike", "自行车", "辆"),
    ("basket", "篮子", "个"), ("map", "地图", "张"), ("ribbon", "丝带", "条"), ("stone", "石头", "块"), ("feather", "羽毛", "根"),
    ("bucket", "小桶", "个"), ("whistle", "哨子", "个"), ("crayon", "蜡笔", "支"), ("lantern", "灯笼", "个"), ("sock", "袜子", "只"),
]

# (english, chinese): colours that read well on any object
COLORS: list[tuple[str, str]] = [
    ("red", "红色"), ("blue", "蓝色"), ("yellow", "黄色"), ("green", "绿色"), ("orange", "橙色"), ("purple", "紫色"),
    ("pink", "粉色"), ("white", "白色"), ("black", "黑色"), ("brown", "棕色"), ("golden", "金色"), ("silver", "银色"),
]

# (english singular, english "a dish of" phrase, chinese noun, chinese "a dish of" phrase)
FOODS: list[tuple[str, str, str, str]] = [
    ("apple", "a basket of apples", "苹果", "一篮苹果"), ("banana", "a bunch of bananas", "香蕉", "一串香蕉"),
    ("cake", "a big cake", "蛋糕", "一个大蛋糕"), ("cookie", "a plate of cookies", "饼干", "一盘饼干"),
    ("bread", "a loaf of bread", "面包", "一个大面包"), ("noodle", "a bowl of noodles", "面条", "一碗面条"),
    ("dumpling", "a plate of dumplings", "饺子", "一盘饺子"), ("strawberry", "a box of strawberries", "草莓", "一盒草莓"),
    ("cherry", "a bowl of cherries", "樱桃", "一碗樱桃"), ("carrot", "a bag of carrots", "胡萝卜", "一袋胡萝卜"),
    ("pear", "a basket of pears", "梨", "一篮梨"), ("peach", "a basket of peaches", "桃子", "一篮桃子"),
    ("watermelon", "a big watermelon", "西瓜", "一个大西瓜"), ("grape", "a bunch of grapes", "葡萄", "一串葡萄"),
    ("corn", "a basket of corn", "玉米", "一篮玉米"), ("orange", "a bag of oranges", "橙子", "一袋橙子"),
    ("sandwich", "a box of sandwiches", "三明治", "一盒三明治"), ("pie", "a warm pie", "馅饼", "一个热乎乎的馅饼"),
    ("rice ball", "a box of rice balls", "饭团", "一盒饭团"), ("bun", "a basket of steamed buns", "包子", "一篮包子"),
]

# (english adjective, chinese) feelings
FEEL_GOOD: list[tuple[str, str]] = [("happy", "开心"), ("glad", "高兴"), ("proud", "自豪"), ("excited", "兴奋"),
                                    ("calm", "平静"), ("thankful", "感激")]
FEEL_BAD: list[tuple[str, str]] = [("sad", "难过"), ("worried", "担心"), ("lonely", "孤单"), ("scared", "害怕"),
                                   ("upset", "伤心"), ("grumpy", "不高兴")]

# (english, chinese) openings that set no time of day: a story's first sentence
INTROS: list[tuple[str, str]] = [("Once upon a time", "从前"), ("Long ago", "很久很久以前"),
                                 ("In a little village", "在一个小村子里"), ("Not long ago", "不久以前")]
# (english opening, chinese opening) for the day the story happens
OPENINGS: list[tuple[str, str]] = [
    ("One Sunday", "一个星期天"), ("One day", "有一天"), ("One sunny morning", "一个晴朗的早晨"),
    ("One warm afternoon", "一个暖洋洋的下午"), ("One spring morning", "一个春天的早晨"),
    ("On a cold winter day", "一个寒冷的冬日"), ("One summer evening", "一个夏天的傍晚"), ("Last Saturday", "上个星期六"),
    ("One autumn day", "一个秋天的日子"), ("Early one morning", "一天清早"), ("One quiet evening", "一个安静的傍晚"),
]

# (english base phrase, english past phrase, chinese)
ACTIVITIES: list[tuple[str, str, str]] = [
    ("play with a ball", "played with a ball", "玩球"), ("fly a kite", "flew a kite", "放风筝"),
    ("build a sandcastle", "built a sandcastle", "堆沙堡"), ("pick flowers", "picked flowers", "摘花"),
    ("read a book", "read a book", "看书"), ("sing songs", "sang songs", "唱歌"), ("draw pictures", "drew pictures", "画画"),
    ("dance", "danced", "跳舞"), ("play hide-and-seek", "played hide-and-seek", "玩捉迷藏"),
    ("jump in puddles", "jumped in puddles", "踩水坑"), ("look for shells", "looked for shells", "捡贝壳"),
    ("have a picnic", "had a picnic", "野餐"), ("watch the clouds", "watched the clouds", "看天上的云"),
    ("splash in the water", "splashed in the water", "玩水"), ("play tag", "played tag", "玩捉人游戏"),
("swing on the swings", "swung on the swings", "荡秋千"),
    ("count the birds", "counted the birds", "数小鸟"), ("make a daisy chain", "made a daisy chain", "编花环"),
]

# Things one can learn: (english base, english -ing, chinese)
SKILLS: list[tuple[str, str, str]] = [
    ("ride a bike", "riding a bike", "骑自行车"), ("swim", "swimming", "游泳"), ("fly a kite", "flying a kite", "放风筝"),
    ("climb a tree", "climbing a tree", "爬树"), ("read a book", "reading", "看书"), ("whistle", "whistling", "吹口哨"),
    ("catch a ball", "catching a ball", "接球"), ("jump rope", "jumping rope", "跳绳"), ("tie a bow", "tying a bow", "打蝴蝶结"),
    ("bake bread", "baking bread", "烤面包"), ("paint a picture", "painting", "画一幅画"), ("play the drum", "playing the drum", "打鼓"),
]

# (english, chinese) spots where a lost thing can hide
SPOTS: list[tuple[str, str]] = [
    ("under the bench", "长椅下面"), ("behind a big tree", "一棵大树后面"), ("in the tall grass", "高高的草丛里"),
    ("near the pond", "池塘旁边"), ("under a pile of leaves", "一堆树叶下面"), ("inside an old box", "一个旧盒子里"),
    ("behind a rock", "一块石头后面"), ("by the fence", "篱笆旁边"), ("next to a flower bed", "花坛旁边"),
    ("on top of the wall", "墙头上"), ("in the sand", "沙子里"), ("under a bush", "灌木丛下面"),
]

# Opposites for "What is the opposite of X?": (en a, en b, zh a, zh b)
OPPOSITES: list[tuple[str, str, str, str]] = [
    ("big", "small", "大", "小"), ("hot", "cold", "热", "冷"), ("up", "down", "上", "下"), ("day", "night", "白天", "黑夜"),
    ("happy", "sad", "开心", "难过"), ("fast", "slow", "快", "慢"), ("tall", "short", "高", "矮"), ("open", "closed", "开", "关"),
    ("light", "dark", "亮", "暗"), ("old", "new", "旧", "新"), ("full", "empty", "满", "空"), ("wet", "dry", "湿", "干"),
    ("long", "short", "长", "短"), ("heavy", "light", "重", "轻"), ("left", "right", "左", "右"), ("in", "out", "里", "外"),
    ("black", "white", "黑", "白"), ("loud", "quiet", "大声", "小声"), ("early", "late", "早", "晚"), ("front", "back", "前", "后"),
    ("many", "few", "多", "少"), ("near", "far", "近", "远"), ("hard", "soft", "硬", "软"), ("clean", "dirty", "干净", "脏"),
]

# Things with a usual colour: (english thing, english colour, chinese thing, chinese colour, plural?)
THING_COLORS: list[tuple[str, str, str, str, bool]] = [
    ("a banana", "yellow", "香蕉", "黄色", False), ("grass", "green", "小草", "绿色", False),
    ("snow", "white", "雪", "白色", False), ("a strawberry", "red", "草莓", "红色", False),
    ("a carrot", "orange", "胡萝卜", "橙色", False), ("the sky on a sunny day", "blue", "晴天的天空", "蓝色", False),
    ("milk", "white", "牛奶", "白色", False), ("a lemon", "yellow", "柠檬", "黄色", False),
    ("a crow", "black", "乌鸦", "黑色", False), ("coal", "black", "煤", "黑色", False),
    ("a tomato", "red", "西红柿", "红色", False), ("a frog", "green", "青蛙", "绿色", False),
    ("a ripe cherry", "red", "熟了的樱桃", "红色", False), ("a polar bear", "white", "北极熊", "白色", False),
    ("the sea", "blue", "大海", "蓝色", False), ("a pumpkin", "orange", "南瓜", "橙色", False),
    ("leaves in summer", "green", "夏天的树叶", "绿色", True), ("a chocolate bar", "brown", "巧克力", "棕色", False),
]

# Categories for "Name three X": (english name, chinese name, [(en, zh), ...]) - every member is correct
CATEGORIES: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("animals", "动物", [(a.en_pl, zh_word(a)) for a in ANIMALS if a.key not in ("chick",)]),
    ("farm animals", "农场里的动物", [("cows", "奶牛"), ("pigs", "猪"), ("sheep", "羊"), ("horses", "马"), ("chickens", "鸡"),
                                 ("ducks", "鸭子"), ("goats", "山羊")]),
    ("animals that can fly", "会飞的动物", [("birds", "鸟"), ("bees", "蜜蜂"), ("butterflies", "蝴蝶"), ("owls", "猫头鹰"),
                                      ("bats", "蝙蝠"), ("eagles", "老鹰"), ("ducks", "鸭子")]),
    ("animals that live in the sea", "生活在海里的动物", [("whales", "鲸鱼"), ("dolphins", "海豚"), ("sharks", "鲨鱼"),
                                                  ("octopuses", "章鱼"), ("crabs", "螃蟹"), ("starfish", "海星"),
                                                  ("seals", "海豹")]),
    ("insects", "昆虫", [("ants", "蚂蚁"), ("bees", "蜜蜂"), ("butterflies", "蝴蝶"), ("ladybirds", "瓢虫"),
                       ("grasshoppers", "蚱蜢"), ("dragonflies", "蜻蜓"), ("beetles", "甲虫")]),
    ("fruits", "水果", [("apples", "苹果"), ("bananas", "香蕉"), ("pears", "梨"), ("peaches", "桃子"), ("grapes", "葡萄"),
                      ("oranges", "橙子"), ("strawberries", "草莓"), ("watermelons", "西瓜"), ("cherries", "樱桃")]),
    ("vegetables", "蔬菜", [("carrots", "胡萝卜"), ("potatoes", "土豆"), ("tomatoes", "西红柿"), ("cabbages", "白菜"),
                          ("peas", "豌豆"), ("onions", "洋葱"), ("cucumbers", "黄瓜"), ("spinach", "菠菜")]),
    ("colours", "颜色", [(e, z) for e, z in COLORS if e not in ("golden", "silver")]),
    ("shapes", "形状", [("circles", "圆形"), ("squares", "正方形"), ("triangles", "三角形"), ("rectangles", "长方形"),
                      ("stars", "星形"), ("ovals", "椭圆形")]),
    ("planets", "行星", [("Mercury", "水星"), ("Venus", "金星"), ("Earth", "地球"), ("Mars", "火星"), ("Jupiter", "木星"),
                       ("Saturn", "土星"), ("Uranus", "天王星"), ("Neptune", "海王星")]),
    ("things you can see in the sky", "天上能看到的东西", [("the sun", "太阳"), ("the moon", "月亮"), ("stars", "星星"),
                                                   ("clouds", "云"), ("birds", "鸟"), ("rainbows", "彩虹")]),
    ("seasons", "季节", [("spring", "春天"), ("summer", "夏天"), ("autumn", "秋天"), ("winter", "冬天")]),
]

# English/Chinese word pairs for "How do you say X in Chinese?" (and the other way round)
def word_pairs() -> list[tuple[str, str]]:
    pairs = [(a.en, zh_word(a)) for a in ANIMALS]
    pairs += [(c, z) for c, z in [("red", "红色"), ("blue", "蓝色"), ("yellow", "黄色"), ("green", "绿色"), ("white", "白色"),
                                  ("black", "黑色"), ("pink", "粉色"), ("purple", "紫色"), ("orange", "橙色"), ("brown", "棕色")]]
    pairs += [(f[0], f[2]) for f in FOODS if f[0] not in ("orange", "corn", "pie", "rice ball", "bun")]
    pairs += [(o[0], o[1]) for o in OBJECTS if o[0] not in ("toy boat", "bucket", "toy car", "teddy bear")]
    pairs += [("sun", "太阳"), ("moon", "月亮"), ("star", "星星"), ("tree", "树"), ("flower", "花"), ("water", "水"),
              ("rain", "雨"), ("snow", "雪"), ("mountain", "山"), ("river", "河"), ("sea", "大海"), ("house", "房子"),
              ("school", "学校"), ("friend", "朋友"), ("mother", "妈妈"), ("father", "爸爸"), ("teacher", "老师"),
              ("one", "一"), ("two", "二"), ("three", "三"), ("four", "四"), ("five", "五"), ("six", "六"), ("seven", "七"),
              ("eight", "八"), ("nine", "九"), ("ten", "十"), ("hello", "你好"), ("thank you", "谢谢"), ("goodbye", "再见"),
              ("milk", "牛奶"), ("rice", "米饭"), ("egg", "鸡蛋"), ("big", "大"), ("small", "小"), ("happy", "开心"),
              ("book", "书"), ("dog", "狗"), ("cat", "猫")]
    seen, out = set(), []
    for e, z in pairs:
        if e not in seen:
            seen.add(e)
            out.append((e, z))
    return out


NUM_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
          "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
NUM_ZH = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十", "十一", "十二", "十三", "十四", "十五", "十六",
          "十七", "十八", "十九", "二十"]


def article(word: str) -> str:
    """'a' or 'an' for the English word that follows."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def a(word: str) -> str:
    return f"{article(word)} {word}"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]
