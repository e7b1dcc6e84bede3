"""An example third-party grefine plugin: a stage-1 refiner that sharpens inside the mask."""

__version__ = "0.1.0"
