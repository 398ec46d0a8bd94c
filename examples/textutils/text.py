"""Small text helpers."""


def slugify(title):
    """'Hello World' -> 'hello-world'."""
    return "-".join(title.split())


def word_count(text):
    """How many words `text` has."""
    return len(text.split(" "))
