"""A stage-2 plugin: a mild global smoothing of the whole image."""

from PIL import ImageFilter

from grefine_core import StageOutput, hookimpl


@hookimpl
def grefine_refine_stage2(image, prompt, context):
    context.progress(1, 1)  # drives the progress bar
    return StageOutput(image.filter(ImageFilter.SMOOTH), {"filter": "smooth"})  # same size
