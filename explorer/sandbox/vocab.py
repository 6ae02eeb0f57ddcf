"""The sandbox world's words: families, their nouns and adjectives, colours, and which families
look alike. Names are built as "<colour> <noun>" and "<adjective> <noun>", so that two names
that share words (a family's nouns, a colour) also share what their images look like.
"""
from __future__ import annotations

# colour word -> RGB; the colour of a concept's main object
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 35), "orange": (240, 130, 20), "yellow": (240, 215, 40),
    "green": (50, 160, 60), "blue": (40, 80, 210), "purple": (130, 50, 170),
    "pink": (240, 130, 180), "white": (240, 240, 235), "black": (25, 25, 30),
    "brown": (120, 75, 35), "gray": (128, 128, 128), "golden": (210, 165, 50),
}

# adjective effects the drawing understands
EFFECTS = ("small", "large", "dark", "bright", "striped", "spotted", "pale", "crowded")

# family -> (nouns, {adjective: effect}); the first 10 nouns of a target family are its classes
FAMILIES: dict[str, tuple[list[str], dict[str, str]]] = {
    "flowers": (["rose", "tulip", "daisy", "sunflower", "orchid", "lily", "poppy", "iris",
                 "lotus", "dahlia", "violet", "marigold"],
                {"wild": "small", "garden": "large", "dried": "pale", "blooming": "bright"}),
    "trees": (["oak tree", "pine tree", "palm tree", "birch tree", "willow tree", "maple tree",
               "cedar tree", "baobab tree", "cypress tree", "olive tree", "spruce tree", "elm tree"],
              {"old": "large", "young": "small", "autumn": "spotted", "winter": "pale"}),
    "insects": (["butterfly", "bee", "beetle", "ladybug", "dragonfly", "ant", "moth", "wasp",
                 "grasshopper", "firefly", "cricket", "cicada"],
                {"tiny": "small", "giant": "large", "tropical": "bright", "striped": "striped"}),
    "birds": (["parrot", "sparrow", "eagle", "owl", "robin", "pelican", "flamingo", "penguin",
               "hummingbird", "crow", "swan", "woodpecker"],
              {"flying": "small", "perched": "large", "tropical": "bright", "wild": "dark"}),
    "fish": (["goldfish", "salmon", "tuna", "clownfish", "shark", "trout", "carp", "angelfish",
              "swordfish", "catfish", "pufferfish", "barracuda"],
             {"tropical": "bright", "striped": "striped", "deep sea": "dark", "spotted": "spotted"}),
    "dogs": (["labrador dog", "poodle dog", "beagle dog", "bulldog", "husky dog", "terrier dog",
              "greyhound dog", "dachshund dog", "collie dog", "boxer dog", "pug dog", "corgi dog"],
             {"puppy": "small", "big": "large", "spotted": "spotted", "sleeping": "dark"}),
    "cats": (["tabby cat", "siamese cat", "persian cat", "sphynx cat", "bengal cat",
              "ragdoll cat", "maine coon cat", "burmese cat", "manx cat", "abyssinian cat",
              "calico cat", "bombay cat"],
             {"kitten": "small", "fluffy": "large", "striped": "striped", "sleeping": "dark"}),
    "vehicles": (["sedan car", "pickup truck", "city bus", "delivery van", "sports car", "jeep",
                  "tractor", "fire truck", "taxi cab", "ambulance", "limousine", "dump truck"],
                 {"vintage": "pale", "modern": "bright", "racing": "striped", "old": "dark"}),
    "boats": (["sailboat", "canoe", "yacht", "fishing boat", "ferry", "kayak", "rowboat",
               "cargo ship", "tugboat", "speedboat", "catamaran", "submarine"],
              {"vintage": "pale", "racing": "striped", "small": "small", "large": "large"}),
    "buildings": (["house", "skyscraper", "church", "castle", "barn", "lighthouse", "temple",
                   "tower", "cottage", "factory", "mosque", "pagoda"],
                  {"old": "dark", "modern": "bright", "tall": "large", "ruined": "pale"}),
    "furniture": (["chair", "table", "sofa", "bed", "bookshelf", "desk", "armchair", "stool",
                   "wardrobe", "bench", "dresser", "rocking chair"],
                  {"wooden": "dark", "modern": "bright", "antique": "pale", "tiny": "small"}),
    "tools": (["hammer", "screwdriver", "wrench", "saw", "drill", "pliers", "axe", "shovel",
               "chisel", "rake", "trowel", "mallet"],
              {"rusty": "pale", "new": "bright", "old": "dark", "steel": "striped"}),
    "food": (["pizza", "burger", "salad", "pasta", "sushi", "cake", "soup", "sandwich",
              "pancake", "taco", "donut", "pie"],
             {"homemade": "crowded", "fresh": "bright", "spicy": "spotted", "mini": "small"}),
    "landscapes": (["mountain", "desert", "beach", "forest", "lake", "glacier", "canyon",
                    "meadow", "volcano", "island", "waterfall", "valley"],
                   {"sunset": "bright", "misty": "pale", "night": "dark", "snowy": "spotted"}),
}

# families whose images partly resemble a target family's, and how relevant they count
NEAR_FAMILIES: dict[str, dict[str, float]] = {
    "flowers": {"trees": 0.3, "insects": 0.2, "landscapes": 0.1},
    "vehicles": {"boats": 0.3, "buildings": 0.1, "tools": 0.1},
    "birds": {"insects": 0.2, "fish": 0.2, "trees": 0.1},
}

# target name -> family whose first 10 nouns are the classes
TARGETS: dict[str, str] = {
    "sandbox-flowers": "flowers",
    "sandbox-vehicles": "vehicles",
    "sandbox-birds": "birds",
}
CLASSES_PER_TARGET = 10

# words that page titles pick up around the concept's name
SITES = ["Pinterest", "Flickr", "Wikimedia Commons", "Shutterstock", "Alamy", "Reddit",
         "Etsy", "iStock", "Unsplash", "Getty Images", "Pixabay", "Tumblr", "eBay"]
TITLE_PREFIXES = ["photo of a", "a picture of the", "image of", "beautiful", "the best",
                  "close-up of a", "free", "HD", "how to draw a", "cute", "stunning"]
TITLE_SUFFIXES = ["stock photo", "wallpaper", "HD wallpaper", "images", "pictures",
                  "stock images", "clipart", "royalty free", "4k", "png", "jpg", "for sale"]
JUNK_WORDS = ["sale", "discount", "login", "download", "recipe", "tutorial", "news",
              "weather", "lyrics", "review", "2019", "2023", "best price", "amazon", "meme"]
# titles that do not name the picture (search.unnamed_title)
CAMERA_NAMES = ["IMG_{:04d}", "DSC{:05d}", "DSC_{:04d}", "PXL_2023{:04d}", "photo{}", "image-{}", "P{:07d}"]
BOILERPLATE = ["Home | {site}", "Gallery - {site}", "Page {n} | {site}", "Untitled", "untitled-{n}",
               "Welcome to our website", "Products | {site}", "Blog post #{n}", "Shop now", "Contact us"]
