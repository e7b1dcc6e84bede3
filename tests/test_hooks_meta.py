"""Meta-tests: every hookspec is documented with its exact signature and exercised by a test."""

from __future__ import annotations

import inspect
from pathlib import Path

from grefine_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def hook_specs() -> dict[str, object]:
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if name.startswith("grefine_") and inspect.isfunction(fn)
    }


def signature_text(fn) -> str:
    """``name(a: T, b: U) -> R`` with the annotations exactly as written in the source."""
    ann = fn.__annotations__
    params = ", ".join(f"{p}: {ann[p]}" for p in inspect.signature(fn).parameters)
    return f"{fn.__name__}({params}) -> {ann['return']}"


def test_there_is_one_firstresult_hook_per_slot_and_a_historic_configure():
    from grefine_core.plugins import SLOT_HOOKS

    specs = hook_specs()
    for hook in SLOT_HOOKS.values():
        opts = specs[hook].grefine_spec
        assert opts["firstresult"] is True, hook
    assert specs["grefine_configure"].grefine_spec["historic"] is True
    for observer in (
        "grefine_run_start",
        "grefine_run_end",
        "grefine_stage_start",
        "grefine_stage_progress",
        "grefine_stage_end",
    ):
        assert observer in specs


def test_every_hook_is_documented_with_its_exact_signature():
    doc = (ROOT / "docs" / "hooks.md").read_text()
    for name, fn in hook_specs().items():
        sig = signature_text(fn)
        assert f"`{sig}`" in doc, f"docs/hooks.md lacks the signature of {name}: {sig}"
        assert fn.__doc__ and ":returns:" in fn.__doc__, f"{name} docstring lacks :returns:"


def test_every_hook_has_a_test():
    sources = "\n".join(
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != Path(__file__).name
    )
    missing = [name for name in hook_specs() if name not in sources]
    assert not missing, f"hooks without a test: {missing}"
