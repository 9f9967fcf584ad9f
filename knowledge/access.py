"""Who may do what, to which shop: the one place roles and tenancy are decided."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from uuid import UUID

from knowledge.errors import Forbidden, Invalid, NotFound


class Role(enum.StrEnum):
    ADMIN = "admin"
    OWNER = "owner"
    BOT = "bot"


class Action(enum.StrEnum):
    ANSWER = "answer"                 # ask for answers and search
    READ_KNOWLEDGE = "read_knowledge"
    WRITE_KNOWLEDGE = "write_knowledge"
    READ_SHOP = "read_shop"
    MANAGE_SHOPS = "manage_shops"     # create shops, change any shop
    MANAGE_BOT_KEYS = "manage_bot_keys"
    MANAGE_KEYS = "manage_keys"       # keys of any role
    FEEDBACK = "feedback"             # report how an answer went
    CORRECT = "correct"               # correct answers, suggest knowledge
    REVIEW = "review"                 # review the learning queue, read the audit log


_ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OWNER: frozenset({Action.ANSWER, Action.READ_KNOWLEDGE, Action.WRITE_KNOWLEDGE,
                           Action.READ_SHOP, Action.MANAGE_BOT_KEYS, Action.FEEDBACK,
                           Action.CORRECT, Action.REVIEW}),
    Role.BOT: frozenset({Action.ANSWER, Action.FEEDBACK}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a request: an API key's role and shop (None for admins)."""

    key_id: UUID | None
    role: Role
    shop_id: int | None
    name: str = ""

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.key_id}" if self.key_id else self.name


CLI_ADMIN = Principal(key_id=None, role=Role.ADMIN, shop_id=None, name="admin:cli")
# Who the audit log names for decisions learnkb takes by itself (auto-approval, applying).
SYSTEM = Principal(key_id=None, role=Role.ADMIN, shop_id=None, name="system")


def authorize(principal: Principal, action: Action) -> None:
    if action not in _ALLOWED[principal.role]:
        raise Forbidden(f"a {principal.role.value} key may not {action.value.replace('_', ' ')}")


def scope_shop(principal: Principal, action: Action, requested: int | None) -> int:
    """The shop a request acts on.

    A shop key acts on its own shop only; naming another shop is answered as if that shop did
    not exist, so a key never learns what other shops there are. An admin must name the shop.
    """
    authorize(principal, action)
    if principal.role is Role.ADMIN:
        if requested is None:
            raise Invalid("an admin key must name the shop (query parameter `shop`)",
                          field="shop")
        return requested
    assert principal.shop_id is not None
    if requested is not None and requested != principal.shop_id:
        raise NotFound(f"no shop {requested}")
    return principal.shop_id
