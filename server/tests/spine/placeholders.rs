//! Placeholders that reach a request body (an agent ran `env`) never make a thread unusable.
