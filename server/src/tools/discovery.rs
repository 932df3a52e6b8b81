//! Finding tools: each `TOOL_DIRS` folder's subfolders with a `pyproject.toml` holding a
//! `[tool.centaur]` table; a later folder's tool shadows an earlier one of the same name.
