"""Parser ``example_commas``: one phrase per comma-separated part of the prompt, its last word as
the head noun. Select it with ``grefine refine ... --select parser=example_commas``."""

from pydantic import Field

from grefine_core import ParsedPrompt, Phrase, StrictModel, hookimpl


class CommaSettings(StrictModel):  # [plugins.example_commas]
    separator: str = Field(",", min_length=1)


@hookimpl
def grefine_settings_models():
    return {"example_commas": CommaSettings}


@hookimpl
def grefine_parse_prompt(prompt, context):
    separator = context.settings("example_commas").separator
    phrases, start = [], 0
    for part in prompt.split(separator):
        text = part.strip()
        if text:
            begin = start + part.index(text)
            end = begin + len(text)
            last = text.split()[-1]
            noun = last if last.isalpha() else None  # a number or "4k" is no head noun
            phrases.append(
                Phrase(
                    text=text,
                    noun=noun,
                    span=(begin, end),  # prompt[begin:end] == text
                    parent=len(phrases),  # every phrase is a root here
                    noun_span=(end - len(last), end) if noun else None,
                )
            )
        start += len(part) + len(separator)
    return ParsedPrompt(prompt, phrases, parser="example_commas", info={"separator": separator})
