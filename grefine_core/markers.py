"""The pluggy markers of the ``grefine`` project name. Plugins import ``hookimpl`` from here."""

import pluggy

PROJECT_NAME = "grefine"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
