"""Text from outside (a receiver's answer, an error, a name) made safe to store and to print on an
operator's terminal: control characters (NUL among them, which PostgreSQL text cannot hold) and
bidirectional overrides are spelled out, never obeyed, so no response can clear the screen, set the
window title, write the clipboard (OSC 52), fake a line, or fail the write that records it."""

from __future__ import annotations

# C0 controls (newline and tab included: a value must not start a line of its own), DEL, C1
# controls (0x9b is a one-byte CSI), and the Unicode bidirectional embeddings, overrides, isolates.
# C0, DEL, C1; the line and paragraph separators and the direction marks and overrides (a receiver's
# text must not start a line of its own nor turn the operator's line around).
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = str.maketrans({code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _UNSAFE})


def safe(value: object) -> str:
    """str(value) with every unsafe character spelled out (`\\x1b`, `\\u202e`)."""
    return str(value).translate(_ESCAPES)
