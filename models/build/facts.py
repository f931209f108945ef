"""Simple true facts for children, in English and Chinese, written for this repository (MIT).

FACTS maps a topic to (english topic, chinese topic, facts); each fact is (english, chinese) or
(english, chinese, english question, chinese question) when it answers a natural question.
Only well-established, child-level statements are here: the model repeats them, so they must be right.
"""

from __future__ import annotations

Fact = tuple  # (en, zh) or (en, zh, q_en, q_zh)

FACTS: dict[str, tuple[str, str, list[Fact]]] = {
    "moon": (
        "the moon",
        "月亮",
        [
            (
                "The moon goes around the Earth.",
                "月亮绕着地球转。",
                "What does the moon go around?",
                "月亮绕着什么转？",
            ),
            (
                "The moon does not make its own light. It shines because sunlight bounces off it.",
                "月亮自己不会发光，它的光是反射的太阳光。",
                "Why does the moon shine?",
                "月亮为什么会发光？",
            ),
            (
                "It takes the moon about a month to go around the Earth.",
                "月亮绕地球一圈大约要一个月。",
                "How long does the moon take to go around the Earth?",
                "月亮绕地球一圈要多久？",
            ),
            (
                "People first walked on the moon in 1969.",
                "人类在1969年第一次登上月球。",
                "When did people first walk on the moon?",
                "人类第一次登上月球是在哪一年？",
            ),
            ("The moon has many round holes called craters.", "月亮上有很多圆圆的坑，叫作环形山。"),
            ("There is no air to breathe on the moon.", "月亮上没有可以呼吸的空气。"),
        ],
    ),
    "sun": (
        "the sun",
        "太阳",
        [
            ("The sun is a star.", "太阳是一颗恒星。", "What is the sun?", "太阳是什么？"),
            (
                "The sun is much bigger than the Earth.",
                "太阳比地球大得多。",
                "Is the sun bigger than the Earth?",
                "太阳比地球大吗？",
            ),
            (
                "The Earth goes around the sun once a year.",
                "地球每年绕太阳转一圈。",
                "How long does the Earth take to go around the sun?",
                "地球绕太阳一圈要多久？",
            ),
            ("Light from the sun takes about eight minutes to reach the Earth.", "太阳光大约八分钟就能到达地球。"),
            (
                "You should never look straight at the sun, because it can hurt your eyes.",
                "不要直接看太阳，因为它会伤害眼睛。",
            ),
            ("Plants use sunlight to make their food.", "植物利用阳光来制造养分。"),
        ],
    ),
    "stars": (
        "stars",
        "星星",
        [
            (
                "Stars are giant balls of hot, glowing gas.",
                "恒星是巨大的、发光的热气体球。",
                "What are stars made of?",
                "星星是由什么组成的？",
            ),
            ("The stars we see at night are very, very far away.", "我们晚上看到的星星离我们非常非常远。"),
            (
                "The sun is the star closest to the Earth.",
                "太阳是离地球最近的恒星。",
                "Which star is closest to the Earth?",
                "离地球最近的恒星是哪一颗？",
            ),
            (
                "Stars seem to twinkle because their light passes through moving air.",
                "星星看起来一闪一闪的，是因为它们的光穿过了流动的空气。",
                "Why do stars twinkle?",
                "星星为什么会一闪一闪的？",
            ),
        ],
    ),
    "earth": (
        "the Earth",
        "地球",
        [
            ("The Earth is the third planet from the sun.", "地球是离太阳第三近的行星。"),
            ("Most of the Earth is covered by water.", "地球表面的大部分被水覆盖。"),
            (
                "The Earth spins around once every day. That is why we have day and night.",
                "地球每天自转一圈，所以有白天和黑夜。",
                "Why do we have day and night?",
                "为什么会有白天和黑夜？",
            ),
            (
                "The Earth is round, like a ball.",
                "地球是圆的，像一个球。",
                "What shape is the Earth?",
                "地球是什么形状的？",
            ),
        ],
    ),
    "planets": (
        "the planets",
        "行星",
        [
            (
                "There are eight planets in our solar system.",
                "太阳系有八颗行星。",
                "How many planets are in our solar system?",
                "太阳系有几颗行星？",
            ),
            (
                "Jupiter is the biggest planet in our solar system.",
                "木星是太阳系里最大的行星。",
                "Which planet is the biggest?",
                "哪颗行星最大？",
            ),
            ("Mars is called the red planet because its ground is red.", "火星被叫作红色星球，因为它的地面是红色的。"),
            (
                "Saturn has beautiful rings made of ice and rock.",
                "土星有由冰和岩石组成的美丽光环。",
                "Which planet has big rings?",
                "哪颗行星有大大的光环？",
            ),
            (
                "Mercury is the planet closest to the sun.",
                "水星是离太阳最近的行星。",
                "Which planet is closest to the sun?",
                "哪颗行星离太阳最近？",
            ),
        ],
    ),
    "rain": (
        "rain",
        "雨",
        [
            ("Rain falls from clouds.", "雨是从云里落下来的。", "Where does rain come from?", "雨是从哪里来的？"),
            (
                "Clouds are made of tiny drops of water.",
                "云是由很多小水滴组成的。",
                "What are clouds made of?",
                "云是由什么组成的？",
            ),
            (
                "A rainbow can appear when sunlight shines through raindrops.",
                "阳光照在雨滴上，就可能出现彩虹。",
                "How is a rainbow made?",
                "彩虹是怎么形成的？",
            ),
            ("Plants need rain to grow.", "植物需要雨水才能生长。"),
        ],
    ),
    "snow": (
        "snow",
        "雪",
        [
            (
                "Snow is made of tiny ice crystals.",
                "雪是由小小的冰晶组成的。",
                "What is snow made of?",
                "雪是由什么组成的？",
            ),
            ("Snow falls when the air is very cold.", "天气很冷的时候才会下雪。"),
            (
                "Most snowflakes have six sides.",
                "大多数雪花有六个角。",
                "How many sides does a snowflake have?",
                "雪花有几个角？",
            ),
            ("Snow melts into water when it gets warm.", "天气变暖的时候，雪会化成水。"),
        ],
    ),
    "water": (
        "water",
        "水",
        [
            (
                "Water freezes into ice at zero degrees Celsius.",
                "水在零摄氏度会结成冰。",
                "At what temperature does water freeze?",
                "水在多少度结冰？",
            ),
            (
                "Water boils at one hundred degrees Celsius.",
                "水在一百摄氏度会沸腾。",
                "At what temperature does water boil?",
                "水在多少度沸腾？",
            ),
            ("All living things need water.", "所有的生物都需要水。"),
            (
                "Sea water is salty, so people cannot drink it.",
                "海水是咸的，所以人不能喝。",
                "Can we drink sea water?",
                "海水能喝吗？",
            ),
        ],
    ),
    "trees": (
        "trees",
        "树",
        [
            ("Trees give us oxygen, the air we breathe.", "树会释放我们呼吸需要的氧气。"),
            (
                "You can tell how old a tree is by counting the rings in its trunk.",
                "数一数树干里的年轮，就能知道树有多少岁。",
                "How can you tell how old a tree is?",
                "怎么知道一棵树有多少岁？",
            ),
            (
                "Leaves are green because of a green matter called chlorophyll.",
                "树叶是绿色的，因为里面有叫叶绿素的绿色物质。",
                "Why are leaves green?",
                "树叶为什么是绿色的？",
            ),
            ("Many trees lose their leaves in autumn.", "很多树在秋天会落叶。"),
            ("Apples, pears and peaches grow on trees.", "苹果、梨和桃子都长在树上。"),
        ],
    ),
    "plants": (
        "plants",
        "植物",
        [
            (
                "Plants need sunlight, water and air to grow.",
                "植物生长需要阳光、水和空气。",
                "What do plants need to grow?",
                "植物生长需要什么？",
            ),
            ("A seed can grow into a new plant.", "一颗种子可以长成一棵新的植物。"),
            (
                "Bees help flowers make seeds by carrying pollen from flower to flower.",
                "蜜蜂把花粉从一朵花带到另一朵花，帮助花结出种子。",
            ),
            (
                "Roots hold a plant in the ground and drink water from the soil.",
                "根把植物固定在土里，还从土里吸水。",
                "What do roots do?",
                "根有什么用？",
            ),
        ],
    ),
    "cats": (
        "cats",
        "猫",
        [
            ("Cats sleep for many hours every day.", "猫每天要睡很长时间。"),
            (
                "Cats use their whiskers to feel the space around them.",
                "猫用胡须来感觉周围的空间。",
                "What do cats use their whiskers for?",
                "猫的胡须有什么用？",
            ),
            ("Cats can see well when the light is dim.", "猫在光线昏暗的时候也能看得很清楚。"),
            ("A baby cat is called a kitten.", "猫的宝宝叫小猫。", "What is a baby cat called?", "猫的宝宝叫什么？"),
            ("Cats purr when they are happy and relaxed.", "猫开心放松的时候会发出呼噜呼噜的声音。"),
        ],
    ),
    "dogs": (
        "dogs",
        "狗",
        [
            ("Dogs have a very good sense of smell.", "狗的嗅觉非常灵敏。"),
            (
                "Dogs often wag their tails when they are happy.",
                "狗开心的时候常常会摇尾巴。",
                "Why do dogs wag their tails?",
                "狗为什么摇尾巴？",
            ),
            ("A baby dog is called a puppy.", "狗的宝宝叫小狗。", "What is a baby dog called?", "狗的宝宝叫什么？"),
            ("Puppies are born with their eyes closed.", "小狗刚出生的时候眼睛是闭着的。"),
        ],
    ),
    "birds": (
        "birds",
        "鸟",
        [
            ("All birds have feathers.", "所有的鸟都有羽毛。"),
            ("All birds lay eggs.", "所有的鸟都会下蛋。", "Do birds lay eggs?", "鸟会下蛋吗？"),
            (
                "Not all birds can fly. Penguins and ostriches cannot fly.",
                "不是所有的鸟都会飞，企鹅和鸵鸟就不会飞。",
                "Can all birds fly?",
                "所有的鸟都会飞吗？",
            ),
            ("Birds build nests to keep their eggs safe.", "鸟会筑巢来保护它们的蛋。"),
        ],
    ),
    "fish": (
        "fish",
        "鱼",
        [
            ("Fish breathe under water with gills.", "鱼用鳃在水里呼吸。", "How do fish breathe?", "鱼是怎么呼吸的？"),
            ("Most fish are covered in scales.", "大多数鱼身上都长着鳞片。"),
            ("Fish use their fins to swim.", "鱼用鳍来游泳。"),
        ],
    ),
    "elephants": (
        "elephants",
        "大象",
        [
            (
                "Elephants are the biggest animals that live on land.",
                "大象是陆地上最大的动物。",
                "What is the biggest land animal?",
                "陆地上最大的动物是什么？",
            ),
            (
                "An elephant uses its trunk to drink, to smell and to pick things up.",
                "大象用鼻子喝水、闻气味和拿东西。",
                "What does an elephant use its trunk for?",
                "大象的鼻子有什么用？",
            ),
            ("A baby elephant is called a calf.", "大象的宝宝叫小象。"),
            ("Elephants eat plants, such as grass, leaves and fruit.", "大象吃植物，比如草、树叶和水果。"),
        ],
    ),
    "bees": (
        "bees",
        "蜜蜂",
        [
            (
                "Bees make honey from the nectar of flowers.",
                "蜜蜂用花蜜酿造蜂蜜。",
                "What do bees make?",
                "蜜蜂会酿什么？",
            ),
            ("Bees live together in a hive.", "蜜蜂一起住在蜂巢里。", "Where do bees live?", "蜜蜂住在哪里？"),
            ("Bees dance to tell each other where the flowers are.", "蜜蜂用跳舞告诉同伴花在哪里。"),
            ("A bee has six legs and four wings.", "蜜蜂有六条腿和四只翅膀。"),
        ],
    ),
    "butterflies": (
        "butterflies",
        "蝴蝶",
        [
            (
                "A butterfly starts its life as a caterpillar.",
                "蝴蝶小时候是毛毛虫。",
                "What is a baby butterfly?",
                "蝴蝶小时候是什么？",
            ),
            ("Butterflies taste with their feet.", "蝴蝶用脚来尝味道。"),
            ("A butterfly has four wings.", "蝴蝶有四只翅膀。"),
            ("Butterflies drink nectar from flowers.", "蝴蝶吸食花里的花蜜。"),
        ],
    ),
    "frogs": (
        "frogs",
        "青蛙",
        [
            (
                "A frog starts its life as a tadpole in the water.",
                "青蛙小时候是生活在水里的小蝌蚪。",
                "What is a baby frog called?",
                "青蛙小时候叫什么？",
            ),
            ("Frogs can breathe through their skin.", "青蛙可以用皮肤呼吸。"),
            ("Many frogs catch insects with their long, sticky tongues.", "很多青蛙用又长又黏的舌头捉虫子。"),
        ],
    ),
    "penguins": (
        "penguins",
        "企鹅",
        [
            ("Penguins are birds, but they cannot fly.", "企鹅是鸟，但是不会飞。", "Can penguins fly?", "企鹅会飞吗？"),
            ("Penguins are very good swimmers.", "企鹅很会游泳。"),
            ("Most penguins live in the southern half of the world.", "大多数企鹅生活在地球的南半部。"),
            ("Penguins eat fish.", "企鹅吃鱼。"),
        ],
    ),
    "whales": (
        "whales",
        "鲸鱼",
        [
            ("Whales are mammals, not fish.", "鲸鱼是哺乳动物，不是鱼。", "Is a whale a fish?", "鲸鱼是鱼吗？"),
            (
                "The blue whale is the biggest animal that has ever lived.",
                "蓝鲸是有史以来最大的动物。",
                "What is the biggest animal in the world?",
                "世界上最大的动物是什么？",
            ),
            ("Whales breathe air through a blowhole on top of their heads.", "鲸鱼用头顶上的喷气孔呼吸空气。"),
        ],
    ),
    "owls": (
        "owls",
        "猫头鹰",
        [
            ("Most owls hunt at night.", "大多数猫头鹰在夜里捕猎。"),
            ("Owls can turn their heads very far around.", "猫头鹰的头可以转很大的角度。"),
            ("Owls fly almost without a sound.", "猫头鹰飞的时候几乎没有声音。"),
        ],
    ),
    "cows": (
        "cows",
        "奶牛",
        [
            ("Cows eat grass.", "奶牛吃草。", "What do cows eat?", "奶牛吃什么？"),
            ("We get milk from cows.", "我们喝的牛奶来自奶牛。", "Where does milk come from?", "牛奶是从哪里来的？"),
            ("A cow's stomach has four parts.", "奶牛的胃有四个部分。"),
        ],
    ),
    "rabbits": (
        "rabbits",
        "兔子",
        [
            ("A rabbit's front teeth never stop growing.", "兔子的门牙会一直长。"),
            (
                "Rabbits eat grass, hay and leafy plants.",
                "兔子吃草、干草和叶子菜。",
                "What do rabbits eat?",
                "兔子吃什么？",
            ),
            ("Rabbits have long ears that help them hear well.", "兔子长长的耳朵让它们听得很清楚。"),
        ],
    ),
    "spiders": (
        "spiders",
        "蜘蛛",
        [
            ("Spiders have eight legs.", "蜘蛛有八条腿。", "How many legs does a spider have?", "蜘蛛有几条腿？"),
            ("Spiders spin webs out of silk.", "蜘蛛用丝织网。"),
            (
                "Spiders are not insects, because insects have six legs.",
                "蜘蛛不是昆虫，因为昆虫有六条腿。",
                "Is a spider an insect?",
                "蜘蛛是昆虫吗？",
            ),
        ],
    ),
    "ants": (
        "ants",
        "蚂蚁",
        [
            ("Ants live together in big groups called colonies.", "蚂蚁成群地生活在一起。"),
            ("An ant can carry things much heavier than itself.", "蚂蚁能搬动比自己重得多的东西。"),
            (
                "Ants have six legs, like all insects.",
                "蚂蚁和所有昆虫一样，有六条腿。",
                "How many legs does an ant have?",
                "蚂蚁有几条腿？",
            ),
        ],
    ),
    "pandas": (
        "giant pandas",
        "大熊猫",
        [
            ("Giant pandas eat mostly bamboo.", "大熊猫主要吃竹子。", "What do pandas eat?", "大熊猫吃什么？"),
            (
                "Giant pandas live in the mountains of China.",
                "大熊猫生活在中国的山里。",
                "Where do giant pandas live?",
                "大熊猫生活在哪里？",
            ),
            ("Giant pandas have black and white fur.", "大熊猫有黑白相间的毛。"),
            (
                "A new-born panda is very small, about as heavy as an apple.",
                "刚出生的熊猫宝宝很小，大约和一个苹果一样重。",
            ),
        ],
    ),
    "dinosaurs": (
        "dinosaurs",
        "恐龙",
        [
            (
                "Dinosaurs lived millions of years ago.",
                "恐龙生活在几千万年以前。",
                "When did dinosaurs live?",
                "恐龙生活在什么时候？",
            ),
            (
                "We learn about dinosaurs from fossils, such as old bones in rocks.",
                "我们通过化石了解恐龙，比如石头里的古老骨头。",
            ),
            ("Birds are close relatives of dinosaurs.", "鸟类是恐龙的近亲。"),
        ],
    ),
    "body": (
        "the human body",
        "人的身体",
        [
            (
                "The heart pumps blood all around the body.",
                "心脏把血液送到全身。",
                "What does the heart do?",
                "心脏有什么作用？",
            ),
            (
                "A grown-up has 206 bones.",
                "成年人有206块骨头。",
                "How many bones does a grown-up have?",
                "成年人有多少块骨头？",
            ),
            (
                "We have five senses: sight, hearing, smell, taste and touch.",
                "我们有五种感觉：视觉、听觉、嗅觉、味觉和触觉。",
                "How many senses do we have?",
                "我们有几种感觉？",
            ),
            (
                "Children have twenty baby teeth.",
                "小朋友有二十颗乳牙。",
                "How many baby teeth do children have?",
                "小朋友有几颗乳牙？",
            ),
            ("We breathe with our lungs.", "我们用肺呼吸。"),
        ],
    ),
    "food": (
        "food",
        "食物",
        [
            ("Fruit and vegetables help keep our bodies healthy.", "水果和蔬菜让我们的身体保持健康。"),
            ("Milk has calcium, which helps build strong bones.", "牛奶里有钙，可以让骨头更结实。"),
            (
                "Rice grows in wet fields called paddies.",
                "水稻长在有水的稻田里。",
                "Where does rice grow?",
                "水稻长在哪里？",
            ),
            ("Carrots are roots that grow under the ground.", "胡萝卜是长在地下的根。"),
            (
                "Bread is made from flour, and flour is made from wheat.",
                "面包是用面粉做的，面粉是用小麦磨成的。",
                "What is bread made from?",
                "面包是用什么做的？",
            ),
        ],
    ),
    "colours": (
        "colours",
        "颜色",
        [
            (
                "Blue and yellow mixed together make green.",
                "蓝色和黄色混在一起会变成绿色。",
                "What do blue and yellow make?",
                "蓝色和黄色混在一起是什么颜色？",
            ),
            (
                "Red and yellow mixed together make orange.",
                "红色和黄色混在一起会变成橙色。",
                "What do red and yellow make?",
                "红色和黄色混在一起是什么颜色？",
            ),
            (
                "Red and blue mixed together make purple.",
                "红色和蓝色混在一起会变成紫色。",
                "What do red and blue make?",
                "红色和蓝色混在一起是什么颜色？",
            ),
            (
                "A rainbow has seven colours: red, orange, yellow, green, blue, indigo and violet.",
                "彩虹有七种颜色：红、橙、黄、绿、蓝、靛、紫。",
                "How many colours does a rainbow have?",
                "彩虹有几种颜色？",
            ),
        ],
    ),
    "seasons": (
        "the seasons",
        "季节",
        [
            (
                "There are four seasons: spring, summer, autumn and winter.",
                "一年有四个季节：春天、夏天、秋天和冬天。",
                "How many seasons are there?",
                "一年有几个季节？",
            ),
            ("Many flowers bloom in spring.", "春天很多花都开了。"),
            (
                "Summer is usually the hottest season.",
                "夏天通常是最热的季节。",
                "Which season is the hottest?",
                "哪个季节最热？",
            ),
            ("In autumn many leaves turn yellow, orange and red.", "秋天很多树叶会变成黄色、橙色和红色。"),
            (
                "Winter is usually the coldest season.",
                "冬天通常是最冷的季节。",
                "Which season is the coldest?",
                "哪个季节最冷？",
            ),
        ],
    ),
    "time": (
        "time",
        "时间",
        [
            ("There are seven days in a week.", "一个星期有七天。", "How many days are in a week?", "一个星期有几天？"),
            ("A year has twelve months.", "一年有十二个月。", "How many months are in a year?", "一年有几个月？"),
            (
                "A day has twenty-four hours.",
                "一天有二十四个小时。",
                "How many hours are in a day?",
                "一天有多少个小时？",
            ),
            (
                "An hour has sixty minutes.",
                "一个小时有六十分钟。",
                "How many minutes are in an hour?",
                "一个小时有多少分钟？",
            ),
        ],
    ),
    "shapes": (
        "shapes",
        "形状",
        [
            (
                "A triangle has three sides.",
                "三角形有三条边。",
                "How many sides does a triangle have?",
                "三角形有几条边？",
            ),
            (
                "A square has four equal sides.",
                "正方形有四条一样长的边。",
                "How many sides does a square have?",
                "正方形有几条边？",
            ),
            ("A circle has no corners.", "圆形没有角。", "How many corners does a circle have?", "圆形有几个角？"),
        ],
    ),
    "oceans": (
        "the oceans",
        "海洋",
        [
            (
                "The Pacific Ocean is the biggest ocean on Earth.",
                "太平洋是地球上最大的海洋。",
                "What is the biggest ocean?",
                "最大的海洋是哪一个？",
            ),
            ("The sea is salty.", "海水是咸的。"),
            (
                "Many animals live in the sea, such as fish, crabs and whales.",
                "很多动物生活在海里，比如鱼、螃蟹和鲸鱼。",
            ),
        ],
    ),
    "mountains": (
        "mountains",
        "山",
        [
            (
                "Mount Everest is the highest mountain in the world.",
                "珠穆朗玛峰是世界上最高的山。",
                "What is the highest mountain in the world?",
                "世界上最高的山是哪座？",
            ),
            ("It is usually colder at the top of a mountain than at the bottom.", "山顶通常比山脚更冷。"),
        ],
    ),
    "weather": (
        "the weather",
        "天气",
        [
            ("Wind is moving air.", "风就是流动的空气。", "What is wind?", "风是什么？"),
            (
                "We see lightning before we hear thunder, because light travels faster than sound.",
                "我们先看到闪电，后听到雷声，因为光比声音跑得快。",
                "Why do we see lightning before we hear thunder?",
                "为什么先看到闪电后听到雷声？",
            ),
            (
                "Thunder is the sound that lightning makes.",
                "雷声是闪电发出的声音。",
                "What is thunder?",
                "雷声是什么？",
            ),
        ],
    ),
    "china": (
        "China",
        "中国",
        [
            (
                "Beijing is the capital of China.",
                "北京是中国的首都。",
                "What is the capital of China?",
                "中国的首都是哪里？",
            ),
            (
                "The Yangtze is the longest river in China.",
                "长江是中国最长的河。",
                "What is the longest river in China?",
                "中国最长的河是哪条？",
            ),
            ("The Great Wall of China is very, very long.", "中国的长城非常非常长。"),
            (
                "People in China celebrate the Spring Festival, the Chinese New Year.",
                "中国人过春节，也就是中国的新年。",
            ),
        ],
    ),
    "magnets": (
        "magnets",
        "磁铁",
        [
            (
                "Magnets pull things made of iron.",
                "磁铁能吸住铁做的东西。",
                "What do magnets pull?",
                "磁铁能吸住什么？",
            ),
            ("Every magnet has a north pole and a south pole.", "每块磁铁都有一个北极和一个南极。"),
        ],
    ),
}
