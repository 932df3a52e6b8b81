"""Centaur's tool SDK: what a plugin's `client.py` imports.

    from centaur_tools import Tool, ToolError, context, http

    class Weather(Tool):
        def forecast(self, city: str, days: int = 3) -> list[dict]:
            '''The forecast for a city.

            Args:
                city: The city's name.
                days: How many days ahead.
            '''
            context().log.info("forecast for %s", city)
            return http.get("https://api.example.com/forecast", params={"q": city}).json()

The server embeds this package and runs each plugin in a worker (`centaur_tools.worker`);
`centaur_tools.testing` calls a plugin in-process for its tests, `centaur_tools.cli` gives it
a command line.
"""

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from centaur_tools.context import Context, Tool, ToolError, context

if TYPE_CHECKING:
    from centaur_tools import egress, http

__all__ = ["Context", "Tool", "ToolError", "context", "egress", "http"]


def __getattr__(name: str) -> ModuleType:
    # `http` (http.client, ssl) and `egress` are imported when first used, so that a worker
    # whose plugin needs neither starts sooner; `from centaur_tools import http` works as usual.
    if name in ("http", "egress"):
        return importlib.import_module(f"centaur_tools.{name}")
    raise AttributeError(f"module 'centaur_tools' has no attribute {name!r}")
