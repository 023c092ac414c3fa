"""One lock around `ast.parse` on the CPython releases whose AST constructor is not thread-safe.

CPython 3.11.0–3.11.7 and 3.12.0–3.12.1 keep the AST constructor's recursion counter in interpreter-wide state
(python/cpython#106905, fixed in 3.11.8 and 3.12.2). When the garbage collector runs a finalizer in the middle of
building a tree, another thread can parse at the same time, and one of them fails with "SystemError: AST constructor
recursion depth mismatch". DSPy parses a signature string on every ReAct step (`dspy.Signature("a, b -> x")`), and our
rollout engine runs programs in threads, so a rollout could end on an interpreter bug that is not the user's. On those
releases every `ast.parse` takes one process-wide lock; parsing a signature takes microseconds, so nothing waits long.
Other releases are left untouched.
"""

from __future__ import annotations

import ast
import functools
import sys
import threading


def needs_parse_lock(version: tuple[int, ...] = tuple(sys.version_info[:3]),
                     implementation: str = sys.implementation.name) -> bool:
    """True on the CPython releases with the racy AST constructor."""
    if implementation != "cpython":
        return False
    return (3, 11) <= version < (3, 11, 8) or (3, 12) <= version < (3, 12, 2)


@functools.cache  # once per process: a second wrap would only add a second lock
def serialize_ast_parse() -> bool:
    """Wrap `ast.parse` in a process-wide lock where the interpreter needs one; says whether it did."""
    if not needs_parse_lock():
        return False
    lock = threading.RLock()  # reentrant: a finalizer that parses while its thread holds the lock must not deadlock
    parse = ast.parse

    @functools.wraps(parse)
    def locked_parse(*args, **kwargs):
        with lock:
            return parse(*args, **kwargs)

    ast.parse = locked_parse
    return True
