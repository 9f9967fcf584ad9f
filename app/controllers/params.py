"""Query parameters that many endpoints share."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

# Offsets beyond any real listing are refused here, with the limit: PostgreSQL's error for one past
# 2**63 named a query argument, not what the caller may send.
MAX_OFFSET = 1_000_000

# Text sent in a query string (a search) travels in the URL, which the HTTP server caps at 64 KiB;
# percent-encoded, a character takes up to 12 bytes. Longer text goes in a body.
MAX_QUERY_CHARS = 4_000

ShopParam = Annotated[str | None, QueryParameter(max_length=63,
                                            description="shop id or slug (admin keys only)")]
Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)]
