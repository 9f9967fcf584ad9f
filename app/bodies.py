"""JSON request bodies with a bound on nesting: deep input is a 422 that names the limit."""

from __future__ import annotations

from typing import Any

from litestar import Request

from knowledge.errors import Invalid

# Levels of objects and lists in one JSON body; metadata needs a handful. Far deeper input
# exhausted Python's recursion while it was decoded or walked, which was a 500.
MAX_JSON_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether objects and lists nest more than `limit` levels: level by level, without
    recursion (about 0.5 ms for a bulk body of 1,000 turns, half its decoding)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, dict | list):
                    below.append(child)
        level, depth = below, depth + 1
    return False


class JsonRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body is refused past MAX_JSON_DEPTH levels."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:
            value = None
            deep = True
        else:
            deep = too_deep(value)
        if deep:
            raise Invalid(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep",
                          field="body", limit=MAX_JSON_DEPTH)
        return value
