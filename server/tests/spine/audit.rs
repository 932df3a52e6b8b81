//! The egress audit over the admin API and `centaur audit`.
