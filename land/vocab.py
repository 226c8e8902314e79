"""The closed vocabulary every synthetic text here is made of: tasks and the base's pretraining corpus.

Sharing it is the point: the tiny base reads these words during pretraining, so a task asks it
to learn a *format and a mapping*, never words it has not seen.
"""

from __future__ import annotations

# fmt: off
FIRST_NAMES = (
    "Maria", "James", "Aiko", "Omar", "Lena", "Pedro", "Nina", "Tariq", "Sofia", "Ivan", "Grace",
    "Mateo", "Hana", "Luca", "Zara", "Felix", "Amara", "Noah", "Elena", "Ravi",
)
LAST_NAMES = (
    "Lopez", "Smith", "Tanaka", "Haddad", "Berg", "Silva", "Petrova", "Khan", "Rossi", "Novak", "Adams",
    "Costa", "Kim", "Moretti", "Okafor", "Weber", "Nguyen", "Brown", "Garcia", "Patel",
)
CITIES = (
    "Oslo", "Paris", "Lima", "Cairo", "Tokyo", "Lagos", "Rome", "Dublin", "Quito", "Seoul", "Madrid",
    "Nairobi", "Berlin", "Boston", "Delhi", "Vienna", "Athens", "Sydney", "Prague", "Lisbon",
)
POSITIVE_WORDS = (
    "great", "lovely", "superb", "friendly", "fresh", "delightful", "excellent", "charming", "tasty",
    "pleasant", "wonderful", "cozy",
)
NEGATIVE_WORDS = (
    "awful", "terrible", "bland", "rude", "stale", "dreadful", "poor", "boring", "noisy", "greasy",
    "horrible", "dirty",
)
NEUTRAL_WORDS = ("large", "small", "old", "new", "busy", "quiet", "early", "late", "long", "short")
REVIEW_NOUNS = (
    "food", "service", "staff", "room", "coffee", "music", "view", "soup", "bread", "waiter", "menu",
    "garden", "table", "dessert",
)
TOPIC_WORDS = {
    "world": (
        "election", "minister", "border", "embassy", "treaty", "president", "parliament", "refugees", "summit", "protest",
    ),
    "sports": (
        "match", "goal", "coach", "league", "striker", "tournament", "stadium", "referee", "season", "medal",
    ),
    "business": (
        "shares", "profit", "market", "bank", "merger", "investors", "revenue", "startup", "prices", "company",
    ),
    "science": (
        "telescope", "genome", "planet", "researchers", "vaccine", "physics", "robot", "climate", "molecule", "laboratory",
    ),
}
FILLER_VERBS = ("says", "reports", "expects", "announces", "plans", "warns", "confirms", "reveals")
RESTAURANTS = (
    "Blue Spice", "The Eagle", "Green Man", "Golden Palace", "The Mill", "Red Lion", "Cotto", "Zizzi",
    "The Vaults", "Aromi", "Fitzbillies", "The Phoenix",
)
FOODS = ("Italian", "French", "Chinese", "Indian", "Japanese", "English", "Mexican", "Greek")
AREAS = ("riverside", "city centre", "harbour", "old town")
PRICES = ("cheap", "moderate", "expensive")
ITEMS = ("apples", "books", "coins", "stamps", "pencils", "cookies", "marbles", "tickets", "shells", "cards")
COMMON_WORDS = (
    "the", "a", "one", "some", "many", "few", "every", "this", "that", "his", "her", "their", "our",
    "its", "and", "or", "but", "with", "without", "under", "over", "near", "into", "from", "to", "of",
    "in", "on", "at", "by", "for", "after", "before", "is", "was", "were", "has", "had", "will", "can",
    "could", "would", "sees", "finds", "makes", "takes", "gives", "keeps", "holds", "likes", "wants",
    "walked", "went", "came", "stayed", "talked", "read", "wrote", "bought", "sold", "carried",
    "visited", "met", "called", "opened", "day", "night", "morning", "evening", "week", "year",
    "street", "house", "door", "window", "road", "river", "park", "train", "station", "friend",
    "family", "teacher", "doctor", "child", "people", "team", "group", "letter", "story", "song", "game",
)
# fmt: on
