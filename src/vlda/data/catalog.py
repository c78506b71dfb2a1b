"""Long, fixed facts about the benchmarks: class names in label order and prompt-name fixes.

Kept apart from the logic in :mod:`vlda.data.benchmarks` so that the lists can be read (and
diffed) on their own. Every list is in the label order of the benchmark's *official* image
lists; where that order is not alphabetical it is pinned here on purpose, and readers map
folder names onto it by name. Never sort these lists. Sources: ``reference/benchmarks.md``
section 1.2 unless a comment says otherwise.
"""

from __future__ import annotations

# The lists are kept several names to a line (one name a line would make 700 lines).
# fmt: off

# Office-31: alphabetical, which is also TLlib's list order and Dassl's folder sort.
OFFICE31_CLASSES: tuple[str, ...] = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair",
    "desk_lamp", "desktop_computer", "file_cabinet", "headphones", "keyboard", "laptop_computer",
    "letter_tray", "mobile_phone", "monitor", "mouse", "mug", "paper_notebook", "pen", "phone",
    "printer", "projector", "punchers", "ring_binder", "ruler", "scissors", "speaker", "stapler",
    "tape_dispenser", "trash_can",
)

# Office-Home: the order of the official image lists (TLlib, UniMoS): 0 = Drill, not the
# folder sort that Dassl/DomainBed use (0 = Alarm_Clock). TLlib spells class 17 "ToothBrush";
# the dataset's folder is "Toothbrush". Folder names are matched case-insensitively anyway.
OFFICEHOME_CLASSES: tuple[str, ...] = (
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys", "Sink",
    "Laptop", "Kettle", "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer", "Toothbrush",
    "Couch", "Bike", "Postit_Notes", "Mug", "Webcam", "Desk_Lamp", "Telephone", "Helmet", "Mouse",
    "Pen", "Monitor", "Mop", "Sneakers", "Notebook", "Backpack", "Alarm_Clock", "Push_Pin",
    "Paper_Clip", "Batteries", "Radio", "Fan", "Ruler", "Pan", "Screwdriver", "Trash_Can",
    "Printer", "Speaker", "Eraser", "Bucket", "Chair", "Calendar", "Calculator", "Flowers",
    "Lamp_Shade", "Spoon", "Candles", "Clipboards", "Scissors", "TV", "Curtains", "Fork", "Soda",
    "Table", "Knives", "Oven", "Refrigerator", "Marker",
)

# VisDA-2017 classification: the official ids of the challenge's image_list.txt files.
VISDA2017_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
    "skateboard", "train", "truck",
)

