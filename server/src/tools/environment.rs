//! A tool's Python environment: a virtual environment built by `uv` from the tool's
//! `pyproject.toml`, kept under the data folder and rebuilt when its dependencies change.
