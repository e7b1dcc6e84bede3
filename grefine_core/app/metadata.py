"""Image metadata: the prompt from AUTOMATIC1111 or ComfyUI text chunks, and the chunks of outputs.

Inputs: A1111 writes a ``parameters`` chunk (the prompt, then ``Negative prompt: ...`` and a
``Steps: ..., Seed: ...`` line); ComfyUI writes ``prompt`` (the executed node graph as JSON) and
``workflow``. Outputs keep the input's text chunks and add grefine's own: an A1111-style
``parameters`` describing the refinement (the input's own ``parameters`` is kept as
``source_parameters``) and ``grefine``, the JSON report (its presence also marks an image grefine
wrote). ``strip`` writes none of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grefine_core.result import RefineResult

#: Keys grefine writes; an input's chunk of the same name is kept under ``source_<key>``.
OWN_KEYS = ("parameters", "grefine")


def a1111_prompt(parameters: str) -> str | None:
    """The positive prompt of an A1111 ``parameters`` text (everything before ``Negative
    prompt:`` or the ``Steps:`` line)."""
    lines = parameters.strip().split("\n")
    if lines and lines[-1].startswith("Steps:"):
        lines = lines[:-1]
    text = "\n".join(lines)
    cut = text.find("\nNegative prompt:")
    if text.startswith("Negative prompt:"):
        return None
    prompt = (text if cut < 0 else text[:cut]).strip()
    return prompt or None


def comfyui_prompt(graph_text: str) -> str | None:
    """The positive prompt of a ComfyUI ``prompt`` graph: the text of the CLIPTextEncode node
    wired into a sampler's ``positive`` input (else the first CLIPTextEncode text)."""
    try:
        graph = json.loads(graph_text)
    except ValueError:
        return None
    if not isinstance(graph, dict):
        return None
    nodes = {str(k): v for k, v in graph.items() if isinstance(v, dict)}

    def text_of(node_id: str, depth: int = 0) -> str | None:
        node = nodes.get(node_id)
        if node is None or depth > 8:
            return None
        inputs = node.get("inputs", {}) if isinstance(node.get("inputs"), dict) else {}
        for key in ("text", "text_g", "prompt"):
            value = inputs.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
            if isinstance(value, list) and value:  # a link to another node
                found = text_of(str(value[0]), depth + 1)
                if found:
                    return found
        return None

    for node in nodes.values():
        positive = (node.get("inputs") or {}).get("positive") if isinstance(node, dict) else None
        if isinstance(positive, list) and positive:
            found = text_of(str(positive[0]))
            if found:
                return found
    for node_id, node in nodes.items():
        if "CLIPTextEncode" in str(node.get("class_type", "")):
            found = text_of(node_id)
            if found:
                return found
    return None


def prompt_from_metadata(chunks: Mapping[str, str]) -> tuple[str, str] | None:
    """``(prompt, where it came from)`` read from an image's text chunks, or ``None``."""
    if "parameters" in chunks:
        prompt = a1111_prompt(chunks["parameters"])
        if prompt:
            return prompt, "A1111 'parameters'"
    if "prompt" in chunks:
        prompt = comfyui_prompt(chunks["prompt"])
        if prompt:
            return prompt, "ComfyUI 'prompt'"
    return None


def refinement_parameters(result: RefineResult) -> str:
    """An A1111-style ``parameters`` text for the refined image."""
    stage1 = result.stage("stage1")
    info = stage1.info if stage1 is not None else {}
    fields = [
        ("Steps", info.get("steps")),
        ("Seed", result.seed),
        ("Denoising strength", info.get("strength")),
        ("grefine preset", result.preset),
        ("grefine p", round(result.p, 4)),
        ("grefine a", None if result.a is None else round(result.a, 4)),
        ("grefine mask", None if result.mask is None else round(result.mask.fraction, 4)),
    ]
    line = ", ".join(f"{k}: {v}" for k, v in fields if v is not None)
    return f"{info.get('emphasised_prompt') or result.prompt}\n{line}"


def png_info(result: RefineResult, report: dict[str, Any], report_name: str, strip: bool) -> Any:
    """The ``PngInfo`` of an output image (``None`` when ``strip``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if strip:
        info.add_text("grefine", json.dumps({"report": report_name}))  # still marks it as ours
        return info
    source = result.input_info.text if result.input_info is not None else {}
    for key, value in source.items():
        name = f"source_{key}" if key in OWN_KEYS else key
        info.add_itxt(name, value)
    info.add_itxt("parameters", refinement_parameters(result))
    info.add_itxt("grefine", json.dumps({"report": report_name, **report}, ensure_ascii=False))
    return info