# DomainNet: the label order of the official <domain>_{train,test}.txt split files (= TLlib's
# CLASSES). It is neither a case-sensitive sort (The_* would come first) nor a lowercase sort
# (cello comes before cell_phone): map by name, never re-sort.
DOMAINNET_CLASSES: tuple[str, ...] = (
    "aircraft_carrier", "airplane", "alarm_clock", "ambulance", "angel", "animal_migration", "ant",
    "anvil", "apple", "arm", "asparagus", "axe", "backpack", "banana", "bandage", "barn",
    "baseball", "baseball_bat", "basket", "basketball", "bat", "bathtub", "beach", "bear", "beard",
    "bed", "bee", "belt", "bench", "bicycle", "binoculars", "bird", "birthday_cake", "blackberry",
    "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet", "brain", "bread",
    "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush", "butterfly", "cactus",
    "cake", "calculator", "calendar", "camel", "camera", "camouflage", "campfire", "candle",
    "cannon", "canoe", "car", "carrot", "castle", "cat", "ceiling_fan", "cello", "cell_phone",
    "chair", "chandelier", "church", "circle", "clarinet", "clock", "cloud", "coffee_cup",
    "compass", "computer", "cookie", "cooler", "couch", "cow", "crab", "crayon", "crocodile",
    "crown", "cruise_ship", "cup", "diamond", "dishwasher", "diving_board", "dog", "dolphin",
    "donut", "door", "dragon", "dresser", "drill", "drums", "duck", "dumbbell", "ear", "elbow",
    "elephant", "envelope", "eraser", "eye", "eyeglasses", "face", "fan", "feather", "fence",
    "finger", "fire_hydrant", "fireplace", "firetruck", "fish", "flamingo", "flashlight",
    "flip_flops", "floor_lamp", "flower", "flying_saucer", "foot", "fork", "frog", "frying_pan",
    "garden", "garden_hose", "giraffe", "goatee", "golf_club", "grapes", "grass", "guitar",
    "hamburger", "hammer", "hand", "harp", "hat", "headphones", "hedgehog", "helicopter", "helmet",
    "hexagon", "hockey_puck", "hockey_stick", "horse", "hospital", "hot_air_balloon", "hot_dog",
    "hot_tub", "hourglass", "house", "house_plant", "hurricane", "ice_cream", "jacket", "jail",
    "kangaroo", "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf", "leg",
    "light_bulb", "lighter", "lighthouse", "lightning", "line", "lion", "lipstick", "lobster",
    "lollipop", "mailbox", "map", "marker", "matches", "megaphone", "mermaid", "microphone",
    "microwave", "monkey", "moon", "mosquito", "motorbike", "mountain", "mouse", "moustache",
    "mouth", "mug", "mushroom", "nail", "necklace", "nose", "ocean", "octagon", "octopus", "onion",
    "oven", "owl", "paintbrush", "paint_can", "palm_tree", "panda", "pants", "paper_clip",
    "parachute", "parrot", "passport", "peanut", "pear", "peas", "pencil", "penguin", "piano",
    "pickup_truck", "picture_frame", "pig", "pillow", "pineapple", "pizza", "pliers", "police_car",
    "pond", "pool", "popsicle", "postcard", "potato", "power_outlet", "purse", "rabbit", "raccoon",
    "radio", "rain", "rainbow", "rake", "remote_control", "rhinoceros", "rifle", "river",
    "roller_coaster", "rollerskates", "sailboat", "sandwich", "saw", "saxophone", "school_bus",
    "scissors", "scorpion", "screwdriver", "sea_turtle", "see_saw", "shark", "sheep", "shoe",
    "shorts", "shovel", "sink", "skateboard", "skull", "skyscraper", "sleeping_bag", "smiley_face",
    "snail", "snake", "snorkel", "snowflake", "snowman", "soccer_ball", "sock", "speedboat",
    "spider", "spoon", "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star", "steak",
    "stereo", "stethoscope", "stitches", "stop_sign", "stove", "strawberry", "streetlight",
    "string_bean", "submarine", "suitcase", "sun", "swan", "sweater", "swing_set", "sword",
    "syringe", "table", "teapot", "teddy-bear", "telephone", "television", "tennis_racquet",
    "tent", "The_Eiffel_Tower", "The_Great_Wall_of_China", "The_Mona_Lisa", "tiger", "toaster",
    "toe", "toilet", "tooth", "toothbrush", "toothpaste", "tornado", "tractor", "traffic_light",
    "train", "tree", "triangle", "trombone", "truck", "trumpet", "t-shirt", "umbrella",
    "underwear", "van", "vase", "violin", "washing_machine", "watermelon", "waterslide", "whale",
    "wheel", "windmill", "wine_bottle", "wine_glass", "wristwatch", "yoga", "zebra", "zigzag",
)

