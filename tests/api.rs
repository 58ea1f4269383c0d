//! HTTP API behaviour: every endpoint and error code.
