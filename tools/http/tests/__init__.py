# A package, so that pytest's importlib mode names these modules `tests.*` rather than
# `http.tests.*`, which would shadow the standard library's `http` with this tool's folder.