# mini-DomainNet (Zhou et al., DAEL; Dassl's splits_mini/): 126 DomainNet classes. The set is
# certain (each is a DomainNet class); the ORDER is taken from one public loader's class list and
# could not be checked against the split files' numbers. vlda therefore labels mini-DomainNet
# images by the class folder in each listed path (never by the number in the file), so labels
# and prompt names always agree; `vlda data check` reports whether the files number the classes
# the same way.
MINIDOMAINNET_CLASSES: tuple[str, ...] = (
    "umbrella", "television", "potato", "see_saw", "zebra", "dragon", "chair", "carrot",
    "sea_turtle", "helicopter", "teddy-bear", "sheep", "coffee_cup", "grapes", "helmet", "dolphin",
    "squirrel", "drums", "guitar", "basket", "pillow", "crocodile", "mushroom", "dog", "table",
    "anvil", "peanut", "fish", "bottlecap", "mosquito", "camera", "elephant", "ant", "bathtub",
    "butterfly", "dumbbell", "asparagus", "streetlight", "cat", "purse", "penguin", "calculator",
    "crab", "duck", "string_bean", "giraffe", "lion", "ceiling_fan", "The_Great_Wall_of_China",
    "fence", "alarm_clock", "monkey", "goatee", "pencil", "speedboat", "truck", "mug",
    "screwdriver", "train", "pear", "hammer", "castle", "flower", "skateboard", "feather",
    "raccoon", "cactus", "panda", "lipstick", "The_Eiffel_Tower", "aircraft_carrier", "bee",
    "rabbit", "eyeglasses", "kangaroo", "bus", "banana", "horse", "shoe", "saxophone", "cannon",
    "onion", "submarine", "computer", "flamingo", "cruise_ship", "lantern", "blueberry",
    "strawberry", "canoe", "spider", "compass", "foot", "broccoli", "axe", "bird", "blackberry",
    "laptop", "bear", "candle", "pineapple", "peas", "rifle", "fork", "mouse", "toe", "watermelon",
    "power_outlet", "cake", "chandelier", "cow", "vase", "snake", "frog", "whale", "microphone",
    "tiger", "cell_phone", "camel", "leaf", "pig", "rhinoceros", "swan", "lobster", "teapot",
    "cello",
)

# ImageCLEF-DA: the ids used in the c/i/p list files.
IMAGECLEF_CLASSES: tuple[str, ...] = (
    "aeroplane", "bike", "bird", "boat", "bottle", "bus", "car", "dog", "horse", "monitor",
    "motorbike", "people",
)

# PACS (split-file labels are 1-based: 1 = dog).
PACS_CLASSES: tuple[str, ...] = (
    "dog", "elephant", "giraffe", "guitar", "horse", "house", "person",
)

# VLCS.
VLCS_CLASSES: tuple[str, ...] = (
    "bird", "car", "chair", "dog", "person",
)

# S2RDA-49: alphabetical (the folder sort of the official ImageFolder-based code).
S2RDA49_CLASSES: tuple[str, ...] = (
    "airplane", "bag", "basket", "bathtub", "bed", "bench", "bicycle", "birdhouse", "bottle",
    "bowl", "bus", "cabinet", "camera", "cap", "car", "chair", "clock", "dishwasher",
    "filecabinet", "flowerpot", "guitar", "helmet", "keyboard", "knife", "lamp", "laptop",
    "loudspeaker", "mailbox", "microphone", "microwaves", "motorcycle", "mug", "piano", "pillow",
    "plant", "printer", "remote", "rifle", "skateboard", "sofa", "stove", "table", "telephone",
    "tower", "train", "trashbin", "truck", "washer", "watercraft",
)

# S2RDA-MS-39: pinned alphabetical; one public Dassl-style loader lists them column-wise in
# another order, so do not take the order from such a loader.
S2RDA_MS39_CLASSES: tuple[str, ...] = (
    "airplane", "bag", "basket", "bathtub", "bed", "bench", "bicycle", "bottle", "bowl", "bus",
    "cabinet", "camera", "car", "chair", "clock", "dishwasher", "helmet", "keyboard", "knife",
    "lamp", "laptop", "loudspeaker", "microwaves", "motorcycle", "mug", "pillow", "plant",
    "printer", "remote", "skateboard", "sofa", "stove", "table", "telephone", "tower", "train",
    "trashbin", "truck", "watercraft",
)

# Digits: class i is digit i (SVHN's own files store 0 as 10; readers remap it).
DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))

DIGIT_WORDS: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)

# Other folder names for a class (folder name -> class name). PGA's reformat.py writes ImageCLEF
# class 4 as "boele"; mapping the folder to "bottle" keeps the typo out of the prompts.
IMAGECLEF_FOLDER_ALIASES: dict[str, str] = {"boele": "bottle"}

# Prompt-name fixes: class name -> words used in text prompts (instead of "_" -> " ").
S2RDA_PROMPT_FIXES: dict[str, str] = {
    "filecabinet": "file cabinet",
    "trashbin": "trash bin",
    "microwaves": "microwave",
}
# fmt: on
