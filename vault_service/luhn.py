"""The Luhn (mod 10) check that every card number passes.

Shared by the emulator, which must refuse a mistyped card number as Antom's form does, and the
log redaction, which uses it to tell a card number from any other long run of digits.
"""


def luhn_valid(digits: str) -> bool:
    """Whether a string of ASCII digits passes the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0
