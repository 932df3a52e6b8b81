//! The TUI in tests: an app already following a scripted thread.

use centaur_client::api::Connection;
use centaur_protocol::Event;
use centaur_tui::app::{App, AppEvent, Start};

/// An app showing the thread of `events`, connected, with every event applied.
pub fn app_following(events: &[Event]) -> App {
    let key = events[0].thread_key.clone();
    let (mut app, _) = App::new(
        "http://127.0.0.1:8080".into(),
        &Start {
            thread_key: Some(key.clone()),
            ..Start::default()
        },
    );
    app.handle(AppEvent::Connection {
        key,
        state: Connection::Live,
    });
    for event in events {
        app.handle(AppEvent::Server(Box::new(event.clone())));
    }
    app
}
