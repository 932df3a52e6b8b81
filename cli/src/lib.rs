//! The `centaur` command's parts: the API client, line rendering, making a thread's text safe
//! to print, saved credentials, the terminal interface and the local dev stack. The binary
//! (`main.rs`) wires them to the command line.

pub mod client;
pub mod credentials;
pub mod dev;
pub mod private_file;
pub mod render;
pub mod sanitize;
pub mod tui;
