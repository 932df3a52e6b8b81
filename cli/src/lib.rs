//! The `centaur` command's parts: the API client, line rendering, saved credentials and the
//! terminal interface. The binary (`main.rs`) wires them to the command line.

pub mod client;
pub mod credentials;
pub mod render;
pub mod tui;
