"""A griffe extension for the API reference: Sphinx roles in docstrings become Markdown.

The docstrings use reStructuredText roles (``:func:`~npgru.fit```, ``:class:`GRU```). Once the
package is loaded, a role naming a public ``npgru`` object that the reference renders becomes
a cross-reference to it, which ``mkdocs build --strict`` checks: a reference to a name that no
longer exists fails the build. Any other role (a short name, a private or undocumented object)
becomes inline code. ``~`` shows the last component only, as in Sphinx.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc):`(~?)([^`<>]+?)`")


def _rendered(pkg: griffe.Object, target: str) -> bool:
    """Whether ``target`` exists and the API pages show it (public, and documented if data)."""
    if not target.startswith(pkg.path + ".") or any(p.startswith("_") for p in target.split(".")):
        return True  # a public npgru name the loader cannot see: let autorefs judge (and fail)
    try:
        obj = pkg[target[len(pkg.path) + 1 :]]
        obj = obj.final_target if obj.is_alias else obj
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return True  # gone or misspelt: a link, so that the strict build fails on it
    if any(part.startswith("_") for part in obj.path.split(".")):
        return False
    return obj.kind is not griffe.Kind.ATTRIBUTE or obj.docstring is not None


class SphinxRoles(griffe.Extension):
    """Rewrite every docstring's roles once the whole package is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        def markdown(match: re.Match) -> str:
            short, target = match.group(1), match.group(2).strip()
            shown = target.rsplit(".", 1)[-1] if short else target
            public = target.startswith("npgru.") and not any(
                p.startswith("_") for p in target.split("."))
            if public and _rendered(pkg, target):
                return f"[`{shown}`][{target}]"
            return f"`{shown}`"

        def visit(obj: griffe.Object) -> None:
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(markdown, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
