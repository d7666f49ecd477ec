//! The API server (being written).
