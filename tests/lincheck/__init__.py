"""A linearizability checker for key-value histories (Wing-Gong-Lowe search).

Tests record what concurrent clients asked and saw (:class:`Recorder`), then ask
:func:`check_history` whether some single order of the operations, each placed between
its call and its return, explains every result. A failure comes with a small
sub-history that shows the contradiction.
"""

from .check import Verdict, check_history
from .history import CAS, DELETE, GET, PUT, Operation, Recorder
from .model import ANY_VALUE, KvModel, Model
from .wgl import SearchResult, search

__all__ = ["ANY_VALUE", "CAS", "DELETE", "GET", "PUT", "KvModel", "Model", "Operation", "Recorder",
           "SearchResult", "Verdict", "check_history", "search"]
