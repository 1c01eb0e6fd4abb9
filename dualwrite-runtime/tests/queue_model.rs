//! The model-based queue suite against both built-in backends (being written).
