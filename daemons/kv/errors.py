"""etcd v2 error codes, messages and HTTP statuses.

Clients match on ``errorCode`` and sometimes on ``message`` text, so both must be the
exact strings etcd 3.4 sends. Codes missing from etcd's status table answer 400, which
is why :data:`STATUS` is sparse.
"""

from __future__ import annotations

KEY_NOT_FOUND = 100
TEST_FAILED = 101
NOT_FILE = 102
NO_MORE_PEER = 103
NOT_DIR = 104
NODE_EXIST = 105
KEY_IS_PRESERVED = 106
ROOT_READ_ONLY = 107
DIR_NOT_EMPTY = 108
EXISTING_PEER_ADDR = 109
UNAUTHORIZED = 110

VALUE_REQUIRED = 200
PREV_VALUE_REQUIRED = 201
TTL_NAN = 202
INDEX_NAN = 203
VALUE_OR_TTL_REQUIRED = 204
TIMEOUT_NAN = 205
NAME_REQUIRED = 206
INDEX_OR_VALUE_REQUIRED = 207
INDEX_VALUE_MUTEX = 208
INVALID_FIELD = 209
INVALID_FORM = 210
REFRESH_VALUE = 211
REFRESH_TTL_REQUIRED = 212

RAFT_INTERNAL = 300
LEADER_ELECT = 301

WATCHER_CLEARED = 400
EVENT_INDEX_CLEARED = 401
STANDBY_INTERNAL = 402
INVALID_ACTIVE_SIZE = 403
INVALID_REMOVE_DELAY = 404

CLIENT_INTERNAL = 500

MESSAGES: dict[int, str] = {
    KEY_NOT_FOUND: "Key not found",
    TEST_FAILED: "Compare failed",
    NOT_FILE: "Not a file",
    NO_MORE_PEER: "Reached the max number of peers in the cluster",
    NOT_DIR: "Not a directory",
    NODE_EXIST: "Key already exists",
    KEY_IS_PRESERVED: "The prefix of given key is a keyword in etcd",
    ROOT_READ_ONLY: "Root is read only",
    DIR_NOT_EMPTY: "Directory not empty",
    EXISTING_PEER_ADDR: "Peer address has existed",
    UNAUTHORIZED: "The request requires user authentication",
    VALUE_REQUIRED: "Value is Required in POST form",
    PREV_VALUE_REQUIRED: "PrevValue is Required in POST form",
    TTL_NAN: "The given TTL in POST form is not a number",
    INDEX_NAN: "The given index in POST form is not a number",
    VALUE_OR_TTL_REQUIRED: "Value or TTL is required in POST form",
    TIMEOUT_NAN: "The given timeout in POST form is not a number",
    NAME_REQUIRED: "Name is required in POST form",
    INDEX_OR_VALUE_REQUIRED: "Index or value is required",
    INDEX_VALUE_MUTEX: "Index and value cannot both be specified",
    INVALID_FIELD: "Invalid field",
    INVALID_FORM: "Invalid POST form",
    REFRESH_VALUE: "Value provided on refresh",
    REFRESH_TTL_REQUIRED: "A TTL must be provided on refresh",
    RAFT_INTERNAL: "Raft Internal Error",
    LEADER_ELECT: "During Leader Election",
    WATCHER_CLEARED: "watcher is cleared due to etcd recovery",
    EVENT_INDEX_CLEARED: "The event in requested index is outdated and cleared",
    STANDBY_INTERNAL: "Standby Internal Error",
    INVALID_ACTIVE_SIZE: "Invalid active size",
    INVALID_REMOVE_DELAY: "Standby remove delay",
    CLIENT_INTERNAL: "Client Internal Error",
}

STATUS: dict[int, int] = {
    KEY_NOT_FOUND: 404,
    NOT_FILE: 403,
    DIR_NOT_EMPTY: 403,
    UNAUTHORIZED: 401,
    TEST_FAILED: 412,
    NODE_EXIST: 412,
    RAFT_INTERNAL: 500,
    LEADER_ELECT: 500,
}


class EtcdError(Exception):
    """An etcd v2 error: a code, an optional cause and the store index it was seen at."""

    def __init__(self, code: int, cause: str = "", index: int = 0) -> None:
        super().__init__(f"{code}: {MESSAGES.get(code, 'Unknown error')} ({cause}) [{index}]")
        self.code = code
        self.cause = cause
        self.index = index

    @property
    def message(self) -> str:
        return MESSAGES.get(self.code, "")

    @property
    def status(self) -> int:
        return STATUS.get(self.code, 400)

    def to_dict(self) -> dict[str, object]:
        """The JSON body fields in etcd's order; ``cause`` is left out when empty."""
        body: dict[str, object] = {"errorCode": self.code, "message": self.message}
        if self.cause:
            body["cause"] = self.cause
        body["index"] = self.index
        return body

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EtcdError)
            and (self.code, self.cause, self.index) == (other.code, other.cause, other.index)
        )

    def __hash__(self) -> int:
        return hash((self.code, self.cause, self.index))
